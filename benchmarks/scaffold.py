"""What every benchmark shares: running configurations, summarising seeds, writing the reports.

The benchmarks are modules of the ``benchmarks`` package, run from the repository root as
``python3 -m benchmarks.<name>`` (``--help`` lists each one's flags); they import the product's public
functions like any caller. A new benchmark is one module here: a ``get_args_parser()``, a ``main(args)``
that runs its configurations (:func:`run_scored` trains a train.py command line once per seed and scores
it, cached), :func:`summarise` for mean ± std over the seeds, :func:`cell` / :func:`table` for the
Markdown and :func:`write_report` for the .md and .json pair (with :func:`command_line` and the CPU it
ran on), and ``sys.exit(run_cli(main, get_args_parser()))`` under ``__main__``.

Running configurations: each run is a train.py command line parsed by train.py's own parser (so presets,
flag types and cross-flag checks apply), trained through ``train.main`` and scored on its best
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
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable

import torch

import train
from config.flag_types import positive_int
from config.resolve import build_config, given_settings
from config.run_config import RunConfig, data_options
from core.environment import cpu_name
from core.errors import VaeLabError
from datasets import TEST_FRACTION, Split, kfold_indices, load_split
from evaluation.knn import sampled_test_accuracy
from evaluation.likelihood import iwae_evaluate
from evaluation.metrics import evaluate, posterior_means
from fileio.atomic import write_json, write_text
from runtime.checkpoints import load_checkpoint, load_model
from runtime.device import select_device

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KNN_K = 10
KNN_DRAWS = 5
# What decides a score: the product's code and the scoring code here (not the reports).
SOURCE_DIRS = ("config", "models", "losses", "runtime", "evaluation", "fileio", "dataio")
SOURCE_FILES = ("train.py", "engine.py", "datasets.py", "requirements.txt", "benchmarks/scaffold.py")


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
           "best_epoch": ckpt.epoch, "params": sum(p.numel() for p in model.parameters()),
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
               score_settings: dict | None = None, iw_images: int = 0, checkpoint: str = "best") -> dict:
    """Train ``flags`` (a train.py command line) with ``seed`` and score its best checkpoint (its last
    with ``checkpoint="checkpoint"``): by :func:`score_checkpoint`, or by ``score(checkpoint path, seed)``
    when given (whose settings ``score_settings`` then go into the cache key).

    The scores are cached in ``--work_dir/{name}_s{seed}.json`` and reused while the full
    command line, the scoring settings and :func:`code_version` are the same; the result's
    ``reused`` says which.
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
            return {**done, "reused": True}
        kept = os.path.join(args.work_dir, f"{name}_s{seed}_{checkpoint}.pth.tar")
        if getattr(args, "rescore", False) and done["settings"].get("argv") == argv and os.path.isfile(kept):
            return _rescored(sweep, name, seed, done, settings, kept, cache,
                             score or (lambda b, s: score_checkpoint(b, args.data_root, s, args.device,
                                                                     args.knn_per_class, iw_samples, iw_images)))
    print(f"[{sweep}] {name} seed {seed}: train.py {' '.join(flags)}", flush=True)
    # --overwrite: a run trained again (other code or settings) replaces the one the cache was made from
    summary = train.main(train.get_args_parser().parse_args([*argv, "--overwrite"]))
    t0 = time.perf_counter()
    scores = (score(summary[checkpoint], seed) if score is not None else
              score_checkpoint(summary[checkpoint], args.data_root, seed, args.device, args.knn_per_class,
                               iw_samples, iw_images))
    result = {"settings": settings, "seed": seed, "train_seconds": summary["seconds"],
              "epochs": len(summary["history"]), "score_seconds": time.perf_counter() - t0, **scores}
    write_json(cache, result)
    return {**result, "reused": False}


def _rescored(sweep: str, name: str, seed: int, done: dict, settings: dict, checkpoint: str, cache: str,
              score: Callable[[str, int], dict]) -> dict:
    """``--rescore``: a run trained by the same flags under other code (or scored with other settings), its
    checkpoint scored again by this code; its training figures are kept and ``trained_by_code`` says whose."""
    print(f"[{sweep}] {name} seed {seed}: scoring {checkpoint} again (trained by code {done['settings']['code']})")
    t0 = time.perf_counter()
    scores = score(checkpoint, seed)
    result = {**{k: done[k] for k in ("seed", "train_seconds", "epochs")}, "settings": settings,
              "trained_by_code": done.get("trained_by_code", done["settings"]["code"]),
              "score_seconds": time.perf_counter() - t0, **scores}
    write_json(cache, result)
    return {**result, "reused": False}


def kept_rows(path: str, rerun: set[str], settings: dict, configs: Iterable[str], command: str) -> list[dict]:
    """The rows of a sweep's saved .json (``path``) that this run does not measure again (``--only``), kept when
    the saved report has the same ``settings`` (its top-level keys), each with the command (``command`` for a
    report that predates the key) and CPU that measured it: a rerun of one configuration does not drop the
    others' figures. Rows of other settings, or of configurations no longer in ``configs``, are dropped."""
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        saved = json.load(f)
    if any(saved.get(k) != v for k, v in settings.items()):
        return []
    return [{"command": saved.get("command", command), "cpu": saved.get("cpu"), **r} for r in saved["rows"]
            if r["config"] not in rerun and r["config"] in configs]


@torch.no_grad()
def sampling_seconds(model, device: torch.device, generator: torch.Generator, n: int = 100) -> dict[str, float]:
    """Seconds to decode ``n`` prior samples (an autoregressive decoder draws pixel by pixel): a first call,
    which sets up its kernels, and a second."""
    out = {}
    for key in ("first_sample_100_seconds", "sample_100_seconds"):
        t0 = time.perf_counter()
        model.decode(model.sample_prior(n, generator).to(device))
        out[key] = time.perf_counter() - t0
    return out


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
    add_rescore_arg(p)


def add_rescore_arg(p: argparse.ArgumentParser) -> None:
    """``--rescore``: score again, without training, the runs whose checkpoints the same flags trained."""
    p.add_argument("--rescore", action="store_true",
                   help="a run trained by the same flags under other code is scored again from its checkpoint, "
                        "not trained again (its training seconds kept)")


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


def command_line(name: str) -> str:
    """How benchmark ``name`` was started, for its report: ``python3 -m benchmarks.<name>`` and its flags as
    typed (none when this process is not that benchmark, e.g. a test calling its ``main``), a path inside
    the repository shown relative to it (:func:`shown_path`)."""
    argv = sys.argv[1:] if sys.argv and os.path.basename(sys.argv[0]) == f"{name}.py" else []
    return shlex.join(["python3", "-m", f"benchmarks.{name}", *map(shown_path, argv)])


def run_module(name: str, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    """``python3 -m benchmarks.<name> ARGV`` as a fresh process from this one's folder (the repository
    on its PYTHONPATH, as running from the repository root gives), its output captured as text."""
    return subprocess.run([sys.executable, "-m", f"benchmarks.{name}", *argv], capture_output=True, text=True,
                          env=child_env(), **kwargs)


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment with the repository first on PYTHONPATH: a child started from another
    folder (``python3 -c``, ``-m benchmarks.<name>``, a script) imports the project as the benchmarks do."""
    path = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


def train_config(argv: Iterable[str] = ()) -> RunConfig:
    """The run config train.py builds from these flags (its defaults, the 2018 best command, unless
    ``argv`` says otherwise): what its engine is handed."""
    return build_config(given_settings(train.get_args_parser().parse_args(list(argv))))


# ---------------------------------------------------------------- summarising seeds


def seed_stats(results: list[dict], keys: Iterable[str]) -> dict[str, dict | None]:
    """Per key, :func:`mean_std` over the runs (seeds) that have it, None where none has."""
    out: dict[str, dict | None] = {}
    for key in keys:
        values = [r[key] for r in results if r.get(key) is not None]
        out[key] = mean_std(values) if values else None
    return out


def summarise(runs: dict[str, list[dict]], keys: Iterable[str],
              describe: Callable[[str, list[dict]], dict]) -> list[dict]:
    """One row per configuration that has runs: ``describe(name, runs)`` (its name, flags...), the seeds
    and :func:`seed_stats` of ``keys``."""
    keys = tuple(keys)
    return [{**describe(name, results), "seeds": [r["seed"] for r in results], **seed_stats(results, keys)}
            for name, results in runs.items() if results]


# ---------------------------------------------------------------- reports


def machine() -> dict:
    """Where a benchmark ran, as its report's JSON records it."""
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__}


def machine_line() -> str:
    """:func:`machine` as a report's header says it: "torch 2.5.1, <CPU name>, 2 threads, 2 CPUs"."""
    m = machine()
    return f"torch {m['torch']}, {m['cpu']}, {m['threads']} threads, {m['cores']} CPUs"


def load_average() -> str:
    """The 1/5/15-minute load average, as the reports print it ("n/a" where the OS has none)."""
    return " / ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


def hardware() -> dict:
    """The speed reports' table of where they ran (the load average at the start included)."""
    m = machine()
    return {"cpu": m["cpu"], "cores": m["cores"], "torch threads": m["threads"], "torch": m["torch"],
            "python": platform.python_version(), "os": platform.platform(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
            "load average at start (1/5/15 min)": load_average()}


def table(header: list[str], rows: list[list]) -> str:
    """A Markdown table; a float cell is shown with thousands separators from 100 up, else 2 decimals."""
    def fmt(v: object) -> str:
        if isinstance(v, float):
            return f"{v:,.0f}" if v >= 100 else f"{v:.2f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_report(out: str, markdown: str, results: dict, command: str | None = None) -> str:
    """A benchmark's Markdown report and its results as JSON beside it, each written atomically: ``out``
    with or without ``.md``; the JSON also holds ``command`` when given and the :func:`machine` (a key of
    ``results`` wins). Returns the Markdown's path."""
    base = out[:-3] if out.endswith(".md") else out
    os.makedirs(os.path.dirname(os.path.abspath(base)), exist_ok=True)
    write_text(base + ".md", markdown if markdown.endswith("\n") else markdown + "\n")
    write_json(base + ".json", {**({"command": command} if command else {}), **machine(), **results}, indent=1,
               default=str)
    return base + ".md"
