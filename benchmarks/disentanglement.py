"""The disentanglement study: VAE, beta-VAE, annealed capacity, beta-TCVAE and FactorVAE on dSprites(-like),
several seeds each, with a fixed step budget, scored by evaluation/disentanglement.py.

Each run trains ``train.py --dataset_type dsprites --factor_images N --model_type fc --latent_space_size
10 --batch-size 64 --epochs E`` plus its objective's flags (CONFIGS) through ``train.main``, in this
process, and scores its last checkpoint (the step budget, not the best validation loss, decides what is
scored): MIG (all factors and without the shape), FactorVAE score, DCI disentanglement, SAP (the
settings of --evaluate --disentanglement, seeded by the run's seed), the test set's BCE and KL per image
(posterior mean decoded), active units (posterior-mean variance above 0.01 over the test images) and the
training time. The table gives the median and the range over seeds, and every seed's MIG. A run's scores
are kept in --work_dir (keyed by its flags and the source's hash) so an interrupted study continues.

    python3 -m benchmarks.disentanglement --epochs 2 --factor_images 20000 --seeds 1,2,3
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

from benchmarks.scaffold import ROOT, command_line, machine_line, parse_seeds, run_scored, write_report
from config.flag_types import positive_int
from config.parsers import OneLineParser, run_cli
from config.run_config import data_options
from core.errors import VaeLabError
from datasets import FACTOR_SETS, factor_sizes, load_split
from evaluation.disentanglement import Settings, disentanglement_scores
from evaluation.metrics import active_units, evaluate, posterior_means
from evaluation.modes import factor_encoder
from runtime.checkpoints import load_checkpoint, load_model
from runtime.device import select_device

# Each row's objective flags. beta-VAE: Higgins et al.'s beta = 4 for dSprites; capacity: Burgess et al.'s
# C_max = 25 nats and gamma = 1000, C raised over the whole run (their 100k steps do not fit 2 CPU cores);
# beta-TCVAE: beta = 6; FactorVAE: gamma = 10 with a 256-unit discriminator (Kim & Mnih's 1000 units made
# a step about 3x slower than the VAE's in a smoke run on 2 CPU cores).
CONFIGS: dict[str, list[str]] = {
    "vae": [],
    "beta_vae": ["--kl_loss_weight", "4"],
    "capacity": ["--objective", "capacity", "--capacity_max", "25", "--capacity_weight", "1000"],
    "betatc": ["--objective", "betatc", "--tc_weight", "6"],
    "factorvae": ["--objective", "factorvae", "--tc_weight", "10", "--disc_units", "256"],
}
LABELS = {"vae": "VAE", "beta_vae": "beta-VAE (beta 4)", "capacity": "annealed capacity (C 25, gamma 1000)",
          "betatc": "beta-TCVAE (beta 6)", "factorvae": "FactorVAE (gamma 10)"}
COLUMNS = (("mig", "MIG", ".3f"), ("mig_without_shape", "MIG w/o shape", ".3f"),
           ("factorvae_score", "FactorVAE score", ".3f"), ("dci_disentanglement", "DCI-D", ".3f"),
           ("sap", "SAP", ".3f"), ("test_bce", "test BCE", ".1f"), ("test_kl", "test KL", ".1f"),
           ("active_units", "active units", ".0f"), ("train_seconds", "train s", ".0f"))
TARGET_MIG = 0.3  # the target for beta-TCVAE's and FactorVAE's median MIG
# --metrics: "full" is --evaluate --disentanglement's settings (Settings' defaults); "fast" the smaller counts
# the study ran with (half of the defaults before DCI's, SAP's and the variances' rose to disentanglement_lib's);
# "dlib" also the FactorVAE votes of disentanglement_lib (10,000 / 5,000: to measure what they cost);
# "tiny" is for the tests only
METRICS = {"full": {}, "dlib": dict(train_votes=10_000, eval_votes=5_000),
           "fast": dict(mig_samples=5000, scale_samples=2500, train_votes=250, eval_votes=150, train_samples=2500,
                        test_samples=1000, forest_trees=20),
           "tiny": dict(mig_samples=1000, scale_samples=500, vote_batch=16, train_votes=40, eval_votes=40,
                        train_samples=500, test_samples=300, forest_trees=5)}


def get_args_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python3 -m benchmarks.disentanglement", description=__doc__.splitlines()[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--epochs", type=positive_int, default=2, help="epochs of every run: the step budget")
    p.add_argument("--factor_images", type=positive_int, default=20_000,
                   help="images drawn from the grid (train + validation + test), as train.py's flag")
    p.add_argument("--seeds", default="1,2,3", help="comma-separated seeds; every row runs once per seed")
    p.add_argument("--only", default="", help=f"comma-separated rows from {','.join(CONFIGS)}")
    p.add_argument("--data_root", default="data")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="cpu")
    p.add_argument("--work_dir", default=os.path.join(ROOT, "results", "disentanglement"))
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "disentanglement"))
    p.add_argument("--metrics", choices=("full", "fast", "dlib"), default="full",
                   help="full: the sample counts of --evaluate --disentanglement; fast: fewer (the study's); "
                        "dlib: disentanglement_lib's, FactorVAE votes included")
    p.add_argument("--tiny_metrics", action="store_true", help=argparse.SUPPRESS)  # tests only
    return p


def train_flags(row: str, args: argparse.Namespace) -> list[str]:
    """A row's train.py flags (scaffold.run_scored adds the seed, the folders and the quiet output)."""
    return ["--dataset_type", "dsprites", "--factor_images", str(args.factor_images), "--model_type", "fc",
            "--latent_space_size", "10", "--batch-size", "64", "--epochs", str(args.epochs), *CONFIGS[row],
            *(["--capacity_epochs", str(args.epochs)] if row == "capacity" else [])]


def score(checkpoint: str, seed: int, args: argparse.Namespace, metrics: str) -> dict:
    """The disentanglement metrics of a run's last checkpoint, its test BCE / KL and active units."""
    device = select_device(args.device)
    model, run = load_model(checkpoint)
    model = model.to(device)
    settings = Settings(seed=seed, **METRICS[metrics])
    names = list(FACTOR_SETS["dsprites"])
    t0 = time.perf_counter()
    scores = disentanglement_scores(factor_encoder(model, run, device), factor_sizes("dsprites"), names, settings)
    metric_seconds = time.perf_counter() - t0
    test = load_split("dsprites", args.data_root, False, **data_options(run))
    ev = evaluate(model, test, device)
    return {"steps": load_checkpoint(checkpoint).global_step, "test_bce": ev["bce"], "test_kl": ev["kl"],
            "active_units": active_units(torch.as_tensor(posterior_means(model, test, device))),
            **{k: scores[k] for k in ("mig", "mig_without_shape", "factorvae_score", "dci_disentanglement",
                                      "dci_completeness", "dci_informativeness", "sap", "mig_per_factor")},
            "metric_seconds": metric_seconds, "metric_settings": scores["settings"]}


def run_one(row: str, seed: int, args: argparse.Namespace) -> dict:
    """One row with one seed trained and its last checkpoint scored (cached in --work_dir: scaffold.run_scored)."""
    metrics = "tiny" if args.tiny_metrics else args.metrics
    return run_scored("disentanglement", row, seed, train_flags(row, args), args, checkpoint="checkpoint",
                      score=lambda path, s: score(path, s, args, metrics), score_settings={"metrics": metrics})


def spread(values: list[float], fmt: str) -> str:
    """median [min, max] over seeds."""
    return f"{statistics.median(values):{fmt}} [{min(values):{fmt}}, {max(values):{fmt}}]"


def targets(runs: dict[str, list[dict]]) -> list[str]:
    """The issue's targets, met or not, in words."""
    lines = []
    vae = {r["seed"]: r["mig"] for r in runs.get("vae", [])}
    for row in ("betatc", "factorvae"):
        if row not in runs or not runs[row]:
            continue
        migs = [r["mig"] for r in runs[row]]
        med = statistics.median(migs)
        above = [r["mig"] > vae[r["seed"]] for r in runs[row] if r["seed"] in vae]
        lines.append(f"- {LABELS[row]}: median MIG {med:.3f} {'>=' if med >= TARGET_MIG else '<'} {TARGET_MIG} "
                     f"(target {'met' if med >= TARGET_MIG else 'NOT met'}); above the VAE's MIG on "
                     f"{sum(above)} of {len(above)} seeds (target {'met' if above and all(above) else 'NOT met'})")
    return lines


def save_report(runs: dict[str, list[dict]], args: argparse.Namespace, seeds: list[int], wall: float,
                reused: int = 0) -> None:
    first = next(r for rs in runs.values() for r in rs)
    n_runs = sum(len(rs) for rs in runs.values())
    lines = [f"# Disentanglement on dSprites-like data: {len(seeds)} seeds, {args.epochs} epochs per run", "",
             f"`{command_line('disentanglement')}`; {machine_line()}, device {args.device}; "
             f"wall time {wall:.0f} s"
             + (f" ({reused} runs read back from --work_dir, trained by an earlier invocation)" if reused else "")
             + ". Per run, training and scoring: "
             f"{sum(r['train_seconds'] + r['metric_seconds'] for rs in runs.values() for r in rs) / n_runs:.0f} s "
             "on average.", "",
             f"Data: our re-rendering of the dSprites grid (dataio/dsprites.py, not DeepMind's file), "
             f"{args.factor_images:,} images drawn from it, 1/7 held out as the test set, the rest split 4:1 into "
             f"training and validation; 64x64, BCE. Model: fc (4096-400-10-400-4096), batch 64, Adam 1e-3, "
             f"{args.epochs} epochs = {first['steps']:,} steps per run: the step budget, far below the papers' "
             f"(disentanglement_lib trains 300,000 steps), chosen to fit 2 CPU cores. Scores of the last "
             f"checkpoint; metrics on posterior means "
             f"with the settings of `--evaluate --disentanglement` (evaluation/disentanglement.py), images drawn "
             f"from the whole grid. Cells: median [min, max] over seeds.", "",
             *([f"Metric sample counts: `--metrics {args.metrics}`, {METRICS[args.metrics]} (the rest as "
                f"`--evaluate --disentanglement`).", ""] if args.metrics != "full" and not args.tiny_metrics else []),
             *(["**Tiny metric settings (a test run): not the study's.**", ""] if args.tiny_metrics else []),
             "| model | " + " | ".join(name for _, name, _ in COLUMNS) + " | MIG per seed |",
             "|---|" + "---|" * (len(COLUMNS) + 1)]
    for row, rs in runs.items():
        if not rs:
            continue
        cells = [spread([r[key] for r in rs], fmt) for key, _, fmt in COLUMNS]
        per_seed = ", ".join(f"{r['mig']:.3f}" for r in sorted(rs, key=lambda r: r["seed"]))
        lines.append(f"| {LABELS[row]} | " + " | ".join(cells) + f" | {per_seed} |")
    lines += ["", "Targets (issue 25):", *targets(runs), ""]
    write_report(args.out, "\n".join(lines), {"epochs": args.epochs, "factor_images": args.factor_images,
                                              "seeds": seeds, "configs": CONFIGS, "wall_seconds": wall, "runs": runs},
                 command_line("disentanglement"))


def main(args: argparse.Namespace) -> dict:
    seeds = parse_seeds(args.seeds)
    rows = [r.strip() for r in args.only.split(",") if r.strip()] or list(CONFIGS)
    unknown = [r for r in rows if r not in CONFIGS]
    if unknown:
        raise VaeLabError(f"unknown row {unknown[0]!r} for --only; choose from {', '.join(CONFIGS)}")
    os.makedirs(args.work_dir, exist_ok=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    runs: dict[str, list[dict]] = {r: [] for r in rows}
    t0, reused = time.perf_counter(), 0
    for seed in seeds:  # seed by seed: a study stopped early still has every row
        for row in rows:
            result = run_one(row, seed, args)
            runs[row].append(result)
            reused += result["reused"]
            save_report(runs, args, seeds, time.perf_counter() - t0, reused)
    print(open(args.out + ".md").read())
    return runs


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
