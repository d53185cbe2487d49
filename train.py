"""Train, resume, evaluate and run predictions of a VAE (see --help).

The flags are the 2018 project's (defined in config/flags.py) and their defaults its best command.
One typed config (config/) is built from them, a preset, a config file and a resumed checkpoint;
the loop is in engine.py, the objectives in losses/, what a run relies on in runtime/, and --evaluate /
--predict in evaluation/modes.py."""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass

import torch

from config.checks import check_fits_data
from config.files import write_config
from config.flags import train_parser
from config.parsers import run_cli
from config.resolve import build_config, given_settings
from config.run_config import RunConfig, data_options, model_config
from core.checkpoint import Checkpoint
from core.errors import VaeLabError
from datasets import Split, as_float, ensure_raw_files, pixel_mean_std, place_images, train_val_split
from engine import train_one_epoch, validate
from evaluation.epoch_log import log_epoch, open_writer
from evaluation.modes import run_eval_modes
from evaluation.pictures import fixed_codes
from losses import Objective, build_objective
from models import VAE, ModelConfig, build_model
from runtime import accelerators, distributed
from runtime.checkpoints import (
    check_fits_checkpoint,
    load_checkpoint,
    model_config_of,
    model_from_checkpoint,
    sync_best,
)
from runtime.device import select_device
from runtime.nonfinite import check_epoch_finite
from runtime.optim import make_optimizer, make_scheduler, start_schedule_at
from runtime.report import epoch_line, run_footer, run_header
from runtime.run_files import (
    RunLock,
    check_name_free,
    check_outputs,
    checkpoint_paths,
    config_path,
    remove_derived,
    resumes_own_run,
)
from runtime.seeding import seed_everything
from runtime.tensorboard import RunWriter
from runtime.threads import CpuThreads
from runtime.training_state import checkpoint_state, interrupted_message, restore_training_state, save_epoch


def get_args_parser() -> argparse.ArgumentParser:
    """train.py's flags: the 2018 set (same names and meanings) plus ours, grouped (config/flags.py)."""
    return train_parser()


def main(args: argparse.Namespace) -> dict:
    """Train (or evaluate / predict with ``--resume``). Returns the run's summary."""
    given = given_settings(args)
    ckpt = load_checkpoint(given["resume"]) if given.get("resume") else None
    cfg = build_config(given, ckpt)
    device = select_device(cfg.device, cfg.no_cuda)
    accelerators.check_flags(device, cfg)
    path = accelerators.choose_path(device, cfg)  # channels-last and bfloat16 where they are faster
    accelerators.tune_malloc()
    # the CPU threads: a share of the cores among the runs on this machine, or --threads (runtime/threads.py)
    with CpuThreads(cfg.threads) as threads:
        world = distributed.init(device)  # a world of one unless started by torchrun
        try:  # whatever happens (an error, Ctrl-C), leave the process group
            seed_everything(cfg.seed)
            if cfg.evaluate or cfg.predict:
                model = model_from_checkpoint(ckpt, cfg, cfg.resume).to(world.device)
                model.use_memory_format(path.memory_format)  # evaluation stays float32
                return run_eval_modes(model, cfg, world.device) if world.is_main else {}  # torchrun: rank 0 alone
            if not world.is_main:
                return fit(cfg, ckpt, world, path, threads)
            check_outputs(cfg)  # before spending time on data; only rank 0 writes files
            with RunLock(cfg.weights_dir, cfg.lognumber):  # one live process per run
                return fit(cfg, ckpt, world, path, threads)
        finally:
            distributed.cleanup()


@dataclass
class Training:
    """What a training run works with once it is set up (see :func:`fit`)."""

    cfg: RunConfig
    world: distributed.World
    model: VAE  # the plain model: validation, checkpoints and images
    model_cfg: ModelConfig
    objective: Objective
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator  # data order and augmentations
    train_set: Split
    val_set: Split
    placement: str  # where the images are kept (the header says)
    # what trains: the model, wrapped in DDP under torchrun, compiled with --compile (set by fit)
    net: torch.nn.Module | None = None


@dataclass
class Progress:
    """Where the run is: the best validation loss so far, one history row per epoch, steps trained."""

    best_loss: float
    history: list
    global_step: int


@dataclass
class Outputs:
    """Where the run writes: its checkpoints, its config file, TensorBoard (None: nowhere), and the fixed
    pictures (images, labels, prior codes) of its image grids."""

    ckpt_path: str
    best_path: str
    config_file: str
    writer: RunWriter | None
    pictures: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    replacing: bool  # --overwrite of another run: what was made of its checkpoints goes with the first save


def fit(cfg: RunConfig, ckpt: Checkpoint | None, world: distributed.World, path: accelerators.FastPath,
        threads: CpuThreads) -> dict:
    """The training run: set up, resume, train epoch by epoch (checkpoint each), report. ``path``: the
    memory layout and precision it trains in; ``threads``: its CPU threads, counted again every epoch."""
    ckpt_path, best_path = checkpoint_paths(cfg.weights_dir, cfg.lognumber)
    continuing = ckpt is not None and resumes_own_run(cfg.resume, ckpt.trained_with("lognumber"),
                                                      cfg.weights_dir, cfg.lognumber)
    if not (continuing or cfg.overwrite):
        check_name_free(cfg.weights_dir, cfg.lognumber, describe_checkpoint)
    run = set_up(cfg, ckpt, world, path)
    start_epoch, progress = resume(run, ckpt)
    run.net = world.wrap(run.model)
    if cfg.compile:
        run.net, run.objective = accelerators.compile_for_training(run.net, run.objective)
    writer = (open_writer(cfg, ckpt is not None, start_epoch, progress.global_step, _batches(cfg, run.val_set),
                          len(run.train_set)) if world.is_main else None)
    out = Outputs(ckpt_path, best_path, config_path(cfg.weights_dir, cfg.lognumber), writer,
                  (as_float(run.val_set.x[:16].to(world.device)), run.val_set.y[:16].to(world.device),
                   fixed_codes(cfg.seed, run.model, world.device)), cfg.overwrite and not continuing)
    if world.is_main and ckpt is not None and os.path.abspath(cfg.resume) == os.path.abspath(ckpt_path):
        sync_best(ckpt, ckpt_path, best_path)  # a kill may have come between the two writes
    threads.rebalance()  # the runs started with this one have registered while it loaded its data
    print(run_header(cfg, run.model, world.device, len(run.train_set), len(run.val_set), start_epoch, run.placement,
                     run.train_set.notes, f"{path.describe()}; {threads.describe()}"))
    t_start, epoch = time.perf_counter(), start_epoch
    try:
        for epoch in range(start_epoch, cfg.epochs):
            if epoch > start_epoch and threads.rebalance():  # a run started or ended beside this one
                print(f" * from epoch {epoch + 1}: {threads.describe()}", flush=True)
            train_epoch(run, epoch, progress, out, first=epoch == start_epoch, amp=path.amp)
    except KeyboardInterrupt:
        print(interrupted_message(ckpt_path, epoch), file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        if writer is not None:
            writer.close()
    total = time.perf_counter() - t_start
    if writer is not None and cfg.tensorboard and progress.history:
        writer.add_run_hparams(cfg.to_dict(), progress.best_loss, progress.history[-1]["val_ssim"])
    print(run_footer(cfg, total, progress.best_loss, ckpt_path, best_path, out.config_file, writer is not None))
    return {"best_loss": progress.best_loss, "history": progress.history, "seconds": total, "checkpoint": ckpt_path,
            "best": best_path, "config": out.config_file}


def _batches(cfg: RunConfig, data: Split) -> int:
    return math.ceil(len(data) / cfg.batch_size)


def resume(run: Training, ckpt: Checkpoint | None) -> tuple[int, Progress]:
    """The first epoch to train and the progress so far: the checkpoint's (its optimiser, schedule, RNG and
    objective state loaded), or --start_epoch's schedule."""
    cfg, n_batches = run.cfg, _batches(run.cfg, run.train_set)
    if ckpt is not None:
        start_epoch, best_loss, history, global_step = restore_training_state(
            ckpt, cfg, run.optimizer, run.scheduler, run.objective, run.generator, n_batches,
            lambda epoch: validate(run.model, run.objective, run.val_set, cfg, epoch, world=run.world)["loss"])
        return start_epoch, Progress(best_loss, history, global_step)
    if cfg.start_epoch:
        start_schedule_at(run.optimizer, run.scheduler, cfg, cfg.start_epoch)
    return cfg.start_epoch, Progress(math.inf, [], cfg.start_epoch * n_batches)


def train_epoch(run: Training, epoch: int, progress: Progress, out: Outputs, first: bool, amp: bool) -> None:
    """Train and validate one epoch, log it, checkpoint it (rank 0); ``first``: this process's first."""
    cfg, world = run.cfg, run.world
    scalar_writer = out.writer if cfg.tensorboard else None
    t0, lr = time.perf_counter(), run.optimizer.param_groups[0]["lr"]
    tr = train_one_epoch(run.net, run.objective, run.optimizer, run.train_set, cfg, epoch, run.generator,
                         scalar_writer, progress.global_step, world, amp)
    progress.global_step += _batches(cfg, run.train_set)
    va = validate(run.model, run.objective, run.val_set, cfg, epoch, scalar_writer,
                  epoch * _batches(cfg, run.val_set), world)
    check_epoch_finite(run.model, va, epoch, progress.global_step - 1)  # before anything of the epoch is saved
    run.scheduler.step()
    is_best, progress.best_loss = va["loss"] < progress.best_loss, min(progress.best_loss, va["loss"])
    seconds = time.perf_counter() - t0
    progress.history.append({"epoch": epoch + 1, "lr": lr, "seconds": seconds,
                             **{f"train_{k}": v for k, v in tr.items()}, **{f"val_{k}": v for k, v in va.items()}})
    if out.writer is not None:
        log_epoch(out.writer, cfg, epoch, tr, va, run.model, out.pictures, run.train_set)
    if world.is_main:
        if first:  # the config goes beside the checkpoints, with the first one of this process
            write_config(cfg, out.config_file)
        save_epoch(checkpoint_state(run.model, run.optimizer, run.scheduler, run.objective, cfg, epoch + 1,
                                    progress.best_loss, progress.history, progress.global_step, run.generator,
                                    run.model_cfg), out.ckpt_path, out.best_path, is_best)
        if first and out.replacing:  # the earlier run's checkpoints are gone: so goes what was made of them
            for stale in remove_derived(cfg.weights_dir, cfg.lognumber):
                print(f"--overwrite: removed {stale}, made from the earlier run's checkpoint")
    print(epoch_line(cfg, epoch, tr, va, lr, seconds, is_best), flush=True)


def set_up(cfg: RunConfig, ckpt: Checkpoint | None, world: distributed.World, path: accelerators.FastPath) -> Training:
    """The data, the model (new, or the checkpoint's, in ``path``'s memory layout), its optimiser, schedule
    and objective."""
    device = world.device
    world.rank0_first(ensure_raw_files, cfg.dataset_type, cfg.data_root)  # one writer in --data_root
    train_set, val_set = train_val_split(cfg.dataset_type, cfg.data_root, cfg.fold, cfg.num_folds, cfg.seed,
                                         **data_options(cfg))
    check_fits_data(cfg, train_set)
    if ckpt is not None:
        check_fits_checkpoint(ckpt, tuple(train_set.x.shape[1:]), cfg.image_loss_type, cfg.resume)
    world.check_batches(cfg.batch_size, len(train_set), len(val_set))
    if ckpt is None:
        statistics = pixel_mean_std(train_set.x) if cfg.normalize else (0.0, 1.0)
        model_cfg = model_config(cfg, train_set.x.shape[1], train_set.x.shape[2], len(train_set.classes or [None]),
                                 *statistics)
        model = build_model(model_cfg).to(device)
    else:  # a checkpoint has its own model config (and pixel statistics)
        model_cfg = model_config_of(ckpt, cfg)
        model = model_from_checkpoint(ckpt, cfg, cfg.resume).to(device)
    model.use_memory_format(path.memory_format)
    (train_set.x, placement), (val_set.x, _) = place_images(train_set.x, device), place_images(val_set.x, device)
    optimizer = make_optimizer(cfg.optimizer, model.parameters(), cfg.lr)
    scheduler = make_scheduler(optimizer, cfg)
    objective = build_objective(cfg, model, len(train_set), world.weighted_mean if world.distributed else None)
    generator = torch.Generator().manual_seed(cfg.seed)
    return Training(cfg, world, model, model_cfg, objective, optimizer, scheduler, generator, train_set, val_set,
                    placement)


def describe_checkpoint(path: str) -> str:
    """What a checkpoint holds, in a few words (model, epoch, best loss), for the name-taken message."""
    try:
        ckpt = load_checkpoint(path)
    except VaeLabError:
        return "unreadable"
    return f"{ckpt.model_setting('model_type')}, epoch {ckpt.epoch}, best val loss {ckpt.best_loss:.2f}"


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
