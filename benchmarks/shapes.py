"""What image size and colour cost: Fashion-MNIST at 28, 32 and 64 pixels and in colour, fc and resconv.

Each row trains ``train.py --dataset_type fmnist --image_size S --channels C --model_type M
--image_loss_type logistic`` for ``--epochs`` in a process of its own (so its peak memory is
its own), then scores the best checkpoint on its validation fold: the negative ELBO in bits per
dimension under the discretised logistic, and SSIM. Seconds per epoch: train.main's seconds /
epochs; peak memory: the process's maximum resident set size (on CUDA also the peak allocated).
Writes ``--out``.md / .json.

    python3 -m benchmarks.shapes --epochs 2
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import torch

import train
from benchmarks.scaffold import ROOT, command_line, machine_line, run_module, write_report
from config.flag_types import positive_int
from config.parsers import OneLineParser, run_cli
from config.run_config import data_options
from datasets import train_val_split
from evaluation.metrics import evaluate
from runtime.checkpoints import load_model
from runtime.device import select_device

SHAPES = ((28, 1), (32, 1), (64, 1), (28, 3))  # (image size, channels)
MODELS = ("fc", "resconv")


def get_args_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python3 -m benchmarks.shapes", description=__doc__.splitlines()[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--epochs", type=positive_int, default=2)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--data_root", default="data")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    p.add_argument("--only", default="", help="comma-separated rows, e.g. resconv_64x1")
    p.add_argument("--work_dir", default=os.path.join(ROOT, "results", "shapes"))
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "shapes"))
    p.add_argument("--one", default="", help=argparse.SUPPRESS)  # internal: run one row in this process
    return p


def row_name(model: str, size: int, channels: int) -> str:
    return f"{model}_{size}x{channels}"


def run_one(name: str, args: argparse.Namespace) -> dict:
    """Train and score one row in this process; its peak memory is this process's."""
    model_type, shape = name.split("_")
    size, channels = (int(v) for v in shape.split("x"))
    argv = ["--dataset_type", "fmnist", "--data_root", args.data_root, "--image_size", str(size), "--channels",
            str(channels), "--model_type", model_type, "--image_loss_type", "logistic", "--epochs", str(args.epochs),
            "--seed", str(args.seed), "--weights_dir", args.work_dir, "--lognumber", name, "--tensorboard", "False",
            "--tensorboard_images", "False", "--print-freq", str(10**6), "--device", args.device,
            "--overwrite"]  # a rerun of the benchmark replaces its row's run in --work_dir
    summary = train.main(train.get_args_parser().parse_args(argv))
    device = select_device(args.device)
    model, run = load_model(summary["best"])
    model = model.to(device)
    _, val = train_val_split(run.dataset_type, args.data_root, run.fold, run.num_folds, run.seed, **data_options(run))
    ev = evaluate(model, val, device, batch_size=500)
    return {"row": name, "model": model_type, "image_size": size, "channels": channels,
            "params": sum(p.numel() for p in model.parameters()), "epochs": len(summary["history"]),
            "seconds_per_epoch": summary["seconds"] / len(summary["history"]),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_cuda_mib": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
            "val_bits_per_dim": ev["bits_per_dim"], "val_ssim": ev["ssim"], "val_nll_kl": ev["nll_kl"]}


def save_report(rows: list[dict], args: argparse.Namespace, wall: float) -> None:
    lines = [f"# Image size and colour: Fashion-MNIST resized and coloured ({args.epochs} epochs)", "",
             f"`{command_line('shapes')}`; {machine_line()}, device {select_device(args.device).type}; wall time "
             f"{wall:.0f} s; seed {args.seed}, one run per row. "
             "`--image_size S --channels C --image_loss_type logistic`; "
             "colour = the grey image in three channels. Validation fold 0 (12,000 images): the negative ELBO in "
             "bits per dimension (discretised logistic), SSIM (window 5, averaged over channels). Peak memory: the "
             "row's process's maximum resident set size.", "",
             "| model | size | channels | parameters | s / epoch | peak RSS MiB | val bits/dim | val SSIM |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['image_size']} | {r['channels']} | {r['params']:,} | "
                     f"{r['seconds_per_epoch']:.1f} | {r['peak_rss_mib']:.0f} | {r['val_bits_per_dim']:.3f} | "
                     f"{r['val_ssim']:.4f} |")
    write_report(args.out, "\n".join(lines), {"epochs": args.epochs, "seed": args.seed, "rows": rows,
                                              "wall_seconds": wall}, command_line("shapes"))


def main(args: argparse.Namespace) -> list[dict]:
    os.makedirs(args.work_dir, exist_ok=True)
    if args.one:
        print("ROW " + json.dumps(run_one(args.one, args)))
        return []
    names = [row_name(m, s, c) for s, c in SHAPES for m in MODELS]
    if args.only:
        names = [n for n in names if n in args.only.split(",")]
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    rows, t0 = [], time.perf_counter()
    for name in names:
        argv = ["--one", name, "--epochs", str(args.epochs), "--seed", str(args.seed), "--data_root", args.data_root,
                "--device", args.device, "--work_dir", args.work_dir]
        print(f"[shapes] {name}", flush=True)
        done = run_module("shapes", argv)
        found = [line for line in done.stdout.splitlines() if line.startswith("ROW ")]
        if done.returncode != 0 or not found:
            sys.stderr.write(done.stdout[-2000:] + done.stderr[-2000:])
            raise SystemExit(f"shapes.py: row {name} failed (exit {done.returncode})")
        rows.append(json.loads(found[-1][4:]))
        save_report(rows, args, time.perf_counter() - t0)
    print(open(args.out + ".md").read())
    return rows


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
