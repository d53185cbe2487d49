"""Which samples look like the data? FID of prior vs GMM samples, and a CVAE's class accuracy.

Each configuration is a train.py command line, trained once per ``--seeds`` by
benchmarks/scaffold.py; its best checkpoint is scored on the official test set by the offline
Frechet distance of ``train.py --evaluate --fid`` (features of a small classifier trained once
on Fashion-MNIST's training images, evaluation/sample_quality.py): ``--fid`` prior samples,
as many samples of the GMM sampler fitted on the training fold's posterior means
(``--gmm_components``), and the first ``--fid`` test reconstructions; for the CVAE also the
classifier's accuracy on its class-conditional prior samples. Writes ``benchmarks/samples.md``
and ``.json`` after every run.

    python3 -m benchmarks.samples                        # seeds 42,1,2
    python3 -m benchmarks.samples --only 2018 --seeds 42 --fid 2000
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
import time

import torch

from benchmarks.scaffold import (
    add_sweep_args,
    cell,
    command_line,
    machine_line,
    official_split,
    run_scored,
    start,
    summarise,
    write_report,
)
from config.flag_types import positive_int
from config.parsers import OneLineParser, run_cli
from datasets import Split, kfold_indices
from evaluation.metrics import posterior_means
from evaluation.modes import sample_scores
from evaluation.sample_quality import COMPARABILITY, feature_stats, frechet_distance, load_or_train_classifier
from evaluation.samplers import GaussianMixtureSampler
from runtime.checkpoints import load_model
from runtime.device import select_device

CONFIGS: dict[str, tuple[list[str], str]] = {
    "2018": ([], "the 2018 best command (fc_conv, 30 epochs)"),
    "best": (["--preset", "best"], "`--preset best` (resconv, 18 epochs)"),
    "best_cvae": (["--preset", "best", "--conditional", "True"], "`--preset best` as a conditional VAE"),
}
METRICS = (("fid_prior", ".2f"), ("fid_gmm", ".2f"), ("gmm_vs_prior", ".3f"), ("fid_recon", ".2f"),
           ("class_sample_accuracy", ".4f"), ("train_seconds", ".0f"))


def get_args_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python3 -m benchmarks.samples", description=__doc__.splitlines()[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--only", default="", metavar="NAMES", help=f"comma-separated configurations: {', '.join(CONFIGS)}")
    p.add_argument("--epochs", type=positive_int, default=None, help="override every configuration's epochs")
    p.add_argument("--fid", type=positive_int, default=10_000, help="generated images per score")
    p.add_argument("--gmm_components", type=positive_int, default=10, help="components of the GMM sampler")
    add_sweep_args(p, "samples")
    return p


@functools.lru_cache(maxsize=1)
def _classifier(data_root: str, weights_dir: str, device_name: str):
    return load_or_train_classifier("fmnist", data_root, weights_dir, select_device(device_name))


def score_samples(best_ckpt: str, seed: int, args: argparse.Namespace) -> dict:
    """FIDs (test set) of one checkpoint's prior and GMM samples and reconstructions."""
    model, run = load_model(best_ckpt)
    device = select_device(args.device)
    model = model.to(device)
    full_train = official_split("fmnist", os.path.abspath(args.data_root), True)
    test = official_split("fmnist", os.path.abspath(args.data_root), False)
    tr, _ = kfold_indices(full_train.y, run.fold, run.num_folds, run.seed)  # the run's training fold
    train = Split(full_train.x[torch.from_numpy(tr)], full_train.y[torch.from_numpy(tr)])
    t0 = time.perf_counter()
    gmm = GaussianMixtureSampler.fit(posterior_means(model, train, device), args.gmm_components, seed)
    classifier, accuracy = _classifier(os.path.abspath(args.data_root), args.work_dir, args.device)
    out = sample_scores(model, gmm, {"test": test}, args.fid, seed, classifier, device)["test"]
    return {**out, "gmm_vs_prior": out["fid_gmm"] / out["fid_prior"], "classifier_test_accuracy": accuracy,
            "score_seconds": time.perf_counter() - t0}


def real_images_score(args: argparse.Namespace) -> float:
    """The same distance for ``--fid`` real training images: what a perfect sampler would score."""
    classifier, _ = _classifier(os.path.abspath(args.data_root), args.work_dir, args.device)
    device = select_device(args.device)
    full_train = official_split("fmnist", os.path.abspath(args.data_root), True)
    test = official_split("fmnist", os.path.abspath(args.data_root), False)
    return frechet_distance(*feature_stats(classifier, full_train.x[:args.fid], device),  # uint8: converted per batch
                            *feature_stats(classifier, test.x, device))


def summary(runs: dict[str, list[dict]]) -> list[dict]:
    return summarise(runs, (key for key, _ in METRICS), lambda name, _: {
        "config": name, "flags": " ".join(CONFIGS[name][0]) or "(defaults)", "about": CONFIGS[name][1]})


def markdown(rows: list[dict], args: argparse.Namespace, wall: float, accuracy: float, real: float) -> str:
    lines = ["# Sample quality: prior vs GMM samples (Fashion-MNIST, offline FID)", "",
             f"`{command_line('samples')}`; {machine_line()}; wall time {wall:.0f} s. Mean ± std over seeds, "
             f"best checkpoint of each run. FID: Frechet distance between classifier features of {args.fid:,} "
             "generated images and of the 10,000 test images; the classifier (evaluation/sample_quality.py) "
             f"reaches test accuracy {accuracy:.4f}. Its scores are {COMPARABILITY}. GMM: {args.gmm_components} full-"
             "covariance components fitted on the training fold's posterior means (Ghosh et al. 2020). "
             "gmm/prior: the ratio of the two FIDs per run (target: at most 0.70). recon: the first "
             f"{args.fid:,} test images reconstructed (posterior mean decoded), a floor for what the decoder "
             "can draw. class acc: the classifier's accuracy on the CVAE's prior samples drawn for each "
             "class in turn (target: at least 0.90).", "",
             "| config | flags | seeds | FID prior | FID GMM | gmm/prior | FID recon | class acc | train s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = " | ".join(cell(r[key], fmt) for key, fmt in METRICS)
        lines.append(f"| {r['config']} | `{r['flags']}` | {len(r['seeds'])} | {cells} |")
    lines += ["", f"The floor: {args.fid:,} real training images score {real:.2f} against the test images."]
    return "\n".join(lines) + "\n"


def main(args: argparse.Namespace) -> list[dict]:
    seeds, runs = start(args, list(CONFIGS))
    settings = {"fid": args.fid, "gmm_components": args.gmm_components, "score": "samples"}
    t0, rows, real = time.perf_counter(), [], real_images_score(args)
    for seed in seeds:  # every configuration once before any gets a second seed
        for name in runs:
            flags = list(CONFIGS[name][0]) + (["--epochs", str(args.epochs)] if args.epochs else [])
            runs[name].append(run_scored("samples", name, seed, flags, args,
                                         score=lambda ckpt, s: score_samples(ckpt, s, args), score_settings=settings))
            rows = summary(runs)
            wall = time.perf_counter() - t0
            accuracy = runs[name][-1]["classifier_test_accuracy"]
            write_report(args.out, markdown(rows, args, wall, accuracy, real), {
                "seeds": seeds, "fid": args.fid, "gmm_components": args.gmm_components, "epochs_override": args.epochs,
                "wall_seconds": wall, "real_training_images_fid": real, "rows": rows}, command_line("samples"))
    print(open(args.out + ".md").read())
    return rows


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
