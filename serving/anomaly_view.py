"""What the explorer says of an uploaded image's oddity: its anomaly score (evaluation/anomaly.py, the score
score.py flags by default), its percentile among the run's validation images, whether score.py would flag
it at --fpr 0.05, and its heat map. The validation images' reference is the threshold file score.py keeps
beside the checkpoint (evaluation/anomaly_threshold.py): made once, on the first start, and shared."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from evaluation import anomaly
from evaluation.anomaly_threshold import load_or_fit_reference, reference_images

FPR = 0.05  # score.py's default --fpr
VAL_IMAGES = 5000  # score.py's default --val_images: the two share the threshold file


def heat_rgb(heat: np.ndarray, scale: float) -> torch.Tensor:
    """A heat map (H, W) in bits as an RGB image (3, H, W) in [0, 1]: blue below typical, red above, white at it;
    +-``scale`` bits at full colour."""
    import matplotlib

    rgba = matplotlib.colormaps["RdBu_r"](np.clip(heat / (2 * scale) + 0.5, 0.0, 1.0))
    return torch.from_numpy(np.ascontiguousarray(rgba[..., :3].transpose(2, 0, 1))).float()


class UploadScorer:
    """The default anomaly score of single images, placed among the validation images' scores."""

    def __init__(self, model, checkpoint: str, run: str, validation: torch.Tensor, device: torch.device) -> None:
        """``validation``: the run's validation images (uint8); score.py's VAL_IMAGES of them are scored once."""
        self.model, self.device = model, device
        settings = anomaly.ScoreSettings()
        self.score = anomaly.default_score(model, settings)
        self.settings = anomaly.ScoreSettings(only=(self.score,))
        images = reference_images(validation, VAL_IMAGES)
        ref = load_or_fit_reference(checkpoint, run, self.settings, [self.score], VAL_IMAGES,
                                    lambda s: anomaly.score_images(model, images, s, device),
                                    lambda: anomaly.mean_pixel_bits(model, images, device))
        self.table = ref["quantiles"][self.score]
        self.typical = np.asarray(ref["typical_pixel_bits"])
        self.images = ref["images"]
        self.threshold = anomaly.threshold_from_quantiles(self.table, FPR)

    def __call__(self, x: torch.Tensor) -> tuple[dict[str, Any], torch.Tensor]:
        """``x``: one image (C, H, W) in [0, 1], as the model sees it. What the page shows (JSON-ready: every
        number finite) and the heat map as an RGB image (3, H, W)."""
        images = (x[None].float() * 255).round().clamp(0, 255).to(torch.uint8)
        value = float(anomaly.score_images(self.model, images, self.settings, self.device)[self.score][0])
        heat = anomaly.heat_maps(self.model, images, self.typical, self.device)[0]
        scale = max(float(np.quantile(np.abs(heat), 0.99)), 0.5)
        return {"score": self.score, "what": anomaly.SCORES[self.score],
                "value": value if math.isfinite(value) else None,
                "percentile": anomaly.percentile(value, self.table) if math.isfinite(value) else 100.0,
                "flagged": bool(not math.isfinite(value) or value > self.threshold), "fpr": FPR,
                "threshold": self.threshold, "validation_images": self.images,
                "heat_scale_bits": scale}, heat_rgb(heat, scale)
