"""Find the odd images: rank images by how unlike a checkpoint's training data they are (see --help).

    python3 score.py --resume weights/RUN_best.pth.tar photos/                   # a folder, files, or both
    python3 score.py --resume weights/RUN_best.pth.tar --dataset_type mnist --split test
    python3 score.py --resume weights/RUN_best.pth.tar --in good/ --out odd/      # known answers: AUROC, ...

Images are decoded and resized as for training (the checkpoint fixes size, channels and background)
and scored in batches (evaluation/anomaly.py; docs/anomaly.md explains each score). An image is
flagged when its score is above the threshold: the 1 - --fpr quantile of the scores of the run's
validation images, computed once and kept beside the checkpoint (<run>_threshold.json). Writes
<results_dir>/<run>/scores_<name>.csv (one row per readable image) and scores_<name>.png (the most and
least anomalous images beside their heat maps).
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import io
import os
import sys
from typing import NamedTuple

import numpy as np
import torch

from config.flag_types import fraction, int_in
from config.parsers import OneLineParser, run_cli
from config.run_config import RunConfig, data_options
from core.errors import VaeLabError
from datasets import DATASET_TYPES, decode_files, image_files, load_split, train_val_split
from evaluation import anomaly
from evaluation.anomaly_sheet import contact_sheet
from evaluation.anomaly_threshold import load_or_fit_reference, reference_images
from fileio.atomic import atomic_write
from fileio.dirs import ensure_writable_dir
from runtime.checkpoints import load_model
from runtime.device import select_device

SPLITS = ("train", "val", "test")


def get_args_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="score.py", description="Rank images by how unlike a trained VAE's training data they "
                      "are; flag those above a threshold set on the run's validation images.")
    p.add_argument("--resume", required=True, metavar="CKPT", help="the trained model (any train.py checkpoint)")
    p.add_argument("paths", nargs="*", metavar="PATH", help="image files and folders (searched recursively)")
    # ---- or a built-in split, or known answers
    p.add_argument("--dataset_type", choices=DATASET_TYPES, default=None,
                   help="score a built-in data set's --split instead of PATHs (read from --data_root)")
    p.add_argument("--split", choices=SPLITS, default="test",
                   help="with --dataset_type: which split (default: %(default)s)")
    p.add_argument("--data_root", default=None, help="where data sets are (default: the checkpoint run's)")
    p.add_argument("--in", dest="inliers", nargs="+", action="extend", default=[], metavar="PATH",
                   help="known in-distribution images: with --out, every score's AUROC, AUPRC and FPR at 95%% TPR")
    p.add_argument("--out", dest="outliers", nargs="+", action="extend", default=[], metavar="PATH",
                   help="known outliers (see --in)")
    # ---- the scores
    p.add_argument("--score", choices=sorted(anomaly.SCORES), default=None,
                   help=f"the score that flags images (default: {anomaly.DEFAULT_SCORE} where the model's "
                        f"likelihood is a code length, else {anomaly.FALLBACK_SCORE})")
    p.add_argument("--scores", default="all",
                   help="comma-separated scores to compute (default: all, every one the model has)")
    p.add_argument("--fpr", type=fraction, default=0.05,
                   help="the fraction of in-distribution images flagged: the threshold is the validation scores' "
                        "1 - FPR quantile (default: %(default)s)")
    p.add_argument("--iw_samples", type=int_in(1, 10_000), default=4, metavar="K",
                   help="importance samples of the IWAE bound (the ELBO and llr average the same K; default: "
                        "%(default)s; 1 is ~4x faster)")
    p.add_argument("--regret_steps", type=int_in(0, 1000), default=10,
                   help="Adam steps fitting q(z|x) to each image for Likelihood Regret (0: not computed; default: "
                        "%(default)s)")
    p.add_argument("--val_images", type=int_in(0, 10_000_000), default=5000,
                   help="validation images the threshold is set on (0: all; default: %(default)s)")
    p.add_argument("--batch_size", type=int_in(1, 100_000), default=250, help="images scored at once (default: "
                   "%(default)s)")
    p.add_argument("--seed", type=int_in(0, 2 ** 32 - 1), default=0,
                   help="the importance samples' noise (default: %(default)s)")
    # ---- outputs
    p.add_argument("--name", default=None, help="names the outputs scores_<name>.csv / .png (default: from inputs)")
    p.add_argument("--results_dir", default=None, help="default: the checkpoint run's")
    p.add_argument("--sheet", type=int_in(0, 64), default=8,
                   help="images in each half of the contact sheet (0: none; default: %(default)s)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto", help="default: %(default)s")
    return p


class Images(NamedTuple):
    """Images to score: uint8 (N, C, H, W), a name for each (path or split index), class labels when known
    (else None) and known answers (1: an outlier, 0: not) with --in / --out (else None)."""

    x: torch.Tensor
    names: list[str]
    labels: np.ndarray | None = None
    known: np.ndarray | None = None


def _files(paths: list[str]) -> tuple[str, list[str]]:
    """Every image file of ``paths`` (files, and folders searched recursively) relative to their common
    folder, and that folder. A path that does not exist, or no image at all, is one line."""
    found: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            found += [os.path.join(path, f) for f in image_files(path)]
        elif os.path.isfile(path):
            found.append(path)
        else:
            raise VaeLabError(f"{path!r} is neither an image file nor a folder")
    if not found:
        raise VaeLabError(f"no image files in {', '.join(map(repr, paths))}")
    found = [os.path.abspath(f) for f in found]
    base = os.path.commonpath([os.path.dirname(f) for f in found])
    return base, [os.path.relpath(f, base) for f in found]


def read_paths(paths: list[str], cfg: RunConfig, shape: tuple[int, int, int]) -> Images:
    """Image files decoded as the checkpoint's run decodes them; other sizes said once."""
    from PIL import Image

    base, files = _files(paths)
    c, h, w = shape
    other = 0
    for f in files:
        try:
            with Image.open(os.path.join(base, f)) as im:
                other += im.size != (w, h)
        except Exception:  # an unreadable file: decode_files names it and skips it
            pass
    if other:
        print(f"score.py: {other} of {len(files)} images are not {w}x{h}: centre-cropped and resized to {w}x{h} "
              "as in training", file=sys.stderr)
    d = decode_files(base, files, h, c, cfg.background)
    return Images(d.x, [os.path.join(base, files[i]) for i in d.kept.tolist()])


def read_split(dataset_type: str, split: str, cfg: RunConfig, shape: tuple[int, int, int]) -> Images:
    """A built-in data set's split, shaped as the checkpoint's images."""
    opts = {**data_options(cfg), "image_size": shape[1], "channels": shape[0]}
    if split == "val":
        data = train_val_split(dataset_type, cfg.data_root, cfg.fold, cfg.num_folds, cfg.seed, **opts)[1]
    else:
        data = load_split(dataset_type, cfg.data_root, split == "train", **opts)
    return Images(data.x, [f"{dataset_type} {split} #{i}" for i in range(len(data))], data.y.numpy())


def validation_images(cfg: RunConfig, n: int) -> torch.Tensor:
    """The checkpoint run's validation images (its fold), ``n`` of them (``reference_images``; 0: all)."""
    return reference_images(train_val_split(cfg.dataset_type, cfg.data_root, cfg.fold, cfg.num_folds, cfg.seed,
                                            **data_options(cfg))[1].x, n)


def read_inputs(args: argparse.Namespace, cfg: RunConfig, shape: tuple[int, int, int]) -> tuple[Images, str, str]:
    """What to score, from PATHs, a built-in split or --in / --out, the name its outputs take, and what it is
    in words."""
    sources = sum(map(bool, (args.paths, args.dataset_type, args.inliers or args.outliers)))
    if sources != 1:
        raise VaeLabError("give the images to score one way: PATHs, --dataset_type (with --split), or --in and --out")
    if args.dataset_type:
        return (read_split(args.dataset_type, args.split, cfg, shape), f"{args.dataset_type}_{args.split}",
                f"{args.dataset_type} {args.split}")
    if args.paths:
        name = os.path.basename(os.path.normpath(args.paths[0])) if len(args.paths) == 1 else "files"
        what = ", ".join(args.paths[:3]) + (", ..." if len(args.paths) > 3 else "")
        return read_paths(args.paths, cfg, shape), os.path.splitext(name)[0] or "files", what
    if not (args.inliers and args.outliers):
        raise VaeLabError("known answers need both --in PATH and --out PATH")
    a, b = read_paths(args.inliers, cfg, shape), read_paths(args.outliers, cfg, shape)
    known = np.r_[np.zeros(len(a.x), dtype=np.int64), np.ones(len(b.x), dtype=np.int64)]
    return (Images(torch.cat([a.x, b.x]), a.names + b.names, known=known), "in_out",
            f"--in {', '.join(args.inliers)} and --out {', '.join(args.outliers)}")


def settings_of(args: argparse.Namespace, model, score: str | None) -> tuple[anomaly.ScoreSettings, str, list[str]]:
    """The scores' settings, the score that flags and the lines saying which scores are left out and why."""
    base = anomaly.ScoreSettings(iw_samples=args.iw_samples, regret_steps=args.regret_steps,
                                 batch_size=args.batch_size, seed=args.seed)
    names, left_out = anomaly.available_scores(model, base)
    score = score or anomaly.default_score(model, base)
    if score not in names:
        raise VaeLabError(f"this model has no {score} score ({'; '.join(left_out) or 'see --help'}); "
                          f"choose from {', '.join(names)}")
    if args.scores != "all":
        only = [s.strip() for s in args.scores.split(",") if s.strip()]
        unknown = [s for s in only if s not in names]
        if unknown or not only:
            raise VaeLabError(f"--scores: {unknown[0] if unknown else args.scores!r} is not a score of this model; "
                              f"choose from {', '.join(names)}")
        base = dataclasses.replace(base, only=tuple(dict.fromkeys([score, *only])))
    return base, score, left_out


def score_all(model, x: torch.Tensor, settings: anomaly.ScoreSettings, device: torch.device,
              what: str) -> dict[str, np.ndarray]:
    """``anomaly.score_images`` with a progress bar on stderr (shown on a terminal only)."""
    from tqdm import tqdm

    with tqdm(total=len(x), desc=f"scoring {what}", unit="img", disable=None, file=sys.stderr) as bar:
        return anomaly.score_images(model, x, settings, device, bar.update)


def write_csv(path: str, images: Images, scores: dict[str, np.ndarray], score: str, percentiles: np.ndarray,
              flagged: np.ndarray) -> None:
    """One row per image: its name, label / known answer when there is one, every score, the flagging score's
    percentile among the validation images and whether it is flagged (written atomically)."""
    buf = io.StringIO()
    out = csv.writer(buf)
    extra = (["label"] if images.labels is not None else []) + (["outlier"] if images.known is not None else [])
    out.writerow(["index", "image", *extra, *scores, f"{score}_percentile", "flagged"])
    for i, name in enumerate(images.names):
        row = [i, name] + ([int(images.labels[i])] if images.labels is not None else [])
        row += [int(images.known[i])] if images.known is not None else []
        out.writerow(row + [f"{scores[s][i]:.6g}" for s in scores] + [f"{percentiles[i]:.2f}", int(flagged[i])])
    atomic_write(path, lambda f: f.write(buf.getvalue().encode()))


def draw_sheet(path: str, model, images: Images, scores: np.ndarray, typical: np.ndarray, score: str,
               n: int, device: torch.device) -> None:
    """The ``n`` most and least anomalous images beside their heat maps (evaluation/anomaly_sheet.py)."""
    order = np.argsort(-scores, kind="stable")
    n = min(n, len(order))
    blocks = []
    for idx in (order[:n], order[::-1][:n]):
        x = images.x[torch.as_tensor(idx.copy())]
        blocks.append({"images": x.numpy(), "heat": anomaly.heat_maps(model, x, typical, device),
                       "scores": scores[idx], "names": [images.names[i] for i in idx]})
    # one colour range for every map: the 99th percentile of |heat|, so that one extreme pixel does not wash out
    # the others (those beyond it show at full colour)
    scale = max(float(np.quantile(np.abs(np.concatenate([b["heat"] for b in blocks])), 0.99)), 1e-6)
    contact_sheet(path, score, blocks[0], blocks[1], scale)


def report(images: Images, scores: dict[str, np.ndarray], score: str, threshold: float, fpr: float,
           flagged: np.ndarray, reference: dict, what: str) -> dict:
    """Print the summary (and, with known answers, every score's detection metrics); return it as a dict."""
    n = len(images.names)
    print(f"scored {n:,} images of {what} by {score} ({anomaly.SCORES[score]})")
    print(f"threshold {threshold:.6g}: the {100 * (1 - fpr):g}th percentile of {reference['images']:,} validation "
          f"images' scores (--fpr {fpr:g}); flagged {int(flagged.sum()):,} of {n:,} ({100 * flagged.mean():.1f}%)")
    top = np.argsort(-scores[score], kind="stable")[:5]
    print("most anomalous: " + "; ".join(f"{images.names[i]} ({scores[score][i]:.4g})" for i in top))
    summary = {"images": n, "score": score, "threshold": threshold, "fpr": fpr, "flagged": int(flagged.sum()),
               "means": {s: float(v.mean()) for s, v in scores.items()}}
    if images.known is not None:
        inl, outl = images.known == 0, images.known == 1
        summary["detection"] = {s: anomaly.detection_metrics(v[inl], v[outl]) for s, v in scores.items()}
        print(f"known answers: {int(inl.sum()):,} in, {int(outl.sum()):,} out")
        print(f"{'score':<10} {'AUROC':>7} {'AUPRC':>7} {'FPR95':>7}")
        for s, m in summary["detection"].items():
            print(f"{s:<10} {m['auroc']:7.4f} {m['auprc']:7.4f} {m['fpr95']:7.4f}")
    return summary


def main(args: argparse.Namespace) -> dict:
    model, cfg = load_model(args.resume)
    if args.data_root:
        cfg = cfg.replace(data_root=args.data_root)
    device = select_device(args.device)
    model = model.to(device).eval()
    settings, score, left_out = settings_of(args, model, args.score)
    images, name, what = read_inputs(args, cfg, tuple(model.image_shape))
    if left_out:
        print(f"score.py: left out for this model: {'; '.join(left_out)}", file=sys.stderr)
    name = args.name or name
    out_dir = os.path.join(args.results_dir or cfg.results_dir, cfg.lognumber)
    ensure_writable_dir(out_dir, "--results_dir")
    val = functools.cache(lambda: validation_images(cfg, args.val_images))  # read once, only when needed
    reference = load_or_fit_reference(
        args.resume, cfg.lognumber, settings, anomaly.available_scores(model, settings)[0], args.val_images,
        lambda s: score_all(model, val(), s, device, "validation images"),
        lambda: anomaly.mean_pixel_bits(model, val(), device))
    scores = score_all(model, images.x, settings, device, what)
    table = reference["quantiles"][score]
    threshold = anomaly.threshold_from_quantiles(table, args.fpr)
    flagged = scores[score] > threshold
    percentiles = np.array([anomaly.percentile(v, table) for v in scores[score]])
    csv_path = os.path.join(out_dir, f"scores_{name}.csv")
    write_csv(csv_path, images, scores, score, percentiles, flagged)
    summary = report(images, scores, score, threshold, args.fpr, flagged, reference, what)
    written = [csv_path]
    if args.sheet:
        written.append(os.path.join(out_dir, f"scores_{name}.png"))
        draw_sheet(written[-1], model, images, scores[score], np.asarray(reference["typical_pixel_bits"]), score,
                   args.sheet, device)
    print("wrote " + ", ".join(written) + (f"; threshold kept in {reference['path']}" if reference.get("path") else ""))
    return {**summary, "files": written}


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
