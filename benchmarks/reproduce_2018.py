"""Does the default command reproduce the 2018 best model? Evaluate both, side by side.

Evaluates the published 2018 checkpoint with ``train.py --evaluate``, then trains the
2018 best command (train.py's defaults) for each ``--seeds`` and evaluates its best
checkpoint the same way (validation fold 0 and the official test set, posterior mean).
Writes ``benchmarks/reproduce_2018.md`` and ``.json``.

    python3 -m benchmarks.reproduce_2018                 # seeds 42,1,2, 30 epochs
    python3 -m benchmarks.reproduce_2018 --seeds 42 --epochs 5

The 2018 checkpoint: --reference, by default $VAE_LAB_2018_CHECKPOINT or weights/2018/; when it is absent
the benchmark stops at once with the one-line command that downloads it (runtime/published_2018.py).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import train
from benchmarks.scaffold import ROOT, cell, command_line, machine_line, mean_std, parse_seeds, write_report
from config.parsers import OneLineParser, run_cli
from runtime.published_2018 import checkpoint_2018, require_checkpoint_2018

METRICS = ("bce", "kl", "bce_kl", "ssim")


def get_args_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python3 -m benchmarks.reproduce_2018", description=__doc__.splitlines()[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--seeds", default="42,1,2", help="comma-separated seeds of the default command")
    p.add_argument("--epochs", type=int, default=30, help="epochs per run (30 is the 2018 command)")
    p.add_argument("--reference", default=checkpoint_2018(),
                   help="the 2018 checkpoint ($VAE_LAB_2018_CHECKPOINT, else weights/2018/)")
    p.add_argument("--data_root", default="data")
    p.add_argument("--work_dir", default=os.path.join(ROOT, "results", "reproduce_2018"),
                   help="where the runs' weights go")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "reproduce_2018"),
                   help="output path without extension (.md and .json are written)")
    return p


def _train(argv: list[str]) -> dict:
    """train.py with these flags, through its own parser."""
    return train.main(train.get_args_parser().parse_args(argv))


def _evaluate(ckpt: str, work_dir: str, data_root: str, name: str) -> dict:
    return _train(["--resume", ckpt, "--evaluate", "--data_root", data_root, "--weights_dir", work_dir,
                   "--lognumber", name])["eval"]


def main(args: argparse.Namespace) -> dict:
    seeds = parse_seeds(args.seeds)
    require_checkpoint_2018(args.reference)  # before any training: one line saying where to get it
    os.makedirs(args.work_dir, exist_ok=True)
    rows = {"2018 checkpoint": [_evaluate(args.reference, args.work_dir, args.data_root, "ref2018")]}
    runs = []
    for seed in seeds:
        name = f"default_seed{seed}"
        t0 = time.perf_counter()
        summary = _train(["--seed", str(seed), "--epochs", str(args.epochs), "--data_root", args.data_root,
                          "--weights_dir", args.work_dir, "--lognumber", name, "--tensorboard", "False",
                          "--tensorboard_images", "False", "--overwrite"])  # a rerun replaces the seed's run
        seconds = time.perf_counter() - t0
        ev = _evaluate(summary["best"], args.work_dir, args.data_root, name)
        runs.append({"seed": seed, "train_seconds": seconds, **ev})
    rows[f"default command, {len(seeds)} seeds"] = runs

    lines = [f"# Reproducing the 2018 best model ({args.epochs} epochs, Fashion-MNIST)", "",
             f"`python3 -m benchmarks.reproduce_2018 --seeds {args.seeds} --epochs {args.epochs}`; "
             f"{machine_line()}. Per image, posterior mean decoded; "
             "validation = fold 0 (12,000 images), test = official 10,000. "
             "Speed is measured by benchmarks/train_speed.py, not here.", "",
             "| model | val BCE | val KL | val BCE+KL | val SSIM | test BCE+KL | test SSIM |",
             "|---|---|---|---|---|---|---|"]
    for label, results in rows.items():
        cells = []
        for split, key in (("val", "bce"), ("val", "kl"), ("val", "bce_kl"), ("val", "ssim"),
                           ("test", "bce_kl"), ("test", "ssim")):
            cells.append(cell(mean_std([r[split][key] for r in results]), ".4f" if key == "ssim" else ".2f"))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "Per seed: " + "; ".join(
        f"seed {r['seed']}: val BCE+KL {r['val']['bce_kl']:.2f}, SSIM {r['val']['ssim']:.4f}" for r in runs)]
    write_report(args.out, "\n".join(lines), rows, command_line("reproduce_2018"))
    print("\n".join(lines))
    return rows


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
