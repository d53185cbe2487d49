"""Datasets in torchvision's MNIST layout, written by the tests themselves (no download)."""
from __future__ import annotations

import os
import struct

import numpy as np


def write_idx(path: str, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (magic 0x0000 08 ndim, big-endian sizes)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    with open(path, "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, 0x08, array.ndim))
        f.write(struct.pack(">" + "I" * array.ndim, *array.shape))
        f.write(array.tobytes())


def write_dataset(root: str, folder: str, train_x, train_y, test_x, test_y) -> str:
    """Lay out IDX files as torchvision expects: root/<folder>/raw/*-ubyte."""
    raw = os.path.join(root, folder, "raw")
    os.makedirs(raw, exist_ok=True)
    write_idx(os.path.join(raw, "train-images-idx3-ubyte"), train_x)
    write_idx(os.path.join(raw, "train-labels-idx1-ubyte"), train_y)
    write_idx(os.path.join(raw, "t10k-images-idx3-ubyte"), test_x)
    write_idx(os.path.join(raw, "t10k-labels-idx1-ubyte"), test_y)
    return root


def write_tiny_mnist(root: str) -> str:
    """Synthetic MNIST-format files under ``root``: one bright square per class at a
    class-dependent place, 500 training and 100 test images. Returns ``root``."""
    rng = np.random.default_rng(0)

    def make(n):
        y = np.arange(n) % 10
        x = np.zeros((n, 28, 28), dtype=np.uint8)
        for i, c in enumerate(y):
            r, col = 2 + 2 * c, 4 + (c * 7) % 18
            x[i, r:r + 8, col:col + 8] = 200 + rng.integers(0, 55)
        return x, y.astype(np.uint8)

    return write_dataset(root, "MNIST", *make(500), *make(100))
