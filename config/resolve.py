"""Building the run's config once, from (weakest first) the defaults, the preset, a resumed
checkpoint's settings, a config file (``--config``) and the flags given on the command line."""
from __future__ import annotations

import argparse
from typing import Any

from config.checks import check_config
from config.files import read_config
from config.flags import parse_settings
from config.run_config import INVOCATION, PRESETS, RunConfig, fixed_by_checkpoint, run_fields, run_name
from core.checkpoint import Checkpoint
from core.errors import VaeLabError

# image_size and channels: None (the data's own) is what a checkpoint stores when they were not given;
# the model it built says what they were.
SHAPE_KEYS = {"image_size": "image_size", "channels": "image_channels"}


def stored_settings(ckpt: Checkpoint, path: str) -> dict[str, Any] | None:
    """The settings a checkpoint of ours was trained with, checked as flags are (keys of older or newer
    versions skipped); None for a 2018 checkpoint, which stores none."""
    if ckpt.legacy:
        return None
    names = set(run_fields())
    return parse_settings({k: v for k, v in ckpt.args.items() if k in names},
                          f"the settings stored in {path!r}", ignore_unknown=True)


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The flags given on the command line (config.parsers.OneLineParser records which); a Namespace made by
    hand counts as given in full."""
    given = getattr(args, "given_flags", None)
    names = set(run_fields())
    values = {k: v for k, v in vars(args).items() if k in names}
    return values if given is None else {k: v for k, v in values.items() if k in given}


def build_config(cli: dict[str, Any], ckpt: Checkpoint | None = None) -> RunConfig:
    """The run's config: the defaults, then the preset, then ``ckpt``'s settings (the checkpoint of
    ``--resume``; not what an invocation asks for: mode, device, output folders), then the file of
    ``--config``, then ``cli``, the flags given (given_settings). A file or flag that contradicts what
    the checkpoint's model was built for is refused in one line. Checked by check_config."""
    path = cli.get("resume", "")
    file = read_config(cli["config"]) if cli.get("config") else {}
    saved = stored_settings(ckpt, path) if ckpt is not None else None
    preset = cli.get("preset") or file.get("preset") or (saved or {}).get("preset") or RunConfig.preset
    values = {**RunConfig().to_dict(), **PRESETS[preset]}
    if saved is not None:
        values.update({k: v for k, v in saved.items() if k not in INVOCATION})
        _check_contradictions(ckpt, saved, {**file, **cli}, path)
    values.update(file)
    values.update(cli)
    values["preset"] = preset
    cfg = RunConfig(**values)
    cfg = cfg.replace(lognumber=run_name(cfg))
    check_config(cfg)
    return cfg


def _check_contradictions(ckpt: Checkpoint, saved: dict[str, Any], asked: dict[str, Any], path: str) -> None:
    """Refuse a setting that contradicts what the checkpoint's model and data are."""
    built = ckpt.model_config
    for key in fixed_by_checkpoint():
        if key not in asked:
            continue
        value = asked[key]
        if key in SHAPE_KEYS:
            built_for = ckpt.model_setting(SHAPE_KEYS[key])
            if value is not None and value != built_for:
                raise VaeLabError(f"{path!r} was trained on images of --{key} {built_for} but the flags say "
                                  f"{value}; leave --{key} out")
        elif key == "dataset_type" and key in saved and value != saved[key]:
            raise VaeLabError(f"{path!r} was trained on {saved[key]} but --dataset_type is {value}; "
                              f"pass --dataset_type {saved[key]}")
        elif key in built and value != built[key]:
            raise VaeLabError(f"{path!r} was trained with --{key} {built[key]} but the flags say {value}; "
                              f"pass --{key} {built[key]} or leave it out")
        elif key not in built and key in saved and value != saved[key]:
            raise VaeLabError(f"{path!r} was trained with --{key} {saved[key]} but the flags say {value}; "
                              f"pass --{key} {saved[key]} or leave it out")
