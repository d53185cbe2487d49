"""Lossless codecs beside the model: bits per dimension of PNG, WebP lossless and xz on the very
images --evaluate scores.

A likelihood model of 8-bit images is a lossless compressor: with bits-back coding its negative
ELBO (and, with more samples, its IWAE bound) in bits per dimension is the file size it would
reach, per pixel and channel. The codecs set the bar: PNG and WebP compress each image alone
(the file a user would keep: its headers count), xz compresses the whole split's raw bytes at once
(the strongest general-purpose baseline: it may exploit what images share). Each codec runs at its
strongest standard setting (PNG optimize, WebP lossless quality 100 method 6, xz -9e). PIL and the
standard library's lzma do the coding; nothing here is hand-written compression.

WebP at method 6 costs ~10 ms per 28x28 image, so a split's figures are cached by the hash of its
bytes (``--weights_dir``/codecs/), like the FID classifier.
"""
from __future__ import annotations

import hashlib
import io
import json
import lzma
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch
from PIL import Image

from fileio.atomic import write_json

CODECS = ("png", "webp", "xz")
CODEC_FORMAT = 1  # bump when a codec's settings change: the cached figures are then recomputed
_WORKERS = min(2, os.cpu_count() or 1)


def _pil_images(x: np.ndarray) -> list[Image.Image]:
    """uint8 (N, C, H, W) -> PIL images (grey or RGB)."""
    if x.shape[1] == 1:
        return [Image.fromarray(im[0], "L") for im in x]
    return [Image.fromarray(np.ascontiguousarray(im.transpose(1, 2, 0)), "RGB") for im in x]


def _image_bytes(x: np.ndarray) -> tuple[int, int]:
    """Total bytes of each image of ``x`` saved alone as PNG and as lossless WebP."""
    png = webp = 0
    for im in _pil_images(x):
        buf = io.BytesIO()
        im.save(buf, "PNG", optimize=True)
        png += buf.tell()
        buf = io.BytesIO()
        im.save(buf, "WEBP", lossless=True, quality=100, method=6)
        webp += buf.tell()
    return png, webp


def codec_bits(x: torch.Tensor) -> dict[str, float]:
    """Bits per dimension of each codec on the uint8 images ``x`` (N, C, H, W)."""
    if x.dtype != torch.uint8:
        raise ValueError("the codecs compress 8-bit images: pass the split's uint8 tensor")
    arr = x.numpy()
    dims = arr.size
    chunks = [c for c in np.array_split(arr, _WORKERS * 4) if len(c)]
    if _WORKERS > 1 and len(arr) >= 256:  # the per-image codecs in parallel, in chunks
        with ProcessPoolExecutor(_WORKERS) as pool:
            sizes = list(pool.map(_image_bytes, chunks))
    else:
        sizes = [_image_bytes(c) for c in chunks]
    xz = len(lzma.compress(arr.tobytes(), preset=9 | lzma.PRESET_EXTREME))
    return {"png_bits_per_dim": 8 * sum(s[0] for s in sizes) / dims,
            "webp_bits_per_dim": 8 * sum(s[1] for s in sizes) / dims,
            "xz_bits_per_dim": 8 * xz / dims}


def cached_codec_bits(x: torch.Tensor, cache_dir: str) -> dict[str, float]:
    """:func:`codec_bits`, read from ``cache_dir`` when these very bytes were measured before."""
    h = hashlib.sha256(str((CODEC_FORMAT, tuple(x.shape))).encode())
    h.update(x.numpy().tobytes())
    path = os.path.join(cache_dir, f"{h.hexdigest()[:20]}.json")
    try:
        with open(path) as f:
            cached = json.load(f)
        if set(cached) == {f"{c}_bits_per_dim" for c in CODECS}:
            return cached
    except (OSError, ValueError):
        pass  # missing or damaged: measure again
    bits = codec_bits(x)
    try:
        os.makedirs(cache_dir, exist_ok=True)
        write_json(path, bits)
    except OSError:
        pass  # a cache that cannot be written costs time, not the result
    return bits
