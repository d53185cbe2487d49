"""What a checkpoint holds of a training run, and putting a run back where a checkpoint left it.

What it holds is defined in core/checkpoint.py (the 2018 keys, ours, and what the objective keeps of its
own: FactorVAE's ``discriminator`` and ``disc_optimizer``, losses/factorvae.py); it is written as a plain dict.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from config.run_config import RunConfig
from core.checkpoint import Checkpoint
from core.errors import VaeLabError
from losses import Objective
from models import VAE, ModelConfig
from runtime.checkpoints import copy_checkpoint, load_checkpoint, save_checkpoint
from runtime.optim import start_schedule_at
from runtime.seeding import get_rng_state, set_rng_state


def checkpoint_state(model: VAE, optimizer: torch.optim.Optimizer, scheduler, objective: Objective,
                     cfg: RunConfig, epoch: int, best_loss: float, history: list, global_step: int,
                     generator: torch.Generator, model_cfg: ModelConfig) -> dict:
    """Everything needed to continue the run after ``epoch`` (1-based: epochs done), the objective's own
    modules too (FactorVAE's discriminator and its optimiser): the plain dict written to disk."""
    return Checkpoint(
        epoch=epoch,
        state_dict={k: v.detach().cpu() for k, v in model.state_dict().items()},
        optimizer=optimizer.state_dict(),
        best_loss=best_loss,
        args=cfg.to_dict(),
        scheduler=scheduler.state_dict(),
        rng_state=get_rng_state(generator),
        loss_state=objective.state_dict(),
        model_config=model_cfg.to_dict(),
        history=history,
        global_step=global_step,
        entries=objective.checkpoint_entries(),
    ).to_dict()


def save_epoch(state: dict, ckpt_path: str, best_path: str, is_best: bool) -> None:
    """Write the epoch's checkpoint, then copy it to the best file if it is a new best."""
    save_checkpoint(state, ckpt_path)
    if is_best:
        copy_checkpoint(ckpt_path, best_path)


def restore_training_state(ckpt: Checkpoint, cfg: RunConfig, optimizer: torch.optim.Optimizer, scheduler,
                           objective: Objective, generator: torch.Generator, n_batches: int,
                           measure_val_loss: Callable[[int], float]) -> tuple[int, float, list, int]:
    """Load optimizer, scheduler, RNG and the objective's state from ``ckpt`` (ours or 2018's); the
    model's weights are loaded already.

    ``measure_val_loss(epoch)`` re-measures the best validation loss of a 2018 checkpoint,
    whose ``best_loss`` was a sum over batches. Returns (start epoch, best validation loss,
    history, global step).
    """
    start_epoch = ckpt.epoch
    if start_epoch >= cfg.epochs:
        raise VaeLabError(f"{cfg.resume!r} is already at epoch {start_epoch}; "
                          f"pass --epochs above {start_epoch} to train further")
    saved_opt = ckpt.trained_with("optimizer", "adam")
    if saved_opt == cfg.optimizer:
        try:
            optimizer.load_state_dict(ckpt.optimizer)
        except (ValueError, KeyError, RuntimeError) as e:
            raise VaeLabError(f"the optimizer state in {cfg.resume!r} does not fit this model ({e})") from None
    else:
        print(f"note: checkpoint used --optimizer {saved_opt}, now {cfg.optimizer}: optimizer state starts fresh")
    history: list = []
    if ckpt.legacy:
        best_loss = measure_val_loss(start_epoch)
        global_step = start_epoch * n_batches
    else:
        best_loss = ckpt.best_loss
        history = list(ckpt.history)
        global_step = start_epoch * n_batches if ckpt.global_step is None else int(ckpt.global_step)
        if isinstance(scheduler, torch.optim.lr_scheduler.MultiStepLR) and "milestones" in ckpt.scheduler:
            scheduler.load_state_dict(ckpt.scheduler)  # overridden below; loaded for its other fields
        if ckpt.rng_state is not None:
            set_rng_state(ckpt.rng_state, generator)
        objective.load_state_dict(ckpt.loss_state)
        objective.restore_entries(ckpt.to_dict(), cfg.resume)
    start_schedule_at(optimizer, scheduler, cfg, start_epoch)  # the flags' schedule governs from here on
    print(f"=> resumed {cfg.resume!r} at epoch {start_epoch} (best val loss {best_loss:.2f})")
    return start_epoch, best_loss, history, global_step


def interrupted_message(ckpt_path: str, epoch: int) -> str:
    """What Ctrl-C during ``epoch`` (0-based) left: the file is read, since the interrupt may
    have come in the middle of saving the epoch just trained."""
    try:
        where = (f"{ckpt_path} holds epoch {load_checkpoint(ckpt_path).epoch}; "
                 f"continue with --resume {ckpt_path}")
    except VaeLabError:
        where = "no epoch finished, nothing was saved"
    return f"\ninterrupted during epoch {epoch + 1}: {where}"
