"""The 2018 ablation, measured: each knob of the 2018 best command changed alone.

Every row is the 2018 best command (train.py's defaults) with a few flags changed, trained and
scored once per ``--seeds`` by benchmarks/scaffold.py (train.py's own parser and loop): validation
BCE+KL and SSIM (window 5, posterior mean decoded; BCE+KL whatever loss the row trained with),
and KNN test accuracy on the posterior means (500 training points per class, k = 10, 5 draws).
Writes ``benchmarks/ablation.md`` and ``.json`` after every run, so an interrupted sweep still
leaves a table of what finished; each run's scores are kept in ``--work_dir`` and reused while
its flags, the settings and the code are the same.

    python3 -m benchmarks.ablation --epochs 5            # every row, seeds 42,1,2
    python3 -m benchmarks.ablation --only loss_mse --epochs 1 --seeds 42
    python3 -m benchmarks.ablation --only best_2018,unet_skips_all --out benchmarks/ablation_unet
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from benchmarks.scaffold import (
    KNN_DRAWS,
    KNN_K,
    add_sweep_args,
    cell,
    command_line,
    machine_line,
    run_scored,
    start,
    summarise,
    write_report,
)
from config.flag_types import positive_int
from config.parsers import OneLineParser, run_cli

Flags = list[str]


def _decay_milestones(epochs: int) -> Flags:
    # 2018: decay at 10 and 20 of 30 epochs; keep the same fractions of a shorter run.
    # At 2 epochs that is one decay after epoch 1 (m2 = 2 is never reached).
    m1 = max(1, round(epochs / 3))
    return ["--m1", str(m1), "--m2", str(max(m1 + 1, round(2 * epochs / 3)))]


# name -> train.py flags that differ from the 2018 best command (its defaults), given --epochs.
# The best command's milestones (40, 50) lie past its 30 epochs: it is the "no LR decay" row.
ROWS: dict[str, Callable[[int], Flags]] = {
    "best_2018": lambda e: [],
    "loss_mse": lambda e: ["--image_loss_type", "mse"],
    "loss_ssim": lambda e: ["--image_loss_type", "ssim"],
    "running_mean": lambda e: ["--do_running_mean", "True"],
    "augs": lambda e: ["--do_augs", "True"],
    "normalize": lambda e: ["--normalize", "True"],
    "lr_decay": _decay_milestones,
    "lr_3e-4": lambda e: ["--lr", "0.0003"],
    "lr_3e-3": lambda e: ["--lr", "0.003"],
    "latent_2": lambda e: ["--latent_space_size", "2"],
    "latent_20": lambda e: ["--latent_space_size", "20"],
    "latent_100": lambda e: ["--latent_space_size", "100"],
    "model_fc": lambda e: ["--model_type", "fc"],
    "rmsprop": lambda e: ["--optimizer", "rmsprop"],
    "sgd": lambda e: ["--optimizer", "sgd"],
    "model_fcn": lambda e: ["--model_type", "fcn"],
    # the 2018 failures: skips across the bottleneck, and 1xN / Nx1 convolution pairs
    "unet_skips_all": lambda e: ["--model_type", "unet", "--unet_skips", "all"],
    "unet_skips_coarsest": lambda e: ["--model_type", "unet", "--unet_skips", "coarsest"],
    "unet_skips_none": lambda e: ["--model_type", "unet", "--unet_skips", "none"],
    "conv1xn_3": lambda e: ["--model_type", "conv1xn", "--conv_n", "3"],
    "conv1xn_7": lambda e: ["--model_type", "conv1xn", "--conv_n", "7"],
}
# ~25x an fc_conv epoch: run after every other row's seeds
SLOW_ROWS = ("model_fcn", "unet_skips_all", "unet_skips_coarsest", "unet_skips_none", "conv1xn_3", "conv1xn_7")
METRICS = (("val_bce_kl", ".2f"), ("val_kl", ".2f"), ("val_ssim", ".4f"), ("knn_acc", ".4f"), ("train_seconds", ".1f"))


def get_args_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python3 -m benchmarks.ablation", description=__doc__.splitlines()[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--epochs", type=positive_int, default=30, help="epochs of every row (30 is the 2018 command)")
    p.add_argument("--only", default="", metavar="NAMES",
                   help=f"run these rows only (comma-separated): {', '.join(ROWS)}")
    add_sweep_args(p, "ablation")
    return p


def _flag_text(flags: Flags) -> str:
    return " ".join(flags) or "(the 2018 best command)"


def run_one(row: str, seed: int, args: argparse.Namespace) -> dict:
    """One row with one seed, trained and scored (or its cached scores)."""
    return run_scored("ablation", row, seed, ROWS[row](args.epochs) + ["--epochs", str(args.epochs)], args)


def summary(runs: dict[str, list[dict]], epochs: int) -> list[dict]:
    """One dict per row: flags, seeds and mean / std of every metric."""
    return summarise(runs, (key for key, _ in METRICS),
                     lambda row, _: {"row": row, "flags": _flag_text(ROWS[row](epochs))})


def save_report(rows: list[dict], args: argparse.Namespace, wall: float) -> None:
    lines = [f"# The 2018 ablation ({args.epochs} epochs, Fashion-MNIST)", "",
             f"`{command_line('ablation')}`; {machine_line()}; sweep wall time {wall:.0f} s. "
             "Each row changes the listed flags of the 2018 best command (train.py's defaults) and is "
             "run once per seed; mean ± std over seeds. Best checkpoint of each run; validation = fold 0 "
             "(12,000 images), posterior mean decoded, per image; BCE+KL whatever the training loss; "
             f"SSIM window 5; KNN: test accuracy (10,000 images) of k = {KNN_K} fit on "
             f"{args.knn_per_class} posterior means per class of the 60,000 training images, "
             f"mean of {KNN_DRAWS} draws; training time = train.main's seconds.", "",
             "| row | flags vs the 2018 best | seeds | val BCE+KL | val KL | val SSIM | KNN test acc | train s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = [cell(r[key], fmt) for key, fmt in METRICS]
        lines.append(f"| {r['row']} | `{r['flags']}` | {len(r['seeds'])} | " + " | ".join(cells) + " |")
    write_report(args.out, "\n".join(lines), {"epochs": args.epochs, "seeds": args.seeds, "wall_seconds": wall,
                                              "rows": rows,
                                              "knn": {"per_class": args.knn_per_class, "k": KNN_K, "draws": KNN_DRAWS}},
                 command_line("ablation"))


def main(args: argparse.Namespace) -> list[dict]:
    seeds, runs = start(args, list(ROWS))
    # Cheap rows for every seed first, so a cut-short sweep still has every cheap row.
    order = ([(r, s) for s in seeds for r in runs if r not in SLOW_ROWS]
             + [(r, s) for s in seeds for r in runs if r in SLOW_ROWS])
    t0 = time.perf_counter()
    rows: list[dict] = []
    for row, seed in order:
        runs[row].append(run_one(row, seed, args))
        rows = summary(runs, args.epochs)
        save_report(rows, args, time.perf_counter() - t0)
    print(open(args.out + ".md").read())
    return rows


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
