"""What a decoder that reads pixels draws from the code alone: the seconds per image of drawing
``pixelvae``'s pictures pixel by pixel (``model.reconstruct``, what --predict draws) at 28x28 grey and
32x32 colour, and a checkpoint's SSIM and MSE of those pictures beside the one-step-ahead ones, as
``--evaluate`` reports them (evaluation/metrics.py: the pictures on each split's first PICTURE_IMAGES).

    python3 -m benchmarks.code_alone --checkpoint weights/ood/ood_density_s42_best.pth.tar --data_root data
    # -> benchmarks/code_alone.md / .json

The timing uses the checkpoint's layers at both shapes (weights as built, seed 0: drawing costs the same
whatever they are); images of uniform noise.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import torch

from benchmarks.scaffold import ROOT, command_line, machine_line, run_splits, table, write_report
from config.flag_types import positive_int
from config.parsers import OneLineParser, run_cli
from evaluation.metrics import PICTURE_IMAGES, evaluate
from models import build_model
from runtime.checkpoints import load_checkpoint, load_model, model_config_of

SHAPES = ((1, 28), (3, 32))  # (channels, size): Fashion-MNIST's, and a colour folder at --image_size 32


def get_args_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python3 -m benchmarks.code_alone", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="a checkpoint of a decoder that reads pixels (pixelvae)")
    p.add_argument("--data_root", default="data", help="where the checkpoint's data set is")
    p.add_argument("--images", type=positive_int, default=PICTURE_IMAGES, help="images drawn per timed shape")
    p.add_argument("--batch", type=positive_int, default=1000, help="images drawn per call (--evaluate's batch)")
    p.add_argument("--threads", type=positive_int, default=2)
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "code_alone"))
    return p


@torch.no_grad()
def drawing_ms(path: str, channels: int, size: int, images: int, batch: int) -> float:
    """Milliseconds per image to draw ``images`` reconstructions with the checkpoint's layers at this shape."""
    model, run = load_model(path)
    cfg = dataclasses.replace(model_config_of(load_checkpoint(path), run), image_channels=channels, image_size=size)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    x = torch.rand(images, channels, size, size)
    t0 = time.perf_counter()
    for i in range(0, images, batch):
        model.reconstruct(x[i:i + batch])
    return (time.perf_counter() - t0) / images * 1000


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    model, run = load_model(args.checkpoint)
    _, val, test = run_splits(run, args.data_root)
    splits = {}
    for name, data in (("val", val), ("test", test)):
        t0 = time.perf_counter()
        splits[name] = {**evaluate(model, data, torch.device("cpu")), "seconds": time.perf_counter() - t0}
    timing = {f"{c}x{s}x{s}": drawing_ms(args.checkpoint, c, s, args.images, args.batch) for c, s in SHAPES}
    rows = [[name, f"{r['n']:,}", f"{r['bits_per_dim']:.4f}" if "bits_per_dim" in r else "n/a",
             f"{r['ssim']:.4f}", f"{r['ssim_from_code']:.4f}", f"{r['mse']:.2f}", f"{r['mse_from_code']:.2f}",
             f"{r['picture_images']:,}", f"{r['seconds']:.1f}"] for name, r in splits.items()]
    markdown = "\n".join([
        "# What the code alone draws: pixelvae's pictures beside its one-step-ahead figures", "",
        f"`{command_line('code_alone')}`; {machine_line()}; {args.threads} threads.", "",
        f"Checkpoint `{os.path.relpath(os.path.abspath(args.checkpoint), ROOT)}` ({run.model_type}, "
        f"--image_loss_type {run.image_loss_type}, {run.epochs} epochs, seed {run.seed}, {run.dataset_type}). "
        "One step ahead: each pixel predicted from the code and the true pixels before it (the decoder's "
        "output, what the likelihood scores). From the code: the pictures drawn pixel by pixel from the "
        "posterior mean alone (what --predict draws), on the split's first images. SSIM window 5; MSE "
        "summed over pixels, per image; seconds: --evaluate's pass over the split.", "",
        table(["split", "images", "bits/dim", "SSIM (one step ahead)", "SSIM (from the code)",
               "MSE (one step ahead)", "MSE (from the code)", "pictures of", "s"], rows), "",
        f"Drawing pictures pixel by pixel with these layers, {args.images:,} images in batches of {args.batch}: "
        + ", ".join(f"{shape} {ms:.1f} ms an image" for shape, ms in timing.items()) + "."])
    print(markdown)
    write_report(args.out, markdown, {"checkpoint": args.checkpoint, "splits": splits, "ms_per_image": timing},
                 command=command_line("code_alone"))


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
