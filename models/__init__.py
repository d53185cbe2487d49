"""The model families and their registry (models/family.py): ``--model_type`` name -> the family each
models/<family>.py declares and registers when imported; building a model from its config, or from the
config a checkpoint stored."""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from losses.pixel_layout import MIXTURE
from models.base import VAE
from models.family import MODELS, Family, ModelConfig, register, setting
from models.priors import PRIORS

# The modules of the families here, each registering its own when imported; in this order --help lists them
# and their settings (and the run's YAML config its settings).
FAMILY_MODULES = ("fc", "fcn", "resconv", "unet", "conv1xn", "hvae", "pixelvae", "deep_hvae")
for _module in FAMILY_MODULES:
    importlib.import_module(f"models.{_module}")


def build_model(cfg: ModelConfig) -> VAE:
    """The model ``cfg`` describes (of the family named by ``cfg.model_type``), complete."""
    if cfg.model_type not in MODELS:
        raise KeyError(f"unknown model type {cfg.model_type!r}; choose from {sorted(MODELS)}")
    return MODELS[cfg.model_type].model(cfg)


def any_shape_families() -> tuple[str, ...]:
    """The families built for any image shape and likelihood."""
    return tuple(name for name, family in MODELS.items() if family.any_shape)


def shape_problem(model_type: str, channels: int, size: int) -> str | None:
    """Why ``model_type`` cannot be built for (channels, size, size) images, or None if it can."""
    family = MODELS[model_type]
    if not family.any_shape and (channels, size) != (1, 28):
        return (f"--model_type {model_type} is a 2018 model of 28x28 grey images, not {channels}x{size}x{size}; "
                f"{', '.join(any_shape_families())} build for any size and channel count")
    reason = family.size_problem(size) if family.size_problem else None
    if reason:
        return f"--model_type {model_type} cannot be built for {size}x{size} images ({reason}); pass --image_size"
    return None


def config_keys() -> frozenset[str]:
    """Every key a stored model config may hold: the shared fields and every registered family's own."""
    return frozenset(f.name for family in MODELS.values() for f in dataclasses.fields(family.config))


def config_from_dict(stored: dict[str, Any]) -> ModelConfig:
    """The config of the family a checkpoint's stored 'model_config' names: written by this version (the
    family's fields only) or by one before issue 35 (every family's fields in one flat dict: the other
    families' are dropped); a ``dmol`` config stored without ``mixture_location`` (before issue 36) keeps the
    "sigmoid" mapping its decoder was trained for, and a ``deep_hvae`` one without ``deep_upsample`` its transposed
    convolutions. ValueError, in one line, for an unknown family or a key no family declares (the values are
    checked as flags: config.flags.parse_settings)."""
    family = MODELS.get(stored.get("model_type", ModelConfig.model_type))
    if family is None:
        raise ValueError(f"unknown model type {stored.get('model_type')!r:.40}; choose from {sorted(MODELS)}")
    unknown = set(stored) - config_keys()
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)[:3]}")
    own = {f.name for f in dataclasses.fields(family.config)}
    config = {k: v for k, v in stored.items() if k in own}
    if config.get("likelihood") == MIXTURE and "mixture_location" not in config:
        config["mixture_location"] = "sigmoid"  # stored before issue 36: its decoder was trained for that mapping
    if family.name == "deep_hvae" and "deep_upsample" not in config:
        config["deep_upsample"] = "transposed"  # stored before the checkerboard fix: its weights are of those layers
    return family.config(**config)


def rebuild_model(stored: dict[str, Any]) -> VAE:
    """The model (weights as initialised) of a checkpoint's stored 'model_config' (config_from_dict)."""
    return build_model(config_from_dict(stored))


__all__ = ["MODELS", "PRIORS", "VAE", "Family", "ModelConfig", "any_shape_families", "build_model", "config_from_dict",
           "config_keys", "rebuild_model", "register", "setting", "shape_problem"]
