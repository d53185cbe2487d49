"""What a decoder outputs per pixel, by likelihood: one logit per channel (Bernoulli, and the
logistic / Gaussian with a learnt scale per channel), or for ``dmol`` the parameters of a
mixture of K discretised logistics per pixel (Salimans et al. 2017, PixelCNN++): K mixture
logits, K locations and K log-scales per channel, and for colour K x 3 coefficients that let
green depend on red and blue on red and green. K = 1 is one logistic with its own location and
scale per pixel and channel. The likelihood itself is in losses/likelihoods.py."""
from __future__ import annotations

import torch

MIXTURE = "dmol"
RGB_COUPLINGS = 3  # green on red; blue on red and green
# smallest log-scale a logistic gets: exp(-7) ~ 1e-3 of the [0, 1] range, a quarter of a grey level
LOG_SCALE_MIN = -7.0


def params_per_component(channels: int) -> int:
    """Mixture logit, location and log-scale per channel, and for colour the channel couplings."""
    return 1 + 2 * channels + (RGB_COUPLINGS if channels == 3 else 0)


def output_channels(likelihood: str, channels: int, components: int) -> int:
    """The decoder's output channels for images of ``channels`` under ``likelihood``."""
    return components * params_per_component(channels) if likelihood == MIXTURE else channels


def split_mixture(params: torch.Tensor, channels: int
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(..., P, H, W) -> mixture logits (..., K, H, W), locations in (0, 1) and raw log-scales
    (..., K, C, H, W), and for colour the couplings in (-1, 1) (..., K, 3, H, W)."""
    *lead, p, h, w = params.shape
    k = p // params_per_component(channels)
    logit_pi = params[..., :k, :, :]
    loc = torch.sigmoid(params[..., k:k + k * channels, :, :]).reshape(*lead, k, channels, h, w)
    log_s = params[..., k + k * channels:k + 2 * k * channels, :, :].reshape(*lead, k, channels, h, w)
    coeffs = (torch.tanh(params[..., k + 2 * k * channels:, :, :]).reshape(*lead, k, RGB_COUPLINGS, h, w)
              if channels == 3 else None)
    return logit_pi, loc, log_s, coeffs


def coupled_locations(loc: torch.Tensor, coeffs: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """Each component's location per channel given the channels before it (``x``: their values,
    broadcast against (..., K, C, H, W)); grey images have none."""
    if coeffs is None:
        return loc
    r, g, b = loc.unbind(-3)  # each (..., K, H, W)
    xr, xg = x[..., 0, :, :], x[..., 1, :, :]  # x (..., 1, C, H, W): (..., 1, H, W), broadcast over K
    return torch.stack([r, g + coeffs[..., 0, :, :] * xr, b + coeffs[..., 1, :, :] * xr + coeffs[..., 2, :, :] * xg],
                       dim=-3)


def mean_image(likelihood: str, output: torch.Tensor, channels: int) -> torch.Tensor:
    """The image a decoder's output stands for, in [0, 1] (B, C, H, W): sigmoid of the logits, or
    the mixture's mean (each component's coupled location taken at the means of the channels before)."""
    if likelihood != MIXTURE:
        return torch.sigmoid(output)
    logit_pi, loc, _, coeffs = split_mixture(output, channels)
    if coeffs is not None:  # the components' own means stand in for the channels before
        r, g, b = loc.unbind(-3)
        g = g + coeffs[..., 0, :, :] * r
        loc = torch.stack([r, g, b + coeffs[..., 1, :, :] * r + coeffs[..., 2, :, :] * g], dim=-3)
    weights = torch.softmax(logit_pi, dim=-3).unsqueeze(-3)  # (..., K, 1, H, W)
    return (weights * loc.clamp(0, 1)).sum(-4)


def _quantised(v: torch.Tensor) -> torch.Tensor:
    """Values on the 8-bit grid {0, 1/255, ..., 1} that a discrete likelihood is a distribution over."""
    return torch.round(v.clamp(0, 1) * 255) / 255


def _logistic(u: torch.Tensor) -> torch.Tensor:
    """Standard logistic draws from uniforms in (0, 1)."""
    u = u.clamp(1e-5, 1 - 1e-5)
    return torch.log(u) - torch.log1p(-u)


def sample_pixels(likelihood: str, params: torch.Tensor, log_scale: torch.Tensor | None, u: torch.Tensor,
                  channels: int) -> torch.Tensor:
    """One pixel per image (B, C) from the decoder's output at that pixel (B, P), with uniforms ``u``
    (B, >= P + C): a discrete likelihood's pixel is drawn (the mixture's component by the Gumbel-max
    trick, then each channel given the ones before, as the colour coupling says) and put on the 8-bit
    grid; a Bernoulli or Gaussian pixel is its mean, the image the BCE and MSE score."""
    if likelihood != MIXTURE:
        loc = torch.sigmoid(params)
        if likelihood != "logistic":
            return loc
        s = torch.exp(log_scale.clamp_min(LOG_SCALE_MIN))
        return _quantised(loc + s * _logistic(u[:, :channels]))
    logit_pi, loc, log_s, coeffs = (t if t is None else t[..., 0, 0] for t in split_mixture(params[..., None, None],
                                                                                            channels))
    k = logit_pi.shape[1]
    pick = torch.argmax(logit_pi - torch.log(-torch.log(u[:, :k].clamp(1e-5, 1 - 1e-5))), dim=1)  # (B,)
    rows = torch.arange(params.shape[0], device=params.device)
    loc, s = loc[rows, pick], torch.exp(log_s[rows, pick].clamp_min(LOG_SCALE_MIN))  # (B, C)
    noise = _logistic(u[:, k:k + channels])
    out = []
    for c in range(channels):
        m = loc[:, c]
        if coeffs is not None and c > 0:  # green on red, blue on red and green
            cf = coeffs[rows, pick]
            m = m + (cf[:, 0] * out[0] if c == 1 else cf[:, 1] * out[0] + cf[:, 2] * out[1])
        out.append(_quantised(m + s[:, c] * noise[:, c]))
    return torch.stack(out, dim=1)
