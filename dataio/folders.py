"""--dataset_type folder: a folder of the user's own images.

Hand-written rather than torchvision's ImageFolder: that class needs class sub-folders, returns
one PIL image per __getitem__, and has no cache; here a folder may be flat (no labels), has
optional train/ and test/ splits, and is decoded once into one uint8 tensor, cached on disk.
"""
from __future__ import annotations

import math
import os
import sys
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
import torch

from core.errors import VaeLabError
from dataio.decode import DRAFT_MARGIN, decode_image, parse_background
from dataio.reshape import reshape_images
from fileio.atomic import atomic_write

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")
CACHE_DIR = ".vae_lab_cache"  # under --data_root
CACHE_FORMAT = 2  # 2: transparency, bit depth, EXIF orientation, colour spaces, skipped files (dataio/decode.py)
DECODE_THREADS = min(8, os.cpu_count() or 1)  # Pillow and torch release the GIL: one thread per core
DECODE_WINDOW = 256  # files decoded ahead of the one being stored
HOLDOUT_SEED = 0  # the held-out test set does not move with --seed: every run is tested on the same images

# a folder without train/ and test/ sub-folders: this fraction is held out as the test set
# (1/7, as 10k of MNIST's 70k images)
TEST_FRACTION = 1 / 7


def image_files(folder: str) -> list[str]:
    """Image files under ``folder`` (recursively, hidden folders skipped, symlinked folders followed
    once each: a link back to a folder already walked is a loop and is not entered), as sorted
    relative paths. A folder that cannot be listed is one line: a class or split would go missing."""
    def refuse(e: OSError) -> None:
        raise VaeLabError(f"cannot read the folder {e.filename!r} ({e.strerror or e}); fix its permissions or move "
                          f"it out of --data_root")

    found, seen = [], set()
    for dirpath, dirnames, filenames in os.walk(folder, onerror=refuse, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a symlink loop (or a second link to one folder): its files are listed once
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [os.path.relpath(os.path.join(dirpath, f), folder) for f in filenames
                  if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")]
    return sorted(found)


def scan_folder(root: str) -> tuple[list[str], bool]:
    """The image files (relative to ``root``) and whether ``root`` has train/ and test/ splits."""
    if not os.path.isdir(root):
        raise VaeLabError(f"--data_root {root!r} is not a folder; --dataset_type folder reads the images in it")
    has_splits = all(os.path.isdir(os.path.join(root, d)) for d in ("train", "test"))
    files = ([os.path.join(d, f) for d in ("train", "test") for f in image_files(os.path.join(root, d))]
             if has_splits else image_files(root))
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


class Decoded(NamedTuple):
    """A set of image files decoded: ``x`` (N, C, H, W) uint8 of the files that could be read,
    ``kept`` their indices in the file list, ``notes`` what the run's first line reports (bit
    depths scaled, unreadable files skipped), e.g. "12 16-bit images scaled to 8 bits (/257)"."""

    x: torch.Tensor
    kept: torch.Tensor
    notes: list[str]


def _decode(path: str, channels: int | None, background: tuple[int, int, int], min_side: int | None
            ) -> tuple[torch.Tensor, str | None]:
    """One image file as uint8 (C, H, W): grey or RGB as stored (``channels`` when given; grey as
    Pillow's "L"), and decode_image's note."""
    array, note = decode_image(path, background, min_side)
    if channels == 1 and array.ndim == 3:
        from PIL import Image

        array = np.asarray(Image.fromarray(array).convert("L"))
    array = np.ascontiguousarray(array)
    if not array.flags.writeable:  # Pillow's buffer: torch wants its own
        array = array.copy()
    t = torch.from_numpy(array).reshape(array.shape[0], array.shape[1], -1).permute(2, 0, 1)
    return (t.expand(3, -1, -1) if channels == 3 else t), note


def _why(e: Exception, path: str) -> str:
    """Why a file cannot be decoded, in a few words."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(e, Image.DecompressionBombError):
        return f"decompression-bomb guard: over Pillow's limit of {2 * Image.MAX_IMAGE_PIXELS:,} pixels"
    if isinstance(e, UnidentifiedImageError):  # Pillow says no more; the first bytes tell a damaged image
        try:
            with open(path, "rb") as f:
                head = f.read(8)
        except OSError:
            head = b""
        if not head:
            return "empty file"
        magic = (b"\x89PNG", b"\xff\xd8", b"GIF8", b"RIFF", b"II*", b"MM\0*", b"BM")
        return "damaged header" if head.startswith(magic) else "not an image"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e).splitlines()[0][:60] if str(e) else type(e).__name__


def _decode_resized(path: str, image_size: int | None, channels: int | None, background: tuple[int, int, int]
                    ) -> tuple[torch.Tensor, str | None] | Exception:
    """One file decoded (and resized to ``image_size`` when given) with decode_image's note, or why not."""
    try:
        t, note = _decode(path, channels, background, image_size)
        if image_size is not None:
            t = reshape_images(t[None], image_size, None)[0]
        return t, note
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError... on damaged files
        return e


def _in_order(pool: ThreadPoolExecutor, decode: Callable[[str], object], files: list[str]) -> Iterator:
    """The results in file order, at most DECODE_WINDOW files ahead (Executor.map would submit
    them all at once: 100,000 pending results held ~200 MiB)."""
    pending: deque = deque()
    for f in files:
        pending.append(pool.submit(decode, f))
        if len(pending) >= DECODE_WINDOW:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


class _Gathered(NamedTuple):
    out: torch.Tensor | None  # the preallocated tensor, its first len(kept) images filled
    kept: list[int]
    bad: list[str]  # "file (why)" of each file that cannot be decoded
    sizes: set[tuple[int, int]]
    notes: Counter


def _gather(root: str, files: list[str], results: Iterator) -> _Gathered:
    """The decoded images written into one tensor as they come, so that the decode holds the final
    tensor plus a few images; the unreadable files, the sizes seen and decode_image's notes counted."""
    out: torch.Tensor | None = None
    kept, bad, sizes, notes = [], [], set(), Counter()
    for i, result in enumerate(results):
        if isinstance(result, Exception):
            bad.append(f"{files[i]} ({_why(result, os.path.join(root, files[i]))})")
            continue
        t, note = result
        sizes.add(tuple(t.shape[1:]))
        if note:
            notes[note] += 1
        if out is None:
            out = torch.empty((len(files), *t.shape), dtype=torch.uint8)
        if t.shape[1:] != out.shape[2:]:
            continue  # different sizes without --image_size: refused by _check_gathered
        if t.shape[0] > out.shape[1]:  # grey and colour mixed: all colour
            out = out.expand(-1, 3, -1, -1).clone()
        out[len(kept)] = t
        kept.append(i)
    return _Gathered(out, kept, bad, sizes, notes)


def _check_gathered(root: str, files: list[str], g: _Gathered, image_size: int | None) -> None:
    """One line on stderr for the files skipped; a VaeLabError when none could be read, or when the
    images differ in size or are not square without ``image_size``."""
    bad = g.bad
    if g.out is None:
        raise VaeLabError(f"none of the {len(files)} image files under {root!r} can be read: "
                          f"{', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}; remove or repair them")
    if bad:
        print(f"vae-lab: skipped {len(bad)} of {len(files)} image files under {root!r} that cannot be read: "
              f"{', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}", file=sys.stderr)
    if len(g.sizes) > 1:
        sizes = sorted(g.sizes)
        raise VaeLabError(f"the images under {root!r} have {len(sizes)} different sizes (e.g. "
                          f"{sizes[0][1]}x{sizes[0][0]} and {sizes[-1][1]}x{sizes[-1][0]}); pass --image_size N "
                          "to centre-crop and resize them all to N x N")
    if image_size is None and g.out.shape[2] != g.out.shape[3]:
        raise VaeLabError(f"the images under {root!r} are {g.out.shape[3]}x{g.out.shape[2]}, not square; pass "
                          "--image_size N to centre-crop and resize them to N x N")


def _decode_all(root: str, files: list[str], image_size: int | None, channels: int | None,
                background: tuple[int, int, int]) -> Decoded:
    """Every file decoded and resized in threads (Pillow and torch release the GIL), written into one
    preallocated tensor as it comes, so that the decode holds the final tensor plus a few images.
    A file that cannot be decoded is skipped with one line naming it and why: in a folder of
    thousands, one damaged download should not stop a run (all of them unreadable is an error)."""
    import warnings

    from PIL import Image

    def one(f: str) -> tuple[torch.Tensor, str | None] | Exception:
        return _decode_resized(os.path.join(root, f), image_size, channels, background)

    with warnings.catch_warnings(), ThreadPoolExecutor(DECODE_THREADS) as pool:
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # big photos are decoded in draft mode
        g = _gather(root, files, _in_order(pool, one, files))
    _check_gathered(root, files, g, image_size)
    skipped = [f"{len(g.bad)} unreadable image files skipped"] if g.bad else []
    return Decoded(g.out[:len(g.kept)], torch.tensor(g.kept, dtype=torch.int64),
                   [f"{n} {note}" for note, n in sorted(g.notes.items())] + skipped)


def _cache_key(base: str, files: list[str], image_size: int | None, channels: int | None,
               background: tuple[int, int, int]) -> str:
    import hashlib

    h = hashlib.sha256(repr((CACHE_FORMAT, image_size, channels, background, DRAFT_MARGIN)).encode())
    for f in files:
        try:
            st = os.stat(os.path.join(base, f))
            h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError as e:  # a dangling link or a link loop: decoded (and skipped) as unreadable
            h.update(f"{f}\0{e.errno}\n".encode())
    return h.hexdigest()[:20]


def _read_cache(path: str, n: int) -> Decoded | None:
    """The cached images, or None when absent, unreadable or not what the key promises."""
    if not os.path.isfile(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            x, kept, notes = z["x"], z["kept"], [str(s) for s in z["notes"]]
        if x.dtype != np.uint8 or x.ndim != 4 or len(x) != len(kept) or len(kept) > n or (
                len(kept) and not 0 <= kept.min() <= kept.max() < n):
            raise ValueError("shapes")
    except Exception as e:  # a damaged cache is rebuilt, never trusted
        print(f"vae-lab: the image cache {path!r} is unreadable ({type(e).__name__}); decoding the images again",
              file=sys.stderr)
        return None
    return Decoded(torch.from_numpy(x), torch.from_numpy(kept.astype(np.int64)), notes)


def _write_cache(path: str, d: Decoded, tag: str) -> None:
    """Written atomically; older caches of the same ``tag`` (other files, sizes) are removed."""
    folder = os.path.dirname(path)
    try:
        os.makedirs(folder, exist_ok=True)
        atomic_write(path, lambda f: np.savez(f, x=d.x.numpy(), kept=d.kept.numpy(),
                                              notes=np.array(d.notes, dtype=np.str_)))
    except OSError as e:  # a read-only data folder: the run goes on, the next one decodes again
        print(f"vae-lab: could not cache the decoded images in {folder!r} ({e.strerror or e})", file=sys.stderr)
        return
    for old in os.listdir(folder):
        if old.startswith(tag + "-") and old.endswith(".npz") and old != os.path.basename(path):
            os.remove(os.path.join(folder, old))


def decoded_images(base: str, files: list[str], image_size: int | None, channels: int | None,
                   tag: str = "all", background: str = "white") -> Decoded:
    """The image files (relative to ``base``) as one uint8 tensor (N, C, H, W) with the indices of
    the files it holds and the notes of dataio/decode.py, decoded once and cached in
    ``base``/.vae_lab_cache/ under a key of the file list, sizes, mtimes and the decode asked for
    (shape, ``background``); ``tag`` names a set of files whose older caches a new one replaces."""
    rgb = parse_background(background)
    path = os.path.join(base, CACHE_DIR, f"{tag}-{_cache_key(base, files, image_size, channels, rgb)}.npz")
    d = _read_cache(path, len(files))
    if d is None:
        d = _decode_all(base, files, image_size, channels, rgb)
        _write_cache(path, d, tag)
    return d


def decode_files(base: str, files: list[str], image_size: int, channels: int, background: str = "white"
                 ) -> Decoded:
    """Image files (relative to ``base``) decoded as for training, with no cache: centre-cropped and resized to
    ``image_size``, converted to ``channels``, transparency over ``background``; unreadable files skipped and
    named on stderr (their indices are missing from ``kept``). For tools that read a user's files without
    writing beside them (score.py)."""
    return _decode_all(base, files, image_size, channels, parse_background(background))


def _folder_bytes(root: str, train: bool, image_size: int | None, channels: int | None, test_fraction: float,
                  background: str = "white") -> tuple[torch.Tensor, torch.Tensor, list[str] | None, list[str]]:
    """The training or test images of a folder: its train/ or test/ sub-folder, or else the
    rest or the seeded, stratified (by class, when there are classes) hold-out of ``test_fraction``;
    and the decode's notes (Decoded.notes)."""
    files, has_splits = scan_folder(root)
    decoded = decoded_images(root, files, image_size, channels, background=background)
    files = [files[i] for i in decoded.kept.tolist()]  # the unreadable ones skipped
    labels, classes = _labels(files, has_splits)
    x, y = decoded.x, torch.tensor(labels, dtype=torch.int64)
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
    return x[idx], y[idx], classes, decoded.notes
