"""Pixel likelihoods p(x|z) of the decoder's output, as negative log-likelihoods per pixel.

Reduction: none (the same shape as ``x``); callers sum over pixels and average over images.
The decoder gives one logit per pixel; ``sigmoid(logit)`` in (0, 1) is the Bernoulli mean, or
the location of the logistic / Gaussian, so every picture of a model decodes the same way.

- ``bernoulli``: the BCE of the 2018 loss (x in [0, 1]: the continuous Bernoulli without its
  normaliser, so not a normalised density of 8-bit images).
- ``logistic``: the discretised logistic of 8-bit images (Salimans et al. 2017, PixelCNN++): the
  probability of the pixel's bin of width 1/255 under a logistic with a learnt scale per channel,
  the edge bins taking the tails; a normalised distribution over the 256 levels, so its NLL in
  bits per dimension compares with the likelihood literature.
- ``gaussian``: a Gaussian with a learnt standard deviation per channel: a density of x, not a
  distribution over levels (its NLL can be negative).
- ``dmol``: a mixture of K discretised logistics per pixel, each with its own location and scale
  per pixel and channel, colour channels coupled as in PixelCNN++ (losses/pixel_layout.py lays out the
  decoder's output); the decoder outputs the mixture's parameters instead of one logit per channel, the
  locations unbounded as PixelCNN++'s means (not a sigmoid: see pixel_layout.MIXTURE_LOCATIONS).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from losses.pixel_layout import LOG_SCALE_MIN, MIXTURE, MIXTURE_LOG_SCALE_MIN, coupled_locations, split_mixture

LIKELIHOODS = ("bernoulli", "logistic", "gaussian", MIXTURE)
# likelihoods that are distributions over the 256 levels: their NLL is a code length (bits per dimension)
DISCRETE = ("logistic", MIXTURE)
LEVELS = 256  # 8-bit images


def _per_channel(log_scale: torch.Tensor) -> torch.Tensor:
    """(C,) -> (C, 1, 1): broadcasts against images (..., C, H, W)."""
    return log_scale.clamp_min(LOG_SCALE_MIN).view(-1, 1, 1)


def discretized_logistic_nll(logits: torch.Tensor, log_scale: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log P(x) per pixel, x in {0, 1/255, ..., 1}; location sigmoid(logits), scale exp(log_scale)."""
    return -_logistic_bin_log_prob(torch.sigmoid(logits), _per_channel(log_scale), x)


def _logistic_bin_log_prob(loc: torch.Tensor, log_s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log P(x's bin) under logistics of location ``loc`` and log-scale ``log_s`` (broadcast)."""
    half = 0.5 / (LEVELS - 1)
    centred = (x - loc) * torch.exp(-log_s)
    upper, lower = centred + half * torch.exp(-log_s), centred - half * torch.exp(-log_s)
    log_cdf_upper = upper - F.softplus(upper)  # log sigmoid(upper): the first bin takes the left tail
    log_sf_lower = -F.softplus(lower)  # log (1 - sigmoid(lower)): the last bin takes the right tail
    mass = torch.sigmoid(upper) - torch.sigmoid(lower)
    # a bin far in a tail: its mass underflows, so use the density at its centre times its width
    log_mass_approx = centred - log_s - 2 * F.softplus(centred) + math.log(2 * half)
    log_mass = torch.where(mass > 1e-5, torch.log(mass.clamp_min(1e-12)), log_mass_approx)
    return torch.where(x < half, log_cdf_upper, torch.where(x > 1 - half, log_sf_lower, log_mass))


def mixture_nll(params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log P(x) of each pixel (all its channels together) under the decoder's mixture of discretised
    logistics ``params`` (..., P, H, W) (losses/pixel_layout.py); shape (..., 1, H, W)."""
    logit_pi, loc, log_s, coeffs = split_mixture(params, x.shape[-3])
    xk = x.unsqueeze(-4)  # (..., 1, C, H, W): one copy for every component
    log_p = _logistic_bin_log_prob(coupled_locations(loc, coeffs, xk), log_s.clamp_min(MIXTURE_LOG_SCALE_MIN), xk)
    log_mix = torch.log_softmax(logit_pi, dim=-3) + log_p.sum(-3)  # (..., K, H, W)
    return -torch.logsumexp(log_mix, dim=-3, keepdim=True)


def gaussian_nll(logits: torch.Tensor, log_scale: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log N(x; sigmoid(logits), exp(log_scale)^2) per pixel (a density)."""
    log_s = _per_channel(log_scale)
    return 0.5 * math.log(2 * math.pi) + log_s + 0.5 * ((x - torch.sigmoid(logits)) * torch.exp(-log_s)).pow(2)


def likelihood_of(image_loss_type: str) -> str:
    """The model's likelihood for a ``--image_loss_type``: its own for logistic, gaussian and dmol, else
    bernoulli (the BCE, MSE and SSIM losses all decode sigmoid(logits) with no learnt scale)."""
    return image_loss_type if image_loss_type in LIKELIHOODS else "bernoulli"


def pixel_nll(likelihood: str, logits: torch.Tensor, x: torch.Tensor,
              log_scale: torch.Tensor | None = None) -> torch.Tensor:
    """-log p(x|z) per pixel under ``likelihood`` (``log_scale`` (C,) for logistic and gaussian; the
    mixture's is per pixel and all channels together: shape (..., 1, H, W))."""
    if likelihood == "bernoulli":
        return F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    if likelihood == MIXTURE:
        return mixture_nll(logits, x)
    if log_scale is None:
        raise ValueError(f"the {likelihood} likelihood needs the model's log_scale")
    if likelihood == "logistic":
        return discretized_logistic_nll(logits, log_scale, x)
    if likelihood == "gaussian":
        return gaussian_nll(logits, log_scale, x)
    raise ValueError(f"unknown likelihood {likelihood!r}; choose from {LIKELIHOODS}")


def bits_per_dim(nats_per_image: float, dims: int) -> float:
    """Nats per image -> bits per pixel and channel."""
    return nats_per_image / (dims * math.log(2))
