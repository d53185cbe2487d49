"""How far the IWAE bound on the validation fold's first N images is from the bound on the whole fold.

benchmarks/quality.py --iw_images N bounds -log p(x) with K = 1000 samples on the first N
validation images only (K = 1000 on all 12,000 would cost hours per model on a CPU). This
measures, for given checkpoints, the bound with a smaller K on both the subset and the fold,
so the subset's offset can be added back when comparing with whole-fold numbers.

    python3 -m benchmarks.iwae_subset results/quality14/best_s42_best.pth.tar --images 500 --k 20
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from benchmarks.scaffold import ROOT, command_line, run_splits, write_report
from config.flag_types import positive_int
from config.parsers import OneLineParser, run_cli
from datasets import Split
from evaluation.likelihood import iwae_evaluate
from runtime.checkpoints import load_model


def get_args_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python3 -m benchmarks.iwae_subset", description=__doc__.splitlines()[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoints", nargs="+", help="best checkpoints of benchmarks/quality.py runs")
    p.add_argument("--images", type=positive_int, default=500, help="the subset: the fold's first N images")
    p.add_argument("--k", type=positive_int, default=20, help="importance samples per image")
    p.add_argument("--data_root", default="data")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "iwae_subset"),
                   help="output path without extension (.md and .json are written)")
    return p


def main(args: argparse.Namespace) -> list[dict]:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    rows = []
    for path in args.checkpoints:
        model, run = load_model(path)
        seed = run.seed
        _, val, _ = run_splits(run, args.data_root)
        t0 = time.perf_counter()
        fold = iwae_evaluate(model, val, torch.device("cpu"), args.k, seed=seed, labels=model.conditional)
        part = iwae_evaluate(model, Split(val.x[:args.images], val.y[:args.images]), torch.device("cpu"), args.k,
                             seed=seed, labels=model.conditional)
        rows.append({"checkpoint": os.path.basename(path), "family": model.family, "k": args.k,
                     "images": args.images, "fold_images": len(val), "subset": part, "fold": fold,
                     "offset": part - fold, "seconds": time.perf_counter() - t0})
        print(rows[-1], flush=True)
    lines = [f"# IWAE bound (K = {args.k}) on the validation fold's first {args.images} images vs the whole fold", "",
             f"`{command_line('iwae_subset')}`; nats per image, lower is better.", "",
             "| checkpoint | family | first N | whole fold | subset - fold |", "|---|---|---|---|---|"]
    lines += [f"| {r['checkpoint']} | {r['family']} | {r['subset']:.2f} | {r['fold']:.2f} | {r['offset']:+.2f} |"
              for r in rows]
    write_report(args.out, "\n".join(lines), {"rows": rows}, command_line("iwae_subset"))
    print("\n".join(lines))
    return rows


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
