"""Reconstruction losses, the KL term, SSIM (loss and visual metric), and the disentangling objectives."""
from losses.disentangling import OBJECTIVES
from losses.likelihoods import DISCRETE, LIKELIHOODS, bits_per_dim, likelihood_of, pixel_nll
from losses.ssim import ssim, ssim_map
from losses.vae_loss import (
    IMAGE_LOSSES,
    OBJECTIVE_TERMS,
    VAELoss,
    bce_loss,
    kl_divergence,
    kl_per_dimension,
    mse_loss,
    reconstruction_loss,
    ssim_loss,
)

__all__ = ["DISCRETE", "IMAGE_LOSSES", "LIKELIHOODS", "OBJECTIVES", "OBJECTIVE_TERMS", "VAELoss", "bce_loss",
           "bits_per_dim", "kl_divergence", "kl_per_dimension", "likelihood_of", "mse_loss", "pixel_nll",
           "reconstruction_loss", "ssim", "ssim_loss", "ssim_map"]
