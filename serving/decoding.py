"""What the explorer page asks of a trained VAE: codes decoded to PNGs (batched, cached), the
validation codes and their plane, prior / GMM / validation codes, uploaded images encoded.

Everything goes through the model's public methods (``posterior``, ``decode``, ``sample_prior``),
so a family added later is explored unchanged; a slow decoder only makes the page slower.
"""
from __future__ import annotations

import base64
import io
import os
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from config.run_config import INVOCATION, RunConfig, data_options
from core.errors import VaeLabError
from dataio.decode import ImageTooLarge, decode_image
from datasets import Split, as_float, parse_background, reshape_images, train_val_split
from evaluation.latent_pictures import latent_plane, posterior_stats
from evaluation.metrics import posterior_means
from evaluation.samplers import GaussianMixtureSampler, load_mixture, model_fingerprint
from models import VAE
from runtime.checkpoints import load_model
from runtime.run_files import mixture_path
from serving.anomaly_view import UploadScorer

MAP_POINTS = 2000  # validation codes drawn on the page's map (all of them set the plane and the KL order)
THUMBNAILS = 48  # validation images offered as thumbnails (any index can be typed)
SLIDER_STEPS = np.round(np.linspace(-4.0, 4.0, 81), 2)  # a slider's positions, in latent units
CACHE_IMAGES = 8192  # decoded images kept (a 28x28 PNG is ~0.5 kB)
MAX_CODE_ABS = 1e3  # larger latent values are typos: refused, not decoded
MAX_INTERPOLATION_STEPS = 32
GMM_FIT_IMAGES = 20_000  # training codes a mixture is fitted on when none is saved beside the checkpoint
# Uploads: checked before decoding, kept in memory only
MAX_UPLOAD_BYTES = 8 * 2**20
MAX_UPLOAD_PIXELS = 40_000_000
# the memory an upload's decode may take (dataio/decode.py max_bytes): 64 MiB is a 4096 x 4096 RGBA image, or
# 40 M pixels of grey or palette; an upload then stays under 200 MB above the idle server (docs/explore.md)
MAX_DECODE_BYTES = 64 * 2**20
# uploads decoded at the same time, by their own worker threads (the others wait): the memory is one decode's,
# not N's, and one thread's (the C allocator keeps a freed block in the arena of the thread that used it, so ten
# request threads decoding in turn held ten arenas' worth: 367 MB for ten 5 KB PNGs, 82 MB for one)
DECODES_AT_ONCE = 1
UPLOAD_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF")


class BadRequest(ValueError):
    """Input the page or an API client sent that cannot be used: the HTTP status and one line."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def png_data_url(image: torch.Tensor) -> str:
    """An image (C, H, W) in [0, 1] as a PNG data URL, 8 bits per channel (round to nearest)."""
    from PIL import Image  # here: only the server encodes images

    a = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    im = Image.fromarray(a[..., 0] if a.shape[2] == 1 else a)
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=1)  # fast: these are tiny and sent once
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def eval_numbers(checkpoint: str, cfg: RunConfig) -> dict[str, Any] | None:
    """The run's evaluation JSON (``train.py --evaluate`` writes it beside the checkpoints), if any."""
    import json

    path = os.path.join(os.path.dirname(os.path.abspath(checkpoint)), f"{cfg.lognumber}_eval.json")
    try:
        with open(path) as f:
            return {"path": path, "splits": json.load(f)}
    except (OSError, ValueError):
        return None


@dataclass
class Explorer:
    """A trained VAE and its validation codes, ready for the page's requests (thread-safe)."""

    model: VAE
    cfg: RunConfig
    val: Split
    train: Split | None = None  # the GMM is fitted on its codes when none is saved
    checkpoint: str = ""
    evaluation: dict[str, Any] | None = None
    seed: int = 42
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _cache: OrderedDict = field(default_factory=OrderedDict, repr=False)
    _gmm: GaussianMixtureSampler | None = field(default=None, repr=False)
    _decoder: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(
        DECODES_AT_ONCE, thread_name_prefix="explore-upload"), repr=False)
    gmm_note: str = ""
    odd: UploadScorer | None = field(default=None, repr=False)  # an upload's anomaly score (from_checkpoint)

    def __post_init__(self) -> None:
        self.model.eval()
        self.mu, self.centre, self.std, self.kl = posterior_stats(self.model, self.val, torch.device("cpu"))
        self.order = torch.argsort(self.kl, descending=True).tolist()
        self.axes, self.plane, self.spread, self.plane_labels = latent_plane(self.mu, self.centre, self.std,
                                                                              self.seed)
        self.shown = np.random.default_rng(self.seed).permutation(len(self.val))[:MAP_POINTS]
        self.hits = self.misses = 0
        # the model's time for one image (its last uncached single decode, timed here first): the page asks
        # a fast model for a slider's whole track, a slow one for single frames
        self.single_ms = 0.0
        self.decode(self.centre[None], 0 if self.model.conditional else None)

    @classmethod
    def from_checkpoint(cls, path: str, data_root: str | None = None) -> Explorer:
        """Any checkpoint's model (runtime.checkpoints.load_model) and its run's validation images."""
        model, cfg = load_model(path)
        if data_root:
            cfg = cfg.replace(data_root=data_root)
        train, val = train_val_split(cfg.dataset_type, cfg.data_root, cfg.fold, cfg.num_folds, cfg.seed,
                                     **data_options(cfg))
        explorer = cls(model, cfg, val, train, path, eval_numbers(path, cfg), cfg.seed)
        # what score.py would say of an upload: its validation scores are computed on the first start only
        explorer.odd = UploadScorer(explorer.model, path, cfg.lognumber, val.x, torch.device("cpu"))
        return explorer

    @property
    def hierarchical(self) -> bool:
        return bool(self.model.level_names)

    # ---------------------------------------------------------------- what the page shows first

    def info(self) -> dict[str, Any]:
        m, c = self.model, self.model.image_shape
        names = self.val.classes or [str(i) for i in range(m.num_classes)]
        shown = torch.as_tensor(self.shown)
        return {
            "checkpoint": self.checkpoint, "family": m.family, "latent_size": m.latent_size,
            "image_shape": list(c), "conditional": m.conditional, "num_classes": m.num_classes,
            "class_names": names[:m.num_classes] if m.conditional else names,
            "decode_ms": self.single_ms, "order": self.order, "kl": [round(float(v), 4) for v in self.kl],
            "centre": self.centre.tolist(), "std": self.std.tolist(), "slider_steps": SLIDER_STEPS.tolist(),
            # the hvae's lower level: model.decode takes its prior mean given the top code
            "levels_note": (f"latent levels {', '.join(m.level_names)}: the sliders set the top code; the lower "
                            "levels are at their mean given it (as model.decode takes them)"
                            if self.hierarchical else ""),
            "map": {"labels": list(self.plane_labels), "spread": self.spread.tolist(),
                    "points": self.plane[shown].tolist(), "classes": self.val.y[shown].tolist(),
                    "plane": "z" if m.latent_size == 2 else "pca"},
            "val_images": len(self.val), "thumbnails": [self.val_image(i) for i in range(min(THUMBNAILS,
                                                                                          len(self.val)))],
            "config": {k: v for k, v in self.cfg.to_dict().items() if k not in INVOCATION},
            "evaluation": self.evaluation,
            "limits": {"upload_bytes": MAX_UPLOAD_BYTES, "upload_pixels": MAX_UPLOAD_PIXELS,
                       "decode_bytes": MAX_DECODE_BYTES,
                       "interpolation_steps": MAX_INTERPOLATION_STEPS},
        }

    def val_image(self, i: int) -> dict[str, Any]:
        x = as_float(self.val.x[i])
        return {"index": i, "label": int(self.val.y[i]), "image": png_data_url(x)}

    # ---------------------------------------------------------------- checking what is sent

    def code(self, value: Any) -> torch.Tensor:
        """A code sent by the page: exactly ``latent_size`` finite numbers of sensible size."""
        d = self.model.latent_size
        if not isinstance(value, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                  for v in value):
            raise BadRequest(f"a code is a list of {d} numbers")
        if len(value) != d:
            raise BadRequest(f"the code has {len(value)} numbers; this model's latent size is {d}")
        if not all(abs(v) <= MAX_CODE_ABS for v in value):  # False for NaN and +-Inf; exact for any int
            raise BadRequest(f"a code's numbers must be finite and within +-{MAX_CODE_ABS:g}")
        return torch.tensor(value, dtype=torch.float32)

    def label(self, value: Any) -> int | None:
        """The class a CVAE decodes with (None for an unconditional model)."""
        if not self.model.conditional:
            return None
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < self.model.num_classes:
            raise BadRequest(f"a conditional model needs a class y in 0..{self.model.num_classes - 1}")
        return value

    def index(self, value: Any) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < len(self.val):
            raise BadRequest(f"a validation image index is an integer in 0..{len(self.val) - 1}")
        return value

    # ---------------------------------------------------------------- decoding, batched and cached

    def decode(self, codes: torch.Tensor, y: int | None) -> tuple[list[str], float]:
        """PNG data URLs of codes (B, d), each decoded with class ``y``, and the milliseconds spent
        decoding. Codes are keyed by their float32 bytes: the codes the cache has are not decoded
        again, the others go through ``model.decode`` in one batch."""
        codes = codes.to(torch.float32)
        keys = [(y, c.numpy().tobytes()) for c in codes]
        with self._lock:  # one decode at a time: torch already uses every core for one
            todo = [i for i, k in enumerate(keys) if k not in self._cache]
            self.hits += len(keys) - len(todo)
            self.misses += len(todo)
            t0 = time.perf_counter()
            if todo:
                yy = None if y is None else torch.full((len(todo),), y, dtype=torch.long)
                with torch.no_grad():
                    images = self.model.decode(codes[todo], yy).float().cpu()
                for i, image in zip(todo, images):
                    self._cache[keys[i]] = png_data_url(image)
            ms = (time.perf_counter() - t0) * 1000
            if len(todo) == 1:
                self.single_ms = ms
            out = []
            for k in keys:
                self._cache.move_to_end(k)
                out.append(self._cache[k])
            while len(self._cache) > CACHE_IMAGES:
                self._cache.popitem(last=False)
        return out, ms

    def decode_image(self, code: torch.Tensor, y: int | None) -> torch.Tensor:
        """The decoder's image (C, H, W) in [0, 1] of one code: what the page's PNG rounds (tests compare them)."""
        with self._lock, torch.no_grad():
            return self.model.decode(code[None].float(), None if y is None else torch.tensor([y]))[0].float()

    def sweep(self, code: torch.Tensor, dim: int, y: int | None) -> dict[str, Any]:
        """Every slider position of dimension ``dim``, the rest of ``code`` fixed, decoded in one batch:
        the page then shows a drag's frames without asking again."""
        if not isinstance(dim, int) or isinstance(dim, bool) or not 0 <= dim < self.model.latent_size:
            raise BadRequest(f"dim is a latent dimension, 0..{self.model.latent_size - 1}")
        codes = code.repeat(len(SLIDER_STEPS), 1)
        codes[:, dim] = torch.as_tensor(SLIDER_STEPS, dtype=torch.float32)
        images, ms = self.decode(codes, y)
        return {"dim": dim, "values": SLIDER_STEPS.tolist(), "images": images, "ms": ms}

    def interpolate(self, a: torch.Tensor, b: torch.Tensor, steps: Any, y: int | None) -> dict[str, Any]:
        """``steps`` codes on the straight line from ``a`` to ``b`` (both ends included), decoded."""
        if not isinstance(steps, int) or isinstance(steps, bool) or not 2 <= steps <= MAX_INTERPOLATION_STEPS:
            raise BadRequest(f"steps is an integer in 2..{MAX_INTERPOLATION_STEPS}")
        t = torch.linspace(0, 1, steps)[:, None]
        codes = (1 - t) * a + t * b
        images, ms = self.decode(codes, y)
        return {"codes": codes.tolist(), "images": images, "ms": ms}

    def map_code(self, point: Any) -> torch.Tensor:
        """The code of a point (a, b) of the map's plane: centre + a * axis0 + b * axis1."""
        if (not isinstance(point, list) or len(point) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) <= MAX_CODE_ABS
                           for v in point)):
            raise BadRequest(f"a map point is a list of two numbers within +-{MAX_CODE_ABS:g}")
        code = self.centre + torch.tensor(point, dtype=self.axes.dtype) @ self.axes
        if not bool(code.abs().max() <= MAX_CODE_ABS):  # so every number the answer holds is finite JSON
            raise BadRequest(f"the point is off the map: its code would leave +-{MAX_CODE_ABS:g}")
        return code

    def project(self, code: torch.Tensor) -> list[float]:
        """Where ``code`` lies on the map's plane."""
        return ((code - self.centre) @ self.axes.T).tolist()

    # ---------------------------------------------------------------- codes to start from

    def start_code(self, kind: str, seed: Any) -> torch.Tensor:
        """The prior's mean (zero for N(0, I); the VampPrior's: the mean of its components), a prior
        draw or a GMM draw (``seed``: which draw, so the page can repeat one)."""
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
            raise BadRequest("seed is a non-negative integer")
        g = torch.Generator().manual_seed(seed)
        if kind == "mean":
            if self.model.prior == "vamp":
                with self._lock, torch.no_grad():
                    return self.model.pseudo_posterior()[0].float().mean(0).cpu()
            return torch.zeros(self.model.latent_size)
        if kind == "prior":
            with self._lock:
                return self.model.sample_prior(1, g)[0].float()
        if kind == "gmm":
            return self.mixture().sample(1, g)[0]
        raise BadRequest("kind is mean, prior or gmm")

    def mixture(self) -> GaussianMixtureSampler:
        """The GMM sampler saved beside the checkpoint (``train.py --predict --sampler gmm``), else one
        fitted now, in memory, on training codes (nothing is written)."""
        with self._lock:
            if self._gmm is None:
                saved = mixture_path(self.checkpoint) if self.checkpoint else ""
                fp = model_fingerprint(self.model.state_dict())
                if saved and os.path.isfile(saved):
                    try:
                        self._gmm = load_mixture(saved, fp, self.cfg.gmm_components, self.model.latent_size)
                        self.gmm_note = f"the mixture saved in {saved}"
                    except VaeLabError as e:
                        self.gmm_note = f"{e}; "
                if self._gmm is None:
                    data = self.train if self.train is not None and len(self.train) else self.val
                    data = Split(data.x[:GMM_FIT_IMAGES], data.y[:GMM_FIT_IMAGES])
                    codes = posterior_means(self.model, data, torch.device("cpu"))
                    k = min(self.cfg.gmm_components, len(codes))
                    self._gmm = GaussianMixtureSampler.fit(codes, k, self.cfg.seed)
                    self.gmm_note += f"{k} components fitted now on {len(codes):,} training codes (not saved)"
            return self._gmm

    def val_code(self, i: int) -> dict[str, Any]:
        """A validation image, its posterior mean and its class."""
        return {**self.val_image(i), "code": self.mu[i].tolist()}

    # ---------------------------------------------------------------- uploads

    def encode_upload(self, data: bytes, y: int | None) -> dict[str, Any]:
        """An uploaded image file, checked (type, bytes, pixels), decoded in memory as the training
        files are (dataio/decode.py: transparency onto the run's background, bit depth, EXIF) within
        MAX_DECODE_BYTES and one at a time (on the decoder's own thread), made the run's shape, and
        encoded: its posterior mean; with its anomaly score, percentile and heat map (serving/anomaly_view.py)."""
        from PIL import Image, UnidentifiedImageError

        if len(data) > MAX_UPLOAD_BYTES:
            raise BadRequest(f"the upload is {len(data):,} bytes; at most {MAX_UPLOAD_BYTES:,}", 413)
        if not data:
            raise BadRequest("the upload is empty")
        try:
            with Image.open(io.BytesIO(data)) as im:  # reads the header only
                fmt, (w, h) = im.format, im.size
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
            raise BadRequest(f"not an image file that can be read ({', '.join(UPLOAD_FORMATS)})") from None
        if fmt not in UPLOAD_FORMATS:
            raise BadRequest(f"{fmt} files are not taken; send {', '.join(UPLOAD_FORMATS)}")
        if w * h > MAX_UPLOAD_PIXELS:
            raise BadRequest(f"the image is {w}x{h} = {w * h:,} pixels; at most {MAX_UPLOAD_PIXELS:,}", 413)
        x = self.prepare_upload(data)
        with self._lock, torch.no_grad():
            mu, _ = self.model.posterior(x[None], None if y is None else torch.tensor([y]))
        out = {"image": png_data_url(x), "code": mu[0].float().tolist(), "label": y, "format": fmt, "size": [w, h]}
        if self.odd is not None:
            with self._lock:
                odd, heat = self.odd(x)
            out["anomaly"] = {**odd, "heat": png_data_url(heat)}
        return out

    def prepare_upload(self, data: bytes) -> torch.Tensor:
        """The file's image as the model's input (C, H, W) float in [0, 1]."""
        from PIL import Image

        c, h, _ = self.model.image_shape
        try:
            array, _ = self._decoder.submit(decode_image, io.BytesIO(data), parse_background(self.cfg.background),
                                            h, max_bytes=MAX_DECODE_BYTES).result()
        except ImageTooLarge as e:
            raise BadRequest(f"the image is too large to decode here: {e}", 413) from None
        except Exception as e:  # Pillow fails on damaged files in many ways (OSError, SyntaxError, ValueError)
            raise BadRequest(f"the image cannot be decoded ({str(e).splitlines()[0][:80] if str(e) else e})"
                             ) from None
        if c == 1 and array.ndim == 3:  # colour to grey as the folder loader does (Pillow's "L")
            array = np.asarray(Image.fromarray(array).convert("L"))
        t = torch.from_numpy(np.ascontiguousarray(array).copy())
        t = t.reshape(t.shape[0], t.shape[1], -1).permute(2, 0, 1)
        return as_float(reshape_images(t[None], h, c)[0])

