"""train.py's ``--evaluate`` (a table and the eval JSON) and ``--predict`` (pictures and posterior means)."""
from __future__ import annotations

import argparse
import os
import time

import torch

from datasets import load_split, train_val_split
from evaluation.likelihood import iwae_evaluate
from evaluation.metrics import evaluate
from evaluation.pictures import write_predictions
from models import VAE
from runtime.files import write_json
from utils import VaeLabError, ensure_writable_dir


def print_eval_table(results: dict[str, dict]) -> None:
    """One row per split; an IWAE column when --iw_samples computed it."""
    iw = [r["iw_samples"] for r in results.values() if "iwae_nll" in r]
    head = f" {f'IWAE K={iw[0]}':>12}" if iw else ""
    print(f"{'split':<6} {'images':>7} {'BCE':>9} {'MSE':>8} {'KL':>8} {'BCE+KL':>9} {'SSIM':>7}{head}")
    for split, r in results.items():
        cell = f" {r['iwae_nll']:>12.2f}" if "iwae_nll" in r else ""
        print(f"{split:<6} {r['n']:>7d} {r['bce']:>9.2f} {r['mse']:>8.2f} {r['kl']:>8.2f} "
              f"{r['bce_kl']:>9.2f} {r['ssim']:>7.4f}{cell}")


def run_eval_modes(model: VAE, args: argparse.Namespace, device: torch.device) -> dict:
    """``--evaluate`` (table + weights/{lognumber}_eval.json) and ``--predict`` (results/{lognumber}/)."""
    ensure_writable_dir(args.weights_dir if args.evaluate else args.results_dir, "output")
    train, val = train_val_split(args.dataset_type, args.data_root, args.fold, args.num_folds, args.seed)
    test = load_split(args.dataset_type, args.data_root, train=False)
    summary: dict = {}
    if args.evaluate:
        results = {"val": evaluate(model, val, device, args.ssim_window_size),
                   "test": evaluate(model, test, device, args.ssim_window_size)}
        if args.iw_samples:
            t0 = time.perf_counter()
            for split, data in (("val", val), ("test", test)):
                results[split]["iwae_nll"] = iwae_evaluate(model, data, device, args.iw_samples, seed=args.seed,
                                                          labels=model.conditional)
                results[split]["iw_samples"] = args.iw_samples
            print(f"IWAE bound (-log p(x), nats/image), K={args.iw_samples}: {len(val) + len(test)} images "
                  f"in {time.perf_counter() - t0:.1f} s")
        print_eval_table(results)
        path = os.path.join(args.weights_dir, f"{args.lognumber}_eval.json")
        try:
            write_json(path, results)
        except OSError as e:
            raise VaeLabError(f"could not write {path!r} ({e.strerror or e}); the previous file there is "
                              f"intact") from None
        print(f"wrote {path}")
        summary["eval"] = results
    if args.predict:
        out = os.path.join(args.results_dir, args.lognumber)
        try:
            summary["predict"] = write_predictions(model, val, test, out, device, args.seed,
                                                   train if args.predict_train else None)
        except OSError as e:
            raise VaeLabError(f"could not write the predictions in {out!r} ({e.strerror or e})") from None
        print(f"wrote predictions to {out}/")
    return summary
