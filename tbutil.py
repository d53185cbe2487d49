"""TensorBoard output that stays off the training's critical path.

tensorboardX writes one event per ``add_scalar``: a protobuf, a pickled trip through a
multiprocessing queue and a pure-Python CRC in its writer thread, ~100 us each on a
2-core machine. A training step logs five scalars, so they go out as one event per step
(same tags, steps and values; TensorBoard reads several values per event). Image grids
are built here so training does not import torchvision (~2 s of start-up).
"""
from __future__ import annotations

import math

import torch


def add_scalar_row(writer, scalars: dict[str, float], step: int) -> None:
    """Several scalars of one step as a single event of a tensorboardX ``SummaryWriter``.

    Any other writer gets one ``add_scalar`` per tag.
    """
    file_writer = getattr(writer, "_get_file_writer", None)
    if file_writer is None:
        for tag, v in scalars.items():
            writer.add_scalar(tag, v, step)
        return
    from tensorboardX.proto.summary_pb2 import Summary

    values = [Summary.Value(tag=tag, simple_value=float(v)) for tag, v in scalars.items()]
    file_writer().add_summary(Summary(value=values), step)


def image_grid(images: torch.Tensor, nrow: int = 8, padding: int = 2) -> torch.Tensor:
    """torchvision.utils.make_grid for a (B, C, H, W) batch, C 1 or 3, zero padding.

    Returns a (3, H', W') tensor: images left to right in rows of ``nrow``, ``padding``
    pixels around each, grey images repeated to RGB (as make_grid does).
    """
    b, c, h, w = images.shape
    if c == 1:
        images = images.expand(b, 3, h, w)
    cols = min(nrow, b)
    rows = math.ceil(b / cols)
    cell_h, cell_w = h + padding, w + padding
    grid = images.new_zeros(3, rows * cell_h + padding, cols * cell_w + padding)
    for k in range(b):
        y, x = divmod(k, cols)
        grid[:, y * cell_h + padding:(y + 1) * cell_h, x * cell_w + padding:(x + 1) * cell_w] = images[k]
    return grid
