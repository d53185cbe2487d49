"""The 2018 ablation, measured: each knob of the 2018 best command changed alone.

Every row trains through ``train.main`` (the project's own loop) for each ``--seeds``,
then scores the run's best checkpoint: validation BCE+KL and SSIM (window 5, posterior
mean decoded, ``train.evaluate``; BCE+KL whatever loss the row trained with), and KNN test
accuracy on the posterior means (``knn_bench.sampled_test_accuracy``: 500 training points
per class, k = 10, 5 draws). Writes ``benchmarks/ablation.md`` and ``.json`` after every run,
so an interrupted sweep still leaves a table of what finished; each run's scores are also
kept in ``--work_dir`` and reused by a later call with the same settings.

    python3 benchmarks/ablation.py --epochs 5            # every row, seeds 42,1,2
    python3 benchmarks/ablation.py --only mse --epochs 1 --seeds 42
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from typing import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import train  # noqa: E402
from scoring import KNN_DRAWS, KNN_K, add_sweep_args, parse_seeds, score_checkpoint  # noqa: E402
from utils import OneLineParser, VaeLabError, positive_int, run_cli  # noqa: E402

Overrides = dict[str, object]


def _decay_milestones(epochs: int) -> Overrides:
    # 2018: decay at 10 and 20 of 30 epochs; keep the same fractions of a shorter run.
    # At 2 epochs that is one decay after epoch 1 (m2 = 2 is never reached).
    m1 = max(1, round(epochs / 3))
    return {"m1": m1, "m2": max(m1 + 1, round(2 * epochs / 3))}


# name -> flags that differ from the 2018 best command (train.py's defaults), given --epochs.
# The best command's milestones (40, 50) lie past its 30 epochs: it is the "no LR decay" row.
ROWS: dict[str, Callable[[int], Overrides]] = {
    "best_2018": lambda e: {},
    "loss_mse": lambda e: {"image_loss_type": "mse"},
    "loss_ssim": lambda e: {"image_loss_type": "ssim"},
    "running_mean": lambda e: {"do_running_mean": True},
    "augs": lambda e: {"do_augs": True},
    "normalize": lambda e: {"normalize": True},
    "lr_decay": _decay_milestones,
    "lr_3e-4": lambda e: {"lr": 3e-4},
    "lr_3e-3": lambda e: {"lr": 3e-3},
    "latent_2": lambda e: {"latent_space_size": 2},
    "latent_20": lambda e: {"latent_space_size": 20},
    "latent_100": lambda e: {"latent_space_size": 100},
    "model_fc": lambda e: {"model_type": "fc"},
    "rmsprop": lambda e: {"optimizer": "rmsprop"},
    "sgd": lambda e: {"optimizer": "sgd"},
    "model_fcn": lambda e: {"model_type": "fcn"},
}
SLOW_ROWS = ("model_fcn",)  # ~25x an fc_conv epoch: run after every other row's seeds


def get_args_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="ablation.py", description=__doc__.splitlines()[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--seeds", default="42,1,2", help="comma-separated seeds, each row runs once per seed")
    p.add_argument("--epochs", type=positive_int, default=30, help="epochs of every row (30 is the 2018 command)")
    p.add_argument("--only", default="", metavar="NAME", help=f"run one row: {', '.join(ROWS)}")
    add_sweep_args(p, "ablation", ROOT)
    return p


def _flag_text(overrides: Overrides) -> str:
    return " ".join(f"--{k} {v}" for k, v in overrides.items()) or "(the 2018 best command)"


def run_one(row: str, seed: int, args: argparse.Namespace) -> dict:
    """Train one row with one seed through train.main and score it; cached in --work_dir."""
    overrides = ROWS[row](args.epochs)
    name = f"{row}_s{seed}"
    settings = {"row": row, "seed": seed, "epochs": args.epochs, "overrides": overrides,
                "knn_per_class": args.knn_per_class, "data_root": os.path.abspath(args.data_root)}
    cache = os.path.join(args.work_dir, f"{name}.json")
    if os.path.isfile(cache):
        with open(cache) as f:
            done = json.load(f)
        if done.get("settings") == settings:
            print(f"[ablation] {name}: reusing {cache}")
            return done
    targs = train.get_args_parser().parse_args([])
    for k, v in {**overrides, "seed": seed, "epochs": args.epochs, "data_root": args.data_root,
                 "weights_dir": args.work_dir, "lognumber": name, "tensorboard": False,
                 "tensorboard_images": False, "print_freq": 10**6, "device": args.device}.items():
        setattr(targs, k, v)
    print(f"[ablation] {name}: {_flag_text(overrides)}", flush=True)
    summary = train.main(targs)
    result = {"settings": settings, "train_seconds": summary["seconds"],
              **score_checkpoint(summary["best"], args.data_root, seed, args.device, args.knn_per_class)}
    with open(cache, "w") as f:
        json.dump(result, f, indent=2)
    return result


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(runs: dict[str, list[dict]], epochs: int) -> list[dict]:
    """One dict per row: flags, seeds and mean / std of every metric."""
    rows = []
    for row, results in runs.items():
        if not results:
            continue
        out: dict = {"row": row, "flags": _flag_text(ROWS[row](epochs)),
                     "seeds": [r["settings"]["seed"] for r in results]}
        for key in ("val_bce_kl", "val_ssim", "knn_acc", "train_seconds"):
            m, s = _mean_std([r[key] for r in results])
            out[key] = {"mean": m, "std": s, "values": [r[key] for r in results]}
        rows.append(out)
    return rows


def write_report(rows: list[dict], args: argparse.Namespace, wall: float) -> None:
    import torch

    cmd = " ".join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith("ablation.py") else ""
    lines = [f"# The 2018 ablation ({args.epochs} epochs, Fashion-MNIST)", "",
             f"`python3 benchmarks/ablation.py {cmd}`".replace(" `", "`") + f"; torch {torch.__version__}, "
             f"{platform.machine()}, {torch.get_num_threads()} threads; sweep wall time {wall:.0f} s. "
             "Each row changes the listed flags of the 2018 best command (train.py's defaults) and is "
             "run once per seed; mean ± std over seeds. Best checkpoint of each run; validation = fold 0 "
             "(12,000 images), posterior mean decoded, per image; BCE+KL whatever the training loss; "
             f"SSIM window 5; KNN: test accuracy (10,000 images) of k = {KNN_K} fit on "
             f"{args.knn_per_class} posterior means per class of the 60,000 training images, "
             f"mean of {KNN_DRAWS} draws; training time = train.main's seconds.", "",
             "| row | flags vs the 2018 best | seeds | val BCE+KL | val SSIM | KNN test acc | train s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = []
        for key, fmt in (("val_bce_kl", ".2f"), ("val_ssim", ".4f"), ("knn_acc", ".4f"), ("train_seconds", ".1f")):
            m, s = r[key]["mean"], r[key]["std"]
            cells.append(f"{m:{fmt}} ± {s:{fmt}}" if len(r["seeds"]) > 1 else f"{m:{fmt}}")
        lines.append(f"| {r['row']} | `{r['flags']}` | {len(r['seeds'])} | " + " | ".join(cells) + " |")
    with open(args.out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(args.out + ".json", "w") as f:
        json.dump({"epochs": args.epochs, "seeds": args.seeds, "knn": {"per_class": args.knn_per_class,
                   "k": KNN_K, "draws": KNN_DRAWS}, "wall_seconds": wall, "rows": rows}, f, indent=2)


def main(args: argparse.Namespace) -> list[dict]:
    seeds = parse_seeds(args.seeds)
    if args.only and args.only not in ROWS:
        raise VaeLabError(f"unknown row {args.only!r} for --only; choose from {', '.join(ROWS)}")
    names = [args.only] if args.only else list(ROWS)
    os.makedirs(args.work_dir, exist_ok=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    # Cheap rows for every seed first, so a cut-short sweep still has every cheap row.
    order = ([(r, s) for s in seeds for r in names if r not in SLOW_ROWS]
             + [(r, s) for s in seeds for r in names if r in SLOW_ROWS])
    runs: dict[str, list[dict]] = {r: [] for r in names}
    t0 = time.perf_counter()
    rows: list[dict] = []
    for row, seed in order:
        runs[row].append(run_one(row, seed, args))
        rows = summarise(runs, args.epochs)
        write_report(rows, args, time.perf_counter() - t0)
    print(open(args.out + ".md").read())
    return rows


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
