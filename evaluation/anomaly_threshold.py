"""The threshold file beside a checkpoint (<run>_threshold.json): what score.py and the explorer need to know
about the run's validation images to flag and place any image, computed once and reused.

It holds, for the checkpoint (by the SHA-256 of its file) and the score settings it was made with: each score's
quantiles over the validation images (evaluation/anomaly.py: a threshold at any false-positive rate, a
percentile for any image) and the validation images' mean per-pixel bits (the heat maps' "typical"). A file
made for another checkpoint or other settings is replaced; a score it lacks is computed and added.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from collections.abc import Callable

import numpy as np
import torch

from evaluation.anomaly import ScoreSettings, quantiles
from fileio.atomic import write_json

FORMAT = 1


def reference_images(val: torch.Tensor, n: int) -> torch.Tensor:
    """The validation images a threshold is set on: ``n`` of them drawn with a fixed seed (0: all). score.py
    and the explorer draw the same ones, so they share the threshold file."""
    if n and n < len(val):
        return val[torch.randperm(len(val), generator=torch.Generator().manual_seed(0))[:n]]
    return val


def threshold_path(checkpoint: str, run: str) -> str:
    """``<run>_threshold.json`` in the checkpoint's folder."""
    return os.path.join(os.path.dirname(os.path.abspath(checkpoint)), f"{run}_threshold.json")


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _key(checkpoint: str, settings: ScoreSettings, val_images: int) -> dict:
    """What the file's numbers depend on (not the batch size, nor which scores one call computes)."""
    s = {k: v for k, v in settings.to_dict().items() if k not in ("batch_size", "only")}
    return {"format": FORMAT, "checkpoint_sha256": file_sha256(checkpoint), "settings": s, "val_images": val_images}


def _read(path: str, key: dict) -> dict | None:
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return None  # none yet, or damaged: made again
    if not isinstance(saved, dict) or {k: saved.get(k) for k in key} != key:
        return None
    if not isinstance(saved.get("quantiles"), dict) or "typical_pixel_bits" not in saved:
        return None
    return saved


def load_or_fit_reference(checkpoint: str, run: str, settings: ScoreSettings, names: list[str], val_images: int,
                          score_validation: Callable[[ScoreSettings], dict[str, np.ndarray]],
                          typical: Callable[[], np.ndarray]) -> dict:
    """The reference for ``names``: read from the threshold file when it was made for this checkpoint and
    settings, else computed (``score_validation(settings)``: those scores of the validation images;
    ``typical()``: their mean per-pixel bits) and written there atomically. A folder that cannot be written
    costs a line, not the result (then ``path`` is None)."""
    path = threshold_path(checkpoint, run)
    key = _key(checkpoint, settings, val_images)
    ref = _read(path, key) or {**key, "quantiles": {}, "images": 0}
    missing = [n for n in names if n not in ref["quantiles"]]
    if not missing and "typical_pixel_bits" in ref:
        return {**ref, "path": path}
    if missing:
        scores = score_validation(dataclasses.replace(settings, only=tuple(missing)))
        ref["quantiles"].update({n: quantiles(v) for n, v in scores.items()})
        ref["images"] = len(next(iter(scores.values())))
    if "typical_pixel_bits" not in ref:
        ref["typical_pixel_bits"] = np.round(typical(), 6).tolist()
    try:
        write_json(path, ref)
    except OSError as e:
        print(f"vae-lab: could not keep the anomaly threshold in {path!r} ({e.strerror or e}); it is computed again "
              "next time", file=sys.stderr)
        return {**ref, "path": None}
    return {**ref, "path": path}
