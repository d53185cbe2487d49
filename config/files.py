"""A run's config as a YAML file: written beside its checkpoints (weights/<run>_config.yaml) for
people to read, diff, share and rerun (``train.py --config FILE``), and read back through the same
checks as the flags. PyYAML's safe loader and dumper: plain values only, nothing that runs code."""
from __future__ import annotations

from typing import Any

import yaml

from config.flags import group_of, parse_settings, train_parser
from config.run_config import COMMAND_LINE_ONLY, INVOCATION, RunConfig
from core.errors import VaeLabError
from fileio.atomic import write_text

HEADER = ("# vae-lab run config of {name}: every setting of the run, as train.py resolved it.\n"
          "# The keys are train.py's flags (batch_size is --batch-size). Train again from it with\n"
          "#   python3 train.py --config {path} --lognumber NEW_NAME\n"
          "# (flags given with --config still win).\n")


def config_text(cfg: RunConfig, path: str) -> str:
    """``cfg`` as YAML, grouped as ``--help`` groups the flags, without what only an invocation asks
    for (--resume, --evaluate, output folders, the device...)."""
    groups: dict[str, dict[str, Any]] = {}
    for key, group in group_of(train_parser()).items():
        if key not in INVOCATION:
            groups.setdefault(group, {})[key] = getattr(cfg, key)
    body = yaml.safe_dump(groups, sort_keys=False, default_flow_style=False)
    return HEADER.format(name=cfg.lognumber, path=path) + body


def write_config(cfg: RunConfig, path: str) -> None:
    """Atomically write ``cfg``'s YAML to ``path``."""
    try:
        write_text(path, config_text(cfg, path))
    except OSError as e:
        raise VaeLabError(f"could not write the run's config {path!r} ({e.strerror or e})") from None


def read_config(path: str) -> dict[str, Any]:
    """The settings of a config file (field -> value), checked key by key as the flags are; one
    line naming the key for an unknown key, a wrong type or a bad value."""
    where = f"config {path!r}"
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise VaeLabError(f"{where} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise VaeLabError(f"{where} cannot be read ({getattr(e, 'strerror', None) or e})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise VaeLabError(f"{where} is not valid YAML{at} ({getattr(e, 'problem', None) or type(e).__name__})"
                          ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise VaeLabError(f"{where} must be a mapping of settings (key: value), got a {type(data).__name__}")
    groups = set(group_of(train_parser()).values())
    flat: dict[str, Any] = {}
    for key, value in data.items():
        items = value.items() if key in groups and isinstance(value, dict) else [(key, value)]
        for k, v in items:
            if not isinstance(k, str):
                raise VaeLabError(f"{where}: keys must be names, got {k!r:.40}")
            if k in flat:
                raise VaeLabError(f"{where}: {k} is set twice")
            if k in COMMAND_LINE_ONLY:
                raise VaeLabError(f"{where}: {k} is given on the command line (--{k}), not in a config file")
            flat[k] = v
    return parse_settings(flat, where)
