"""The parsers of every command line: errors in one line (exit 2), the flags a command line gave,
--preset, and ``run_cli``, which turns a VaeLabError into one line on stderr."""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from core.errors import VaeLabError


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
