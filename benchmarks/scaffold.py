"""The training sweep: train.py command lines, scored. ablation.py, quality.py, samples.py and
folder_vs_fmnist.py run their configurations through it; unet_skips.py, shapes.py,
reproduce_2018.py and iwae_subset.py use its helpers (report cells, seeds, a run's data splits).

Each run is a train.py command line parsed by train.py's own parser (so presets, flag types
and cross-flag checks apply), trained through ``train.main`` and scored on its best
checkpoint: validation BCE+KL and SSIM (the run's own fold, posterior mean decoded,
``evaluation.metrics.evaluate``), KNN test accuracy on the posterior means
(``evaluation.knn.sampled_test_accuracy``) and, when asked, the IWAE bound on -log p(x).
A run's scores are cached in ``--work_dir`` under a key of its flags, the scoring settings
and a hash of the project's source, so a score is never reused after the code changed.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import statistics
import sys
import time
from collections.abc import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # the benchmarks import the project's modules
    sys.path.insert(0, ROOT)

import torch

import train
from config.flag_types import positive_int
from config.run_config import RunConfig, data_options
from core.errors import VaeLabError
from datasets import TEST_FRACTION, Split, kfold_indices, load_split
from evaluation.knn import sampled_test_accuracy
from evaluation.likelihood import iwae_evaluate
from evaluation.metrics import evaluate, posterior_means
from fileio.atomic import write_json
from runtime.checkpoints import load_checkpoint, load_model
from runtime.device import select_device

KNN_K = 10
KNN_DRAWS = 5
# What decides a score: the product's code and the scoring code here (not the reports).
SOURCE_DIRS = ("config", "models", "losses", "runtime", "evaluation", "fileio", "dataio")
SOURCE_FILES = ("train.py", "engine.py", "datasets.py", "requirements.txt", "benchmarks/sweep.py")


@functools.lru_cache(maxsize=4)
def code_version(root: str = ROOT) -> str:
    """A hash of the source under ``root`` that decides a run's scores (file names and contents)."""
    paths = [os.path.join(root, f) for f in SOURCE_FILES]
    for d in SOURCE_DIRS:
        for folder, _, files in os.walk(os.path.join(root, d)):
            paths += [os.path.join(folder, f) for f in files if f.endswith(".py")]
    h = hashlib.sha256()
    for path in sorted(paths):
        h.update(os.path.relpath(path, root).encode())
        with open(path, "rb") as f:
            h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=4)
def official_split(dataset: str, data_root: str, train_set: bool, image_size: int | None = None,
                   channels: int | None = None, test_fraction: float = TEST_FRACTION, background: str = "white",
                   factor: str = "", factor_images: int = 0) -> Split:
    """The official training or test set (a folder's, a factor grid's: see datasets.load_split), read once
    per sweep."""
    return load_split(dataset, data_root, train_set, image_size, channels, test_fraction, background, factor,
                      factor_images)


def run_splits(run: RunConfig, data_root: str) -> tuple[Split, Split, Split]:
    """The official training set of a run (its config, runtime.checkpoints.load_model), the run's own
    validation fold, and the test set, read from ``data_root`` (this machine's copy of its data)."""
    options = data_options(run)
    full_train = official_split(run.dataset_type, os.path.abspath(data_root), True, **options)
    test = official_split(run.dataset_type, os.path.abspath(data_root), False, **options)
    _, va = kfold_indices(full_train.y, run.fold, run.num_folds, run.seed)
    va_t = torch.from_numpy(va)
    return full_train, Split(full_train.x[va_t], full_train.y[va_t]), test


def score_checkpoint(best_ckpt: str, data_root: str, seed: int, device_name: str, knn_per_class: int,
                     iw_samples: int = 0, iw_images: int = 0) -> dict:
    """Validation BCE+KL / SSIM, KNN test accuracy (None for a conditional model, whose encoder
    would need the test labels) and, with ``iw_samples``, the IWAE bound of one checkpoint (on the
    validation fold's first ``iw_images`` images when not 0: K = 1000 on 12,000 images is ~2.5
    CPU hours per model)."""
    ckpt = load_checkpoint(best_ckpt)
    device = select_device(device_name)
    model, run = load_model(best_ckpt, ckpt)
    model = model.to(device)
    full_train, val, test = run_splits(run, data_root)
    # batch 512: ~2x faster than evaluate's default 1000 on a CPU (SSIM stays in cache)
    ev = evaluate(model, val, device, window_size=5, batch_size=512)
    out = {"val_bce_kl": ev["bce_kl"], "val_bce": ev["bce"], "val_kl": ev["kl"], "val_ssim": ev["ssim"],
           "best_epoch": int(ckpt["epoch"]), "params": sum(p.numel() for p in model.parameters()),
           "knn_acc": None}
    if not model.conditional:
        knn = sampled_test_accuracy(posterior_means(model, full_train, device), full_train.y.numpy(),
                                    posterior_means(model, test, device), test.y.numpy(),
                                    per_class=knn_per_class, ks=[KNN_K], draws=KNN_DRAWS, seed=seed)[KNN_K]
        out["knn_acc"] = knn["mean"]
    if iw_samples:
        part = Split(val.x[:iw_images], val.y[:iw_images]) if iw_images else val
        out["iwae_nll"] = iwae_evaluate(model, part, device, iw_samples, seed=seed, labels=model.conditional)
        out["iw_samples"], out["iw_images"] = iw_samples, len(part)
    return out


def run_scored(sweep: str, name: str, seed: int, flags: list[str], args: argparse.Namespace,
               iw_samples: int = 0, score: Callable[[str, int], dict] | None = None,
               score_settings: dict | None = None, iw_images: int = 0) -> dict:
    """Train ``flags`` (a train.py command line) with ``seed`` and score its best checkpoint:
    by :func:`score_checkpoint`, or by ``score(best checkpoint, seed)`` when given (whose
    settings ``score_settings`` then go into the cache key).

    The scores are cached in ``--work_dir/{name}_s{seed}.json`` and reused while the full
    command line, the scoring settings and :func:`code_version` are the same.
    """
    argv = [*flags, "--seed", str(seed), "--data_root", args.data_root, "--weights_dir", args.work_dir,
            "--lognumber", f"{name}_s{seed}", "--tensorboard", "False", "--tensorboard_images", "False",
            "--print-freq", str(10**6), "--device", args.device]
    settings = {"argv": argv, "data_root": os.path.abspath(args.data_root), "code": code_version(),
                **(score_settings if score is not None else {"iw_samples": iw_samples,
                                                             "knn_per_class": args.knn_per_class,
                                                             **({"iw_images": iw_images} if iw_images else {})})}
    cache = os.path.join(args.work_dir, f"{name}_s{seed}.json")
    if os.path.isfile(cache):
        with open(cache) as f:
            done = json.load(f)
        if done.get("settings") == settings:
            print(f"[{sweep}] {name} seed {seed}: reusing {cache}")
            return done
    print(f"[{sweep}] {name} seed {seed}: train.py {' '.join(flags)}", flush=True)
    # --overwrite: a run trained again (other code or settings) replaces the one the cache was made from
    summary = train.main(train.get_args_parser().parse_args([*argv, "--overwrite"]))
    t0 = time.perf_counter()
    scores = (score(summary["best"], seed) if score is not None else
              score_checkpoint(summary["best"], args.data_root, seed, args.device, args.knn_per_class, iw_samples,
                               iw_images))
    result = {"settings": settings, "seed": seed, "train_seconds": summary["seconds"],
              "epochs": len(summary["history"]), "score_seconds": time.perf_counter() - t0, **scores}
    write_json(cache, result)
    return result


def mean_std(values: list[float]) -> dict:
    """Mean, sample standard deviation (0 for one value) and the values."""
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def cell(stat: dict | None, fmt: str) -> str:
    """A table cell: ``mean ± std`` over several seeds, the value for one, n/a for none."""
    if stat is None:
        return "n/a"
    return f"{stat['mean']:{fmt}} ± {stat['std']:{fmt}}" if len(stat["values"]) > 1 else f"{stat['mean']:{fmt}}"


def add_sweep_args(p: argparse.ArgumentParser, name: str) -> None:
    """The flags every training sweep shares (seeds, data, KNN protocol, device, outputs)."""
    p.add_argument("--seeds", default="42,1,2", help="comma-separated seeds, each configuration runs once per seed")
    p.add_argument("--data_root", default="data")
    p.add_argument("--knn_per_class", type=positive_int, default=500,
                   help="training points per class the KNN is fit on (2018 protocol: 500)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    p.add_argument("--work_dir", default=os.path.join(ROOT, "results", name),
                   help="the runs' weights and per-run scores (reused when flags, settings and code match)")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", name),
                   help="output path without extension (.md and .json are written)")


def start(args: argparse.Namespace, configs: list[str]) -> tuple[list[int], dict[str, list[dict]]]:
    """A sweep's seeds (``--seeds``) and, per configuration picked by ``--only`` (all of
    ``configs`` when empty; one line if unknown), an empty list of runs; makes the output folders."""
    seeds = parse_seeds(args.seeds)
    picked = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else list(configs)
    unknown = [n for n in picked if n not in configs]
    if unknown:
        raise VaeLabError(f"unknown configuration {unknown[0]!r} for --only; choose from {', '.join(configs)}")
    os.makedirs(args.work_dir, exist_ok=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    return seeds, {n: [] for n in picked}


def parse_seeds(text: str) -> list[int]:
    """``--seeds`` "42,1,2" -> [42, 1, 2]; a one-line VaeLabError otherwise."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise VaeLabError(f"--seeds must be comma-separated integers, got {text!r}") from None
    if not seeds:
        raise VaeLabError("--seeds is empty")
    return seeds


def shown_path(path: str) -> str:
    """A path as a report shows it: relative to the repository when inside it (``docs/img/x.png``,
    not this machine's ``/home/.../docs/img/x.png``), else as given."""
    if not os.path.isabs(path):
        return path
    rel = os.path.relpath(path, ROOT)
    return path if rel == ".." or rel.startswith(".." + os.sep) else rel


def command_line(script: str) -> str:
    """How this sweep was started, for the report: the script's own flags as typed, a path inside
    the repository shown relative to it (:func:`shown_path`)."""
    argv = sys.argv[1:] if sys.argv and sys.argv[0].endswith(script) else []
    return " ".join(["python3", f"benchmarks/{script}", *map(shown_path, argv)])
