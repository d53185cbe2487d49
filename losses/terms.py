"""The terms the objectives are made of: the reconstruction losses and the closed-form KL divergence
(the objectives themselves: losses/objective.py and one file each).

Reductions: every term is summed over pixels (reconstruction) or latent dimensions (KL)
and averaged over the images of the batch, so values are per image (nats for BCE + KL).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from losses.likelihoods import pixel_nll
from losses.ssim import ssim_map

# logistic / gaussian: the likelihoods of losses/likelihoods.py, with the model's learnt scale
IMAGE_LOSSES = ("bce", "mse", "ssim", "bce_ssim", "logistic", "gaussian", "dmol")


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)), summed over latent dims, mean over the batch.

    Closed form, Appendix B of Kingma & Welling (2014):
    -1/2 * sum(1 + logvar - mu^2 - exp(logvar)).
    """
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / mu.shape[0]


def bce_loss(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Bernoulli negative log-likelihood from logits, summed over pixels, mean over the batch."""
    return F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / x.shape[0]


def mse_loss(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Squared error of sigmoid(logits) against x, summed over pixels, mean over the batch."""
    return F.mse_loss(torch.sigmoid(logits), x, reduction="sum") / x.shape[0]


def ssim_loss(logits: torch.Tensor, x: torch.Tensor, window_size: int = 5) -> torch.Tensor:
    """Sum over pixels of (1 - SSIM map), mean over the batch.

    That is (number of pixels) x (1 - mean SSIM) per image: on the scale of a summed
    BCE, so it competes with the KL term. The 2018 loss used the mean (at most 1 per
    image), which the KL term overwhelmed: the posterior collapsed and it "did not train".
    """
    return (1 - ssim_map(torch.sigmoid(logits), x, window_size)).sum() / x.shape[0]


def kl_per_dimension(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """The closed-form KL of each latent dimension, mean over the batch: shape (z,)."""
    return -0.5 * torch.mean(1 + logvar - mu.pow(2) - logvar.exp(), dim=0)


def reconstruction_loss(kind: str, logits: torch.Tensor, x: torch.Tensor, ssim_window_size: int = 5,
                        ssim_weight: float = 1.0, log_scale: torch.Tensor | None = None) -> torch.Tensor:
    """``bce_ssim`` is BCE + ssim_weight x the ssim loss: the likelihood keeps every pixel's
    grey level honest, the SSIM term rewards local structure (edges, texture). ``logistic`` and
    ``gaussian``: their NLL with the model's learnt ``log_scale`` per channel; ``dmol``: the NLL of the
    decoder's pixel mixtures (``logits`` holds their parameters)."""
    if kind in ("logistic", "gaussian", "dmol"):
        return pixel_nll(kind, logits, x, log_scale).sum() / x.shape[0]
    if kind == "bce":
        return bce_loss(logits, x)
    if kind == "mse":
        return mse_loss(logits, x)
    if kind == "ssim":
        return ssim_loss(logits, x, ssim_window_size)
    if kind == "bce_ssim":
        return bce_loss(logits, x) + ssim_weight * ssim_loss(logits, x, ssim_window_size)
    raise ValueError(f"unknown image loss {kind!r}; choose from {IMAGE_LOSSES}")
