"""Why --evaluate's bits/dim are the ELBO at a sampled code: a checkpoint's test images scored by decoding
every latent level's mean and adding the KL (the figure --evaluate printed before issue 36, still its NLL+KL),
by the negative ELBO at one code drawn from q(z|x) (two seeds: what --evaluate prints now), and by the IWAE
bound with ``--iw_samples``, which is at or under the true negative ELBO: a figure under it is no bound.

    python3 -m benchmarks.elbo_paths --checkpoints results/density/deep_s42_best.pth.tar
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

from benchmarks.scaffold import ROOT, command_line, machine_line, run_splits, shown_path, table, write_report
from config.flag_types import positive_int
from config.parsers import OneLineParser, run_cli
from datasets import Split
from evaluation.likelihood import iwae_evaluate
from evaluation.metrics import evaluate
from losses import bits_per_dim
from runtime.checkpoints import load_model


def get_args_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python3 -m benchmarks.elbo_paths", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoints", nargs="+", required=True, help="checkpoints of a discrete likelihood")
    p.add_argument("--data_root", default="data", help="where the checkpoints' data sets are")
    p.add_argument("--images", type=positive_int, default=500, help="the first N test images are scored")
    p.add_argument("--iw_samples", type=positive_int, default=10, help="importance samples of the IWAE bound")
    p.add_argument("--threads", type=positive_int, default=2)
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "elbo_paths"))
    return p


def paths(path: str, data_root: str, images: int, iw_samples: int) -> dict:
    """One checkpoint's figures in bits/dim on its first ``images`` test images."""
    model, run = load_model(path)
    model.eval()
    _, _, test = run_splits(run, data_root)
    part, cpu = Split(test.x[:images], test.y[:images]), torch.device("cpu")
    dims = part.x[0].numel()
    scored = evaluate(model, part, cpu)
    return {"checkpoint": shown_path(os.path.abspath(path)), "family": run.model_type, "images": len(part),
            "mean_path": bits_per_dim(scored["nll_kl"], dims), "sampled": scored["bits_per_dim"],
            "sampled_seed1": bits_per_dim(iwae_evaluate(model, part, cpu, 1, 500, seed=1), dims),
            "iwae": bits_per_dim(iwae_evaluate(model, part, cpu, iw_samples, seed=0), dims)}


def main(args: argparse.Namespace) -> list[dict]:
    torch.set_num_threads(args.threads)
    rows = [paths(p, args.data_root, args.images, args.iw_samples) for p in args.checkpoints]
    body = [[f"`{r['checkpoint']}`", r["family"], f"{r['images']:,}", f"{r['mean_path']:.4f}",
             f"{r['sampled']:.4f} / {r['sampled_seed1']:.4f}", f"{r['iwae']:.4f}",
             f"{r['sampled'] - r['mean_path']:+.4f}"] for r in rows]
    markdown = "\n".join([
        "# The ELBO decoded at the means against the ELBO at a sampled code (bits/dim, test images)", "",
        f"`{command_line('elbo_paths')}`; {machine_line()}; {args.threads} threads.", "",
        table(["checkpoint", "family", "images", "means (no bound)", "sampled, seed 0 / 1",
               f"IWAE K={args.iw_samples}", "sampled - means"], body), "",
        "Means: every latent level decoded at its posterior mean, plus the KL (--evaluate's NLL+KL). Sampled: "
        "the negative ELBO at one code per image drawn from q(z|x) (--evaluate's bits/dim; seed 1 shows the "
        "draw's spread). The IWAE bound is at or under the true negative ELBO, so a figure below it is not an "
        "ELBO."])
    print(markdown)
    write_report(args.out, markdown, {"rows": rows, "iw_samples": args.iw_samples}, command=command_line("elbo_paths"))
    return rows


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
