"""Multi-process training under ``torchrun``: process group, sharding, metric all-reduce.

``torchrun --nproc_per_node=N train.py ...`` sets RANK, WORLD_SIZE and LOCAL_RANK; a plain
``python3 train.py`` has none of them and runs as a world of one, exactly as before.

How a run with N processes equals the run with one (same ``--batch-size``, the global batch):
- every rank draws the same epoch permutation from the shared seeded generator and takes
  a contiguous part (sizes differ by at most one) of each minibatch's index slice;
- each rank draws the reparameterisation noise (and the augmentation parameters) of the
  whole minibatch from the shared RNG and keeps its rows, so every RNG stream advances as
  in a single process and checkpoints hold one RNG state that fits any number of processes;
- losses are per-image means; a rank with n of the batch's B images scales its loss by
  n * N / B, so DDP's gradient average is the gradient of the global batch mean;
- logged metrics are sums over images, all-reduced with their image counts.
Validation is sharded the same way. Only rank 0 writes checkpoints, TensorBoard events and
console lines; the other ranks' stdout goes to /dev/null (stderr stays, for crashes).
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from core.environment import launched_processes
from core.errors import VaeLabError


def env_rank() -> int:
    """This process's rank from torchrun's environment (0 when not under torchrun)."""
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    """True on rank 0 and in a plain single-process run."""
    return env_rank() == 0


@dataclass
class World:
    """Where this process stands in the run: rank, world size and its device."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, n: int) -> slice:
        """This rank's rows of a minibatch of ``n`` images: contiguous, balanced to within one."""
        if not self.distributed:
            return slice(0, n)
        base, extra = divmod(n, self.size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))

    def noise(self, n_global: int, latent_size: int, rows: slice, device: torch.device) -> torch.Tensor | None:
        """This rank's rows of the reparameterisation noise of the whole minibatch.

        None in a single process (the model draws it, as always). Drawing the whole
        minibatch's noise keeps the RNG stream, and the numbers, those of one process.
        """
        if not self.distributed:
            return None
        return torch.randn(n_global, latent_size, device=device)[rows]

    def loss_scale(self, n_local: int, n_global: int) -> float:
        """Factor that makes DDP's gradient average the gradient of the global per-image mean."""
        return n_local * self.size / n_global

    def weighted_mean(self, values: torch.Tensor, n_local: int) -> torch.Tensor:
        """Global per-image means of a vector of per-image means measured on ``n_local`` images.

        One collective; ``new_full`` keeps the count on the device (no host-to-device copy).
        """
        v = values.detach().float().flatten()
        buf = torch.cat([v * n_local, v.new_full((1,), float(n_local))])
        dist.all_reduce(buf)
        return (buf[:-1] / buf[-1]).view(values.shape).to(values.dtype)

    def reduce_rows(self, rows: torch.Tensor, sizes: list[int]) -> tuple[torch.Tensor, list[int]]:
        """All-reduce buffered per-step metrics: rows (steps, metrics) of per-image means over
        ``sizes`` images each become global per-image means; returns them and the global sizes.
        One collective per flush, on the device (no host sync)."""
        if not self.distributed:
            return rows, sizes
        n = torch.tensor(sizes, dtype=rows.dtype, device=rows.device)[:, None]
        buf = torch.cat([rows * n, n], dim=1)
        dist.all_reduce(buf)
        total = buf[:, -1:]
        return buf[:, :-1] / total, [int(s) for s in total.flatten().tolist()]

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """DistributedDataParallel around ``model`` when there are several processes."""
        if not self.distributed:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DDP(model, device_ids=ids)

    def check_batches(self, batch_size: int, *split_sizes: int) -> None:
        """Every minibatch (the last, partial ones too) must give each process an image."""
        if not self.distributed:
            return
        smallest = [batch_size] + [n % batch_size for n in split_sizes if n % batch_size]
        if min(smallest) < self.size:
            what = (f"--batch-size {batch_size}" if batch_size < self.size else
                    f"the last minibatch ({min(smallest)} images with --batch-size {batch_size})")
            raise VaeLabError(f"{self.size} processes need at least {self.size} images in every "
                              f"minibatch, but {what} has fewer; use fewer processes or another --batch-size")

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def rank0_first(self, fn, *args) -> None:
        """Run ``fn(*args)`` on rank 0 while the other ranks wait (a download or an unpacking
        into --data_root must have one writer); they run after it, finding the work done."""
        if self.is_main:
            fn(*args)
        self.barrier()
        if not self.is_main:
            fn(*args)


def init(device: torch.device) -> World:
    """Join torchrun's process group (NCCL on CUDA, gloo otherwise) or return a world of one.

    On CUDA each rank takes GPU LOCAL_RANK. Non-main ranks send stdout to /dev/null so
    console lines are written once.
    """
    world = launched_processes()
    if world <= 1:
        return World(device=device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        if per_node > torch.cuda.device_count():  # checked alike on every rank, so rank 0 says it
            raise VaeLabError(f"torchrun started {per_node} processes per node but only "
                              f"{torch.cuda.device_count()} CUDA devices are visible; one process per GPU")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise VaeLabError(f"torchrun with several processes supports cuda (NCCL) and cpu (gloo), "
                          f"not {device.type}; pass --device cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world,
                                **({"device_id": device} if backend == "nccl" else {}))
    if rank != 0:
        sys.stdout = open(os.devnull, "w")
    return World(rank=rank, size=world, local_rank=local_rank, device=device)


def cleanup() -> None:
    """Leave the process group (a no-op in a single-process run)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
