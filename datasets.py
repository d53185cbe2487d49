"""The datasets as whole tensors, the 2018 validation split, and batch augmentations.

MNIST, Fashion-MNIST, KMNIST, CIFAR-10, SVHN and CelebA are read through torchvision's dataset
classes (its folder layout under ``--data_root``); ``folder`` is a folder of the user's own
images. JPEG/PNG files are decoded once, then cached. Any dataset can be resized
(``image_size``) and converted to grey or colour (``channels``). A split's images are one uint8
tensor (N, C, H, W); :func:`place_images` puts it where training reads it (float32 in host memory
when small, else uint8 on the device or streamed) and a batch is an index copy converted by
:func:`as_float`, so the training loop never touches PIL or per-sample Python.

This module is the face the rest of the code imports; the work is done in dataio/ (its
docstring says which module holds what). Here: the data flags, and whether the images suit the model.
"""
from __future__ import annotations

from typing import Any

from dataio.augment import augment_batch
from dataio.folders import CACHE_DIR, CACHE_FORMAT, HOLDOUT_SEED, IMAGE_EXTENSIONS, TEST_FRACTION, decoded_images
from dataio.placement import as_float, pixel_mean_std, place_images
from dataio.reshape import reshape_images
from dataio.sources import (CLASS_NAMES, DATASET_TYPES, DEBIAN_FMNIST_DIR, FOLDER, FOLDERS, IDX_FILES,
                            OTHER_TORCHVISION, _torchvision_datasets, ensure_raw_files)
from dataio.split import Split, kfold_indices, load_split, train_val_split
from models import shape_problem
from utils import MAX_IMAGE_SIZE, VaeLabError, fraction, int_in

# DATASETS is left out: listing it would make `from datasets import *` import torchvision
__all__ = ["CACHE_DIR", "CACHE_FORMAT", "CLASS_NAMES", "DATASET_TYPES", "DEBIAN_FMNIST_DIR", "FOLDER", "FOLDERS",
           "HOLDOUT_SEED", "IDX_FILES", "IMAGE_EXTENSIONS", "OTHER_TORCHVISION", "Split", "TEST_FRACTION",
           "add_data_args", "as_float", "augment_batch", "check_fits_model", "data_options", "decoded_images",
           "ensure_raw_files", "kfold_indices", "load_split", "pixel_mean_std", "place_images", "reshape_images",
           "train_val_split"]


def __getattr__(name: str):
    # DATASETS (name -> torchvision class) is built on first use, so importing this
    # module does not import torchvision.
    if name == "DATASETS":
        return _torchvision_datasets()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
