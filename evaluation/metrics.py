"""The one evaluation pass: batches of a split, the metrics of a batch, and what callers sum.

``validate`` (each epoch), ``evaluate`` (``--evaluate``), the IWAE bound, the posterior means
and the benchmarks all walk a split with :func:`batches` and measure a batch with
:func:`batch_metrics`, so every number the project reports about a split is computed one way.
Metrics decode the posterior mean (the model is put in eval mode by the caller) and are per
image: summed over pixels or latent dimensions, averaged over the batch.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

from datasets import Split, as_float
from losses import DISCRETE, bits_per_dim
from models import VAE
from runtime.metrics import Batch, evaluated, evaluation_figures, measure


def batches(data: Split, batch_size: int, device: torch.device, labels: bool = False,
            rows: Callable[[int], slice] | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """``(x, y)`` of each minibatch of ``data`` in order, on ``device``; ``y`` only with ``labels``.

    ``rows(n)``: the part of an n-image minibatch to keep (a torchrun rank's shard).
    """
    for start in range(0, len(data), batch_size):
        x = data.x[start:start + batch_size]
        keep = rows(x.shape[0]) if rows is not None else slice(None)
        y = data.y[start:start + batch_size][keep] if labels else None
        x = as_float(x[keep].to(device))
        yield x, (y.to(device) if y is not None else None)


def batch_metrics(model: VAE, x: torch.Tensor, y: torch.Tensor | None, names: Sequence[str],
                  window_size: int = 5, image_loss_type: str = "bce", ssim_weight: float = 1.0
                  ) -> dict[str, torch.Tensor]:
    """Per-image means (0-d tensors, never read on the host here) of one batch, from one forward.

    ``names``: metrics declared with a computation in runtime/metrics.py (bce, mse, kl, ssim with window
    ``window_size``, nll, img_loss: the training reconstruction term ``image_loss_type``, ...) and a
    hierarchical model's KL levels (``model.level_names``).
    """
    if model.analytic_kl:
        logits, mu, logvar = model(x, y=y)
        kls = None
    else:  # the KL per image and level from the model (VampPrior: one sample of a fixed seed)
        logits, mu, logvar, kls = model(x, y=y, with_kl=True)
    return measure(Batch(model, x, logits, mu, logvar, kls, window_size, image_loss_type, ssim_weight), names)


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
