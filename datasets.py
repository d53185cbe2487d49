"""MNIST / Fashion-MNIST as whole tensors, the 2018 validation split, and batch augmentations.

Images are read once through torchvision's dataset classes (its folder layout under
``--data_root``) and kept as one float tensor in [0, 1] on the training device; a batch is
an index slice, so the training loop never touches PIL or per-sample Python.
"""
from __future__ import annotations

import gzip
import math
import os
import shutil
import socket
import threading
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from utils import VaeLabError

# torchvision's class (and so folder) name of each dataset
FOLDERS = {"mnist": "MNIST", "fmnist": "FashionMNIST"}

CLASS_NAMES = {
    "mnist": [str(i) for i in range(10)],
    "fmnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
}

# Debian's package `dataset-fashion-mnist` puts the four official .gz files here.
DEBIAN_FMNIST_DIR = "/usr/share/datasets/fashion-mnist"
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _torchvision_datasets() -> dict:
    from torchvision import datasets as tv_datasets  # here: seconds, and --help needs none of it

    return {"mnist": tv_datasets.MNIST, "fmnist": tv_datasets.FashionMNIST}


def __getattr__(name: str):
    # DATASETS (name -> torchvision class) is built on first use, so importing this
    # module does not import torchvision.
    if name == "DATASETS":
        return _torchvision_datasets()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class Split:
    """One labelled set of images: ``x`` float (N, 1, 28, 28) in [0, 1], ``y`` int64 (N,)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return self.x.shape[0]


def _raw_folder(name: str, root: str) -> str:
    return os.path.join(root, FOLDERS[name], "raw")


def _has_raw(name: str, root: str) -> bool:
    raw = _raw_folder(name, root)
    return all(os.path.isfile(os.path.join(raw, f)) for f in IDX_FILES)


def _copy_debian_fmnist(root: str, source_dir: str = DEBIAN_FMNIST_DIR) -> bool:
    """Unpack Debian's Fashion-MNIST into torchvision's layout; False if it is not installed."""
    if not all(os.path.isfile(os.path.join(source_dir, f + ".gz")) for f in IDX_FILES):
        return False
    raw = _raw_folder("fmnist", root)
    os.makedirs(raw, exist_ok=True)
    for f in IDX_FILES:
        # a temporary file of its own: two runs unpacking into one --data_root at once must not
        # rename each other's half-written file
        tmp = os.path.join(raw, f"{f}.{os.getpid()}.{threading.get_ident()}.part")
        try:
            with gzip.open(os.path.join(source_dir, f + ".gz"), "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.replace(tmp, os.path.join(raw, f))  # atomic: never a half-written IDX file
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    return True


def ensure_raw_files(name: str, root: str, debian_dir: str = DEBIAN_FMNIST_DIR) -> None:
    """Make sure the IDX files are under ``root``: local copy, then Debian's, then download."""
    if name not in FOLDERS:
        raise VaeLabError(f"unknown dataset {name!r}; choose from {sorted(FOLDERS)}")
    if _has_raw(name, root):
        return
    if name == "fmnist" and _copy_debian_fmnist(root, debian_dir):
        return
    try:
        os.makedirs(root, exist_ok=True)
    except OSError as e:
        raise VaeLabError(f"cannot create the data folder {root!r}: {e.strerror or e}") from None
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)  # a dead network should fail in seconds, not hang
    try:
        for train in (True, False):
            _torchvision_datasets()[name](root, train=train, download=True)
    except Exception as e:  # torchvision raises RuntimeError/URLError/OSError on network failure
        hint = (" or install Debian's copy: apt-get install dataset-fashion-mnist"
                if name == "fmnist" else "")
        raise VaeLabError(
            f"{name} is not under {_raw_folder(name, root)!r} and downloading it failed "
            f"({type(e).__name__}); connect to the internet, copy the four IDX files there{hint}"
        ) from None
    finally:
        socket.setdefaulttimeout(old_timeout)


def load_split(name: str, root: str, train: bool) -> Split:
    """The official training (60k) or test (10k) set as tensors on the CPU."""
    images, labels = _load_bytes(name, root, train)
    return _as_split(images, labels)


def _as_split(images: torch.Tensor, labels: torch.Tensor) -> Split:
    return Split(x=images.to(torch.float32).div_(255.0).unsqueeze(1), y=labels.to(torch.int64))


def _load_bytes(name: str, root: str, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 28, 28) and labels (N,) as stored (uint8), read by torchvision's class."""
    ensure_raw_files(name, root)
    try:
        ds = _torchvision_datasets()[name](root, train=train, download=False)
    except Exception as e:  # a parse of damaged files: assertion, struct, pickle, zip... errors
        # (torchvision prefers an old processed/*.pt cache when there is one; it loads with weights_only)
        raise VaeLabError(
            f"the {name} IDX files under {_raw_folder(name, root)!r} are unreadable or corrupt "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'bad header'}); delete them to re-fetch"
        ) from None
    where = f"the {name} {'training' if train else 'test'} IDX files under {_raw_folder(name, root)!r}"
    if ds.data.ndim != 3 or tuple(ds.data.shape[1:]) != (28, 28):
        raise VaeLabError(f"{where} hold images of shape {tuple(ds.data.shape[1:])}, not 28x28")
    if len(ds.data) != len(ds.targets) or len(ds.data) == 0:
        raise VaeLabError(f"{where} hold {len(ds.data)} images and {len(ds.targets)} labels; "
                          f"they must be as many, and not 0")
    return ds.data, ds.targets


def kfold_indices(targets: torch.Tensor | np.ndarray, fold: int, num_folds: int, seed: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Train/validation indices of fold ``fold`` of the 2018 StratifiedKFold split."""
    if not 0 <= fold < num_folds:
        raise VaeLabError(f"--fold must be in [0, {num_folds - 1}] for --num_folds {num_folds}, got {fold}")
    if not 0 <= seed < 2 ** 32:
        raise VaeLabError(f"--seed must be in [0, 2**32 - 1] (it seeds the validation split), got {seed}")
    from sklearn.model_selection import StratifiedKFold  # imported here: ~1 s, needed once

    y = np.asarray(targets)
    skf = StratifiedKFold(n_splits=num_folds, shuffle=True, random_state=seed)
    try:
        for i, (tr, va) in enumerate(skf.split(np.zeros(len(y)), y)):
            if i == fold:
                return tr, va
    except ValueError as e:  # e.g. more folds than images of every class
        raise VaeLabError(f"cannot split {len(y)} images into --num_folds {num_folds} stratified folds "
                          f"({str(e).splitlines()[0]})") from None
    raise AssertionError("unreachable")


def train_val_split(name: str, root: str, fold: int, num_folds: int, seed: int) -> tuple[Split, Split]:
    """The 2018 split of the 60k training images into train and validation folds.

    Indexed as bytes, then converted: a quarter of the memory traffic, the same floats.
    """
    images, labels = _load_bytes(name, root, train=True)
    tr, va = kfold_indices(labels, fold, num_folds, seed)
    tr_t, va_t = torch.from_numpy(tr), torch.from_numpy(va)
    return _as_split(images[tr_t], labels[tr_t]), _as_split(images[va_t], labels[va_t])


def pixel_mean_std(x: torch.Tensor) -> tuple[float, float]:
    """Mean and std of every pixel of ``x`` (the --normalize statistics), as floats."""
    x64 = x.to(torch.float64)  # 37M pixels: float32 sums lose digits
    return float(x64.mean()), float(x64.std())


def augment_batch(x: torch.Tensor, generator: torch.Generator | None = None,
                  flip_p: float = 0.25, max_degrees: float = 30.0,
                  shard: tuple[int, int] | None = None) -> torch.Tensor:
    """The 2018 augmentations on a whole batch: horizontal flip (p=0.25), rotation up to 30 deg.

    Random numbers come from ``generator`` (on the CPU) so resumed runs replay them exactly.
    ``shard=(start, total)``: ``x`` is rows start.. of a minibatch of ``total`` images (one
    torchrun rank's part); numbers are drawn for the whole minibatch and this part's are used.
    """
    start, b = shard if shard is not None else (0, x.shape[0])
    flip = torch.rand(b, generator=generator) < flip_p
    angle = (torch.rand(b, generator=generator) * 2 - 1) * math.radians(max_degrees)
    if shard is not None:
        rows = slice(start, start + x.shape[0])
        flip, angle, b = flip[rows], angle[rows], x.shape[0]
    cos, sin = torch.cos(angle), torch.sin(angle)
    sx = torch.where(flip, -1.0, 1.0)  # flipping x is a sign change of the first column
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = cos * sx
    theta[:, 0, 1] = -sin
    theta[:, 1, 0] = sin * sx
    theta[:, 1, 1] = cos
    if x.is_cuda:  # pinned + non_blocking: no host sync per step
        theta = theta.pin_memory().to(x.device, non_blocking=True)
    theta = theta.to(x.device, x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
