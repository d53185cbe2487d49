"""Where a UNet VAE's reconstructions come from: its latent code, or the skips across the bottleneck.

For each `unet` checkpoint of the ablation (rows unet_skips_all / _coarsest / _none, every seed
of ``--seeds`` found in ``--work_dir``), on the run's own validation fold, per image
(evaluation/skips.py):

- BCE of the normal decode: the posterior mean with the input's encoder maps (the ablation's BCE);
- BCE with the code swapped for a draw from the prior, and for zeros, the input's maps kept:
  what reaches the output through the skips alone;
- BCE of the posterior mean decoded without the maps (zeros in their place, as for a prior sample):
  what the decoder makes of the code alone;
- KL per image, per latent dimension, and the active units (Burda et al. 2016: dimensions whose
  posterior mean varies over the data, Cov_x(E[z|x]) > 0.01).

and a picture (``--picture``): for each row (first seed), validation images, their reconstructions,
their reconstructions from a prior-drawn code, the code decoded without the maps, and prior samples.
Writes ``--out``.md / .json.

    python3 -m benchmarks.ablation --epochs 5 --only unet_skips_all,unet_skips_coarsest,unet_skips_none
    python3 -m benchmarks.unet_skips
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

from benchmarks.scaffold import ROOT, cell, command_line, parse_seeds, seed_stats, shown_path, write_report
from config.parsers import OneLineParser, run_cli
from config.run_config import data_options
from core.errors import VaeLabError
from datasets import as_float, train_val_split
from evaluation.metrics import ACTIVE_UNIT_VARIANCE
from evaluation.pictures import save_png
from evaluation.skips import skip_picture_rows, skip_usage
from runtime.checkpoints import load_model
from runtime.device import select_device

ROWS = ("unet_skips_all", "unet_skips_coarsest", "unet_skips_none")
PICTURE_IMAGES = 8
METRICS = (("bce", ".2f"), ("bce_prior_code", ".2f"), ("bce_zero_code", ".2f"), ("bce_no_maps", ".2f"),
           ("kl", ".2f"), ("active_units", ".1f"), ("kl_top_dim", ".2f"))


def get_args_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python3 -m benchmarks.unet_skips", description=__doc__.splitlines()[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--work_dir", default=os.path.join(ROOT, "results", "ablation"),
                   help="where benchmarks/ablation.py left the runs ({row}_s{seed}_best.pth.tar)")
    p.add_argument("--seeds", default="42,1,2", help="comma-separated seeds of the runs to measure")
    p.add_argument("--rows", default=",".join(ROWS), help="comma-separated ablation rows to measure")
    p.add_argument("--data_root", default="data")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "unet_skips"),
                   help="output path without extension (.md and .json are written)")
    p.add_argument("--picture", default=os.path.join(ROOT, "docs", "img", "unet_skips.png"))
    return p


def save_report(rows: list[dict], args: argparse.Namespace) -> None:
    lines = ["# Where the UNet VAE's reconstructions come from", "",
             f"`{command_line('unet_skips')}` on the checkpoints of `python3 -m benchmarks.ablation` "
             "(5 epochs, best checkpoint; mean ± std over seeds). Per validation image (the run's "
             "fold 0, 12,000 images), nats. BCE: the posterior mean decoded with the input's encoder "
             "maps (what the ablation reports); with a prior draw / zeros as the code: the same maps, "
             "the code replaced; without maps: the posterior mean decoded with zeros for the maps "
             f"(as a prior sample is). Active units: latent dimensions with Cov_x(E[z|x]) > "
             f"{ACTIVE_UNIT_VARIANCE} (Burda et al. 2016), of the code's size.", "",
             "| row | seeds | BCE | BCE, code from the prior | BCE, code zero | BCE, no maps | KL | active units "
             "| KL of the top dim |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['row']} | {len(r['seeds'])} | " + " | ".join(cell(r[k], f) for k, f in METRICS) + " |")
    lines += ["", "KL per latent dimension, largest first (first seed):", ""]
    lines += [f"- {r['row']}: " + ", ".join(f"{v:.2f}" for v in r["kl_per_dim_first_seed"]) for r in rows]
    write_report(args.out, "\n".join(lines), {"seeds": args.seeds, "rows": rows, "picture": shown_path(args.picture)},
                 command_line("unet_skips"))


def main(args: argparse.Namespace) -> list[dict]:
    seeds, names = parse_seeds(args.seeds), [n for n in args.rows.split(",") if n]
    device = select_device(args.device)
    rows, picture = [], []
    for name in names:
        runs = []
        for seed in seeds:
            path = os.path.join(args.work_dir, f"{name}_s{seed}_best.pth.tar")
            if not os.path.isfile(path):
                continue
            model, run = load_model(path)
            if run.model_type != "unet":
                raise VaeLabError(f"{path} is not a unet checkpoint (model_type {run.model_type})")
            model = model.to(device)
            _, val = train_val_split(run.dataset_type, args.data_root, run.fold, run.num_folds, run.seed,
                                     **data_options(run))
            runs.append({"seed": seed, "skips": model.skips, **skip_usage(model, val, device, seed)})
            print(f"[unet_skips] {name} seed {seed}: BCE {runs[-1]['bce']:.2f}, with a prior code "
                  f"{runs[-1]['bce_prior_code']:.2f}, KL {runs[-1]['kl']:.2f}", flush=True)
            if len(runs) == 1:
                x = as_float(val.x[:PICTURE_IMAGES].to(device))
                picture += ([x] if not picture else []) + skip_picture_rows(model, x, seed)
        if runs:
            rows.append({"row": name, "seeds": [r["seed"] for r in runs], "skips": runs[0]["skips"],
                         "kl_per_dim_first_seed": runs[0]["kl_per_dim"],
                         **seed_stats(runs, (k for k, _ in METRICS))})
    if not rows:
        raise VaeLabError(f"no unet checkpoints in {args.work_dir} for rows {args.rows} and seeds {args.seeds}; "
                          "run benchmarks/ablation.py with those rows first")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    save_report(rows, args)
    from torchvision.utils import make_grid  # here: importing torchvision takes seconds, --help needs none

    os.makedirs(os.path.dirname(os.path.abspath(args.picture)), exist_ok=True)
    save_png(make_grid(torch.cat(picture).cpu(), nrow=PICTURE_IMAGES, padding=2, pad_value=1.0), args.picture, 2)
    print(open(args.out + ".md").read())
    return rows


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
