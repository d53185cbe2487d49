"""The datasets as whole tensors, the 2018 validation split, and batch augmentations.

MNIST, Fashion-MNIST, KMNIST, CIFAR-10, SVHN and CelebA are read through torchvision's dataset
classes (its folder layout under ``--data_root``); ``folder`` is a folder of the user's own
images. JPEG/PNG files are decoded once, then cached. Any dataset can be resized
(``image_size``) and converted to grey or colour (``channels``). A split's images are one uint8
tensor (N, C, H, W); :func:`place_images` puts it where training reads it (float32 in host memory
when small, else uint8 on the device or streamed) and a batch is an index copy converted by
:func:`as_float`, so the training loop never touches PIL or per-sample Python.
"""
from __future__ import annotations

import gzip
import math
import os
import shutil
import socket
import sys
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from models import shape_problem
from utils import MAX_IMAGE_SIZE, VaeLabError, fraction, int_in

# the IDX datasets: torchvision's class (and so folder) name of each
FOLDERS = {"mnist": "MNIST", "fmnist": "FashionMNIST", "kmnist": "KMNIST"}
# the other torchvision datasets: where their files must be (under --data_root), for the offline message
OTHER_TORCHVISION = {
    "cifar10": "cifar-10-batches-py/ (data_batch_1 ... data_batch_5, test_batch, batches.meta: cifar-10-python.tar.gz "
               "unpacked)",
    "svhn": "train_32x32.mat and test_32x32.mat",
    "celeba": "celeba/ (img_align_celeba/ with the 202,599 JPEGs, list_eval_partition.txt, list_attr_celeba.txt, "
              "identity_CelebA.txt, list_bbox_celeba.txt, list_landmarks_align_celeba.txt)",
}
FOLDER = "folder"  # --dataset_type folder: the user's own images under --data_root
DATASET_TYPES = ("fmnist", "mnist", "kmnist", "cifar10", "svhn", "celeba", FOLDER)
# a folder without train/ and test/ sub-folders: this fraction is held out as the test set
# (1/7, as 10k of MNIST's 70k images)
TEST_FRACTION = 1 / 7

CLASS_NAMES = {
    "mnist": [str(i) for i in range(10)],
    "kmnist": ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"],  # Kuzushiji-MNIST's hiragana
    "svhn": [str(i) for i in range(10)],  # torchvision maps SVHN's label 10 to the digit 0
    "fmnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
}

# Debian's package `dataset-fashion-mnist` puts the four official .gz files here.
DEBIAN_FMNIST_DIR = "/usr/share/datasets/fashion-mnist"
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _torchvision_datasets() -> dict:
    from torchvision import datasets as tv_datasets  # here: seconds, and --help needs none of it

    return {"mnist": tv_datasets.MNIST, "fmnist": tv_datasets.FashionMNIST, "kmnist": tv_datasets.KMNIST,
            "cifar10": tv_datasets.CIFAR10, "svhn": tv_datasets.SVHN, "celeba": tv_datasets.CelebA}


def __getattr__(name: str):
    # DATASETS (name -> torchvision class) is built on first use, so importing this
    # module does not import torchvision.
    if name == "DATASETS":
        return _torchvision_datasets()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class Split:
    """One set of images: ``x`` (N, C, H, W), uint8 as stored (a quarter of float32's memory;
    :func:`as_float` converts a batch) or float in [0, 1]; ``y`` int64 (N,) class indices;
    ``classes``: the class names, None for a folder without class sub-folders (y all 0)."""

    x: torch.Tensor
    y: torch.Tensor
    classes: list[str] | None = None

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
    """Make sure the IDX files are under ``root``: local copy, then Debian's, then download
    (nothing to fetch for a folder of one's own images)."""
    if name == FOLDER:
        return
    if name in OTHER_TORCHVISION:
        for train in (True, False):
            _open_torchvision(name, root, train)
        return
    if name not in FOLDERS:
        raise VaeLabError(f"unknown dataset {name!r}; choose from {sorted(DATASET_TYPES)}")
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


def load_split(name: str, root: str, train: bool, image_size: int | None = None, channels: int | None = None,
               test_fraction: float = TEST_FRACTION) -> Split:
    """The training or test set as tensors on the CPU (for MNIST / Fashion-MNIST the official
    60k / 10k), resized to ``image_size`` and converted to ``channels`` when given."""
    images, labels, classes = _load_bytes(name, root, train, image_size, channels, test_fraction)
    return _as_split(images, labels, classes)


def _as_split(images: torch.Tensor, labels: torch.Tensor, classes: list[str] | None) -> Split:
    return Split(x=images.contiguous(), y=labels.to(torch.int64), classes=classes)


def as_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 in [0, 1] (k / 255, the values torchvision's ToTensor gives);
    float images are returned as they are. Applied per batch, on the batch's device."""
    return x.to(torch.float32).div_(255.0) if x.dtype == torch.uint8 else x


def _load_bytes(name: str, root: str, train: bool, image_size: int | None, channels: int | None,
                test_fraction: float) -> tuple[torch.Tensor, torch.Tensor, list[str] | None]:
    """Images (N, C, H, W) and labels (N,) as uint8 / int64, and the class names."""
    if name == FOLDER:
        return _folder_bytes(root, train, image_size, channels, test_fraction)
    if name in OTHER_TORCHVISION:
        return _torchvision_bytes(name, root, train, image_size, channels)
    images, labels = _idx_bytes(name, root, train)
    return reshape_images(images.unsqueeze(1), image_size, channels), labels, CLASS_NAMES[name]


def _open_torchvision(name: str, root: str, train: bool, split: str | None = None) -> Any:
    """torchvision's dataset object of CIFAR-10, SVHN or CelebA (``split``: its own split name): the
    files under ``root``, else downloaded; offline, one line naming the files and where they must be."""
    kwargs = {"train": train} if name == "cifar10" else {"split": split or ("train" if train else "test")}
    cls = _torchvision_datasets()[name]
    try:
        return cls(root, download=False, **kwargs)
    except Exception:  # RuntimeError "not found or corrupted" (torchvision checks the files' md5)
        pass
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)  # a dead network should fail in seconds, not hang
    try:
        os.makedirs(root, exist_ok=True)
        return cls(root, download=True, **kwargs)
    except Exception as e:  # URLError, OSError, RuntimeError (Google Drive quota for CelebA), ...
        raise VaeLabError(f"{name} is not under {root!r} and downloading it failed ({type(e).__name__}); connect to "
                          f"the internet, or put {OTHER_TORCHVISION[name]} in {root!r}") from None
    finally:
        socket.setdefaulttimeout(old_timeout)


def _torchvision_bytes(name: str, root: str, train: bool, image_size: int | None, channels: int | None
                       ) -> tuple[torch.Tensor, torch.Tensor, list[str] | None]:
    """CIFAR-10 and SVHN as torchvision holds them (uint8 arrays); CelebA's aligned JPEGs (no
    labels: its 40 attributes are not classes) decoded once and cached beside them."""
    if name == "celeba":  # training: CelebA's train and valid partitions (the folds are ours)
        parts = [_open_torchvision(name, root, train, split) for split in (("train", "valid") if train else ("test",))]
        base = os.path.join(parts[0].root, parts[0].base_folder, "img_align_celeba")
        files = [f for ds in parts for f in ds.filename]
        x = decoded_images(base, files, image_size, channels, tag="train" if train else "test")
        return x, torch.zeros(len(x), dtype=torch.int64), None
    ds = _open_torchvision(name, root, train)
    if name == "cifar10":
        x, y, classes = torch.from_numpy(ds.data).permute(0, 3, 1, 2), torch.tensor(ds.targets), list(ds.classes)
    else:  # svhn: stored (N, 3, 32, 32)
        x, y, classes = torch.from_numpy(ds.data), torch.from_numpy(ds.labels).long(), CLASS_NAMES["svhn"]
    return reshape_images(x.contiguous(), image_size, channels), y, classes


def _idx_bytes(name: str, root: str, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
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


def train_val_split(name: str, root: str, fold: int, num_folds: int, seed: int, image_size: int | None = None,
                    channels: int | None = None, test_fraction: float = TEST_FRACTION) -> tuple[Split, Split]:
    """The 2018 split of the training images (60k for MNIST / Fashion-MNIST) into train and
    validation folds.

    Indexed as bytes, then converted: a quarter of the memory traffic, the same floats.
    """
    images, labels, classes = _load_bytes(name, root, True, image_size, channels, test_fraction)
    tr, va = kfold_indices(labels, fold, num_folds, seed)
    tr_t, va_t = torch.from_numpy(tr), torch.from_numpy(va)
    return _as_split(images[tr_t], labels[tr_t], classes), _as_split(images[va_t], labels[va_t], classes)


def add_data_args(g: Any) -> None:
    """The data flags (``g``: a parser or an argument group): which images, and their shape."""
    g.add_argument("--dataset_type", choices=DATASET_TYPES, default="fmnist",
                   help="fmnist: Fashion-MNIST; mnist, kmnist, cifar10, svhn, celeba: torchvision's (downloaded "
                        "when online; Debian's Fashion-MNIST used offline); folder: the images (png, jpg, bmp, webp) "
                        "under --data_root, labelled by their class sub-folders if any, split by train/ and test/ "
                        "sub-folders if any")
    g.add_argument("--data_root", default="data", help="dataset folder (torchvision layout, or your images)")
    g.add_argument("--image_size", type=int_in(4, MAX_IMAGE_SIZE), default=None,
                   help="centre-crop to a square and resize every image to N x N (default: the data's own size)")
    g.add_argument("--channels", type=int, choices=[1, 3], default=None,
                   help="convert the images to grey (1) or colour (3) (default: the data's own)")
    g.add_argument("--test_fraction", type=fraction, default=TEST_FRACTION,
                   help="folder without train/ and test/: the fraction held out (seeded, stratified) as the test "
                        "set, the same images whatever --seed")


def check_fits_model(train: Split, model_type: str, conditional: bool, data_root: str) -> None:
    """One line when the loaded images do not suit the model: their shape, or no classes for a CVAE."""
    problem = shape_problem(model_type, *train.x.shape[1:3])
    if problem:
        raise VaeLabError(problem)
    if conditional and len(train.classes or []) < 2:
        raise VaeLabError(f"--conditional True needs images of two classes or more; {data_root!r} has "
                          f"{'no class sub-folders' if train.classes is None else 'one class'}")


def data_options(args: Any) -> dict:
    """The data flags of a run (a namespace or a checkpoint's saved args) as keyword arguments
    of :func:`load_split` / :func:`train_val_split`; runs from before these flags get the defaults."""
    get = args.get if isinstance(args, dict) else lambda key, default: getattr(args, key, default)
    return {"image_size": get("image_size", None), "channels": get("channels", None),
            "test_fraction": get("test_fraction", TEST_FRACTION)}


def reshape_images(images: torch.Tensor, image_size: int | None, channels: int | None) -> torch.Tensor:
    """uint8 images (N, C, H, W) centre-cropped to a square and resized to ``image_size`` (when
    given and not already that size), then converted to ``channels`` (grey: ITU-R 601 luma, as PIL's
    "L"; colour: the grey plane three times)."""
    from torchvision.transforms.v2 import functional as TF  # here: seconds, and --help needs none of it

    if image_size is not None and tuple(images.shape[-2:]) != (image_size, image_size):
        side = min(images.shape[-2:])
        images = TF.resize(TF.center_crop(images, [side, side]), [image_size, image_size], antialias=True)
    if channels is not None and images.shape[1] != channels:
        images = (TF.rgb_to_grayscale(images) if channels == 1 else images.expand(-1, 3, -1, -1)).contiguous()
    return images


def _free_bytes(device: torch.device) -> int | None:
    """Free memory of ``device`` (the host's available RAM for the CPU), None if unknown."""
    try:
        if device.type == "cuda":
            return torch.cuda.mem_get_info(device)[0]
        if device.type == "mps":
            return torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory()
        if os.path.isfile("/proc/meminfo"):  # Linux: MemAvailable counts the page cache it would give back
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError, RuntimeError):  # not Linux, no such device API
        return None


def place_images(x: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, str]:
    """Where a split's uint8 images live while training, and a few words that say so.

    On the CPU: float32 when that copy takes under a quarter of the available memory (a batch is
    then a plain slice: converting each batch costs ~5% of a default fc_conv step there), else
    uint8. On an accelerator: uint8 on the device when it takes under half of its free memory,
    else uint8 in pinned host memory, each batch copied over (non-blocking).
    """
    if x.dtype != torch.uint8:
        return x.to(device), f"{x.dtype} on {device.type}"
    free, size = _free_bytes(device), x.numel()
    mib = lambda n: f"{n / 2**20:,.0f} MiB"  # noqa: E731
    if device.type == "cpu":
        if free is None or 4 * size < free / 4:
            return as_float(x), f"float32 in memory ({mib(4 * size)})"
        return x, f"uint8 in memory ({mib(size)}), converted per batch"
    if free is None or size < free / 2:
        return x.to(device), f"uint8 on {device.type} ({mib(size)}), converted per batch"
    return x.pin_memory(), f"uint8 in pinned host memory ({mib(size)}), streamed to {device.type} per batch"


def pixel_mean_std(x: torch.Tensor) -> tuple[float, float]:
    """Mean and std of every pixel of ``x`` (the --normalize statistics), as floats."""
    x64 = as_float(x).to(torch.float64)  # 37M pixels: float32 sums lose digits
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


# --- --dataset_type folder: a folder of the user's own images -------------------------------------
# Hand-written rather than torchvision's ImageFolder: that class needs class sub-folders, returns
# one PIL image per __getitem__, and has no cache; here a folder may be flat (no labels), has
# optional train/ and test/ splits, and is decoded once into one uint8 tensor, cached on disk.

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
CACHE_DIR = ".vae_lab_cache"  # under --data_root
CACHE_FORMAT = 1
HOLDOUT_SEED = 0  # the held-out test set does not move with --seed: every run is tested on the same images


def _image_files(folder: str) -> list[str]:
    """Image files under ``folder`` (recursively, hidden folders skipped), as sorted relative paths."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [os.path.relpath(os.path.join(dirpath, f), folder) for f in filenames
                  if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")]
    return sorted(found)


def _scan_folder(root: str) -> tuple[list[str], bool]:
    """The image files (relative to ``root``) and whether ``root`` has train/ and test/ splits."""
    if not os.path.isdir(root):
        raise VaeLabError(f"--data_root {root!r} is not a folder; --dataset_type folder reads the images in it")
    has_splits = all(os.path.isdir(os.path.join(root, d)) for d in ("train", "test"))
    files = ([os.path.join(d, f) for d in ("train", "test") for f in _image_files(os.path.join(root, d))]
             if has_splits else _image_files(root))
    if not files:
        raise VaeLabError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) under {root!r}")
    return files, has_splits


def _labels(files: list[str], has_splits: bool) -> tuple[list[int], list[str] | None]:
    """Class index per file from its first sub-folder (ImageFolder's convention), or all 0 with
    no classes when some image lies outside a class folder."""
    within = [f.split(os.sep, 1)[1] if has_splits else f for f in files]
    if any(os.sep not in f for f in within):
        return [0] * len(files), None
    classes = sorted({f.split(os.sep, 1)[0] for f in within})
    index = {c: i for i, c in enumerate(classes)}
    return [index[f.split(os.sep, 1)[0]] for f in within], classes


def _decode(path: str, channels: int | None) -> torch.Tensor:
    """One image file as uint8 (C, H, W): grey or RGB as stored (``channels`` when given)."""
    from PIL import Image  # here: only folders decode images

    with Image.open(path) as im:
        mode = {1: "L", 3: "RGB"}.get(channels or 0) or ("L" if im.mode in ("1", "L", "I;16", "I", "F") else "RGB")
        array = np.asarray(im.convert(mode))
    return torch.from_numpy(array.copy()).reshape(array.shape[0], array.shape[1], -1).permute(2, 0, 1)


def _decode_all(root: str, files: list[str], image_size: int | None, channels: int | None) -> torch.Tensor:
    """Every file decoded (threads: PIL releases the GIL while decoding), resized, stacked."""
    from concurrent.futures import ThreadPoolExecutor

    def one(f: str) -> torch.Tensor | Exception:
        try:
            return _decode(os.path.join(root, f), channels)
        except Exception as e:  # PIL raises OSError, SyntaxError, ValueError... on damaged files
            return e

    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        images = list(pool.map(one, files))
    bad = [f for f, im in zip(files, images) if isinstance(im, Exception)]
    if bad:
        raise VaeLabError(f"{len(bad)} of {len(files)} image files under {root!r} cannot be read: "
                          f"{', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}; remove or repair them")
    if channels is None and len({im.shape[0] for im in images}) > 1:
        images = [im.expand(3, -1, -1) for im in images]  # grey and colour mixed: all colour
    if image_size is None:
        sizes = sorted({tuple(im.shape[1:]) for im in images})
        if len(sizes) > 1:
            raise VaeLabError(f"the images under {root!r} have {len(sizes)} different sizes (e.g. "
                              f"{sizes[0][1]}x{sizes[0][0]} and {sizes[-1][1]}x{sizes[-1][0]}); pass --image_size N "
                              "to centre-crop and resize them all to N x N")
        if sizes[0][0] != sizes[0][1]:
            raise VaeLabError(f"the images under {root!r} are {sizes[0][1]}x{sizes[0][0]}, not square; pass "
                              "--image_size N to centre-crop and resize them to N x N")
        return torch.stack(images)
    return torch.cat([reshape_images(im[None], image_size, channels) for im in images])


def _cache_key(base: str, files: list[str], image_size: int | None, channels: int | None) -> str:
    import hashlib

    h = hashlib.sha256(repr((CACHE_FORMAT, image_size, channels)).encode())
    for f in files:
        st = os.stat(os.path.join(base, f))
        h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def _read_cache(path: str, n: int) -> torch.Tensor | None:
    """The cached images, or None when absent, unreadable or not what the key promises."""
    if not os.path.isfile(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            x = z["x"]
        if x.dtype != np.uint8 or x.ndim != 4 or len(x) != n:
            raise ValueError("shapes")
    except Exception as e:  # a damaged cache is rebuilt, never trusted
        print(f"vae-lab: the image cache {path!r} is unreadable ({type(e).__name__}); decoding the images again",
              file=sys.stderr)
        return None
    return torch.from_numpy(x)


def _write_cache(path: str, x: torch.Tensor, tag: str) -> None:
    """Written atomically; older caches of the same ``tag`` (other files, sizes) are removed."""
    folder = os.path.dirname(path)
    try:
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".{os.getpid()}.{threading.get_ident()}.part")
        with open(tmp, "wb") as f:
            np.savez(f, x=x.numpy())
        os.replace(tmp, path)
    except OSError as e:  # a read-only data folder: the run goes on, the next one decodes again
        print(f"vae-lab: could not cache the decoded images in {folder!r} ({e.strerror or e})", file=sys.stderr)
        return
    for old in os.listdir(folder):
        if old.startswith(tag + "-") and old.endswith(".npz") and old != os.path.basename(path):
            os.remove(os.path.join(folder, old))


def decoded_images(base: str, files: list[str], image_size: int | None, channels: int | None,
                   tag: str = "all") -> torch.Tensor:
    """The image files (relative to ``base``) as one uint8 tensor (N, C, H, W), decoded once and
    cached in ``base``/.vae_lab_cache/ under a key of the file list, sizes, mtimes and the shape
    asked for; ``tag`` names a set of files whose older caches a new one replaces."""
    path = os.path.join(base, CACHE_DIR, f"{tag}-{_cache_key(base, files, image_size, channels)}.npz")
    x = _read_cache(path, len(files))
    if x is None:
        x = _decode_all(base, files, image_size, channels)
        _write_cache(path, x, tag)
    return x


def _folder_bytes(root: str, train: bool, image_size: int | None, channels: int | None, test_fraction: float
                  ) -> tuple[torch.Tensor, torch.Tensor, list[str] | None]:
    """The training or test images of a folder: its train/ or test/ sub-folder, or else the
    rest or the seeded, stratified (by class, when there are classes) hold-out of ``test_fraction``."""
    files, has_splits = _scan_folder(root)
    labels, classes = _labels(files, has_splits)
    x, y = decoded_images(root, files, image_size, channels), torch.tensor(labels, dtype=torch.int64)
    if has_splits:
        is_test = torch.tensor([f.startswith("test" + os.sep) for f in files])
        keep = is_test if not train else ~is_test
    else:
        from sklearn.model_selection import train_test_split  # imported here: ~1 s, needed once

        n = len(y)
        if n < 2:
            raise VaeLabError(f"{root!r} holds {n} image; a training and a test set need at least 2")
        y_np = y.numpy()
        # stratified where it can be: every class twice or more, and a test set as large as the classes
        stratify = (y_np if classes is not None and np.bincount(y_np).min() >= 2
                    and math.ceil(n * test_fraction) >= len(classes) else None)
        try:
            _, test_idx = train_test_split(np.arange(n), test_size=test_fraction, random_state=HOLDOUT_SEED,
                                           stratify=stratify)
        except ValueError as e:  # e.g. fewer test images than classes
            raise VaeLabError(f"cannot hold out --test_fraction {test_fraction:g} of the {n} images under {root!r} "
                              f"({str(e).splitlines()[0]})") from None
        keep = torch.zeros(n, dtype=torch.bool)
        keep[torch.from_numpy(test_idx)] = True
        keep = keep if not train else ~keep
    if not keep.any():
        raise VaeLabError(f"the {'training' if train else 'test'} set of {root!r} is empty")
    idx = keep.nonzero().squeeze(1)
    return x[idx], y[idx], classes
