"""Priors p(z) over a VAE's code: the standard Gaussian N(0, I) and the VampPrior.

The VampPrior (Tomczak & Welling 2018, "VAE with a VampPrior") is the mixture of the encoder's
own posteriors at K learnt pseudo-inputs u_k: p(z) = 1/K sum_k q(z | u_k). Its KL term has no
closed form, so it is estimated by one sample, log q(z|x) - log p(z) at the training code z.
The densities here are written by hand: torch.distributions would build a MixtureSameFamily
object per call, for what is a logsumexp over K diagonal Gaussians.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

PRIORS = ("gaussian", "vamp")
LOG_2PI = math.log(2 * math.pi)


def gaussian_log_prob(z: torch.Tensor, mu: torch.Tensor | None = None, logvar: torch.Tensor | None = None
                      ) -> torch.Tensor:
    """log N(z; mu, exp(logvar)) summed over the last dim (N(0, I) when mu and logvar are None)."""
    if mu is None:
        return -0.5 * (z.pow(2) + LOG_2PI).sum(-1)
    return -0.5 * ((z - mu).pow(2) * torch.exp(-logvar) + logvar + LOG_2PI).sum(-1)


def mixture_log_prob(z: torch.Tensor, means: torch.Tensor, logvars: torch.Tensor) -> torch.Tensor:
    """log (1/K sum_k N(z; means_k, exp(logvars_k))): ``z`` (..., d), ``means``/``logvars`` (K, d) -> (...)."""
    per_component = gaussian_log_prob(z.unsqueeze(-2), means, logvars)  # (..., K)
    return torch.logsumexp(per_component, dim=-1) - math.log(means.shape[0])


@contextmanager
def batchnorm_frozen(module: nn.Module) -> Iterator[None]:
    """Batch-norm layers in eval mode (running statistics, not updated) for the duration.

    The VampPrior's pseudo-inputs go through the encoder every step; with batch statistics they
    would be normalised by their own batch and would pull the running statistics, which
    validation uses, away from the data's.
    """
    layers = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    for m in layers:
        m.eval()
    try:
        yield
    finally:
        for m in layers:
            m.train()
