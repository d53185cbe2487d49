"""What the autoregressive decoder costs: one training step (batch 128, 28x28 grey, the pixel
mixture of 5 logistics, Adam) of ``resconv`` and of ``pixelvae`` at several depths and widths, in
the default memory layout and channels-last, measured side by side in one process; and the
seconds to draw 100 images, a first call and a second.

    python3 -m benchmarks.pixelvae_step        # -> benchmarks/pixelvae_step.md / .json

Read the ratios: absolute seconds vary 2-3x between days on a shared machine.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from benchmarks.scaffold import ROOT, command_line, machine_line, write_report
from config.flag_types import positive_int
from config.parsers import OneLineParser, run_cli
from losses import pixel_nll
from models import ModelConfig, build_model

# (model, pixel_layers, pixel_channels); the first row is the reference of the ratios
SHAPES = [("resconv", 0, 0), ("pixelvae", 0, 32), ("pixelvae", 1, 16), ("pixelvae", 1, 32), ("pixelvae", 3, 32)]
LAYOUTS = {"default": torch.contiguous_format, "channels-last": torch.channels_last}


def get_args_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python3 -m benchmarks.pixelvae_step", description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=positive_int, default=6, help="timed steps per row (the fastest is kept)")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "pixelvae_step"))
    return p


def build(model_type: str, layers: int, width: int, layout: torch.memory_format) -> torch.nn.Module:
    torch.manual_seed(0)
    extra = {"pixel_layers": layers, "pixel_channels": width} if model_type == "pixelvae" else {}
    model = build_model(ModelConfig(model_type=model_type, likelihood="dmol", **extra))
    return model.use_memory_format(layout)


def step_seconds(model: torch.nn.Module, x: torch.Tensor, steps: int) -> float:
    """The fastest of ``steps`` training steps, after one untimed."""
    opt = torch.optim.Adam(model.parameters())
    model.train()
    best = float("inf")
    for i in range(steps + 1):
        t0 = time.perf_counter()
        o = model(x)
        out, mu, logvar = o.logits, o.mu, o.logvar
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1).mean()
        loss = pixel_nll(model.likelihood, out, x).sum() / x.shape[0] + kl
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:
            best = min(best, time.perf_counter() - t0)
    return best


def draw_seconds(model: torch.nn.Module) -> tuple[float, float]:
    model.eval()
    z = torch.randn(100, model.latent_size, generator=torch.Generator().manual_seed(0))
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        model.decode(z)
        times.append(time.perf_counter() - t0)
    return times[0], times[1]


def main(args: argparse.Namespace) -> list[dict]:
    x = torch.round(torch.rand(128, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 255) / 255
    rows = []
    for model_type, layers, width in SHAPES:
        row = {"model": model_type, "pixel_layers": layers, "pixel_channels": width}
        for name, layout in LAYOUTS.items():
            row[name] = step_seconds(build(model_type, layers, width, layout), x.contiguous(memory_format=layout),
                                     args.steps)
        row["first_draw_100"], row["draw_100"] = draw_seconds(build(model_type, layers, width, torch.channels_last))
        rows.append(row)
        print(row, flush=True)
    ref = rows[0]["default"]
    lines = ["# The autoregressive decoder's cost: one training step, and drawing 100 images", "",
             f"`{command_line('pixelvae_step')}`; {machine_line()}. Batch 128, 28x28 grey, mixture of 5 logistics, "
             f"Adam; fastest of {args.steps} steps. Ratios to resconv's step in the default layout.", "",
             "| model | pixel layers | channels | step s (default) | step s (channels-last) | x resconv (default) | "
             "x resconv (channels-last) | channels-last speed-up | draw 100 s (first call) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['pixel_layers'] if r['model'] == 'pixelvae' else ''} | "
                     f"{r['pixel_channels'] or ''} | {r['default']:.3f} | {r['channels-last']:.3f} | "
                     f"{r['default'] / ref:.2f} | {r['channels-last'] / ref:.2f} | "
                     f"{r['default'] / r['channels-last']:.2f} | {r['draw_100']:.2f} ({r['first_draw_100']:.2f}) |")
    write_report(args.out, "\n".join(lines), {"rows": rows}, command_line("pixelvae_step"))
    print("\n".join(lines))
    return rows


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
