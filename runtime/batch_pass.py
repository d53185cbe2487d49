"""The one evaluation pass: batches of a split and the metrics of a batch.

``validate`` (engine.py, each epoch), ``evaluate`` (``--evaluate``), the IWAE bound, the posterior means
and the benchmarks all walk a split with :func:`batches` and measure a batch with
:func:`batch_metrics`, so every number the project reports about a split is computed one way.
Metrics decode the posterior mean (the model is put in eval mode by the caller) and are per
image: summed over pixels or latent dimensions, averaged over the batch. Here, below evaluation/, so
the training loop measures its validation pass without importing evaluation/.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch

from datasets import Split, as_float
from models import VAE
from runtime.metrics import Batch, measure


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
    # the KL per image and level from the model where it has no closed form (VampPrior: one sample of a fixed seed)
    out = model(x, y=y, with_kl=not model.analytic_kl)
    return measure(Batch(model, x, out.logits, out.mu, out.logvar, out.kl, window_size, image_loss_type,
                         ssim_weight, y), names)
