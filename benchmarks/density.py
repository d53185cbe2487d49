"""Density models against the standard codecs: test bits per dimension of each configuration,
beside PNG, WebP lossless and xz on the same images, with what the code still means.

Every configuration is a train.py command line (so ``--preset density`` means what it means there),
trained once per ``--seeds`` by benchmarks/scaffold.py and scored on the official test set:
- the negative ELBO in bits/dim on all test images (posterior-mean-free: the ELBO's one-sample
  estimate at a fixed seed for the VampPrior; closed form otherwise);
- the IWAE bound with ``--iw_samples`` importance samples on the first ``--iw_images`` test images,
  the negative ELBO on those same images, and so the subset's offset from the whole set (the IWAE
  bound of the whole set is estimated as the subset's plus that offset, and said so);
- PNG / WebP lossless (per image) and xz -9e (the whole split at once) on the whole test set;
- the KL per image, the active units (dimensions whose posterior mean varies by more than 0.01 over
  the test set, Burda et al. 2016), the SSIM of the pictures drawn from the code alone (for a decoder
  that reads pixels, ``--evaluate``'s figure on the first test images), KNN test accuracy of the
  posterior means (500 training images per class, k = 10, mean of 5 draws);
- the Frechet distance of ``--fid_samples`` prior samples to the test set in the project's
  Fashion-MNIST classifier's feature space (evaluation/sample_quality.py), and the seconds to draw
  100 samples (the autoregressive decoder draws pixel by pixel), a second call timed after a first;
- the training seconds (train.main's, validation included).

    python3 -m benchmarks.density                      # every configuration, seeds 42,1,2
    python3 -m benchmarks.density --only density --seeds 42
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

from benchmarks import scaffold
from benchmarks.scaffold import (
    KNN_DRAWS,
    KNN_K,
    add_sweep_args,
    cell,
    command_line,
    run_scored,
    run_splits,
    sampling_seconds,
    start,
    summarise,
    write_report,
)
from config.flag_types import non_negative_int, positive_int
from config.parsers import OneLineParser, run_cli
from config.run_config import data_options
from core.environment import cpu_name
from core.errors import VaeLabError
from datasets import Split
from evaluation.codecs import CODECS, cached_codec_bits
from evaluation.embeddings import posterior_means
from evaluation.knn import sampled_test_accuracy
from evaluation.likelihood import iwae_evaluate
from evaluation.metrics import active_units, evaluate
from evaluation.sample_quality import feature_stats, frechet_distance, load_or_train_classifier
from fileio.atomic import write_text
from losses import bits_per_dim
from runtime.checkpoints import load_checkpoint, load_model
from runtime.device import select_device

# name -> (train.py flags, what it is). Order: the table's order.
CONFIGS: dict[str, tuple[list[str], str]] = {
    # the pixel mixture on its own (every pixel independent given the code), for 6 of best's 18 epochs
    "dmol": (["--preset", "best", "--image_loss_type", "dmol", "--epochs", "6"],
             "`--preset best` (resconv) with a mixture of 5 discretised logistics per pixel (location and scale per "
             "pixel), 6 epochs"),
    "density": (["--preset", "density"], "pixelvae (resconv whose decoder sees its neighbours: one gated layer "
                "after the 7x7 window, 32 channels), the same pixel mixture, 12 epochs"),
    "deep": (["--preset", "deep"], "deep_hvae (a deep hierarchical VAE: a top code and 2 groups of 4-channel latent "
             "maps at 7x7 and 14x14, no autoregressive decoder), the same pixel mixture, 9 epochs"),
}
SAMPLING_IMAGES = 100


def get_args_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python3 -m benchmarks.density", description=__doc__.splitlines()[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--only", default="", metavar="NAMES", help=f"comma-separated configurations: {', '.join(CONFIGS)}")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="override every configuration's epochs (the table says so)")
    p.add_argument("--iw_samples", type=positive_int, default=100, help="importance samples of the IWAE bound")
    p.add_argument("--iw_images", type=positive_int, default=1000, help="the first N test images get the IWAE bound")
    p.add_argument("--fid_samples", type=non_negative_int, default=1000, help="prior samples for the FID; 0 skips it")
    p.add_argument("--from_json", action="store_true",
                   help="train nothing: write the .md again from the rows of the .json (e.g. after a run was stopped)")
    add_sweep_args(p, "density")
    return p


def score(best_ckpt: str, seed: int, args: argparse.Namespace) -> dict:
    """Every figure of one trained checkpoint on the test set (see the module's docstring)."""
    device = select_device(args.device)
    model, run = load_model(best_ckpt, load_checkpoint(best_ckpt))
    model = model.to(device).eval()
    full_train, _, test = run_splits(run, args.data_root)
    dims = test.x[0].numel()
    whole = evaluate(model, test, device, batch_size=500)
    part = Split(test.x[:args.iw_images], test.y[:args.iw_images])
    sub = evaluate(model, part, device, batch_size=500)
    iwae = iwae_evaluate(model, part, device, args.iw_samples, seed=seed, labels=model.conditional)
    means = posterior_means(model, test, device)
    out = {"test_bpd": whole["bits_per_dim"], "test_kl": whole["kl"],
           # the pictures the user sees: drawn from the code alone (a decoder that reads pixels: its first images)
           "test_ssim_code": whole.get("ssim_from_code", whole["ssim"]),
           "subset_bpd": sub["bits_per_dim"], "iwae_subset_bpd": bits_per_dim(iwae, dims),
           "active_units": active_units(torch.as_tensor(means)),
           "codecs": cached_codec_bits(test.x, os.path.join(args.work_dir, "codecs")),
           "params": sum(p.numel() for p in model.parameters())}
    out["subset_offset_bpd"] = out["test_bpd"] - out["subset_bpd"]
    out["iwae_test_bpd_est"] = out["iwae_subset_bpd"] + out["subset_offset_bpd"]
    out["knn_acc"] = sampled_test_accuracy(posterior_means(model, full_train, device), full_train.y.numpy(),
                                           means, test.y.numpy(), per_class=args.knn_per_class, ks=[KNN_K],
                                           draws=KNN_DRAWS, seed=seed)[KNN_K]["mean"]
    g = torch.Generator().manual_seed(seed)
    out.update(sampling_seconds(model, device, g, SAMPLING_IMAGES))
    if args.fid_samples:
        classifier, _ = load_or_train_classifier(run.dataset_type, args.data_root, args.work_dir, device,
                                                 data=data_options(run))
        with torch.no_grad():
            samples = torch.cat([model.decode(model.sample_prior(SAMPLING_IMAGES, g).to(device)).cpu()
                                 for _ in range(0, args.fid_samples, SAMPLING_IMAGES)])[:args.fid_samples]
        out["fid"] = frechet_distance(*feature_stats(classifier, samples, device),
                                      *feature_stats(classifier, test.x, device))
    return out


ROW_KEYS = ("train_seconds", "test_bpd", "test_ssim_code", "iwae_test_bpd_est", "iwae_subset_bpd", "subset_bpd",
            "subset_offset_bpd", "test_kl", "active_units", "knn_acc", "fid", "sample_100_seconds",
            "first_sample_100_seconds")


def describe(name: str, results: list[dict]) -> dict:
    """A row's configuration and what its first run says of it (a seed does not change them)."""
    return {"config": name, "flags": " ".join(CONFIGS[name][0]), "about": CONFIGS[name][1],
            "params": results[0]["params"], "epochs": results[0]["epochs"], "codecs": results[0]["codecs"]}


def markdown(rows: list[dict], args: argparse.Namespace, wall: float, cpu: str | None = None,
             command: str | None = None, note: str = "") -> str:
    codecs = rows[0]["codecs"]
    lines = ["# Density models on Fashion-MNIST against the codecs (test set, bits per dimension)", "",
             f"`{command or command_line('density')}`{note}; torch {torch.__version__}, {cpu or cpu_name()}, "
             f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs; wall time {wall:.0f} s. Mean ± std over "
             f"seeds{f'; every configuration trained {args.epochs} epochs' if args.epochs else ''}. Best checkpoint "
             "of each run. Lower bits/dim is better: a lossless code length of the 8-bit images.",
             "", "Codecs on the same test images: "
             + ", ".join(f"{c} {codecs[f'{c}_bits_per_dim']:.4f}" for c in CODECS) + " bits/dim.", "",
             f"-ELBO: the negative ELBO on all test images. IWAE: the bound with K = {args.iw_samples} on the first "
             f"{args.iw_images} test images, shown as measured (subset) and moved by the subset's offset "
             "(the -ELBO of all images minus that of the subset, measured) to estimate it on the whole set.",
             "", "| config | seeds | params | epochs | train s | -ELBO b/d | IWAE b/d (est. all) | "
                 "IWAE b/d (subset) | offset | KL nats | active units | SSIM (from the code) | KNN acc | FID | "
                 "100 samples s (first call) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        seeds = ", ".join(map(str, r["seeds"]))
        lines.append(f"| {r['config']} | {seeds} | {r['params'] / 1e6:.2f}M | {r['epochs']} | "
                     f"{cell(r['train_seconds'], '.0f')} | {cell(r['test_bpd'], '.4f')} | "
                     f"{cell(r['iwae_test_bpd_est'], '.4f')} | {cell(r['iwae_subset_bpd'], '.4f')} | "
                     f"{cell(r['subset_offset_bpd'], '.4f')} | {cell(r['test_kl'], '.2f')} | "
                     f"{cell(r['active_units'], '.1f')} | {cell(r.get('test_ssim_code'), '.4f')} | "
                     f"{cell(r['knn_acc'], '.4f')} | {cell(r['fid'], '.1f')} | "
                     f"{cell(r['sample_100_seconds'], '.2f')} ({cell(r['first_sample_100_seconds'], '.2f')}) |")
    lines += ["", "Configurations:"] + [f"- **{r['config']}** (`{r['flags']}`): {r['about']}" for r in rows]
    if len({r.get("command") for r in rows}) > 1:  # rows kept from an earlier run (--only) say what measured them
        lines += ["", "Measured by:"] + [f"- **{r['config']}**: `{r['command']}` ({r['cpu']})" for r in rows]
    return "\n".join(lines) + "\n"


def score_settings(args: argparse.Namespace) -> dict:
    """The scoring flags a run's figures depend on: in each run's cache key and in the saved .json."""
    return {"iw_samples": args.iw_samples, "iw_images": args.iw_images, "fid_samples": args.fid_samples,
            "knn_per_class": args.knn_per_class}


def kept_rows(args: argparse.Namespace, rerun: set[str]) -> list[dict]:
    """The saved rows this run keeps (scaffold.kept_rows): those scored with the same settings and epochs."""
    return scaffold.kept_rows(args.out + ".json", rerun, {**score_settings(args), "epochs_override": args.epochs},
                              CONFIGS, "python3 -m benchmarks.density")


def main(args: argparse.Namespace) -> list[dict]:
    if args.from_json:
        if not os.path.isfile(args.out + ".json"):
            raise VaeLabError(f"--from_json: no {args.out}.json to rewrite the table from; run the sweep first")
        with open(args.out + ".json") as f:
            saved = json.load(f)
        for key in ("iw_samples", "iw_images", "fid_samples", "knn_per_class"):
            setattr(args, key, saved[key])
        args.epochs = saved["epochs_override"]
        # the run's own command (a run that predates the key: the default one), and that the table was rewritten
        write_text(args.out + ".md", markdown(saved["rows"], args, saved["wall_seconds"], saved["cpu"],
                                              saved.get("command", "python3 -m benchmarks.density"),
                                              " (table rewritten by `--from_json`)"))
        print(open(args.out + ".md").read())
        return saved["rows"]
    seeds, runs = start(args, list(CONFIGS))
    settings = score_settings(args)
    kept = kept_rows(args, set(runs))
    t0 = time.perf_counter()
    rows: list[dict] = []
    for seed in seeds:  # every configuration once before any gets a second seed
        for name in runs:
            flags = list(CONFIGS[name][0]) + (["--epochs", str(args.epochs)] if args.epochs else [])
            runs[name].append(run_scored("density", name, seed, flags, args,
                                         score=lambda best, s: score(best, s, args), score_settings=settings))
            measured = [{**r, "command": command_line("density"), "cpu": cpu_name()}
                        for r in summarise(runs, ROW_KEYS, describe)]
            rows = sorted(kept + measured, key=lambda r: list(CONFIGS).index(r["config"]))
            wall = time.perf_counter() - t0
            write_report(args.out, markdown(rows, args, wall), {"seeds": seeds, **settings,
                                                               "epochs_override": args.epochs, "wall_seconds": wall,
                                                               "rows": rows}, command_line("density"))
    print(open(args.out + ".md").read())
    return rows


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
