"""Every cross-flag check of a run, in one function (``check_config``), and the check of a
config against the images it loads (``check_fits_data``): one line (VaeLabError) for a
combination that cannot be built, trained or run. Here, where flags, data and models meet:
models/ and datasets.py know nothing of each other or of the flags."""
from __future__ import annotations

import os

from config.run_config import RunConfig
from core.environment import launched_processes
from core.errors import VaeLabError
from core.limits import MAX_SSIM_WINDOW, MAX_THREADS
from datasets import FACTOR_DATASETS, Split, check_factor_flags
from models import MODELS, any_shape_families, shape_problem

# --iw_train K > 1 is a likelihood bound: these image losses are likelihoods
IW_LOSSES = ("bce", "logistic", "gaussian", "dmol")


def check_config(cfg: RunConfig) -> None:
    """Raise a one-line VaeLabError for flags that do not go together."""
    w = cfg.ssim_window_size
    if w % 2 == 0 or w > MAX_SSIM_WINDOW:
        raise VaeLabError(f"--ssim_window_size must be odd and at most {MAX_SSIM_WINDOW}, got {w}")
    if cfg.m1 > cfg.m2:
        raise VaeLabError(f"--m1 ({cfg.m1}) must not be after --m2 ({cfg.m2})")
    if cfg.start_epoch >= cfg.epochs:
        raise VaeLabError(f"--start-epoch ({cfg.start_epoch}) must be below --epochs ({cfg.epochs})")
    if cfg.fold >= cfg.num_folds or cfg.num_folds < 2:
        raise VaeLabError(f"--fold must be in [0, --num_folds - 1] with --num_folds >= 2, "
                          f"got --fold {cfg.fold} --num_folds {cfg.num_folds}")
    if cfg.kl_warmup_epochs and cfg.do_running_mean:
        raise VaeLabError("--kl_warmup_epochs has no effect with --do_running_mean True (it rescales each term); "
                          "use one of them")
    if cfg.threads is not None and not 1 <= cfg.threads <= MAX_THREADS:
        raise VaeLabError(f"--threads must be in [1, {MAX_THREADS}], got {cfg.threads}")
    name = cfg.lognumber
    if not name or os.sep in name or name in (".", ".."):
        raise VaeLabError(f"--lognumber must be a plain file name, got {name!r}")
    check_factor_flags(cfg.dataset_type, cfg.factor, cfg.factor_images)  # before any image is loaded
    _check_model(cfg)
    _check_modes(cfg)
    _check_objective(cfg)
    _check_iw_train(cfg)


def _check_model(cfg: RunConfig) -> None:
    """What the model family (as its models/<family>.py declares it) and the prior cannot do."""
    model = MODELS[cfg.model_type]
    problem = model.check(cfg) if model.check else None
    if problem:
        raise VaeLabError(problem)
    if model.plain_only and (cfg.conditional or cfg.normalize or cfg.model_multiplier > 1 or cfg.prior != "gaussian"):
        raise VaeLabError(f"--model_type {cfg.model_type} supports neither --conditional, --normalize, --prior "
                          f"vamp nor --model_multiplier above 1")
    if cfg.image_loss_type == "dmol" and not model.any_shape:
        raise VaeLabError(f"--image_loss_type dmol needs a decoder that predicts its pixels' mixtures: "
                          f"--model_type {', '.join(any_shape_families())}, not {cfg.model_type}")
    if cfg.prior == "vamp" and cfg.conditional:
        raise VaeLabError("--prior vamp does not combine with --conditional True: the VampPrior's pseudo-inputs "
                          "have no class")
    family = ("--prior vamp" if cfg.prior == "vamp" else f"--model_type {cfg.model_type}" if model.hierarchical
              else None)
    if family is None:
        return
    bad = [flag for flag, on in (
        ("--free_bits (it needs the closed-form KL per dimension)", cfg.free_bits > 0),
        ("--compile", cfg.compile),
        # validation draws the VampPrior's KL sample per batch, so shards would draw other noise than one process
        ("torchrun", cfg.prior == "vamp" and launched_processes() > 1)) if on]
    if bad:
        raise VaeLabError(f"{family} does not combine with {bad[0]}")


def _check_modes(cfg: RunConfig) -> None:
    if (cfg.evaluate or cfg.predict) and not cfg.resume:
        raise VaeLabError("--evaluate and --predict need a checkpoint: pass --resume PATH")
    for flag, value in (("--iw_samples", cfg.iw_samples), ("--fid", cfg.fid)):
        if value and not cfg.evaluate:
            raise VaeLabError(f"{flag} needs --evaluate (and --resume PATH)")
    if cfg.predict_train and not cfg.predict:
        raise VaeLabError("--predict_train needs --predict True")
    if cfg.disentanglement and not cfg.evaluate:
        raise VaeLabError("--disentanglement needs --evaluate (and --resume PATH)")
    if cfg.disentanglement and cfg.dataset_type not in FACTOR_DATASETS:
        raise VaeLabError(f"--disentanglement needs images with known factors (--dataset_type "
                          f"{' or '.join(FACTOR_DATASETS)}); {cfg.dataset_type} has none")


def _check_objective(cfg: RunConfig) -> None:
    if cfg.objective == "elbo":
        return
    family = cfg.prior == "vamp" or MODELS[cfg.model_type].hierarchical
    hierarchical = " / ".join(name for name, model in MODELS.items() if model.hierarchical)
    bad = [flag for flag, on in (
        ("--iw_train", cfg.iw_train > 1), ("--free_bits", cfg.free_bits > 0),
        ("--do_running_mean", cfg.do_running_mean), ("--compile", cfg.compile),
        ("torchrun", launched_processes() > 1),
        (f"--prior vamp or --model_type {hierarchical} (the terms need one Gaussian code per image)", family)) if on]
    if bad:
        raise VaeLabError(f"--objective {cfg.objective} does not combine with {bad[0]}")


def _check_iw_train(cfg: RunConfig) -> None:
    if cfg.iw_train == 1:
        return
    bad = [flag for flag, on in (
        ("--compile", cfg.compile), ("--amp on", cfg.amp == "on"), ("torchrun", launched_processes() > 1),
        ("--do_running_mean", cfg.do_running_mean), ("--free_bits", cfg.free_bits > 0),
        ("--kl_warmup_epochs", cfg.kl_warmup_epochs > 0),
        ("--img_loss_weight / --kl_loss_weight", cfg.img_loss_weight != 1 or cfg.kl_loss_weight != 1),
        (f"--image_loss_type {cfg.image_loss_type}", cfg.image_loss_type not in IW_LOSSES),
        (f"--model_type {cfg.model_type} ({MODELS[cfg.model_type].no_iw_train})", MODELS[cfg.model_type].no_iw_train))
        if on]
    if bad:
        raise VaeLabError(f"--iw_train {cfg.iw_train} does not combine with {bad[0]}: the IWAE bound is a "
                          "likelihood bound, trained by one eager process")


def check_fits_data(cfg: RunConfig, train: Split) -> None:
    """One line when the loaded images do not suit the model: their shape, or no classes for a CVAE."""
    problem = shape_problem(cfg.model_type, *train.x.shape[1:3])
    if problem:
        raise VaeLabError(problem)
    if cfg.conditional and len(train.classes or []) < 2:
        raise VaeLabError(f"--conditional True needs images of two classes or more; {cfg.data_root!r} has "
                          f"{'no class sub-folders' if train.classes is None else 'one class'}")
