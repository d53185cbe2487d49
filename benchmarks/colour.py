"""Families on a colour image folder at equal training time: test bits/dim beside PNG, WebP lossless and xz,
the pictures the code alone draws, and the samples' scores from the folder-trained classifier.

Each configuration is a train.py command line on the folder (``--image_size``, 32 by default; a latent of
32, batch 64: for a few thousand images), trained once per ``--seeds`` by benchmarks/scaffold.py. Equal
time: a one-epoch probe of each configuration measures its seconds an epoch, and it then trains for as many
epochs as fit in ``--budget_s`` (at least 1), its preset's schedule over those epochs. Scored on the best
checkpoint, on the folder's held-out test images:
- the negative ELBO in bits/dim, and the IWAE bound (``--iw_samples``) on the first ``--iw_images`` of them;
- PNG / WebP lossless (per image) and xz -9e (the whole split) on the same images;
- SSIM and MSE of the pictures drawn from the code alone (``--evaluate``'s figure: for a decoder that reads
  pixels, drawn pixel by pixel on the first images; otherwise the decoded posterior mean);
- ``--fid_samples`` prior samples (what --predict draws) scored by a classifier trained on the folder's classes
  (evaluation/sample_quality.py): their Frechet distance to the test images, beside the training images' own
  distance to them (the floor at this sample size); the classifier's mean top-class probability on the samples
  beside the test images' (how often a sample looks like some class); the class histogram's total variation
  distance from the test images';
- the seconds to draw 100 samples (a second call timed after a first), the training seconds, and the
  validation bits/dim after each epoch (is it still falling?).

    python3 -m benchmarks.colour --data_root data/twemoji_cat --collection twemoji
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

import train
from benchmarks.scaffold import (
    ROOT,
    add_rescore_arg,
    cell,
    command_line,
    kept_rows,
    run_scored,
    run_splits,
    sampling_seconds,
    start,
    summarise,
    table,
    write_report,
)
from config.flag_types import non_negative_int, positive_float, positive_int
from config.parsers import OneLineParser, run_cli
from config.run_config import data_options
from core.environment import cpu_name
from datasets import Split
from evaluation.codecs import CODECS, cached_codec_bits
from evaluation.likelihood import iwae_evaluate
from evaluation.metrics import evaluate
from evaluation.sample_quality import class_probabilities, feature_stats, frechet_distance, load_or_train_classifier
from fileio.atomic import write_json
from losses import bits_per_dim
from runtime.checkpoints import load_checkpoint, load_model
from runtime.device import select_device

# flags every configuration shares: a folder of a few thousand colour images
COMMON = ["--dataset_type", "folder", "--latent_space_size", "32", "--batch-size", "64"]
# name -> (train.py flags, what it is); the table's order
CONFIGS: dict[str, tuple[list[str], str]] = {
    "best": (["--preset", "best", "--image_loss_type", "dmol"],
             "resconv, every pixel independent given the code (a mixture of 5 discretised logistics)"),
    "density": (["--preset", "density"], "pixelvae: resconv whose decoder reads the pixels before each one "
                "(one gated layer after the 7x7 window), the same pixel mixture"),
    "deep": (["--preset", "deep"], "deep_hvae: a top code and 2 groups of 4-channel latent maps at each resolution "
             "below the image's (8x8 and 16x16 at 32x32), no autoregressive decoder, the same pixel mixture"),
}
SAMPLING_IMAGES = 100


def get_args_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python3 -m benchmarks.colour", description=__doc__.splitlines()[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--collection", required=True, help="the collection's short name: the report is colour_<name>")
    p.add_argument("--only", default="", metavar="NAMES", help=f"comma-separated configurations: {', '.join(CONFIGS)}")
    p.add_argument("--budget_s", type=positive_float, default=480.0, help="training seconds each configuration gets")
    p.add_argument("--iw_samples", type=positive_int, default=50, help="importance samples of the IWAE bound")
    p.add_argument("--iw_images", type=positive_int, default=500, help="the first N test images get the IWAE bound")
    p.add_argument("--fid_samples", type=non_negative_int, default=1000, help="prior samples scored; 0 skips them")
    p.add_argument("--seeds", default="42", help="comma-separated seeds, each configuration runs once per seed")
    p.add_argument("--data_root", required=True, help="the colour folder, its images in class sub-folders")
    p.add_argument("--image_size", type=positive_int, default=32, help="the side the images are trained at")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    p.add_argument("--work_dir", default=None, help="runs and scores (default results/colour_<collection>)")
    p.add_argument("--out", default=None, help="report path without extension (default benchmarks/colour_<name>)")
    add_rescore_arg(p)
    return p


def shared_flags(args: argparse.Namespace) -> list[str]:
    """The train.py flags every configuration shares."""
    return [*COMMON, "--image_size", str(args.image_size)]


def seconds_per_epoch(name: str, args: argparse.Namespace) -> float:
    """One epoch of configuration ``name`` on the folder, timed by train.main (validation included)."""
    argv = [*shared_flags(args), *CONFIGS[name][0], "--data_root", args.data_root, "--epochs", "1", "--seed", "0",
            "--weights_dir", os.path.join(args.work_dir, "probe"), "--lognumber", f"probe_{name}", "--overwrite",
            "--tensorboard", "False", "--tensorboard_images", "False", "--print-freq", str(10**6),
            "--device", args.device]
    return train.main(train.get_args_parser().parse_args(argv))["seconds"]


def epoch_seconds(names: list[str], args: argparse.Namespace) -> dict[str, float]:
    """Each configuration's probe (:func:`seconds_per_epoch`), saved in the work folder (with the others saved
    there before); ``--rescore`` reads the saved ones, so the runs' epochs, and so their flags, are those their
    checkpoints were trained with."""
    path = os.path.join(args.work_dir, "probe_seconds.json")
    saved = {}
    if os.path.isfile(path):
        with open(path) as f:
            saved = json.load(f)
    probes = {**saved, **{n: saved[n] if args.rescore and n in saved else seconds_per_epoch(n, args) for n in names}}
    write_json(path, probes)
    return {n: probes[n] for n in CONFIGS if n in probes}  # the kept rows' probes too, for the report


def sample_scores(model: torch.nn.Module, classifier: torch.nn.Module, test: Split, train_x: torch.Tensor,
                  n: int, seed: int, device: torch.device) -> dict:
    """``n`` prior samples' Frechet distance, top-class probability and class histogram against the test
    images', in ``classifier``'s eyes."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        samples = torch.cat([model.decode(model.sample_prior(SAMPLING_IMAGES, g).to(device)).cpu()
                             for _ in range(0, n, SAMPLING_IMAGES)])[:n]
    test_stats = feature_stats(classifier, test.x, device)
    p_samples, p_test = (class_probabilities(classifier, x, device) for x in (samples, test.x))
    hist = [np.bincount(p.argmax(1).numpy(), minlength=p.shape[1]) / len(p) for p in (p_samples, p_test)]
    return {"fid": frechet_distance(*feature_stats(classifier, samples, device), *test_stats),
            "fid_train_floor": frechet_distance(*feature_stats(classifier, train_x, device), *test_stats),
            "sample_top_prob": float(p_samples.max(1).values.mean()),
            "test_top_prob": float(p_test.max(1).values.mean()),
            "class_tv": float(0.5 * np.abs(hist[0] - hist[1]).sum())}


def score(best_ckpt: str, seed: int, args: argparse.Namespace) -> dict:
    """Every figure of one trained checkpoint on the folder's test images (see the module's docstring)."""
    device = select_device(args.device)
    ckpt = load_checkpoint(best_ckpt)
    model, run = load_model(best_ckpt, ckpt)
    model = model.to(device).eval()
    full_train, _, test = run_splits(run, args.data_root)
    dims = test.x[0].numel()
    whole = evaluate(model, test, device, batch_size=256)
    part = Split(test.x[:args.iw_images], test.y[:args.iw_images])
    sub = evaluate(model, part, device, batch_size=256)
    iwae = bits_per_dim(iwae_evaluate(model, part, device, args.iw_samples, seed=seed), dims)
    out = {"test_bpd": whole["bits_per_dim"], "test_kl": whole["kl"], "iwae_images": len(part),
           "iwae_test_bpd_est": iwae + whole["bits_per_dim"] - sub["bits_per_dim"], "iwae_subset_bpd": iwae,
           "ssim_code": whole.get("ssim_from_code", whole["ssim"]),
           "mse_code": whole.get("mse_from_code", whole["mse"]),
           "codecs": cached_codec_bits(test.x, os.path.join(args.work_dir, "codecs")),
           "params": sum(p.numel() for p in model.parameters()), "test_images": len(test),
           "val_bpd_curve": [bits_per_dim(h["val_loss"], dims) for h in ckpt.history]}
    out.update(sampling_seconds(model, device, torch.Generator().manual_seed(seed), SAMPLING_IMAGES))
    if args.fid_samples:
        classifier, accuracy = load_or_train_classifier(run.dataset_type, args.data_root, args.work_dir, device,
                                                        data=data_options(run))
        out.update(classifier_test_acc=accuracy,
                   **sample_scores(model, classifier, test, full_train.x, args.fid_samples, seed, device))
    return out


ROW_KEYS = ("train_seconds", "test_bpd", "iwae_test_bpd_est", "iwae_subset_bpd", "test_kl", "ssim_code", "mse_code",
            "fid", "fid_train_floor", "sample_top_prob", "test_top_prob", "class_tv", "classifier_test_acc",
            "sample_100_seconds", "first_sample_100_seconds")


def describe(name: str, results: list[dict]) -> dict:
    """A row's configuration and what its first run says of it (a seed does not change them)."""
    first = results[0]
    return {"config": name, "flags": " ".join(CONFIGS[name][0]), "about": CONFIGS[name][1],
            "params": first["params"], "epochs": first["epochs"], "codecs": first["codecs"],
            "test_images": first["test_images"], "iwae_images": first["iwae_images"],
            "val_bpd_curve": first["val_bpd_curve"]}


def markdown(rows: list[dict], probes: dict[str, float], args: argparse.Namespace, wall: float) -> str:
    codecs = rows[0]["codecs"]
    best_codec = min(codecs[f"{c}_bits_per_dim"] for c in CODECS)
    body = [[r["config"], ", ".join(map(str, r["seeds"])), f"{r['params'] / 1e6:.2f}M", str(r["epochs"]),
             cell(r["train_seconds"], ".0f"), cell(r["test_bpd"], ".4f"), cell(r["iwae_test_bpd_est"], ".4f"),
             cell(r["ssim_code"], ".4f"), cell(r["test_kl"], ".1f"), cell(r["fid"], ".1f"),
             f"{cell(r['sample_top_prob'], '.3f')} ({cell(r['test_top_prob'], '.3f')})", cell(r["class_tv"], ".3f"),
             f"{cell(r['sample_100_seconds'], '.2f')} ({cell(r['first_sample_100_seconds'], '.2f')})"] for r in rows]
    floor = rows[0].get("fid_train_floor")
    lines = [
        f"# Families on a colour folder at equal training time: {args.collection}", "",
        f"`{command_line('colour')}`; torch {torch.__version__}, {cpu_name()}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} CPUs; wall time {wall:.0f} s. `{args.data_root}`, flags shared: "
        f"`{' '.join(shared_flags(args))}`; mean ± std over seeds; best checkpoint of each run; "
        f"{rows[0]['test_images']:,} held-out test images. Lower bits/dim is better: a lossless code length of "
        "the 8-bit images.", "",
        f"Equal time: each configuration trained for as many epochs as fit in {args.budget_s:g} s by a one-epoch "
        "probe (" + ", ".join(f"{k} {v:.1f} s" for k, v in probes.items()) + " an epoch).", "",
        "Codecs on the same test images: " + ", ".join(f"{c} {codecs[f'{c}_bits_per_dim']:.4f}" for c in CODECS)
        + f" bits/dim (the best: {best_codec:.4f}).", "",
        table(["config", "seeds", "params", "epochs", "train s", "-ELBO b/d", "IWAE b/d (est. all)",
               "SSIM (from the code)", "KL nats", "FID", "top-class prob. (test images')", "class TV",
               "100 samples s (first call)"], body), "",
        f"IWAE: K = {args.iw_samples} on the first {rows[0]['iwae_images']} test images, moved by that subset's "
        "-ELBO offset from all of them. SSIM window 5, of the pictures drawn from the code alone. FID: "
        f"{args.fid_samples:,} prior samples (as --predict draws them) against the test images in the features "
        "of a classifier trained on the folder's classes (test accuracy "
        f"{cell(rows[0].get('classifier_test_acc'), '.3f')}); the training images' own FID to the test images, "
        f"the floor at this size: {cell(floor, '.1f')}. Top-class probability: the classifier's mean confidence "
        "on the samples (on the test images in brackets). Class TV: total variation distance between the "
        "classes the samples are assigned and the test images'.", "",
        "Validation bits/dim after each epoch (first seed): "]
    lines += [f"- **{r['config']}**: " + ", ".join(f"{v:.3f}" for v in r["val_bpd_curve"]) for r in rows]
    lines += ["", "Configurations:"] + [f"- **{r['config']}** (`{r['flags']}`): {r['about']}" for r in rows]
    if len({r.get("command") for r in rows}) > 1:  # rows kept from an earlier run (--only) say what measured them
        lines += ["", "Measured by:"] + [f"- **{r['config']}**: `{r.get('command')}`" for r in rows]
    return "\n".join(lines) + "\n"


def main(args: argparse.Namespace) -> list[dict]:
    args.work_dir = args.work_dir or os.path.join(ROOT, "results", f"colour_{args.collection}")
    args.out = args.out or os.path.join(ROOT, "benchmarks", f"colour_{args.collection}")
    seeds, runs = start(args, list(CONFIGS))
    settings = {k: getattr(args, k) for k in ("iw_samples", "iw_images", "fid_samples", "budget_s")}
    t0 = time.perf_counter()
    probes = epoch_seconds(runs, args)
    kept = kept_rows(args.out + ".json", set(runs), settings, CONFIGS, "python3 -m benchmarks.colour")
    rows: list[dict] = []
    for seed in seeds:
        for name in runs:
            epochs = max(1, int(args.budget_s // probes[name]))
            flags = [*shared_flags(args), *CONFIGS[name][0], "--epochs", str(epochs)]
            runs[name].append(run_scored("colour", name, seed, flags, args, score=lambda b, s: score(b, s, args),
                                         score_settings=settings))
            measured = [{**r, "command": command_line("colour")} for r in summarise(runs, ROW_KEYS, describe)]
            rows = sorted(kept + measured, key=lambda r: list(CONFIGS).index(r["config"]))
            wall = time.perf_counter() - t0
            write_report(args.out, markdown(rows, probes, args, wall),
                         {"seeds": seeds, **settings, "probe_seconds": probes, "wall_seconds": wall, "rows": rows},
                         command_line("colour"))
    print(open(args.out + ".md").read())
    return rows


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
