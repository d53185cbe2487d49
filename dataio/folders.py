"""--dataset_type folder: a folder of the user's own images.

Hand-written rather than torchvision's ImageFolder: that class needs class sub-folders, returns
one PIL image per __getitem__, and has no cache; here a folder may be flat (no labels), has
optional train/ and test/ splits, and is decoded once into one uint8 tensor, cached on disk.
"""
from __future__ import annotations

import math
import os
import sys

import numpy as np
import torch

from dataio.reshape import reshape_images
from fileio.atomic import atomic_write
from utils import VaeLabError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
CACHE_DIR = ".vae_lab_cache"  # under --data_root
CACHE_FORMAT = 1
HOLDOUT_SEED = 0  # the held-out test set does not move with --seed: every run is tested on the same images

# a folder without train/ and test/ sub-folders: this fraction is held out as the test set
# (1/7, as 10k of MNIST's 70k images)
TEST_FRACTION = 1 / 7


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
        atomic_write(path, lambda f: np.savez(f, x=x.numpy()))
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
