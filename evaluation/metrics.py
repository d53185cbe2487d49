"""What callers sum over a split: ``--evaluate``'s figures, the posterior means, the active units.

The pass itself (:func:`batches`, :func:`batch_metrics`) lives in runtime/batch_pass.py, which the training
loop's validation shares, so every number the project reports about a split is computed one way; the
figures are declared in runtime/metrics.py. Metrics decode the posterior mean (the model is put in eval mode
by the caller) and are per image: summed over pixels or latent dimensions, averaged over the batch.
"""
from __future__ import annotations

import numpy as np
import torch

from datasets import Split
from losses import DISCRETE, bits_per_dim
from models import VAE
from runtime.batch_pass import batch_metrics, batches
from runtime.metrics import evaluated, evaluation_figures

ACTIVE_UNIT_VARIANCE = 0.01  # Burda et al. (2016)'s threshold on Cov_x(E[z|x])


def active_units(means: torch.Tensor) -> int:
    """Latent dimensions the code uses: those whose posterior mean varies over the images (``means``
    (N, z)) by more than ACTIVE_UNIT_VARIANCE."""
    return int((means.var(0, unbiased=False) > ACTIVE_UNIT_VARIANCE).sum())


@torch.no_grad()
def evaluate(model: VAE, data: Split, device: torch.device, window_size: int = 5, batch_size: int = 1000
             ) -> dict[str, float]:
    """Per-image BCE, MSE, KL, BCE+KL and SSIM of ``data``, decoding the posterior mean; the
    model's likelihood (NLL, NLL+KL: the negative ELBO) and, for the discretised logistic, the
    negative ELBO in bits per dimension; every figure runtime/metrics.py declares for --evaluate."""
    model.eval()
    levels = model.level_names
    names = tuple(m.name for m in evaluated() if m.compute is not None) + levels
    sums = dict.fromkeys(names, 0.0)
    with model.prior_fixed():
        for x, y in batches(data, batch_size, device, model.conditional):
            for name, value in batch_metrics(model, x, y, names, window_size).items():
                sums[name] += value.item() * x.shape[0]
    out = {k: v / len(data) for k, v in sums.items()}
    figures = evaluation_figures(out)
    # the eval JSON's layout: the split's size and likelihood after SSIM (as before metrics were declared)
    cut = list(figures).index("ssim") + 1
    result = {**dict(list(figures.items())[:cut]), "n": len(data), "likelihood": model.likelihood,
              **dict(list(figures.items())[cut:]), **{level: out[level] for level in levels}}
    if model.likelihood in DISCRETE:
        result["bits_per_dim"] = bits_per_dim(result["nll_kl"], data.x[0].numel())
    return result


@torch.no_grad()
def posterior_means(model: VAE, data: Split, device: torch.device, batch_size: int = 2000) -> np.ndarray:
    """The encoder's mu for every image of ``data``, shape (N, z) (a CVAE's given the true class)."""
    model.eval()
    out = [model.posterior(x, y)[0].cpu() for x, y in batches(data, batch_size, device, model.conditional)]
    return torch.cat(out).numpy()
