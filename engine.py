"""The epoch loop: ``train_one_epoch`` and ``validate`` (each returns per-image averages) and the step
logger they share. The loop knows one interface of the objective (losses/objective.py), nothing of which
objective it trains, and nothing of evaluation/ (an epoch's pictures: evaluation/epoch_log.py).

Data is a :class:`datasets.Split` on the training device; a minibatch is an index slice.
Under torchrun (``world``) each process handles its rows of every minibatch, and the logged
metrics are all-reduced (runtime/distributed.py).
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from tqdm import tqdm

from config.run_config import RunConfig
from core.errors import VaeLabError
from datasets import Split, as_float, augment_batch
from losses import Batch, Objective, ssim
from models import VAE
from models.base import ModelOutput
from runtime import accelerators
from runtime.batch_pass import batch_metrics, batches
from runtime.distributed import World, is_main_process
from runtime.nonfinite import grad_norm_and_clip, non_finite_message
from runtime.tensorboard import RunWriter

# train_ssim is measured on the first images of each (shuffled) minibatch, as many as make 32 images of
# 28x28 grey (32 at 28x28x1, 8 at 32x32x3, 2 at 64x64x3), so its cost stays a small share of a step: 32
# images of 64x64 colour cost 9 ms, a fifth of resconv's bfloat16 step (docs/speed.md). Validation SSIM
# always covers every image.
TRAIN_SSIM_PIXELS = 32 * 28 * 28


class StepLogger:
    """Buffers per-step metrics on the device and flushes them every ``print_freq`` steps.

    One host sync per flush (not per step): TensorBoard scalars, the 2018 console line and
    the non-finite check all read the same buffer, so a NaN is reported at its exact step.
    The last flush of an epoch comes before its checkpoint, so a NaN never reaches a file.
    """

    NAMES = ("loss", "img_loss", "kl_loss", "ssim")

    def __init__(self, prefix: str, writer: RunWriter | None, print_freq: int, n_batches: int, epoch: int,
                 lr: float | None, bar=None, check_finite: bool = False, names: tuple[str, ...] = NAMES,
                 reduce=None):
        self.prefix, self.writer, self.print_freq = prefix, writer, print_freq
        self.reduce = reduce  # (rows, sizes) -> global (rows, sizes) under torchrun
        self.n_batches, self.epoch, self.lr, self.bar = n_batches, epoch, lr, bar
        self.check_finite, self.names = check_finite, names
        self.buf: list[torch.Tensor] = []
        self.sizes: list[int] = []
        self.first_step = 0
        self.sums = dict.fromkeys(names, 0.0)
        self.count = 0
        self.t0 = time.perf_counter()

    def add(self, step: int, batch: int, size: int, terms: dict[str, torch.Tensor]) -> None:
        if not self.buf:
            self.first_step, self.first_batch = step, batch
        self.buf.append(torch.stack([terms[n].detach().float() for n in self.names]))
        self.sizes.append(size)
        if (batch + 1) % self.print_freq == 0 or batch + 1 == self.n_batches:
            self.flush()

    def flush(self) -> None:
        if not self.buf:
            return
        rows = torch.stack(self.buf)
        if self.reduce is not None:
            rows, self.sizes = self.reduce(rows, self.sizes)
        rows = rows.tolist()
        for k, (row, size) in enumerate(zip(rows, self.sizes)):
            step = self.first_step + k
            if self.check_finite and (msg := non_finite_message(dict(zip(self.names, row)), self.epoch, step)):
                raise VaeLabError(msg)
            for name, v in zip(self.names, row):
                self.sums[name] += v * size
            self.count += size
            if self.writer is not None:
                scalars = {f"{self.prefix}_{name}": v for name, v in zip(self.names, row)}
                if self.lr is not None:
                    scalars[f"{self.prefix}_lr"] = self.lr
                self.writer.add_scalar_row(scalars, step)  # one event, not one per tag
        last_batch = self.first_batch + len(rows) - 1
        elapsed = time.perf_counter() - self.t0
        if self.print_freq and self.prefix == "train":
            cur = dict(zip(self.names, rows[-1]))
            avg = self.averages()
            line = (f"Epoch: [{self.epoch}][{last_batch + 1}/{self.n_batches}]\t"
                    f"Time {elapsed / (last_batch + 1):.3f}/batch\t"
                    f"Loss {cur['loss']:.4f} ({avg['loss']:.4f})\t"
                    f"IMG {cur['img_loss']:.4f} ({avg['img_loss']:.4f})\t"
                    f"KL {cur['kl_loss']:.4f} ({avg['kl_loss']:.4f})\t"
                    f"SSIM {cur['ssim']:.4f} ({avg['ssim']:.4f})")
            if self.bar is not None and not self.bar.disable:
                self.bar.write(line)
            else:
                print(line)
        if self.bar is not None:
            self.bar.update(len(rows))
        self.buf, self.sizes = [], []

    def averages(self) -> dict[str, float]:
        return {k: v / max(self.count, 1) for k, v in self.sums.items()}


def _progress(n: int, desc: str):
    # disable=None: a bar with ETA on a terminal, nothing in logs or CI (nor on torchrun's other ranks).
    return tqdm(total=n, desc=desc, leave=False, disable=None if is_main_process() else True, unit="batch",
                dynamic_ncols=True)


def train_one_epoch(model: torch.nn.Module, objective: Objective, optimizer: torch.optim.Optimizer, data: Split,
                    cfg: RunConfig, epoch: int, generator: torch.Generator,
                    writer: RunWriter | None = None, global_step: int = 0,
                    world: World | None = None, amp: bool = False) -> dict[str, float]:
    """One pass over a fresh permutation of ``data`` (a Split on the training device), one step of
    ``objective`` per minibatch; ``amp``: the forward in bfloat16 autocast (runtime/accelerators.choose_path),
    the losses in float32.

    Returns per-image averages of loss, img_loss, kl_loss, ssim, grad_norm and the objective's terms
    (``objective.logged_terms``). ``model`` may be DDP-wrapped or compiled.
    """
    model.train()
    n_batches = math.ceil(len(data) / cfg.batch_size)
    device = next(model.parameters()).device  # data.x may stay on the host (datasets.place_images)
    perm = torch.randperm(len(data), generator=generator).to(data.x.device)
    bar = _progress(n_batches, f"epoch {epoch + 1}/{cfg.epochs}")
    world = world or World(device=device)
    plain = plain_model(model)
    log = StepLogger("train", writer, cfg.print_freq, n_batches, epoch, optimizer.param_groups[0]["lr"], bar,
                     check_finite=True, reduce=world.reduce_rows,
                     names=StepLogger.NAMES + ("grad_norm",) + objective.logged_terms(plain.level_names))
    forward = training_forward(model, amp)
    try:
        for i in range(n_batches):
            idx = perm[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            batch = _minibatch(data, idx, cfg, device, generator, world, plain.noise_size)
            terms, logits = objective.step(plain, forward, batch, epoch + i / n_batches)
            optimizer.zero_grad(set_to_none=True)
            x = batch.x
            loss = terms["loss"] * world.loss_scale(x.shape[0], len(idx)) if world.distributed else terms["loss"]
            loss.backward()
            # under torchrun the gradients are all-reduced by now: every rank clips the same norm
            terms["grad_norm"] = grad_norm_and_clip(model.parameters(), cfg.grad_clip)
            optimizer.step()
            terms.update(objective.after_step(generator))
            with torch.no_grad():  # a random sample of the batch: full-batch SSIM costs more than the step
                k = max(1, TRAIN_SSIM_PIXELS // x[0].numel())
                terms["ssim"] = ssim(plain.image_of(logits[:k].detach()), x[:k], cfg.ssim_window_size).mean()
            log.add(global_step + i, i, x.shape[0], terms)
    finally:
        bar.close()
    return log.averages()


def _minibatch(data: Split, idx: torch.Tensor, cfg: RunConfig, device: torch.device, generator: torch.Generator,
               world: World, noise_size: int) -> Batch:
    """The rows ``idx`` of ``data`` this process trains on, as floats on ``device`` (augmented with
    --do_augs, from ``generator``), with their labels for a CVAE and their part of the noise under torchrun."""
    rows = world.shard(len(idx))  # the whole minibatch in a single process
    x = as_float(data.x[idx[rows]].to(device, non_blocking=True))
    y = data.y[idx[rows].to(data.y.device)].to(device) if cfg.conditional else None
    if cfg.do_augs:
        x = augment_batch(x, generator, shard=(rows.start, len(idx)) if world.distributed else None)
    return Batch(x, y, world.noise(len(idx), noise_size, rows, x.device))


def training_forward(model: torch.nn.Module, amp: bool) -> Callable[..., ModelOutput]:
    """``model``'s forward as training runs it: in bfloat16 autocast with ``amp``, its output then in float32
    (the losses are computed in float32)."""
    def forward(x: torch.Tensor, eps: torch.Tensor | None = None, y: torch.Tensor | None = None,
                with_kl: bool = False) -> ModelOutput:
        with accelerators.autocast(x.device, amp):
            out = model(x, eps, y=y, with_kl=with_kl)
        return out.float32() if amp else out
    return forward


@torch.no_grad()
def validate(model: VAE, objective: Objective, data: Split, cfg: RunConfig, epoch: int,
             writer: RunWriter | None = None, global_step: int = 0, world: World | None = None
             ) -> dict[str, float]:
    """Validation in eval mode (decoding the posterior mean); per-image averages.

    ``loss`` is the objective's validation loss (weighted, without running-mean rebalancing, KL warm-up
    or free bits), so it is comparable across epochs and is what selects the best checkpoint.
    """
    model.eval()
    n_batches = math.ceil(len(data) / cfg.batch_size)
    device = next(model.parameters()).device
    world = world or World(device=device)
    levels = model.level_names
    log = StepLogger("val", writer, cfg.print_freq, n_batches, epoch, None, names=StepLogger.NAMES + levels,
                     reduce=world.reduce_rows)
    labels = cfg.conditional
    with model.prior_fixed():
        for i, (x, y) in enumerate(batches(data, cfg.batch_size, device, labels, world.shard)):
            m = batch_metrics(model, x, y, ("img_loss", "kl", "ssim") + levels, cfg.ssim_window_size,
                              cfg.image_loss_type, cfg.ssim_weight)
            terms = {"loss": objective.validation_loss(m["img_loss"], m["kl"]), "img_loss": m["img_loss"],
                     "kl_loss": m["kl"], "ssim": m["ssim"], **{level: m[level] for level in levels}}
            log.add(global_step + i, i, x.shape[0], terms)
    return log.averages()


def plain_model(model: torch.nn.Module) -> VAE:
    """The VAE inside a DDP wrapper and/or a torch.compile module."""
    while not isinstance(model, VAE):
        model = model._orig_mod if hasattr(model, "_orig_mod") else model.module
    return model
