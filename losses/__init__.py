"""Reconstruction losses, the KL term, and SSIM (loss and visual metric)."""
from losses.likelihoods import DISCRETE, LIKELIHOODS, bits_per_dim, likelihood_of, pixel_nll
from losses.ssim import ssim, ssim_map
from losses.vae_loss import (
    IMAGE_LOSSES,
    VAELoss,
    bce_loss,
    kl_divergence,
    kl_per_dimension,
    mse_loss,
    reconstruction_loss,
    ssim_loss,
)

__all__ = ["DISCRETE", "IMAGE_LOSSES", "LIKELIHOODS", "VAELoss", "bce_loss", "bits_per_dim", "kl_divergence",
           "kl_per_dimension", "likelihood_of", "mse_loss", "pixel_nll", "reconstruction_loss", "ssim", "ssim_loss",
           "ssim_map"]
