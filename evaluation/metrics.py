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
from losses import DISCRETE, bce_loss, bits_per_dim, kl_divergence, mse_loss, pixel_nll, reconstruction_loss, ssim
from models import VAE
from models.pixels import MIXTURE

# What --evaluate reports per split (plus bce_kl = bce + kl, nll_kl = nll + kl, n, and for the
# discretised logistic, bits per dimension).
EVAL_METRICS = ("bce", "mse", "kl", "ssim", "nll")


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

    ``names`` from: bce, mse, kl, ssim (window ``window_size``), nll (-log p(x|z) under the
    model's likelihood: the BCE for a Bernoulli one), img_loss (the training reconstruction term
    ``image_loss_type``), and a hierarchical model's KL levels (``model.level_names``).
    """
    if model.analytic_kl:
        logits, mu, logvar = model(x, y=y)
        kls = None
    else:  # the KL per image and level from the model (VampPrior: one sample of a fixed seed)
        logits, mu, logvar, kls = model(x, y=y, with_kl=True)
    # the BCE and MSE of the image the output stands for (for one logit per pixel: of the logits)
    image_logits = logits if model.likelihood != MIXTURE else torch.logit(model.image_of(logits), eps=1e-6)
    measure: dict[str, Callable[[], torch.Tensor]] = {
        "bce": lambda: bce_loss(image_logits, x),
        "mse": lambda: mse_loss(image_logits, x),
        "kl": lambda: kl_divergence(mu, logvar) if kls is None else kls.sum(1).mean(),
        "ssim": lambda: ssim(model.image_of(logits), x, window_size).mean(),
        "nll": lambda: pixel_nll(model.likelihood, logits, x, model.log_scale).sum() / x.shape[0],
        "img_loss": lambda: reconstruction_loss(image_loss_type, logits, x, window_size, ssim_weight,
                                                model.log_scale),
    }
    if kls is not None:
        measure.update({level: (lambda j=j: kls[:, j].mean()) for j, level in enumerate(model.level_names)})
    return {name: measure[name]() for name in names}


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
    negative ELBO in bits per dimension."""
    model.eval()
    levels = model.level_names
    sums = dict.fromkeys(EVAL_METRICS + levels, 0.0)
    with model.prior_fixed():
        for x, y in batches(data, batch_size, device, model.conditional):
            for name, value in batch_metrics(model, x, y, EVAL_METRICS + levels, window_size).items():
                sums[name] += value.item() * x.shape[0]
    out = {k: v / len(data) for k, v in sums.items()}
    result = {"bce": out["bce"], "mse": out["mse"], "kl": out["kl"], "bce_kl": out["bce"] + out["kl"],
              "ssim": out["ssim"], "n": len(data), "likelihood": model.likelihood, "nll": out["nll"],
              "nll_kl": out["nll"] + out["kl"], **{level: out[level] for level in levels}}
    if model.likelihood in DISCRETE:
        result["bits_per_dim"] = bits_per_dim(result["nll_kl"], data.x[0].numel())
    return result


@torch.no_grad()
def posterior_means(model: VAE, data: Split, device: torch.device, batch_size: int = 2000) -> np.ndarray:
    """The encoder's mu for every image of ``data``, shape (N, z) (a CVAE's given the true class)."""
    model.eval()
    out = [model.posterior(x, y)[0].cpu() for x, y in batches(data, batch_size, device, model.conditional)]
    return torch.cat(out).numpy()
