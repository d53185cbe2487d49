"""A metric declared outside the tree's lists: the mean absolute error of the reconstruction, summed over
pixels, per image. tests/test_extend_metric.py registers it; nothing else in the project names it."""
import torch

from runtime.metrics import Batch, Column, Metric


def mean_absolute_error(b: Batch) -> torch.Tensor:
    return (b.image - b.x).abs().flatten(1).sum(1).mean()


MAE = Metric("mae", "MAE", ".2f", mean_absolute_error, logged=True, evaluate=True, column=Column(8))
