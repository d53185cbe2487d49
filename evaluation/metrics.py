"""What callers sum over a split: ``--evaluate``'s figures, the posterior means, the active units.

The pass itself (:func:`batches`, :func:`batch_metrics`) lives in runtime/batch_pass.py, which the training
loop's validation shares, so every number the project reports about a split is computed one way; the
figures are declared in runtime/metrics.py. Metrics decode the posterior mean (the model is put in eval mode
by the caller) and are per image: summed over pixels or latent dimensions, averaged over the batch; but for
a discrete likelihood the bits per dimension, a code length, are the negative ELBO at a sampled code.
"""
from __future__ import annotations

import numpy as np
import torch

from datasets import Split
from evaluation.likelihood import iwae_evaluate
from losses import DISCRETE, bits_per_dim
from models import VAE
from runtime.batch_pass import batch_metrics, batches
from runtime.metrics import evaluated, evaluation_figures, label, metric

ACTIVE_UNIT_VARIANCE = 0.01  # Burda et al. (2016)'s threshold on Cov_x(E[z|x])
# A decoder that reads pixels draws its pictures pixel by pixel: --preset density's layers on 2 AMD EPYC cores
# took 45 ms an image at 28x28 grey and 68 ms at 32x32 colour beside another training job
# (benchmarks/code_alone.md), 9 ms at 28x28 on quieter cores (--evaluate of a density checkpoint: 93.6 s
# against 75.4 s without the pictures). All of Fashion-MNIST's validation and test sets (22,000 images) would
# add 3 to 17 minutes; the pictures' figures cover the first PICTURE_IMAGES of each split instead (the
# validation fold is a seeded draw of the training set; --predict's reconstructions are its first 16).
PICTURE_IMAGES = 1000
ELBO_BATCH = 500


def active_units(means: torch.Tensor) -> int:
    """Latent dimensions the code uses: those whose posterior mean varies over the images (``means``
    (N, z)) by more than ACTIVE_UNIT_VARIANCE."""
    return int((means.var(0, unbiased=False) > ACTIVE_UNIT_VARIANCE).sum())


@torch.no_grad()
def evaluate(model: VAE, data: Split, device: torch.device, window_size: int = 5, batch_size: int = 1000
             ) -> dict[str, float]:
    """Per-image BCE, MSE, KL, BCE+KL and SSIM of ``data``, decoding the posterior mean; the
    model's likelihood (NLL, NLL+KL: the negative ELBO) and, for the discretised logistic, the
    negative ELBO in bits per dimension; every figure runtime/metrics.py declares for --evaluate.

    For a decoder that reads pixels, the MSE and SSIM of the pictures it draws from the code alone too
    (``mse_from_code``, ``ssim_from_code``, on the first PICTURE_IMAGES images: ``picture_images``), and
    ``labels`` saying which figure is which."""
    model.eval()
    levels = model.level_names
    names = tuple(m.name for m in evaluated() if m.compute is not None and m.pictures_of is None) + levels
    out = _split_means(model, data, names, device, window_size, batch_size)
    pictured = [m for m in evaluated() if m.pictures_of is not None] if model.autoregressive else []
    if pictured:  # its output is a one-step-ahead prediction: score the pictures the code alone draws too
        first = Split(data.x[:PICTURE_IMAGES], data.y[:PICTURE_IMAGES])
        out.update(_split_means(model, first, tuple(m.name for m in pictured), device, window_size, batch_size))
    figures = evaluation_figures(out)
    # the eval JSON's layout: the split's size and likelihood after SSIM (as before metrics were declared; after
    # the pictures' SSIM where there is one)
    cut = max(i for i, k in enumerate(figures) if "ssim" in (k, metric(k).pictures_of)) + 1
    result = {**dict(list(figures.items())[:cut]), "n": len(data), "likelihood": model.likelihood,
              **dict(list(figures.items())[cut:]), **{level: out[level] for level in levels}}
    if pictured:  # how many images the pictures' figures cover, and what each pair of figures is
        pairs = [m for p in pictured for m in (metric(p.pictures_of), p)]
        result.update(picture_images=len(first), labels={m.name: label(m, True) for m in pairs})
    if model.likelihood in DISCRETE:
        # What bits-back coding achieves is the ELBO at a code drawn from q(z|x), not at its mean: deep_hvae's
        # every level decoded at its mean sat 0.14 bits/dim under even its IWAE bound (benchmarks/elbo_paths.md).
        # The one-sample estimate (K = 1, a fixed seed) is unbiased and deterministic.
        result["bits_per_dim"] = bits_per_dim(elbo_nats(model, data, device), data.x[0].numel())
    return result


def elbo_nats(model: VAE, data: Split, device: torch.device) -> float:
    """The negative ELBO per image in nats, at one code per image drawn from q(z|x) (every level of a hierarchical
    model; noise of seed 0, in batches of ELBO_BATCH whatever the caller's, so the figure is one figure): the IWAE
    bound with K = 1 (evaluation/likelihood.py)."""
    return iwae_evaluate(model, data, device, 1, batch_size=ELBO_BATCH, seed=0, labels=model.conditional)


def _split_means(model: VAE, data: Split, names: tuple[str, ...], device: torch.device, window_size: int,
                 batch_size: int) -> dict[str, float]:
    """Per-image means over ``data`` of the metrics ``names``."""
    sums = dict.fromkeys(names, 0.0)
    with model.prior_fixed():
        for x, y in batches(data, batch_size, device, model.conditional):
            for name, value in batch_metrics(model, x, y, names, window_size).items():
                sums[name] += value.item() * x.shape[0]
    return {k: v / len(data) for k, v in sums.items()}


@torch.no_grad()
def posterior_means(model: VAE, data: Split, device: torch.device, batch_size: int = 2000) -> np.ndarray:
    """The encoder's mu for every image of ``data``, shape (N, z) (a CVAE's given the true class)."""
    model.eval()
    out = [model.posterior(x, y)[0].cpu() for x, y in batches(data, batch_size, device, model.conditional)]
    return torch.cat(out).numpy()
