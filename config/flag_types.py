"""argparse types of the flags: strict booleans, auto/on/off, bounded numbers."""
from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

import numpy as np

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
