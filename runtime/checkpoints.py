"""Checkpoint files: atomic writes, safe loading into the typed view (``load_checkpoint``),
rebuilding the model (``load_model``), and matching a checkpoint to the data.

A checkpoint is a plain dict of tensors, numbers and strings, so it loads with
``torch.load(weights_only=True)``: loading never runs code from the file. What it holds (the 2018
keys ``epoch``, ``optimizer``, ``state_dict``, ``best_loss``, and ours) is defined once, in
core/checkpoint.py; runtime/checkpoint_validation.py checks it once, here, as it is loaded.
"""
from __future__ import annotations

import math
import os
import pickle
import shutil
import warnings

import torch

from config.resolve import build_config
from config.run_config import RunConfig, model_config
from core.checkpoint import Checkpoint
from core.errors import VaeLabError
from fileio.atomic import atomic_write
from losses import likelihood_of
from models import VAE, ModelConfig, build_model, config_from_dict
from runtime.checkpoint_validation import check_checkpoint
from runtime.published_2018 import missing_hint


def _torch_save(state: dict, f) -> None:
    try:
        torch.save(state, f)
    except RuntimeError as e:
        # torch reports a failed write() of the file (e.g. ENOSPC) as an "unexpected pos"
        # RuntimeError; the OSError it hit is its context.
        if isinstance(e.__context__, OSError):
            raise e.__context__ from None
        raise


def save_checkpoint(state: dict, path: str, what: str = "checkpoint") -> None:
    """Atomically save ``state`` (a checkpoint, or ``what`` else of ours); a failed write leaves
    the previous file intact."""
    try:
        atomic_write(path, lambda f: _torch_save(state, f))
    except OSError as e:
        raise VaeLabError(f"could not write {what} {path!r} ({e.strerror or e}); "
                          f"the previous {what} there is intact") from None


def copy_checkpoint(src: str, dst: str) -> None:
    """Atomically copy a checkpoint file (used for ``*_best.pth.tar``)."""
    try:
        with open(src, "rb") as s:
            atomic_write(dst, lambda f: shutil.copyfileobj(s, f))
    except OSError as e:
        raise VaeLabError(f"could not write {dst!r} ({e.strerror or e}); the previous file is intact") from None


def load_checkpoint_file(path: str, what: str = "checkpoint"):
    """Load a file of ours (a checkpoint, a saved mixture, a classifier) on the CPU with
    ``weights_only=True``; any problem is a one-line VaeLabError naming ``what`` it is.

    Loading never runs code from the file: ``weights_only`` unpickles tensors and plain
    containers only, and refuses anything else before it is built.
    """
    if not os.path.isfile(path):
        raise VaeLabError(f"{what} {path!r} does not exist{missing_hint(path)}")
    try:
        with warnings.catch_warnings():  # e.g. "pickle protocol 4": the error below says it all
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        first = next((line for line in lines if line.startswith("Unsupported")), lines[0] if lines else "")
        # weights_only names every refusal the same way; only an unsupported global is an object
        # that would run code (garbage bytes are an "unsupported operand", i.e. not a pickle of ours)
        if "Unsupported global" in str(e) or "GLOBAL" in str(e):
            raise VaeLabError(f"refusing to load {path!r}: it holds objects that could run code "
                              f"when unpickled (weights_only loading refused them)") from None
        raise VaeLabError(f"{what} {path!r} is corrupt or truncated ({first[:120]})") from None
    except MemoryError:
        raise VaeLabError(f"{what} {path!r} is corrupt: it asks for more memory than there is") from None
    except Exception as e:  # a damaged file fails in many ways: zip, pickle, storage, struct, type errors
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise VaeLabError(f"{what} {path!r} is corrupt, truncated or not a PyTorch file "
                          f"({first[:120]})") from None
    return state


def load_checkpoint(path: str) -> Checkpoint:
    """A checkpoint (ours or 2018's), loaded safely and checked key by key, as a typed view
    (core/checkpoint.py); one line if unusable."""
    state = load_checkpoint_file(path)
    check_checkpoint(state, path)
    return Checkpoint.from_dict(state)


def sync_best(ckpt: Checkpoint, ckpt_path: str, best_path: str) -> bool:
    """Redo the copy to ``best_path`` if a kill came between writing the checkpoint and it.

    ``ckpt`` is the content of ``ckpt_path``. When its last epoch was a new best (strictly
    below every earlier epoch, as the training loop decides) but the best file holds another
    epoch, or is missing or broken, the copy is made now. True if it copied.
    """
    history = ckpt.history
    if ckpt.legacy or not history or "val_loss" not in history[-1]:
        return False
    last, earlier = history[-1]["val_loss"], [h.get("val_loss", math.inf) for h in history[:-1]]
    if not (last == ckpt.best_loss and all(v > last for v in earlier)):
        return False
    try:
        if load_checkpoint(best_path).epoch == ckpt.epoch:
            return False
    except VaeLabError:
        pass  # missing or unreadable: replace it
    copy_checkpoint(ckpt_path, best_path)
    return True


def check_fits_checkpoint(ckpt: Checkpoint, shape: tuple[int, ...], image_loss_type: str, path: str) -> None:
    """Refuse to resume with data whose (C, H, W), or a loss whose likelihood, is not what the
    checkpoint's model was built for."""
    want = ckpt.image_shape  # a 2018 checkpoint: 28x28 grey, Bernoulli
    if tuple(shape) != want:
        raise VaeLabError(f"{path!r} was trained on {'x'.join(map(str, want))} images but the data are "
                          f"{'x'.join(map(str, shape))}; pass --image_size {want[1]} --channels {want[0]}")
    saved, asked = ckpt.model_setting("likelihood"), likelihood_of(image_loss_type)
    if saved != asked:
        raise VaeLabError(f"{path!r} has a {saved} likelihood; --image_loss_type {image_loss_type} trains a "
                          f"{asked} one")


def model_config_of(ckpt: Checkpoint, run: RunConfig) -> ModelConfig:
    """The model a checkpoint holds: its stored config, or for a 2018 checkpoint (which stores none)
    the one ``run`` describes for 28x28 grey images of 10 classes (by default the published model)."""
    return model_config(run) if ckpt.model_config is None else config_from_dict(ckpt.model_config)


def model_from_checkpoint(ckpt: Checkpoint, run: RunConfig, path: str = "checkpoint") -> VAE:
    """The checkpoint's model with its weights: built from the model config it stores (ours), or for a
    2018 checkpoint, which stores none, from ``run`` (the flags; by default the published model).

    Tensors that do not fit the model are refused with one line naming both sides.
    """
    model_cfg = model_config_of(ckpt, run)
    model = build_model(model_cfg)
    state = ckpt.state_dict
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad_shape = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or bad_shape:
        detail = (f"shape of {bad_shape[0]} is {tuple(state[bad_shape[0]].shape)}, expected "
                  f"{tuple(own[bad_shape[0]].shape)}" if bad_shape else
                  f"missing {missing[:2]}" if missing else f"unexpected {unexpected[:2]}")
        raise VaeLabError(f"{path!r} does not fit --model_type {model_cfg.model_type} --latent_space_size "
                          f"{model_cfg.latent_space_size} ({detail})")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
    return model


def load_model(path: str, ckpt: Checkpoint | None = None) -> tuple[VAE, RunConfig]:
    """Any checkpoint's model (ours of every family, or the 2018 one) and the config of the run that
    trained it, with no flags: what every tool that reads a checkpoint calls. A 2018 checkpoint
    stores no config: it is taken to be the published one (train.py's defaults). ``ckpt``: the file's
    content, when the caller has loaded it already."""
    ckpt = load_checkpoint(path) if ckpt is None else ckpt
    run = build_config({"resume": path}, ckpt)
    return model_from_checkpoint(ckpt, run, path), run
