"""Small helpers shared by the entry points: errors, flag types, devices, seeding."""
from __future__ import annotations

import argparse
import math
import os
import random
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import torch


class VaeLabError(Exception):
    """A user-facing error: printed as one line on stderr, exit code 2, no traceback."""


class OneLineParser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line on stderr (exit 2) instead of usage + error, and whose
    namespace records which flags the command line gave (``given_flags``, a frozenset of dests), so
    that a config file or a checkpoint can fill in the others."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        ns, extras = super().parse_known_args(args, namespace)
        ns.given_flags = self._given(args)
        return ns, extras

    def _given(self, args) -> frozenset[str]:
        # argparse cannot tell a default from a value given equal to it: parse again with no defaults
        saved, parser_defaults = [(a, a.default) for a in self._actions], self._defaults
        try:
            for a, _ in saved:
                a.default = argparse.SUPPRESS
            self._defaults = {}
            given = vars(argparse.ArgumentParser.parse_known_args(self, args)[0])
        finally:
            for a, default in saved:
                a.default = default
            self._defaults = parser_defaults
        return frozenset(given)


class PresetParser(OneLineParser):
    """A OneLineParser where ``--preset NAME`` first sets the defaults of a named configuration
    (``presets``: name -> {flag dest: value}); flags given on the command line still win."""

    def __init__(self, presets: dict[str, dict[str, Any]], **kwargs: Any):
        super().__init__(**kwargs)
        self.presets = presets

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        pre = OneLineParser(prog=self.prog, add_help=False)
        pre.add_argument("--preset", choices=sorted(self.presets), default=next(iter(self.presets)))
        preset = self.presets[pre.parse_known_args(args)[0].preset]
        saved = {k: self.get_default(k) for k in preset}
        self.set_defaults(**preset)
        try:
            return super().parse_known_args(args, namespace)
        finally:
            self.set_defaults(**saved)  # the parser's own defaults stay those of --help


def run_cli(main: Callable[[argparse.Namespace], Any], parser: argparse.ArgumentParser,
            argv: list[str] | None = None) -> int:
    """Parse flags, run ``main``; user-facing errors become one line on stderr and code 2.

    Returns the exit code (0, 2 for bad input, 130 for Ctrl-C) instead of exiting, so
    tests can run the command line in-process.
    """
    try:
        main(parser.parse_args(argv))
    except VaeLabError as e:
        if os.environ.get("RANK", "0") == "0":  # under torchrun every rank meets it: say it once
            print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1
    except KeyboardInterrupt:  # Ctrl-C before training started (the loop handles its own)
        print(f"\n{parser.prog}: interrupted", file=sys.stderr)
        return 130
    return 0


# ---------------------------------------------------------------- flag types

_TRUE = {"true", "yes", "y", "1", "t", "on"}
_FALSE = {"false", "no", "n", "0", "f", "off"}


def str2bool(value: str | bool) -> bool:
    """Strict boolean flag: True/False, yes/no, 1/0 (any case); anything else is an error.

    The 2018 parser read any unknown word (e.g. ``Flase``) as False; we refuse it.
    """
    if isinstance(value, bool):
        return value
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected True/False (or yes/no, 1/0), got {value!r}")


def auto_on_off(value: str | bool) -> str:
    """A setting the program may choose (``auto``) or the user forces: ``on`` / ``off`` (also
    True/False, yes/no, 1/0, as older checkpoints stored them)."""
    if isinstance(value, str) and value.strip().lower() in ("auto", "on", "off"):
        return value.strip().lower()
    try:
        return "on" if str2bool(value) else "off"
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected auto, on or off, got {value!r}") from None


def _bounded(cast: Callable[[str], float], low: float, strict: bool, what: str) -> Callable[[str], Any]:
    """An argparse type: ``cast`` the text, then require a finite value above ``low``."""

    def parse(value: str):
        try:
            v = cast(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {value!r}") from None
        if not np.isfinite(v) or v < low or (strict and v == low):
            raise argparse.ArgumentTypeError(f"expected {what}, got {value!r}")
        return v

    parse.__name__ = what.replace(" ", "_")
    return parse


positive_int = _bounded(int, 0, True, "a positive integer")
non_negative_int = _bounded(int, 0, False, "an integer >= 0")
positive_float = _bounded(float, 0.0, True, "a positive finite number")
non_negative_float = _bounded(float, 0.0, False, "a finite number >= 0")



def fraction(value: str) -> float:
    """Flag type: a number strictly between 0 and 1."""
    try:
        v = float(value)
    except ValueError:
        v = math.nan
    if not 0.0 < v < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {value!r}")
    return v


# Sanity limits: larger values are typos, and would otherwise fail deep inside torch
# (an allocation of terabytes, an int64 overflow) instead of with one line.
MAX_LATENT = 4096
MAX_MULTIPLIER = 64
MAX_SEED = 2**32 - 1  # numpy and scikit-learn take seeds in [0, 2**32 - 1]
MAX_IMAGE_SIZE = 1024  # pixels a side
MAX_CLASSES = 100_000  # class sub-folders of a --dataset_type folder
MAX_VAMP_COMPONENTS = 10_000  # --vamp_components: pseudo-inputs through the encoder every step
MAX_HVAE_CHANNELS = 64  # --hvae_channels
MAX_MIXTURE = 32  # --mixture_components
MAX_PIXEL_LAYERS = 32  # --pixel_layers
MAX_PIXEL_CHANNELS = 512  # --pixel_channels


def int_in(lo: int, hi: int) -> Callable[[str], int]:
    """Flag type: an integer in [lo, hi]."""

    def parse(value: str) -> int:
        try:
            v = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer in [{lo}, {hi}], got {value!r}") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"expected an integer in [{lo}, {hi}], got {value!r}")
        return v

    parse.__name__ = f"integer in [{lo}, {hi}]"
    return parse


# ---------------------------------------------------------------- devices and processes


def launched_processes() -> int:
    """How many processes torchrun started (1 for a plain run): flags that need one process check it."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def select_device(name: str = "auto", no_cuda: bool = False) -> torch.device:
    """CUDA, then Apple MPS, then CPU; ``no_cuda`` forces CPU (the 2018 flag)."""
    if no_cuda or name == "cpu":
        return torch.device("cpu")
    cuda_ok = torch.cuda.is_available()
    mps_ok = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "cuda":
        if not cuda_ok:
            raise VaeLabError("--device cuda was asked for but no CUDA device is available")
        return torch.device("cuda")
    if name == "mps":
        if not mps_ok:
            raise VaeLabError("--device mps was asked for but Apple MPS is not available")
        return torch.device("mps")
    if cuda_ok:
        return torch.device("cuda")
    if mps_ok:
        return torch.device("mps")
    return torch.device("cpu")


# ---------------------------------------------------------------- seeding and RNG state


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) so two CPU runs give the same losses."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def get_rng_state(generator: torch.Generator) -> dict:
    """RNG states as tensors and plain Python values, so checkpoints load with weights_only."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "name": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
        "generator": generator.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, generator: torch.Generator) -> None:
    """Inverse of :func:`get_rng_state`."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    generator.set_state(state["generator"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------- files


def ensure_writable_dir(path: str, what: str) -> None:
    """Create ``path`` if needed and prove we can write there, before any training starts."""
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".write_probe_{os.getpid()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise VaeLabError(f"cannot write to the {what} folder {path!r}: {e.strerror or e}") from None


def cpu_name() -> str:
    """The CPU's model name (``lscpu``), to print beside any speed figure: they depend on it."""
    import platform
    import subprocess

    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or platform.machine() or "unknown"
