"""Is a loaded checkpoint dict something train.py can use? One clear error if not.

``weights_only`` loading guarantees a checkpoint holds only data, not that the data has
the shape train.py expects: a checkpoint from another program, an edited one, or a hostile
one could otherwise end in a KeyError or TypeError deep inside resume (a traceback), or
in a model far too large to build. Every key train.py reads is checked here, by type and
range; RNG states are tried on scratch generators, never on the process's own.
"""
from __future__ import annotations

import math
import random
from numbers import Real
from typing import Any

import numpy as np
import torch

from core.errors import VaeLabError
from core.limits import (
    MAX_CLASSES,
    MAX_HVAE_CHANNELS,
    MAX_IMAGE_SIZE,
    MAX_LATENT,
    MAX_MIXTURE,
    MAX_MULTIPLIER,
    MAX_PIXEL_CHANNELS,
    MAX_PIXEL_LAYERS,
    MAX_VAMP_COMPONENTS,
)
from losses import LIKELIHOODS
from models import MODELS, PRIORS, config_from_dict, config_keys
from models.unet import parse_skips

REQUIRED = ("epoch", "optimizer", "state_dict", "best_loss")  # the 2018 keys


class _Bad(Exception):
    """What is wrong, for the one-line message."""


def _int(v: Any, what: str, lo: int = 0, hi: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
        raise _Bad(f"{what} must be an integer in [{lo}, {hi if hi is not None else 'inf'}], got {v!r:.40}")
    return v


def _real(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, Real):
        raise _Bad(f"{what} must be a number, got {type(v).__name__}")
    return float(v)


def _dict(v: Any, what: str) -> dict:
    if not isinstance(v, dict):
        raise _Bad(f"{what} must be a dict, got {type(v).__name__}")
    return v


def _check_state_dict(sd: Any) -> None:
    _dict(sd, "'state_dict'")
    for k, v in sd.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise _Bad(f"'state_dict' must map names to tensors, got {k!r:.40} -> {type(v).__name__}")
        if v.is_complex() or v.dtype == torch.bool:
            raise _Bad(f"'state_dict' tensor {k} has dtype {v.dtype}")
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise _Bad(f"'state_dict' tensor {k} holds NaN or Inf weights")


def _check_optimizer(opt: Any) -> None:
    _dict(opt, "'optimizer'")
    _dict(opt.get("state"), "'optimizer'['state']")
    groups = opt.get("param_groups")
    if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
        raise _Bad("'optimizer'['param_groups'] must be a list of dicts")
    for g in groups:
        params = g.get("params")
        if not isinstance(params, list) or not all(isinstance(p, int) and not isinstance(p, bool) for p in params):
            raise _Bad("'optimizer' param group without a list of parameter ids")


def _check_model_config(cfg: Any) -> None:
    _dict(cfg, "'model_config'")
    unknown = set(cfg) - config_keys()  # every family's fields: a base-commit checkpoint stores them all
    if unknown:
        raise _Bad(f"'model_config' has unknown keys {sorted(unknown)[:3]}")
    if cfg.get("model_type") not in MODELS:
        raise _Bad(f"'model_config' names an unknown model type {cfg.get('model_type')!r:.40}")
    _int(cfg.get("latent_space_size"), "'model_config' latent_space_size", 1, MAX_LATENT)
    _int(cfg.get("model_multiplier", 1), "'model_config' model_multiplier", 1, MAX_MULTIPLIER)
    _int(cfg.get("split_filter", 2), "'model_config' split_filter", 0, 3)
    _int(cfg.get("image_channels", 1), "'model_config' image_channels", 1, 3)
    _int(cfg.get("image_size", 28), "'model_config' image_size", 4, MAX_IMAGE_SIZE)
    if not isinstance(cfg.get("conditional", False), bool):
        raise _Bad("'model_config' conditional must be True or False")
    _int(cfg.get("num_classes", 10), "'model_config' num_classes", 1, MAX_CLASSES)
    _int(cfg.get("conv_n", 3), "'model_config' conv_n", 3, 7)
    if cfg.get("prior", "gaussian") not in PRIORS:
        raise _Bad(f"'model_config' names an unknown prior {cfg.get('prior')!r:.40}")
    _int(cfg.get("vamp_components", 500), "'model_config' vamp_components", 1, MAX_VAMP_COMPONENTS)
    _int(cfg.get("hvae_channels", 2), "'model_config' hvae_channels", 1, MAX_HVAE_CHANNELS)
    _int(cfg.get("mixture_components", 5), "'model_config' mixture_components", 1, MAX_MIXTURE)
    _int(cfg.get("pixel_layers", 3), "'model_config' pixel_layers", 0, MAX_PIXEL_LAYERS)
    _int(cfg.get("pixel_channels", 32), "'model_config' pixel_channels", 1, MAX_PIXEL_CHANNELS)
    if cfg.get("likelihood", "bernoulli") not in LIKELIHOODS:
        raise _Bad(f"'model_config' names an unknown likelihood {cfg.get('likelihood')!r:.40}")
    try:
        parse_skips(cfg.get("unet_skips", "all"))
    except (ValueError, TypeError, AttributeError):
        raise _Bad(f"'model_config' unet_skips is not a list of resolutions: {cfg.get('unet_skips')!r:.40}") from None
    try:  # what runtime.checkpoints.model_config_of builds: the family's own config (one from outside the tree too)
        config_from_dict(cfg)
    except (ValueError, TypeError) as e:
        first = str(e).splitlines()[0][:100] if str(e) else type(e).__name__
        raise _Bad(f"'model_config' does not make a {cfg['model_type']} config ({first})") from None


def _check_scheduler(sched: Any) -> None:
    _dict(sched, "'scheduler'")
    # load_state_dict copies every key into the scheduler's attributes: allow only its own.
    dummy = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    allowed = (set(torch.optim.lr_scheduler.MultiStepLR(dummy, [1]).state_dict())  # --lr_schedule multistep
               | set(torch.optim.lr_scheduler.LambdaLR(dummy, lambda e: 1.0).state_dict()))  # cosine
    if set(sched) - allowed:
        raise _Bad(f"'scheduler' has unknown keys {sorted(map(str, set(sched) - allowed))[:3]}")
    if "gamma" in sched:
        _real(sched["gamma"], "'scheduler' gamma")
    if "last_epoch" in sched:
        _int(sched["last_epoch"], "'scheduler' last_epoch", -1)


def _check_rng_state(rng: Any) -> None:
    _dict(rng, "'rng_state'")
    try:  # on scratch generators: a bad state must not touch this process's RNGs
        py = rng["python"]
        random.Random().setstate((py[0], tuple(py[1]), py[2]))
        n = rng["numpy"]
        np.random.RandomState().set_state(
            (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
        torch.Generator().set_state(rng["torch"])
        torch.Generator().set_state(rng["generator"])
    except Exception as e:  # any malformed part: TypeError, KeyError, ValueError, RuntimeError...
        raise _Bad(f"'rng_state' is malformed ({type(e).__name__})") from None


def _check_loss_state(state: Any) -> None:
    _dict(state, "'loss_state'")
    for k in ("img_rm", "kl_rm"):
        v = state.get(k)
        if v is not None and not (isinstance(v, torch.Tensor) and v.numel() == 1 and v.is_floating_point()):
            raise _Bad(f"'loss_state' {k} must be a one-number tensor or None")


def _check_history(history: Any) -> None:
    if not isinstance(history, list):
        raise _Bad("'history' must be a list")
    for h in history:  # train.py only appends to it and reads the last entry's epoch
        _dict(h, "a 'history' entry")
        _int(h.get("epoch"), "a 'history' entry's epoch")


def check_checkpoint(ckpt: Any, path: str) -> None:
    """Raise a one-line VaeLabError unless ``ckpt`` is a usable vae-lab or 2018 checkpoint."""
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise VaeLabError(f"{path!r} is not a vae-lab or 2018 checkpoint (no 'state_dict' in it)")
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise VaeLabError(f"{path!r} is not a vae-lab or 2018 checkpoint (no {missing[0]!r} in it)")
    try:
        _int(ckpt["epoch"], "'epoch'")
        _check_state_dict(ckpt["state_dict"])
        _check_optimizer(ckpt["optimizer"])
        if math.isnan(_real(ckpt["best_loss"], "'best_loss'")):
            raise _Bad("'best_loss' is NaN")
        if "model_config" in ckpt:  # ours; the 2018 format has only the four keys above
            _check_model_config(ckpt["model_config"])
            for key, check in (("scheduler", _check_scheduler), ("rng_state", _check_rng_state),
                               ("loss_state", _check_loss_state), ("history", _check_history)):
                if key in ckpt:
                    check(ckpt[key])
            if "scheduler" not in ckpt:
                raise _Bad("no 'scheduler' in it")
            _int(ckpt.get("global_step", 0), "'global_step'")
            if not isinstance(ckpt.get("args", {}), dict):
                raise _Bad("'args' must be a dict")
    except _Bad as e:
        raise VaeLabError(f"{path!r} is not a usable checkpoint: {e}") from None
