"""Reconstruction losses, the KL term, SSIM (loss and visual metric), and the objectives (one file each,
registered by name: losses/objective.py)."""
# isort: off
# Each objective's module registers its --objective name, in this order (--help's).
from losses import elbo, capacity, betatc, factorvae  # noqa: F401
# isort: on
from losses.build import build_objective
from losses.iwae import log_weights
from losses.likelihoods import DISCRETE, LIKELIHOODS, bits_per_dim, likelihood_of, pixel_nll
from losses.objective import OBJECTIVES, Batch, Objective, register
from losses.ssim import ssim, ssim_map
from losses.terms import (
    IMAGE_LOSSES,
    bce_loss,
    kl_divergence,
    kl_per_dimension,
    mse_loss,
    reconstruction_loss,
    ssim_loss,
)

__all__ = ["DISCRETE", "IMAGE_LOSSES", "LIKELIHOODS", "OBJECTIVES", "Batch", "Objective", "bce_loss",
           "bits_per_dim", "build_objective", "kl_divergence", "kl_per_dimension", "likelihood_of", "log_weights",
           "mse_loss", "pixel_nll", "reconstruction_loss", "register", "ssim", "ssim_loss", "ssim_map"]
