"""Model registry: ``--model_type`` name -> builder taking a :class:`ModelConfig`."""
from __future__ import annotations

from typing import Callable

from models.base import ModelConfig, VAE
from models.conv1xn import build_conv1xn
from models.fc import build_fc, build_fc_conv
from models.fcn import build_fcn
from models.resconv import build_resconv
from models.unet import build_unet

MODELS: dict[str, Callable[[ModelConfig], VAE]] = {
    "fc": build_fc,
    "fc_conv": build_fc_conv,
    "fcn": build_fcn,
    "resconv": build_resconv,
    "unet": build_unet,
    "conv1xn": build_conv1xn,
}

# The 2018 failures rebuilt for study: unconditional, un-normalised, at multiplier 1 only.
PLAIN_ONLY = ("unet", "conv1xn")


def build_model(cfg: ModelConfig) -> VAE:
    """Build the model named by ``cfg.model_type``."""
    if cfg.model_type not in MODELS:
        raise KeyError(f"unknown model type {cfg.model_type!r}; choose from {sorted(MODELS)}")
    model = MODELS[cfg.model_type](cfg)
    model.input_mean, model.input_std = float(cfg.input_mean), float(cfg.input_std)
    return model


__all__ = ["MODELS", "PLAIN_ONLY", "ModelConfig", "VAE", "build_model"]
