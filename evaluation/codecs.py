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
IMAGE_CODECS = ("png", "webp")  # the codecs that compress each image alone (xz compresses a whole split)
# each image codec at its strongest standard setting
_SAVE = {"png": {"format": "PNG", "optimize": True},
         "webp": {"format": "WEBP", "lossless": True, "quality": 100, "method": 6}}
CODEC_FORMAT = 1  # bump when a codec's settings change: the cached figures are then recomputed
_WORKERS = min(2, os.cpu_count() or 1)


def _pil_images(x: np.ndarray) -> list[Image.Image]:
    """uint8 (N, C, H, W) -> PIL images (grey or RGB)."""
    if x.shape[1] == 1:
        return [Image.fromarray(im[0], "L") for im in x]
    return [Image.fromarray(np.ascontiguousarray(im.transpose(1, 2, 0)), "RGB") for im in x]


def _image_bytes(x: np.ndarray, codecs: tuple[str, ...] = IMAGE_CODECS, webp_method: int = 6) -> np.ndarray:
    """Bytes of each image of ``x`` saved alone by each of ``codecs`` (PNG, lossless WebP): (N, len(codecs))."""
    out = np.zeros((len(x), len(codecs)), dtype=np.int64)
    for i, im in enumerate(_pil_images(x)):
        for j, codec in enumerate(codecs):
            buf = io.BytesIO()
            im.save(buf, **{**_SAVE[codec], **({"method": webp_method} if codec == "webp" else {})})
            out[i, j] = buf.tell()
    return out


def image_bytes(x: torch.Tensor, codecs: tuple[str, ...] = IMAGE_CODECS, webp_method: int = 6) -> np.ndarray:
    """Bytes of each uint8 image of ``x`` (N, C, H, W) saved alone as a file by each of ``codecs``:
    (N, len(codecs)), in 2 processes for large sets. A complexity estimate per image (anomaly scores)
    and, summed, the codecs' figures of a split. ``webp_method``: WebP's effort, 0-6 (6: the strongest,
    what the codec figures use; 4 is ~35x faster on 28x28 images for ~2% more bytes)."""
    if x.dtype != torch.uint8:
        raise ValueError("the codecs compress 8-bit images: pass the split's uint8 tensor")
    unknown = [c for c in codecs if c not in _SAVE]
    if unknown:
        raise ValueError(f"unknown image codec {unknown[0]!r}; choose from {', '.join(_SAVE)}")
    arr = x.numpy()
    chunks = [c for c in np.array_split(arr, _WORKERS * 4) if len(c)]
    if _WORKERS > 1 and len(arr) >= 256:  # the per-image codecs in parallel, in chunks
        with ProcessPoolExecutor(_WORKERS) as pool:
            sizes = list(pool.map(_image_bytes, chunks, [codecs] * len(chunks), [webp_method] * len(chunks)))
    else:
        sizes = [_image_bytes(c, codecs, webp_method) for c in chunks]
    return np.concatenate(sizes) if sizes else np.zeros((0, len(codecs)), dtype=np.int64)


def codec_bits(x: torch.Tensor) -> dict[str, float]:
    """Bits per dimension of each codec on the uint8 images ``x`` (N, C, H, W)."""
    sizes = image_bytes(x).sum(0)
    dims = x.numel()
    xz = len(lzma.compress(x.numpy().tobytes(), preset=9 | lzma.PRESET_EXTREME))
    return {**{f"{c}_bits_per_dim": 8 * int(n) / dims for c, n in zip(IMAGE_CODECS, sizes)},
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
