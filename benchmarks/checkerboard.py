"""A decoder's checkerboard, measured: the mean absolute error of a checkpoint's reconstructions (the posterior
mean decoded, as --predict draws them) at each pixel parity (even or odd row, even or odd column) of its
validation images. A stride-2 transposed convolution's uneven overlap (Odena et al. 2016) shows as one parity
with more error than the other three; a decoder without it has four about equal.

    python3 -m benchmarks.checkerboard --checkpoints results/colour_twemoji/deep_s42_best.pth.tar \\
        --data_root data/twemoji_cat
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

from benchmarks.scaffold import ROOT, command_line, machine_line, run_splits, shown_path, table, write_report
from config.flag_types import positive_int
from config.parsers import OneLineParser, run_cli
from datasets import as_float
from runtime.checkpoints import load_model


def get_args_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python3 -m benchmarks.checkerboard", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoints", nargs="+", required=True)
    p.add_argument("--data_root", default="data", help="where the checkpoints' data set is")
    p.add_argument("--images", type=positive_int, default=256, help="the validation fold's first N images")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "checkerboard"))
    return p


@torch.no_grad()
def parity_errors(path: str, data_root: str, images: int) -> dict:
    """Mean absolute error in grey levels (0-255) at each (row % 2, column % 2), and the worst over the best."""
    model, run = load_model(path)
    model.eval()
    _, val, _ = run_splits(run, data_root)
    x = as_float(val.x[:images])
    err = (model.reconstruct(x) - x).abs().mean(dim=(0, 1)) * 255  # (H, W)
    cells = {f"{i}{j}": float(err[i::2, j::2].mean()) for i in (0, 1) for j in (0, 1)}
    return {"checkpoint": shown_path(os.path.abspath(path)), "family": run.model_type, "images": len(x),
            "upsample": type(model.ups[0][0]).__name__ if hasattr(model, "ups") else "n/a",
            "parity_mae": cells, "ratio": max(cells.values()) / min(cells.values())}


def main(args: argparse.Namespace) -> list[dict]:
    rows = [parity_errors(p, args.data_root, args.images) for p in args.checkpoints]
    body = [[f"`{r['checkpoint']}`", r["family"], r["upsample"], *(f"{r['parity_mae'][k]:.2f}" for k in
                                                                   ("00", "01", "10", "11")), f"{r['ratio']:.2f}"]
            for r in rows]
    markdown = "\n".join([
        "# A decoder's checkerboard: reconstruction error by pixel parity (grey levels, validation images)", "",
        f"`{command_line('checkerboard')}`; {machine_line()}.", "",
        table(["checkpoint", "family", "decoder doubles by", "even row, even col", "even, odd", "odd, even",
               "odd, odd", "worst / best"], body)])
    print(markdown)
    write_report(args.out, markdown, {"rows": rows}, command=command_line("checkerboard"))
    return rows


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
