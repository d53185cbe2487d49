"""What a decoder's output stands for as an image: its mean image, and pixels drawn from it one at a
time (an autoregressive decoder's sampling). The output's layout per likelihood (one logit per channel, or a
mixture of discretised logistics per pixel, Salimans et al. 2017) is losses/pixel_layout.py."""
from __future__ import annotations

import torch

from losses.pixel_layout import LOG_SCALE_MIN, MIXTURE, MIXTURE_LOG_SCALE_MIN, split_mixture


def mean_image(likelihood: str, output: torch.Tensor, channels: int) -> torch.Tensor:
    """The image a decoder's output stands for, in [0, 1] (B, C, H, W): sigmoid of the logits, or
    the mixture's mean (each component's coupled location taken at the means of the channels before)."""
    if likelihood != MIXTURE:
        return torch.sigmoid(output)
    logit_pi, loc, _, coeffs = split_mixture(output, channels)
    loc = loc.clamp(0, 1)  # a location past an edge: that edge level (as its draws are)
    if coeffs is not None:  # the components' own means stand in for the channels before
        r, g, b = loc.unbind(-3)
        g = g + coeffs[..., 0, :, :] * r
        loc = torch.stack([r, g, b + coeffs[..., 1, :, :] * r + coeffs[..., 2, :, :] * g], dim=-3)
    weights = torch.softmax(logit_pi, dim=-3).unsqueeze(-3)  # (..., K, 1, H, W)
    return (weights * loc.clamp(0, 1)).sum(-4)  # the coupled ones may leave [0, 1] again


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
    loc, s = loc[rows, pick], torch.exp(log_s[rows, pick].clamp_min(MIXTURE_LOG_SCALE_MIN))  # (B, C)
    noise = _logistic(u[:, k:k + channels])
    out = []
    for c in range(channels):
        m = loc[:, c]
        if coeffs is not None and c > 0:  # green on red, blue on red and green
            cf = coeffs[rows, pick]
            m = m + (cf[:, 0] * out[0] if c == 1 else cf[:, 1] * out[0] + cf[:, 2] * out[1])
        out.append(_quantised(m + s[:, c] * noise[:, c]))
    return torch.stack(out, dim=1)
