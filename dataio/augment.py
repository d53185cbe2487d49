"""The 2018 augmentations, on whole batches on the training device."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def augment_batch(x: torch.Tensor, generator: torch.Generator | None = None,
                  flip_p: float = 0.25, max_degrees: float = 30.0,
                  shard: tuple[int, int] | None = None) -> torch.Tensor:
    """The 2018 augmentations on a whole batch: horizontal flip (p=0.25), rotation up to 30 deg.

    Random numbers come from ``generator`` (on the CPU) so resumed runs replay them exactly.
    ``shard=(start, total)``: ``x`` is rows start.. of a minibatch of ``total`` images (one
    torchrun rank's part); numbers are drawn for the whole minibatch and this part's are used.
    """
    start, b = shard if shard is not None else (0, x.shape[0])
    flip = torch.rand(b, generator=generator) < flip_p
    angle = (torch.rand(b, generator=generator) * 2 - 1) * math.radians(max_degrees)
    if shard is not None:
        rows = slice(start, start + x.shape[0])
        flip, angle, b = flip[rows], angle[rows], x.shape[0]
    cos, sin = torch.cos(angle), torch.sin(angle)
    sx = torch.where(flip, -1.0, 1.0)  # flipping x is a sign change of the first column
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = cos * sx
    theta[:, 0, 1] = -sin
    theta[:, 1, 0] = sin * sx
    theta[:, 1, 1] = cos
    if x.is_cuda:  # pinned + non_blocking: no host sync per step
        theta = theta.pin_memory().to(x.device, non_blocking=True)
    theta = theta.to(x.device, x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
