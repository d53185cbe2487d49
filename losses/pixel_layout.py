"""What a decoder outputs per pixel, by likelihood: one logit per channel (Bernoulli, and the
logistic / Gaussian with a learnt scale per channel), or for ``dmol`` the parameters of a
mixture of K discretised logistics per pixel (Salimans et al. 2017, PixelCNN++): K mixture
logits, K locations and K log-scales per channel, and for colour K x 3 coefficients that let
green depend on red and blue on red and green. K = 1 is one logistic with its own location and
scale per pixel and channel. The likelihood that reads it is losses/likelihoods.py; the decoders size their
last layer with ``output_channels``, and models/pixels.py turns the output into images and drawn pixels.

It lives with the likelihood (a loss takes tensors, not a model's layout); models may import this module,
which imports nothing of the project."""
from __future__ import annotations

import torch

MIXTURE = "dmol"
RGB_COUPLINGS = 3  # green on red; blue on red and green
# smallest log-scale of the per-channel logistic (and of the mixture before issue 36): exp(-7) ~ 1e-3 of the
# [0, 1] range, a quarter of a grey level
LOG_SCALE_MIN = -7.0
# smallest log-scale of the mixture's logistics: exp(-8) = 3.4e-4 of the [0, 1] range, a twelfth of a grey level,
# so a decoder sure of a pixel puts 0.994 on an interior level (0.008 bits) and 0.997 on 0 or 255 per channel
# (at -7: 0.791 and 0.896, a floor of 0.28 bits/dim on flat-coloured images). PixelCNN++'s -7 on [-1, 1] data
# is -7.69 here (0.973); not much lower, because a location's gradient grows as 1 / scale.
MIXTURE_LOG_SCALE_MIN = -8.0
# How the decoder's output gives a logistic's location. "unbounded": the output itself, on the [0, 1] scale, as
# PixelCNN++'s means (the edge bins 0 and 255 take everything beyond, so a decoder sure of white moves the
# location past 1). "sigmoid": sigmoid(output) and log-scales floored at LOG_SCALE_MIN, the mapping of models
# trained before issue 36 (inside (0, 1), so at 0 and 255 training widened the scale instead: P -> 1/2);
# such a model hands its output over in the unbounded form (as_unbounded), so every reader has one form.
MIXTURE_LOCATIONS = ("unbounded", "sigmoid")


def params_per_component(channels: int) -> int:
    """Mixture logit, location and log-scale per channel, and for colour the channel couplings."""
    return 1 + 2 * channels + (RGB_COUPLINGS if channels == 3 else 0)


def output_channels(likelihood: str, channels: int, components: int) -> int:
    """The decoder's output channels for images of ``channels`` under ``likelihood``."""
    return components * params_per_component(channels) if likelihood == MIXTURE else channels


def split_mixture(params: torch.Tensor, channels: int
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(..., P, H, W) -> mixture logits (..., K, H, W), locations (unbounded, on the [0, 1] scale) and raw
    log-scales (..., K, C, H, W), and for colour the couplings in (-1, 1) (..., K, 3, H, W)."""
    *lead, p, h, w = params.shape
    k = p // params_per_component(channels)
    logit_pi = params[..., :k, :, :]
    loc = params[..., k:k + k * channels, :, :].reshape(*lead, k, channels, h, w)
    log_s = params[..., k + k * channels:k + 2 * k * channels, :, :].reshape(*lead, k, channels, h, w)
    coeffs = (torch.tanh(params[..., k + 2 * k * channels:, :, :]).reshape(*lead, k, RGB_COUPLINGS, h, w)
              if channels == 3 else None)
    return logit_pi, loc, log_s, coeffs


def as_unbounded(params: torch.Tensor, channels: int) -> torch.Tensor:
    """A decoder output (..., P, H, W) of the "sigmoid" location mapping in the "unbounded" form: its locations
    sigmoid(output) and its log-scales floored at LOG_SCALE_MIN, so split_mixture and every reader of the
    mixture compute what they computed for it before issue 36 (a bfloat16 output in float32, where its losses
    ran)."""
    if params.element_size() < 4:
        params = params.float()
    k = params.shape[-3] // params_per_component(channels)
    loc, scale = k + k * channels, k + 2 * k * channels  # where the log-scales and the couplings begin
    return torch.cat([params[..., :k, :, :], torch.sigmoid(params[..., k:loc, :, :]),
                      params[..., loc:scale, :, :].clamp_min(LOG_SCALE_MIN), params[..., scale:, :, :]], dim=-3)


def coupled_locations(loc: torch.Tensor, coeffs: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """Each component's location per channel given the channels before it (``x``: their values,
    broadcast against (..., K, C, H, W)); grey images have none."""
    if coeffs is None:
        return loc
    r, g, b = loc.unbind(-3)  # each (..., K, H, W)
    xr, xg = x[..., 0, :, :], x[..., 1, :, :]  # x (..., 1, C, H, W): (..., 1, H, W), broadcast over K
    return torch.stack([r, g + coeffs[..., 0, :, :] * xr, b + coeffs[..., 1, :, :] * xr + coeffs[..., 2, :, :] * xg],
                       dim=-3)


