"""--dataset_type dsprites and dsprites_colour: the dSprites factor grid (Matthey et al. 2017), re-rendered
here, offline and deterministically, with every image's factor values kept.

"dSprites-like", not DeepMind's file: 3 shapes (square, ellipse, heart) x 6 scales evenly in [0.5, 1] x
40 orientations k * 2pi / 40 (k = 0..39) x 32 x 32 positions evenly in [0, 1] = 737,280 binary 64x64
images, one per factor combination, in DeepMind's order (the last factor fastest), so image i of the
grid has the factors of image i of their file. A pixel is on when its centre lies inside the shape
(no antialiasing). Our shapes are drawn from their equations, not traced from DeepMind's bitmaps, so
scores on them are comparable with each other, not with published ones: when
``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`` is in --data_root it is read instead.

Hand-written because no library renders this grid; the render is vectorised numpy (~7k images per
second on one core). A run on a subset of the grid renders its images from their grid index (seconds);
one that asks for more than a quarter of it (the whole grid: --factor_images 0) renders the whole grid
once into --data_root/.vae_lab_cache/ as packed bits (377 MB, written atomically, versioned by
RENDER_VERSION) and reads it from there afterwards, like a decoded folder.

dsprites_colour: the same grid times 6 colours (a 6th factor, on a black background, 3 channels).
"""
from __future__ import annotations

import functools
import math
import os

import numpy as np
import torch

from core.errors import VaeLabError

DEEPMIND_FILE = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
SIZE = 64  # pixels a side
SHAPES = ("square", "ellipse", "heart")
SCALES = np.linspace(0.5, 1.0, 6)
ORIENTATIONS = np.arange(40) * (2 * math.pi / 40)
POSITIONS = np.linspace(0.0, 1.0, 32)
# dsprites_colour's colours (RGB, 0-255): saturated, far apart
COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0),
           "magenta": (255, 0, 255), "cyan": (0, 255, 255)}
# the values of each factor, in grid order (the last factor varies fastest)
BASE_FACTORS: dict[str, np.ndarray] = {"shape": np.arange(3), "scale": SCALES, "orientation": ORIENTATIONS,
                                       "pos_x": POSITIONS, "pos_y": POSITIONS}
FACTOR_SETS = {"dsprites": BASE_FACTORS,
               "dsprites_colour": {"colour": np.arange(len(COLOURS)), **BASE_FACTORS}}
# geometry (pixels): a scale-1 square has half-side HALF; a centre moves over [MARGIN, SIZE - MARGIN] so a
# scale-1 shape at any angle stays inside the image (the square's corner reaches HALF * sqrt 2 = 14.1)
HALF = 10.0
MARGIN = 15.0
RENDER_CHUNK = 4096  # images rendered at once: ~100 MB of float32 temporaries
READ_CHUNK = 65_536  # images composed at once when a split is read (256 MB of uint8)
RENDER_VERSION = 1  # of the pictures render_masks draws: a cache of another version is never read
CACHE_SHARE = 0.25  # a request for more of the grid than this renders the whole grid into the cache once


def factor_sizes(name: str) -> tuple[int, ...]:
    return tuple(len(v) for v in FACTOR_SETS[name].values())


def grid_size(name: str) -> int:
    return int(np.prod(factor_sizes(name)))


def factor_indices(name: str, index: np.ndarray) -> np.ndarray:
    """Grid indices (N,) -> each factor's value index (N, F), in FACTOR_SETS order."""
    return np.stack(np.unravel_index(np.asarray(index, dtype=np.int64), factor_sizes(name)), axis=1)


def grid_index(name: str, factors: np.ndarray) -> np.ndarray:
    """Each image's factor value indices (N, F) -> its grid index (N,)."""
    return np.ravel_multi_index(tuple(np.asarray(factors, dtype=np.int64).T), factor_sizes(name))


def class_names(name: str, factor: str) -> list[str]:
    """How a factor's values are written as class names (for KNN, pictures)."""
    if factor == "shape":
        return list(SHAPES)
    if factor == "colour":
        return list(COLOURS)
    values = FACTOR_SETS[name][factor]
    return [f"{v:.3g}" for v in values]


def render_masks(shape: np.ndarray, scale: np.ndarray, angle: np.ndarray, pos_x: np.ndarray,
                 pos_y: np.ndarray) -> np.ndarray:
    """Binary images (N, 64, 64) as bool: pixel (row, col) is on when its centre, moved into the shape's
    own frame (centred, rotated back by ``angle``, divided by its size), satisfies the shape's equation.
    ``shape``: 0 square |u|,|v| <= 1; 1 ellipse of semi-axes 1.2 and 0.6 (its long axis along the angle); 2 heart
    (x^2 + y^2 - 1)^3 <= x^2 y^3 (a classic implicit heart, point down, 2.3 units wide, scaled to fit)."""
    n = len(shape)
    centre = np.arange(SIZE, dtype=np.float32) + 0.5
    cx = (MARGIN + pos_x * (SIZE - 2 * MARGIN)).astype(np.float32).reshape(n, 1, 1)
    cy = (MARGIN + pos_y * (SIZE - 2 * MARGIN)).astype(np.float32).reshape(n, 1, 1)
    size = (HALF * scale).astype(np.float32).reshape(n, 1, 1)
    cos, sin = (np.cos(angle).astype(np.float32).reshape(n, 1, 1), np.sin(angle).astype(np.float32).reshape(n, 1, 1))
    dx, dy = centre.reshape(1, 1, SIZE) - cx, centre.reshape(1, SIZE, 1) - cy
    u = (cos * dx + sin * dy) / size  # rotate by -angle: the shape turns by +angle (y points down)
    v = (-sin * dx + cos * dy) / size
    out = np.zeros((n, SIZE, SIZE), dtype=bool)
    for k in range(3):
        rows = np.flatnonzero(shape == k)
        if not len(rows):
            continue
        a, b = u[rows], v[rows]
        if k == 0:
            out[rows] = np.maximum(np.abs(a), np.abs(b)) <= 1.0
        elif k == 1:
            out[rows] = a * a / 1.44 + b * b / 0.36 <= 1.0
        else:
            x, y = a * 0.87, -b * 0.87 + 0.1  # point down, centred on its middle; ~1.15 units a side
            out[rows] = (x * x + y * y - 1.0) ** 3 <= x * x * y ** 3
    return out


def _render_base(base: np.ndarray) -> np.ndarray:
    """Masks (N, 64, 64) bool of dsprites grid indices ``base``, rendered in chunks."""
    out = np.empty((len(base), SIZE, SIZE), dtype=bool)
    for start in range(0, len(base), RENDER_CHUNK):
        f = factor_indices("dsprites", base[start:start + RENDER_CHUNK])
        out[start:start + len(f)] = render_masks(f[:, 0], SCALES[f[:, 1]], ORIENTATIONS[f[:, 2]], POSITIONS[f[:, 3]],
                                                 POSITIONS[f[:, 4]])
    return out


def _compose(name: str, index: np.ndarray, masks: np.ndarray) -> torch.Tensor:
    """uint8 images (N, C, 64, 64) in {0, 255} from the shapes' masks: white, or in their colour factor's colour."""
    mask = torch.from_numpy(np.ascontiguousarray(masks)).to(torch.uint8)
    if name != "dsprites_colour":
        return (mask * 255).unsqueeze(1)
    palette = torch.tensor(list(COLOURS.values()), dtype=torch.uint8)
    colour = torch.from_numpy(factor_indices(name, index)[:, 0])
    return mask.unsqueeze(1) * palette[colour][:, :, None, None]


def _base_index(name: str, index: np.ndarray) -> np.ndarray:
    """The dsprites grid index of each image's shape (dsprites_colour: its factors but the colour)."""
    if name == "dsprites":
        return np.asarray(index, dtype=np.int64)
    return grid_index("dsprites", factor_indices(name, index)[:, 1:])


def render(name: str, index: np.ndarray) -> torch.Tensor:
    """The images of these grid indices, uint8 (N, C, 64, 64) in {0, 255}, rendered now."""
    index = np.asarray(index, dtype=np.int64)
    return _compose(name, index, _render_base(_base_index(name, index)))


def _stamp(path: str) -> tuple[str, int, int]:
    """A file's path, modification time and size: what the per-process reads below are cached by."""
    st = os.stat(path)
    return path, st.st_mtime_ns, st.st_size


@functools.lru_cache(maxsize=2)
def _deepmind_images(stamp: tuple[str, int, int]) -> np.ndarray:
    """DeepMind's images (737280, 64, 64) in {0, 1} (read once per process: 3 GB decompressed)."""
    path = stamp[0]
    try:
        with np.load(path, allow_pickle=False) as f:
            imgs = f["imgs"]
    except Exception as e:  # zip, key or format errors of a damaged file
        raise VaeLabError(f"{path!r} is not a readable dSprites file ({type(e).__name__}); delete it to use our "
                          f"re-rendering") from None
    if imgs.shape != (grid_size("dsprites"), SIZE, SIZE):
        raise VaeLabError(f"{path!r} holds images of shape {imgs.shape}, not dSprites' "
                          f"({grid_size('dsprites')}, {SIZE}, {SIZE})")
    return imgs


def cache_path(root: str) -> str:
    """Our render of the whole grid, packed 8 pixels a byte (377 MB), under --data_root's cache folder."""
    from dataio.folders import CACHE_DIR  # one cache folder for every data set

    return os.path.join(root, CACHE_DIR, f"dsprites_render_v{RENDER_VERSION}_{grid_size('dsprites')}.npy")


def _write_cache(path: str) -> None:
    """Render the whole grid once, packed, written atomically (a killed render leaves no cache)."""
    from fileio.atomic import atomic_write

    total = grid_size("dsprites")
    print(f"rendering the {total:,} dSprites-like images once into {path} (about 2 minutes on one core)", flush=True)
    bits = np.empty((total, SIZE * SIZE // 8), dtype=np.uint8)
    for start in range(0, total, RENDER_CHUNK):
        masks = _render_base(np.arange(start, min(start + RENDER_CHUNK, total)))
        bits[start:start + len(masks)] = np.packbits(masks.reshape(len(masks), -1), axis=1)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write(path, lambda f: np.save(f, bits))


@functools.lru_cache(maxsize=2)
def _cached_bits(stamp: tuple[str, int, int]) -> np.ndarray:
    path = stamp[0]
    try:
        bits = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise VaeLabError(f"the dSprites cache {path!r} is unreadable ({e}); delete it to render it again") from None
    if bits.shape != (grid_size("dsprites"), SIZE * SIZE // 8) or bits.dtype != np.uint8:
        raise VaeLabError(f"the dSprites cache {path!r} holds {bits.shape} {bits.dtype}, not the packed grid; "
                          f"delete it to render it again")
    return bits


def images_of(name: str, root: str, index: np.ndarray) -> tuple[torch.Tensor, str]:
    """The images of these grid indices and where they came from: DeepMind's file when it is in ``root``
    (dsprites_colour: its shapes, coloured), else our render, read from the cache when there is one. A
    request for more than CACHE_SHARE of the grid renders the whole grid into the cache first; a smaller
    one is rendered directly (7k images a second: cheaper than reading 377 MB)."""
    index = np.asarray(index, dtype=np.int64)
    base = _base_index(name, index)
    deepmind = os.path.join(root, DEEPMIND_FILE)
    if os.path.isfile(deepmind):
        imgs = _deepmind_images(_stamp(deepmind))
        return _in_chunks(name, index, base, lambda b: imgs[b].astype(bool)), f"DeepMind's {DEEPMIND_FILE}"
    source = "dSprites-like: re-rendered by dataio/dsprites.py, not DeepMind's file"
    path = cache_path(root)
    if not os.path.isfile(path) and len(np.unique(base)) > CACHE_SHARE * grid_size("dsprites"):
        _write_cache(path)
    if not os.path.isfile(path):
        return _in_chunks(name, index, base, _render_base), source
    bits = _cached_bits(_stamp(path))

    def unpack(b: np.ndarray) -> np.ndarray:
        return np.unpackbits(bits[b], axis=1).reshape(len(b), SIZE, SIZE).astype(bool)
    return _in_chunks(name, index, base, unpack), source + " (cached render)"


def _in_chunks(name: str, index: np.ndarray, base: np.ndarray, masks_of) -> torch.Tensor:
    """The images, composed chunk by chunk into one tensor: the whole grid peaks at its 3 GB, not 3x that."""
    out = torch.empty((len(index), 3 if name == "dsprites_colour" else 1, SIZE, SIZE), dtype=torch.uint8)
    for start in range(0, len(index), READ_CHUNK):
        rows = slice(start, start + READ_CHUNK)
        out[rows] = _compose(name, index[rows], masks_of(base[rows]))
    return out


def chosen_indices(name: str, images: int, train: bool, test_fraction: float) -> np.ndarray:
    """The grid indices of the training (or test) set: ``images`` of the grid (0: all of it) drawn once
    with a fixed seed, the last ``test_fraction`` of them held out, so every run (any --seed) is trained
    and tested on the same images. Sorted."""
    from dataio.folders import HOLDOUT_SEED  # the folders' fixed hold-out seed: one rule for both

    total = grid_size(name)
    rng = np.random.default_rng(HOLDOUT_SEED)
    drawn = rng.permutation(total)[:images] if 0 < images < total else rng.permutation(total)
    n_test = max(1, round(len(drawn) * test_fraction))
    return np.sort(drawn[len(drawn) - n_test:] if not train else drawn[:len(drawn) - n_test])
