"""Folders of image files for ``--dataset_type folder``, written by the tests themselves."""
from __future__ import annotations

import os

import numpy as np
from PIL import Image


def class_image(rng: np.random.Generator, cls: int, size: tuple[int, int], channels: int) -> np.ndarray:
    """A uint8 image whose class shows: a bright band at a class-dependent height, plus noise
    (colour images also get a class-dependent hue)."""
    h, w = size
    img = rng.integers(0, 40, (h, w, channels), dtype=np.uint8)
    top = (cls * h) // 4
    img[top:top + max(1, h // 4)] = 220
    if channels == 3:
        img[..., cls % 3] = np.maximum(img[..., cls % 3], 120)
    return img


def write_image_folder(root: str, n: int = 60, classes: int = 3, layout: str = "classes",
                       size: tuple[int, int] = (16, 16), channels: int = 1, ext: str = "png",
                       seed: int = 0) -> str:
    """``n`` images in ``root``: ``layout`` "classes" (root/<class>/), "flat" (no labels) or
    "splits" (root/train/<class>/ and root/test/<class>/, every 5th image a test image)."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        cls = i % classes
        folder = {"classes": os.path.join(root, f"c{cls}"), "flat": root,
                  "splits": os.path.join(root, "test" if i % 5 == 0 else "train", f"c{cls}")}[layout]
        os.makedirs(folder, exist_ok=True)
        img = class_image(rng, cls, size, channels)
        Image.fromarray(img[..., 0] if channels == 1 else img).save(os.path.join(folder, f"im{i:04d}.{ext}"))
    return root

