"""Model registry: ``--model_type`` name -> builder taking a :class:`ModelConfig`."""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from models.base import VAE, ModelConfig
from models.conv1xn import build_conv1xn
from models.fc import build_fc, build_fc_conv
from models.fcn import build_fcn
from models.hvae import build_hvae
from models.pixelvae import build_pixelvae
from models.priors import PRIORS
from models.resconv import build_resconv, stages
from models.unet import build_unet

MODELS: dict[str, Callable[[ModelConfig], VAE]] = {
    "fc": build_fc,
    "fc_conv": build_fc_conv,
    "fcn": build_fcn,
    "resconv": build_resconv,
    "unet": build_unet,
    "conv1xn": build_conv1xn,
    "hvae": build_hvae,
    "pixelvae": build_pixelvae,
}

# The 2018 failures rebuilt for study: unconditional, un-normalised, at multiplier 1 only.
PLAIN_ONLY = ("unet", "conv1xn")


# Built for any (C, H, W) and any likelihood; the others are the 2018 models of 28x28 grey images, one
# logit per pixel.
ANY_SHAPE = ("fc", "resconv", "hvae", "pixelvae")


def shape_problem(model_type: str, channels: int, size: int) -> str | None:
    """Why ``model_type`` cannot be built for (channels, size, size) images, or None if it can."""
    if model_type not in ANY_SHAPE and (channels, size) != (1, 28):
        return (f"--model_type {model_type} is a 2018 model of 28x28 grey images, not {channels}x{size}x{size}; "
                f"{', '.join(ANY_SHAPE)} build for any size and channel count")
    if model_type in ("resconv", "hvae", "pixelvae") and (size < 8 or stages(size) is None):
        return (f"--model_type {model_type} cannot be built for {size}x{size} images (their stride-2 stages need "
                "a size that halves evenly down to 8 pixels or fewer, e.g. 28, 32, 48, 64, 96, 128); pass --image_size")
    return None


def build_model(cfg: ModelConfig) -> VAE:
    """Build the model named by ``cfg.model_type``."""
    if cfg.model_type not in MODELS:
        raise KeyError(f"unknown model type {cfg.model_type!r}; choose from {sorted(MODELS)}")
    model = MODELS[cfg.model_type](cfg)
    model.input_mean, model.input_std = float(cfg.input_mean), float(cfg.input_std)
    model.model_type = cfg.model_type
    model.image_shape = (cfg.image_channels, cfg.image_size, cfg.image_size)  # what it encodes and decodes
    model.likelihood = cfg.likelihood
    if cfg.likelihood in ("logistic", "gaussian"):
        # one learnt log-scale per channel, starting at 0.1 of the [0, 1] range
        model.log_scale = nn.Parameter(torch.full((cfg.image_channels,), math.log(0.1)))
    if cfg.prior not in PRIORS:
        raise KeyError(f"unknown prior {cfg.prior!r}; choose from {PRIORS}")
    if cfg.prior == "vamp":
        if cfg.conditional:
            raise ValueError("the VampPrior is unconditional: its pseudo-inputs have no class")
        model.prior = "vamp"
        # pixel logits of the pseudo-inputs: small noise around grey 0.5 images (the encoder, not the
        # initialisation, decides where their posteriors sit)
        shape = (cfg.vamp_components, cfg.image_channels, cfg.image_size, cfg.image_size)
        model.pseudo_inputs = nn.Parameter(0.1 * torch.randn(shape))
    return model


__all__ = ["ANY_SHAPE", "MODELS", "PLAIN_ONLY", "PRIORS", "ModelConfig", "VAE", "build_model", "shape_problem"]
