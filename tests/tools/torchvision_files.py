"""Tiny CIFAR-10, SVHN and CelebA files in the layouts torchvision reads, written by the tests.

torchvision checks these datasets' md5 sums, which generated files cannot match: tests that
read them also patch the classes' ``_check_integrity`` (see tests/test_datasets_torchvision.py).
"""
from __future__ import annotations

import os
import pickle

import numpy as np
from PIL import Image

from tools.image_folders import class_image

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _images(n: int, size: tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    return np.stack([class_image(rng, int(c), size, 3) for c in y]), y


def write_cifar10(root: str, per_batch: int = 12, test: int = 12) -> str:
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        x, y = _images(test if name == "test_batch" else per_batch, (32, 32), i)
        entry = {"data": x.transpose(0, 3, 1, 2).reshape(len(x), -1), "labels": y.tolist()}
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump(entry, f)
    with open(os.path.join(folder, "batches.meta"), "wb") as f:
        pickle.dump({"label_names": CIFAR_CLASSES}, f)
    return root


def write_svhn(root: str, train: int = 40, test: int = 12) -> str:
    import scipy.io as sio

    os.makedirs(root, exist_ok=True)
    for name, n, seed in (("train_32x32.mat", train, 0), ("test_32x32.mat", test, 1)):
        x, y = _images(n, (32, 32), seed)
        labels = np.where(y == 0, 10, y)  # SVHN stores the digit 0 as 10
        sio.savemat(os.path.join(root, name), {"X": x.transpose(1, 2, 3, 0), "y": labels[:, None]})
    return root


def write_celeba(root: str, n: int = 30) -> str:
    """``n`` 20 x 24 (w x h) JPEGs; partition: every 5th image test, every 7th validation."""
    folder = os.path.join(root, "celeba")
    os.makedirs(os.path.join(folder, "img_align_celeba"), exist_ok=True)
    x, _ = _images(n, (24, 20), 0)
    names = [f"{i + 1:06d}.jpg" for i in range(n)]
    for name, img in zip(names, x):
        Image.fromarray(img).save(os.path.join(folder, "img_align_celeba", name))
    part = [2 if i % 5 == 0 else 1 if i % 7 == 0 else 0 for i in range(n)]
    with open(os.path.join(folder, "list_eval_partition.txt"), "w") as f:
        f.writelines(f"{name} {p}\n" for name, p in zip(names, part))
    with open(os.path.join(folder, "identity_CelebA.txt"), "w") as f:
        f.writelines(f"{name} {i}\n" for i, name in enumerate(names))
    for fname, header, values in (("list_bbox_celeba.txt", "image_id x_1 y_1 width height", "0 0 20 24"),
                                  ("list_landmarks_align_celeba.txt", "lefteye_x lefteye_y", "5 5"),
                                  ("list_attr_celeba.txt", "Smiling Male", "1 -1")):
        with open(os.path.join(folder, fname), "w") as f:
            f.write(f"{n}\n{header}\n")
            f.writelines(f"{name} {values}\n" for name in names)
    return root
