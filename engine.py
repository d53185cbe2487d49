"""The epoch loop: ``train_one_epoch`` and ``validate``, each returning per-image averages of the figures
runtime/metrics.py declares and of the objective's terms (logged as they go by runtime/step_log.py). The loop
knows one interface of the objective (losses/objective.py), nothing of which objective it trains, and
nothing of evaluation/ (an epoch's pictures: evaluation/epoch_log.py).

Data is a :class:`datasets.Split` on the training device; a minibatch is an index slice.
Under torchrun (``world``) each process handles its rows of every minibatch, and the logged
metrics are all-reduced (runtime/distributed.py).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from tqdm import tqdm

from config.run_config import RunConfig
from datasets import Split, as_float, augment_batch
from losses import Batch, Objective
from models import VAE
from models.base import ModelOutput
from runtime import accelerators
from runtime.batch_pass import batch_metrics, batches
from runtime.distributed import World, is_main_process
from runtime.metrics import logged_names, training_sample
from runtime.nonfinite import grad_norm_and_clip
from runtime.step_log import StepLogger
from runtime.tensorboard import RunWriter


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
                     names=logged_names() + ("grad_norm",) + objective.logged_terms(plain.level_names))
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
            # the declared metrics the objective does not give (SSIM), on a sample: the whole batch costs more
            terms.update(training_sample(plain, x, logits, cfg, terms))
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
    log = StepLogger("val", writer, cfg.print_freq, n_batches, epoch, None, names=logged_names() + levels,
                     reduce=world.reduce_rows)
    measured = tuple(name for name in logged_names() if name != "loss") + levels  # loss: the objective's
    labels = cfg.conditional
    with model.prior_fixed():
        for i, (x, y) in enumerate(batches(data, cfg.batch_size, device, labels, world.shard)):
            m = batch_metrics(model, x, y, measured, cfg.ssim_window_size, cfg.image_loss_type, cfg.ssim_weight)
            terms = {"loss": objective.validation_loss(m["img_loss"], m["kl_loss"]), **m}
            log.add(global_step + i, i, x.shape[0], terms)
    return log.averages()


def plain_model(model: torch.nn.Module) -> VAE:
    """The VAE inside a DDP wrapper and/or a torch.compile module."""
    while not isinstance(model, VAE):
        model = model._orig_mod if hasattr(model, "_orig_mod") else model.module
    return model
