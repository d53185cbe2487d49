"""A split's images as one tensor (:class:`Split`): a dataset's training or test set, and the 2018
validation split of the training set."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch

from core.errors import VaeLabError
from dataio import dsprites
from dataio.folders import TEST_FRACTION
from dataio.reshape import reshape_images
from dataio.sources import _load_bytes
from fileio.atomic import atomic_write


@dataclass
class Split:
    """One set of images: ``x`` (N, C, H, W), uint8 as stored (a quarter of float32's memory;
    :func:`as_float` converts a batch) or float in [0, 1]; ``y`` int64 (N,) class indices;
    ``classes``: the class names, None for a folder without class sub-folders (y all 0); ``notes``:
    what decoding the files did that the run's first line says (bit depths scaled, files skipped).
    A factor data set (dsprites) also keeps each image's ``factors``: int64 (N, F), the index of its value
    of each factor named in ``factor_names`` (the values: dataio/dsprites.py); ``y`` is one of them."""

    x: torch.Tensor
    y: torch.Tensor
    classes: list[str] | None = None
    notes: list[str] = field(default_factory=list)
    factors: torch.Tensor | None = None
    factor_names: list[str] | None = None
    dataset: str = ""  # the data set's name (dsprites_colour: what renders more images of its factors)

    def __len__(self) -> int:
        return self.x.shape[0]


def load_split(name: str, root: str, train: bool, image_size: int | None = None, channels: int | None = None,
               test_fraction: float = TEST_FRACTION, background: str = "white", factor: str = "",
               factor_images: int = 0) -> Split:
    """The training or test set as tensors on the CPU (for MNIST / Fashion-MNIST the official
    60k / 10k), resized to ``image_size`` and converted to ``channels`` when given; transparent
    pixels of image files composited onto ``background`` (dataio/decode.py). A factor data set: its
    ``factor`` (default: the shape) as the class, ``factor_images`` of its grid (0: all; factor_split)."""
    if name in dsprites.FACTOR_SETS:
        return factor_split(name, root, train, factor, factor_images, test_fraction, image_size, channels)
    check_factor_flags(name, factor, factor_images)
    images, labels, classes, notes = _load_bytes(name, root, train, image_size, channels, test_fraction, background)
    return _as_split(images, labels, classes, notes)


def check_factor_flags(name: str, factor: str, factor_images: int) -> None:
    """One line when --factor names no factor of ``name``, or is given for data without factors."""
    if name in dsprites.FACTOR_SETS:
        factor_label(name, factor)
    elif factor or factor_images:
        raise VaeLabError(f"--factor and --factor_images need a factor data set ({', '.join(dsprites.FACTOR_SETS)}),"
                          f" not --dataset_type {name}")


def factor_label(name: str, factor: str) -> int:
    """The column of ``factor`` (default: the shape) among ``name``'s factors; one line if it has none such."""
    names = list(dsprites.FACTOR_SETS[name])
    if (factor or "shape") not in names:
        raise VaeLabError(f"--factor {factor}: {name} has no such factor; choose from {', '.join(names)}")
    return names.index(factor or "shape")


def factor_split(name: str, root: str, train: bool, factor: str = "", images: int = 0,
                 test_fraction: float = TEST_FRACTION, image_size: int | None = None, channels: int | None = None
                 ) -> Split:
    """A factor data set's training or test images (dataio/dsprites.chosen_indices), labelled by ``factor``."""
    column = factor_label(name, factor)
    index = dsprites.chosen_indices(name, images, train, test_fraction)
    x, source = dsprites.images_of(name, root, index)
    factors = torch.from_numpy(dsprites.factor_indices(name, index))
    return Split(x=reshape_images(x, image_size, channels).contiguous(), y=factors[:, column].clone(),
                 classes=dsprites.class_names(name, list(dsprites.FACTOR_SETS[name])[column]), notes=[source],
                 factors=factors, factor_names=list(dsprites.FACTOR_SETS[name]), dataset=name)


def subset(data: Split, index: torch.Tensor) -> Split:
    """The images of ``data`` at ``index``, with their labels and factors."""
    return Split(x=data.x[index.to(data.x.device)], y=data.y[index], classes=data.classes, notes=data.notes,
                 factors=None if data.factors is None else data.factors[index], factor_names=data.factor_names,
                 dataset=data.dataset)


def _as_split(images: torch.Tensor, labels: torch.Tensor, classes: list[str] | None, notes: list[str]) -> Split:
    return Split(x=images.contiguous(), y=labels.to(torch.int64), classes=classes, notes=list(notes))


def kfold_indices(targets: torch.Tensor | np.ndarray, fold: int, num_folds: int, seed: int,
                  cache_root: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Train/validation indices of fold ``fold`` of the 2018 StratifiedKFold split (each sorted, as
    scikit-learn gives them). With ``cache_root`` (--data_root), every image's fold is cached under its
    cache folder, keyed by the labels, the split's settings and scikit-learn's version: a run then starts
    without importing scikit-learn (~0.6-1 s of a 2-core start-up, docs/speed.md)."""
    if not 0 <= fold < num_folds:
        raise VaeLabError(f"--fold must be in [0, {num_folds - 1}] for --num_folds {num_folds}, got {fold}")
    if not 0 <= seed < 2 ** 32:
        raise VaeLabError(f"--seed must be in [0, 2**32 - 1] (it seeds the validation split), got {seed}")
    y = np.asarray(targets)
    path = None if cache_root is None else _folds_cache(cache_root, y, num_folds, seed)
    folds = _read_folds(path, len(y), num_folds)
    if folds is None:
        folds = _stratified_folds(y, num_folds, seed)
        if path is not None:
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                atomic_write(path, lambda f: np.save(f, folds))
            except OSError:  # a read-only --data_root: no cache, same split
                pass
    return np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)


def _stratified_folds(y: np.ndarray, num_folds: int, seed: int) -> np.ndarray:
    """Each image's validation fold, from scikit-learn's StratifiedKFold (shuffled, seeded)."""
    from sklearn.model_selection import StratifiedKFold  # imported here: ~1 s, needed once

    folds = np.empty(len(y), dtype=np.int16)
    skf = StratifiedKFold(n_splits=num_folds, shuffle=True, random_state=seed)
    try:
        for i, (_, va) in enumerate(skf.split(np.zeros(len(y)), y)):
            folds[va] = i
    except ValueError as e:  # e.g. more folds than images of every class
        raise VaeLabError(f"cannot split {len(y)} images into --num_folds {num_folds} stratified folds "
                          f"({str(e).splitlines()[0]})") from None
    return folds


def _folds_cache(root: str, y: np.ndarray, num_folds: int, seed: int) -> str:
    import hashlib
    from importlib.metadata import version

    from dataio.folders import CACHE_DIR  # one cache folder for every data set

    key = hashlib.sha256(repr((y.dtype.str, y.shape, num_folds, seed, version("scikit-learn"))).encode())
    key.update(np.ascontiguousarray(y).tobytes())
    return os.path.join(root, CACHE_DIR, f"folds_{key.hexdigest()[:24]}.npy")


def _read_folds(path: str | None, n: int, num_folds: int) -> np.ndarray | None:
    """The cached folds, or None when absent or not what the key promises (a damaged cache is recomputed)."""
    if path is None or not os.path.isfile(path):
        return None
    try:
        folds = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    ok = folds.shape == (n,) and folds.dtype == np.int16 and (n == 0 or 0 <= folds.min() <= folds.max() < num_folds)
    return folds if ok else None


def train_val_split(name: str, root: str, fold: int, num_folds: int, seed: int, image_size: int | None = None,
                    channels: int | None = None, test_fraction: float = TEST_FRACTION, background: str = "white",
                    factor: str = "", factor_images: int = 0) -> tuple[Split, Split]:
    """The 2018 split of the training images (60k for MNIST / Fashion-MNIST) into train and
    validation folds.

    Indexed as bytes, then converted: a quarter of the memory traffic, the same floats.
    """
    if name in dsprites.FACTOR_SETS:
        data = factor_split(name, root, True, factor, factor_images, test_fraction, image_size, channels)
        tr, va = kfold_indices(data.y, fold, num_folds, seed, root)
        return subset(data, torch.from_numpy(tr)), subset(data, torch.from_numpy(va))
    check_factor_flags(name, factor, factor_images)
    images, labels, classes, notes = _load_bytes(name, root, True, image_size, channels, test_fraction, background)
    tr, va = kfold_indices(labels, fold, num_folds, seed, root)
    tr_t, va_t = torch.from_numpy(tr), torch.from_numpy(va)
    return (_as_split(images[tr_t], labels[tr_t], classes, notes),
            _as_split(images[va_t], labels[va_t], classes, notes))
