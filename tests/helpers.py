"""Test helpers: TensorBoard scalars of a run, an in-process CLI runner, and the reliability tests' tools."""
from __future__ import annotations

import contextlib
import io
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_events(logdir: str, reader: str = "accumulator") -> dict[str, list[tuple[int, float]]]:
    """What TensorBoard shows of a vae-lab run: tag -> [(step, value)] for scalars.

    Reads the run's per-axis folders and applies TensorBoard's rules for hiding what a killed
    run wrote after its checkpoint (``reader``: see tools.tb_reader.read_run; "raw" hides nothing).
    Images come as ``image:<tag>`` -> [(0, number of images)].
    """
    from tools.tb_reader import read_logdir

    out: dict[str, list[tuple[int, float]]] = {}
    images: dict[str, int] = {}
    for tag, vals in read_logdir(logdir, reader).items():
        if vals and vals[0][1] is None:
            images[tag] = len(vals)
        else:
            out[tag] = vals
    out.update({f"image:{k}": [(0, float(n))] for k, n in images.items()})
    return out


def run_module_cli(module, argv: list[str]) -> tuple[int, str, str]:
    """Run ``module``'s command line (its main and get_args_parser) in-process: (exit code, stdout, stderr)."""
    from config.parsers import run_cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run_cli(module.main, module.get_args_parser(), argv)
    return code, out.getvalue(), err.getvalue()


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """Run train.py's command line in-process: (exit code, stdout, stderr)."""
    import train

    return run_module_cli(train, argv)


# ---------------------------------------------------------------- command lines and checkpoints

TINY_BATCHES = 4  # tiny_mnist: 400 training images / 128 per minibatch


def tiny_args(root: str, *extra: str, epochs: int = 1, name: str = "r") -> list[str]:
    """train.py flags for a fast run on the tiny_mnist fixture, checked once per epoch."""
    return ["--data_root", root, "--dataset_type", "mnist", "--epochs", str(epochs), "--batch-size", "128",
            "--print-freq", "100", "--lognumber", name, "--no_cuda", "True", "--tensorboard_images", "False",
            *extra]


def small_args(root: str, *extra: str, epochs: int = 3, name: str = "t") -> list[str]:
    """train.py flags for a short run on a small real dataset (e.g. the fmnist_small fixture)."""
    return ["--data_root", root, "--epochs", str(epochs), "--batch-size", "128", "--print-freq", "5",
            "--lognumber", name, "--no_cuda", "True", *extra]


def load_ckpt(path: str) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def assert_cli_error(code: int, err: str, *needles: str, prog: str = "train.py") -> None:
    """Exit 2, exactly one line on stderr (``prog``'s error), no traceback, naming ``needles``."""
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err and lines[0].startswith(f"{prog}: error: "), err
    for needle in needles:
        assert needle in err, (needle, err)


def snapshot(*paths: str) -> dict[str, bytes]:
    return {p: open(p, "rb").read() for p in paths}


def temp_files(folder: str = "weights") -> list[str]:
    return [f for f in os.listdir(folder) if f.endswith(".tmp")]


def make_objective(model=None, dataset_size: int = 1, **settings):
    """The objective train.py builds for these run settings (RunConfig fields: the ELBO of 'bce' with unit
    weights by default), for ``model`` (None: a model without a learnt pixel scale)."""
    import types

    from config.run_config import RunConfig
    from losses import build_objective

    return build_objective(RunConfig(**settings), model or types.SimpleNamespace(log_scale=None), dataset_size)
