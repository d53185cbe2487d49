"""A sample-quality score that works offline: a Fréchet distance in a small classifier's features.

FID (Heusel, Ramsauer, Unterthiner, Nessler & Hochreiter 2017, "GANs Trained by a Two
Time-Scale Update Rule Converge to a Local Nash Equilibrium") fits a Gaussian to the
Inception-v3 pool features of generated images and one to those of real images, and reports
the Fréchet distance between the two. Inception's weights cannot be downloaded here and were
not trained on 28x28 grey images, so the features come instead from :class:`Classifier`, a
small conv net trained once on the training split of the same dataset and cached under
``weights/`` (:func:`load_or_train_classifier`); the real images are the official test set.
A labelled image folder (``--dataset_type folder`` with class sub-folders) gets its own: the
same net at the run's shape and number of classes, trained on the folder's training images
and scored on its held-out ones, so colour samples get a distance (and, for a CVAE, an accuracy).

Units: the distance is in squared feature units (the 128 ReLU activations of the
classifier's penultimate layer); 0 means equal means and covariances; lower is better.

What it is comparable with (COMPARABILITY): our models on the same dataset, scored with the
same cached classifier file and the same number of generated images; never published
Inception FIDs. Like FID it is biased upwards for few images: on Fashion-MNIST, 10,000
training images score 0.75 against the test set, 1,000 of them 3.96.
"""
from __future__ import annotations

import hashlib
import math
import os
import re
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from core.errors import VaeLabError
from datasets import FOLDER, FOLDERS, Split, as_float, load_split
from fileio.dirs import ensure_writable_dir
from runtime.checkpoints import load_checkpoint_file, save_checkpoint

COMPARABILITY = (
    "comparable only between models of ours on the same dataset, scored with the same cached "
    "classifier file and the same number of generated images; never with published "
    "(Inception) FIDs, which use other features"
)

FEATURE_DIM = 128  # width of the penultimate layer, i.e. the dimension of the Gaussians
NUM_CLASSES = 10
# Names the layer shapes below; a cache written for another architecture is refused.
ARCHITECTURE = "conv5s2x32-bn-conv3s2x64-bn-fc128-fc10"
FORMAT_VERSION = 1  # of the cache file's dict; bump when its keys change
CACHE_KEYS = ("format_version", "architecture", "dataset_type", "state_dict", "test_accuracy",
              "seed", "epochs")

DEFAULT_SEED = 0
DEFAULT_EPOCHS = 4  # 91.0% test accuracy on Fashion-MNIST (3: 90.6%, 5: 91.4%)
# an image folder is often a few thousand images: its classifier trains for as many steps as the
# Fashion-MNIST one (4 epochs of 60,000 in batches of 256), not for as many epochs
FOLDER_STEPS = DEFAULT_EPOCHS * math.ceil(60_000 / 256)
BATCH_SIZE = 256  # training minibatch, images
LR = 2e-3  # Adam's peak learning rate, decayed to 0 along a cosine over the run


class Classifier(nn.Module):
    """A small conv net for (N, C, H, W) images in [0, 1] (by default the built-in sets' (N, 1, 28, 28)
    with 10 classes; an image folder's shape and classes otherwise).

    conv 5x5 stride 2 (32) - BN - ReLU - conv 3x3 stride 2 (64) - BN - ReLU - FC 128 - ReLU
    (the features) - dropout 0.3 - FC 10 (the logits). Strided convolutions instead of
    max-pooling: on a 2-core CPU a training step is ~3x faster for the same widths (the
    pooled net spends its time on 28x28x32 activations: the first convolution's backward
    and the pooling); batch norm and a cosine learning rate make up the accuracy in 4
    epochs (91.0% on Fashion-MNIST). Images are used as they are, in [0, 1]; generated
    images (Bernoulli means) are on that scale too.
    """

    def __init__(self, shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        c, h, w = shape
        self.conv1 = nn.Conv2d(c, 32, 5, stride=2, padding=2, bias=False)  # 28x28 -> (N, 32, 14, 14)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, 3, stride=2, padding=1, bias=False)  # -> (N, 64, 7, 7)
        self.bn2 = nn.BatchNorm2d(64)
        self.fc1 = nn.Linear(64 * _quarter(h) * _quarter(w), FEATURE_DIM)
        self.drop = nn.Dropout(0.3)
        self.fc2 = nn.Linear(FEATURE_DIM, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate layer (post-ReLU activations), shape (N, FEATURE_DIM)."""
        h = F.relu(self.bn1(self.conv1(x)))
        h = F.relu(self.bn2(self.conv2(h)))
        return F.relu(self.fc1(h.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits, shape (N, classes)."""
        return self.fc2(self.drop(self.features(x)))


def _quarter(side: int) -> int:
    """A side after the two stride-2 convolutions (each rounds up: 28 -> 14 -> 7, 32 -> 16 -> 8)."""
    return (side + 3) // 4


def architecture(shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = NUM_CLASSES) -> str:
    """The cache's name for the net of this input shape and number of classes (the built-in sets':
    ARCHITECTURE, as their caches were always written)."""
    if (tuple(shape), num_classes) == ((1, 28, 28), NUM_CLASSES):
        return ARCHITECTURE
    c, h, w = shape
    return f"{c}x{h}x{w}-conv5s2x32-bn-conv3s2x64-bn-fc{FEATURE_DIM}-fc{num_classes}"


def _fork_rng(device: torch.device):
    # Seeding inside a fork leaves the caller's RNG streams (CPU, and the CUDA device used,
    # which dropout draws from there) as they were.
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    return torch.random.fork_rng(devices=cuda)


@torch.no_grad()
def class_probabilities(classifier: Classifier, images: torch.Tensor, device: torch.device,
                        batch_size: int = 1000) -> torch.Tensor:
    """The classifier's class probabilities (N, classes) of ``images`` (N, C, H, W) in [0, 1], on the CPU."""
    classifier.eval()
    return torch.cat([classifier(as_float(images[i:i + batch_size].to(device))).softmax(1).cpu()
                      for i in range(0, len(images), batch_size)])


def _predict(classifier: Classifier, images: torch.Tensor, device: torch.device,
             batch_size: int) -> torch.Tensor:
    """Predicted classes (N,) on the CPU."""
    return class_probabilities(classifier, images, device, batch_size).argmax(1)


def classifier_accuracy(classifier: Classifier, images: torch.Tensor, labels: torch.Tensor,
                        device: torch.device, batch_size: int = 1000) -> float:
    """Fraction in [0, 1] of ``images`` (N, C, H, W) in [0, 1] classified as ``labels`` (N,).

    For a conditional VAE, images decoded for class c should be classified as c; the real
    test images give the ceiling (the classifier's test accuracy). ``classifier`` must be on
    ``device``; it is put in eval mode.
    """
    if len(images) != len(labels) or len(images) == 0:
        raise ValueError(f"need as many labels as images, and not 0: got {len(images)} images, "
                         f"{len(labels)} labels")
    pred = _predict(classifier, images, device, batch_size)
    return float((pred == labels.cpu().to(torch.int64)).double().mean())


def train_classifier(train: Split, test: Split, device: torch.device, seed: int = DEFAULT_SEED,
                     epochs: int = DEFAULT_EPOCHS, batch_size: int = BATCH_SIZE, num_classes: int = NUM_CLASSES
                     ) -> tuple[Classifier, float]:
    """Train a :class:`Classifier` of ``train``'s image shape and ``num_classes`` classes on ``train``;
    return it (eval mode, on ``device``) and its accuracy on ``test`` (a fraction in [0, 1]).

    Adam on cross-entropy, learning rate LR decayed to 0 along a cosine (per step), minibatches
    of ``batch_size`` in a fresh random order each epoch, no augmentation. The same seed, data
    and device give the same weights (on the CPU, with the same number of threads); the
    caller's RNG state is left untouched.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    x, y = train.x.to(device), train.y.to(device)  # whole split on the device: batches are slices
    order = torch.Generator().manual_seed(seed)
    with _fork_rng(device):
        torch.manual_seed(seed)  # the initial weights and the dropout masks
        model = Classifier(tuple(x.shape[1:]), num_classes).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=LR)
        # a short run ends at its best weights when the learning rate has decayed to 0
        total = epochs * math.ceil(len(x) / batch_size)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 * (1 + math.cos(math.pi * step / total)))
        model.train()
        for _ in range(epochs):
            perm = torch.randperm(len(x), generator=order).to(device)
            for start in range(0, len(x), batch_size):
                idx = perm[start:start + batch_size]
                loss = F.cross_entropy(model(as_float(x[idx])), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
    model.eval()
    return model, classifier_accuracy(model, test.x, test.y, device)


def cache_path(dataset_type: str, weights_dir: str) -> str:
    """Where the classifier of ``dataset_type`` is cached: ``{weights_dir}/{dataset_type}_fid_classifier.pth.tar``."""
    return os.path.join(weights_dir, f"{dataset_type}_fid_classifier.pth.tar")


def _refuse(path: str, why: str) -> VaeLabError:
    return VaeLabError(f"FID classifier cache {path!r} {why}; delete it to train a new one")


def _save(state: dict, path: str) -> None:
    save_checkpoint(state, path, "FID classifier cache")


def _load(path: str, dataset_type: str, seed: int, epochs: int, device: torch.device,
          shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = NUM_CLASSES) -> tuple[Classifier, float]:
    """The cached classifier and its test accuracy; anything unexpected is a VaeLabError."""
    try:
        state = load_checkpoint_file(path, "FID classifier cache")  # weights_only: never runs code from the file
    except VaeLabError as e:
        raise VaeLabError(f"{e}; delete it to train a new one") from None
    if not isinstance(state, dict):
        raise _refuse(path, f"holds a {type(state).__name__}, not a dict")
    missing = [k for k in CACHE_KEYS if k not in state]
    if missing:
        raise _refuse(path, f"lacks the keys {missing}")
    if state["format_version"] != FORMAT_VERSION:
        raise _refuse(path, f"has format version {state['format_version']!r}, not {FORMAT_VERSION}")
    if state["dataset_type"] != dataset_type:
        raise _refuse(path, f"was trained on {state['dataset_type']!r}, not {dataset_type!r}")
    expected = architecture(shape, num_classes)
    if state["architecture"] != expected:
        raise _refuse(path, f"holds the architecture {state['architecture']!r}, not {expected!r}")
    if (state["seed"], state["epochs"]) != (seed, epochs):
        raise _refuse(path, f"was trained with seed {state['seed']} for {state['epochs']} epochs, "
                            f"not seed {seed} for {epochs}")
    acc = state["test_accuracy"]
    if not isinstance(acc, float) or not 0.0 <= acc <= 1.0:
        raise _refuse(path, f"holds the test accuracy {acc!r}, not a fraction in [0, 1]")
    model = Classifier(shape, num_classes)
    sd = state["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise _refuse(path, "holds a state_dict that is not a dict of tensors")
    try:
        model.load_state_dict(sd)  # strict: every key, every shape
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        detail = (first[1].strip() if len(first) > 1 else first[0])[:160] if first else ""
        raise _refuse(path, f"does not fit the classifier's layers ({detail})") from None
    if not all(torch.isfinite(v).all() for v in sd.values() if v.is_floating_point()):
        raise _refuse(path, "holds NaN or Inf weights")
    return model.to(device).eval(), acc


def _folder_splits(root: str, data: dict) -> tuple[Split, Split, str]:
    """An image folder's training and held-out images as the run loads them (``data``: load_split's
    options), and the name its classifier is cached under: the folder's name and a digest of its path,
    image shape, classes and options, so another folder or another shape never reads this cache."""
    train, test = load_split(FOLDER, root, train=True, **data), load_split(FOLDER, root, train=False, **data)
    if train.classes is None or len(train.classes) < 2:
        raise VaeLabError(f"--fid on an image folder needs its images in class sub-folders ({root}/<class>/...) "
                          f"to train its classifier on; {root!r} has "
                          f"{'none' if train.classes is None else 'one class'}")
    key = repr((os.path.abspath(root), tuple(train.x.shape[1:]), train.classes, sorted(data.items())))
    slug = re.sub(r"[^A-Za-z0-9_-]", "_", os.path.basename(os.path.abspath(root)))[:40]
    return train, test, f"{FOLDER}_{slug}_{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def load_or_train_classifier(dataset_type: str, data_root: str, weights_dir: str, device: torch.device,
                             log: Callable[[str], None] = print, seed: int = DEFAULT_SEED,
                             epochs: int | None = None, data: dict | None = None) -> tuple[Classifier, float]:
    """The feature classifier of ``dataset_type`` (eval mode, on ``device``) and its test accuracy.

    Loads ``{weights_dir}/{dataset_type}_fid_classifier.pth.tar`` when it exists; otherwise
    trains one on the official training split (60k images, 4 epochs: 356 s on a busy shared
    2-core CPU), scores it on the test split (10k), and writes
    the cache atomically. An image folder (``folder``) with class sub-folders: the net of its image
    shape and classes, trained on its training images for FOLDER_STEPS steps and scored on its held-out
    ones; ``data``: load_split's options of the run (config.run_config.data_options), so the classifier
    sees the images the model was trained on; cached as ``folder_<name>_<digest>_fid_classifier.pth.tar``
    (_folder_splits). ``epochs``: default DEFAULT_EPOCHS (a folder: as many as make FOLDER_STEPS). A cache
    that is corrupt or does not match (another dataset, architecture, format, seed or epochs) raises
    a VaeLabError that says to delete it: it is never silently replaced, since scores are
    comparable only with the same classifier. Logs one line either way, with the accuracy.
    """
    if dataset_type not in FOLDERS and dataset_type != FOLDER:
        raise VaeLabError(f"unknown dataset {dataset_type!r}; choose from {sorted(FOLDERS) + [FOLDER]}")
    train = test = None
    shape, classes, name = (1, 28, 28), NUM_CLASSES, dataset_type
    if dataset_type == FOLDER:
        train, test, name = _folder_splits(data_root, data or {})
        shape, classes = tuple(train.x.shape[1:]), len(train.classes)
        epochs = epochs or math.ceil(FOLDER_STEPS / math.ceil(len(train) / BATCH_SIZE))
    epochs = epochs or DEFAULT_EPOCHS
    path = cache_path(name, weights_dir)
    if os.path.exists(path):
        model, acc = _load(path, name, seed, epochs, device, shape, classes)
        log(f"FID classifier: {path}, test accuracy {acc:.4f}")
        return model, acc
    ensure_writable_dir(weights_dir, "weights")  # fail now, not after minutes of training
    if train is None:
        train, test = load_split(dataset_type, data_root, train=True), load_split(dataset_type, data_root, train=False)
    if dataset_type == FOLDER:
        what = done = f"{len(train)} training images of {data_root} ({classes} classes)"
    else:
        what, done = f"{len(train)} {dataset_type} training images", f"{len(train)} {dataset_type} images"
    log(f"FID classifier: training one on the {what} ({epochs} epochs, once; cached as {path})")
    start = time.perf_counter()
    model, acc = train_classifier(train, test, device, seed=seed, epochs=epochs, num_classes=classes)
    state = {
        "format_version": FORMAT_VERSION,
        "architecture": architecture(shape, classes),
        "dataset_type": name,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "test_accuracy": acc,
        "seed": seed,
        "epochs": epochs,
    }
    _save(state, path)
    log(f"FID classifier: trained on {done} ({epochs} epochs, seed {seed}, "
        f"{time.perf_counter() - start:.0f} s), saved to {path}, test accuracy {acc:.4f}")
    return model, acc


@torch.no_grad()
def feature_stats(classifier: Classifier, images: torch.Tensor, device: torch.device,
                  batch_size: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Mean (F,) and covariance (F, F) of ``classifier.features`` over ``images``, float64.

    ``images``: (N, C, H, W) of the classifier's shape in [0, 1], N >= 2 (for decoded VAE samples,
    the Bernoulli means, as the test images are grey levels). The covariance is unbiased (divides by
    N - 1), as in FID. ``classifier`` must be on ``device``; it is put in eval mode.
    Units: those of the features (post-ReLU activations).
    """
    if len(images) < 2:
        raise ValueError(f"need at least 2 images for a covariance, got {len(images)}")
    classifier.eval()
    feats = np.concatenate([
        classifier.features(as_float(images[i:i + batch_size].to(device))).double().cpu().numpy()
        for i in range(0, len(images), batch_size)])
    return feats.mean(axis=0), np.cov(feats, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Fréchet (2-Wasserstein squared) distance between N(mu1, sigma1) and N(mu2, sigma2).

        d^2 = ||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^{1/2})

    the closed form for Gaussians of Dowson & Landau 1982 ("The Fréchet distance between
    multivariate normal distributions", J. Multivariate Anal. 12), used by FID (Heusel et al.
    2017). In squared units of the features; >= 0 up to rounding. The matrix square root is
    ``scipy.linalg.sqrtm``; when the product is singular (e.g. dead ReLU features, or fewer
    images than features) the whole distance is computed again with ``eps`` added to both
    covariances' diagonals, and a rounding-size imaginary part is dropped.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(f"shapes do not match: mu {mu1.shape}, {mu2.shape}; sigma {sigma1.shape}, {sigma2.shape}")
    from scipy import linalg  # imported here: only scoring needs scipy

    def sqrtm(a: np.ndarray) -> tuple[np.ndarray, bool]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", linalg.LinAlgWarning)
            root = linalg.sqrtm(a)
        singular = any(issubclass(w.category, linalg.LinAlgWarning) for w in caught)
        return root, singular or not np.isfinite(root).all()

    covmean, bad = sqrtm(sigma1 @ sigma2)
    if bad:
        # The distance between the two Gaussians with eps more variance in every direction:
        # the offset goes into the traces too, so equal inputs still give 0 (adding it to the
        # product only, as pytorch-fid does, biases the distance by -2 eps F).
        offset = np.eye(sigma1.shape[0]) * eps
        sigma1, sigma2 = sigma1 + offset, sigma2 + offset
        covmean, _ = sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            raise ValueError("the square root of sigma1 sigma2 is not finite, even with eps on the diagonals")
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"the square root of sigma1 sigma2 has an imaginary part of "
                             f"{np.abs(covmean.imag).max():.3g}: are both covariances symmetric PSD?")
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))
