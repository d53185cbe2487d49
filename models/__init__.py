"""Model registry: ``--model_type`` name -> builder taking a :class:`ModelConfig`."""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from models.base import ModelConfig, VAE
from models.conv1xn import build_conv1xn
from models.fc import build_fc, build_fc_conv
from models.fcn import build_fcn
from models.resconv import build_resconv, stages
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


# Built for any (C, H, W); the others are the 2018 models of 28x28 grey images.
ANY_SHAPE = ("fc", "resconv")


def shape_problem(model_type: str, channels: int, size: int) -> str | None:
    """Why ``model_type`` cannot be built for (channels, size, size) images, or None if it can."""
    if model_type not in ANY_SHAPE and (channels, size) != (1, 28):
        return (f"--model_type {model_type} is a 2018 model of 28x28 grey images, not {channels}x{size}x{size}; "
                f"{' and '.join(ANY_SHAPE)} build for any size and channel count")
    if model_type == "resconv" and (size < 8 or stages(size) is None):
        return (f"--model_type resconv cannot be built for {size}x{size} images (its stride-2 stages need a size "
                "that halves evenly down to 8 pixels or fewer, e.g. 28, 32, 48, 64, 96, 128); pass --image_size")
    return None


def build_model(cfg: ModelConfig) -> VAE:
    """Build the model named by ``cfg.model_type``."""
    if cfg.model_type not in MODELS:
        raise KeyError(f"unknown model type {cfg.model_type!r}; choose from {sorted(MODELS)}")
    model = MODELS[cfg.model_type](cfg)
    model.input_mean, model.input_std = float(cfg.input_mean), float(cfg.input_std)
    if cfg.likelihood != "bernoulli":
        # one learnt log-scale per channel, starting at 0.1 of the [0, 1] range
        model.likelihood = cfg.likelihood
        model.log_scale = nn.Parameter(torch.full((cfg.image_channels,), math.log(0.1)))
    return model


__all__ = ["ANY_SHAPE", "MODELS", "PLAIN_ONLY", "ModelConfig", "VAE", "build_model", "shape_problem"]
