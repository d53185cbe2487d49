"""Checkpoint files: atomic writes, safe loading, and matching a checkpoint to the flags.

A checkpoint is a plain dict of tensors, numbers and strings, so it loads with
``torch.load(weights_only=True)``: loading never runs code from the file. The 2018 keys
(``epoch``, ``optimizer``, ``state_dict``, ``best_loss``) are kept; ours add ``args``,
``scheduler``, ``rng_state``, ``loss_state``, ``model_config``, ``history``, ``global_step``.
"""
from __future__ import annotations

import os
import pickle
import shutil
import tempfile
import warnings
import zipfile

import torch

from models import ModelConfig, VAE, build_model
from utils import VaeLabError

LEGACY_KEYS = {"epoch", "optimizer", "state_dict", "best_loss"}


def _atomic_write(path: str, write) -> None:
    """Write through a temp file in the same folder, fsync, then rename over ``path``.

    A crash or kill at any moment leaves either the old file or the new one, never a mix.
    """
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise


def save_checkpoint(state: dict, path: str) -> None:
    """Atomically save ``state``; a failed write leaves the previous file intact."""
    try:
        _atomic_write(path, lambda f: torch.save(state, f))
    except OSError as e:
        raise VaeLabError(f"could not write checkpoint {path!r} ({e.strerror or e}); "
                          f"the previous checkpoint there is intact") from None


def copy_checkpoint(src: str, dst: str) -> None:
    """Atomically copy a checkpoint file (used for ``*_best.pth.tar``)."""
    try:
        with open(src, "rb") as s:
            _atomic_write(dst, lambda f: shutil.copyfileobj(s, f))
    except OSError as e:
        raise VaeLabError(f"could not write {dst!r} ({e.strerror or e}); the previous file is intact") from None


def load_checkpoint(path: str) -> dict:
    """Load a checkpoint on the CPU with ``weights_only=True``; any problem is a VaeLabError."""
    if not os.path.isfile(path):
        raise VaeLabError(f"checkpoint {path!r} does not exist")
    try:
        with warnings.catch_warnings():  # e.g. "pickle protocol 4": the error below says it all
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        if "weights_only" in str(e) or "Unsupported global" in str(e) or "GLOBAL" in str(e):
            raise VaeLabError(f"refusing to load {path!r}: it holds objects that could run code "
                              f"when unpickled (weights_only loading refused them)") from None
        raise VaeLabError(f"checkpoint {path!r} is corrupt or truncated ({first[:120]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError, IndexError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise VaeLabError(f"checkpoint {path!r} is corrupt, truncated or not a PyTorch file "
                          f"({first[:120]})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise VaeLabError(f"{path!r} is not a vae-lab or 2018 checkpoint (no 'state_dict' in it)")
    return ckpt


def is_legacy(ckpt: dict) -> bool:
    """True for a 2018 checkpoint: only the four 2018 keys, no model config."""
    return "model_config" not in ckpt


def model_from_checkpoint(ckpt: dict, cfg: ModelConfig, path: str = "checkpoint") -> VAE:
    """Build the model the flags describe and load the checkpoint's weights into it.

    A checkpoint whose recorded model type or latent size differs from the flags, or
    whose tensors do not fit the model, is refused with one line naming both sides.
    """
    if not is_legacy(ckpt):
        saved = ckpt["model_config"]
        for key, flag in (("model_type", "--model_type"), ("latent_space_size", "--latent_space_size")):
            if saved.get(key) != getattr(cfg, key):
                raise VaeLabError(f"{path!r} was trained with {flag} {saved.get(key)} but the flags say "
                                  f"{getattr(cfg, key)}; pass {flag} {saved.get(key)}")
        cfg = ModelConfig(**{**cfg.to_dict(), **{k: v for k, v in saved.items() if k in cfg.to_dict()}})
    model = build_model(cfg)
    state = ckpt["state_dict"]
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad_shape = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or bad_shape:
        detail = (f"shape of {bad_shape[0]} is {tuple(state[bad_shape[0]].shape)}, expected "
                  f"{tuple(own[bad_shape[0]].shape)}" if bad_shape else
                  f"missing {missing[:2]}" if missing else f"unexpected {unexpected[:2]}")
        raise VaeLabError(f"{path!r} does not fit --model_type {cfg.model_type} --latent_space_size "
                          f"{cfg.latent_space_size} ({detail})")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
    return model
