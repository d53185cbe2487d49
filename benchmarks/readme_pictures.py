"""The README's pictures: reconstructions, prior samples and interpolations of a trained VAE,
upscaled (nearest neighbour) so that a 28-pixel image can be seen on a page.

The grids are those of ``train.py --predict`` (evaluation.pictures.image_grids: the first 16
validation images of the run's fold, 64 prior codes drawn with the run's seed).

    python3 benchmarks/readme_pictures.py --train     # train --preset best first (~10 CPU minutes)
    python3 benchmarks/readme_pictures.py --checkpoint weights/fmnist_resconv_l10_best_best.pth.tar
"""
from __future__ import annotations

import argparse
import io
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torchvision.utils import save_image  # noqa: E402

import train  # noqa: E402
from datasets import train_val_split  # noqa: E402
from evaluation.pictures import FILE_NAMES, fixed_codes, image_grids  # noqa: E402
from models import ModelConfig  # noqa: E402
from runtime.checkpoints import load_checkpoint, model_from_checkpoint  # noqa: E402
from runtime.files import atomic_write  # noqa: E402
from utils import OneLineParser, positive_int, run_cli, select_device  # noqa: E402

DEFAULT_CHECKPOINT = os.path.join(ROOT, "weights", "fmnist_resconv_l10_best_best.pth.tar")


def get_args_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="readme_pictures.py", description=__doc__.splitlines()[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help="the trained VAE (ours, not a 2018 one)")
    p.add_argument("--train", action="store_true", help="first train `train.py --preset best` into weights/")
    p.add_argument("--data_root", default="data")
    p.add_argument("--scale", type=positive_int, default=3, help="upscaling factor (nearest neighbour)")
    p.add_argument("--prefix", default="best", help="file names: {prefix}_{reconstructions,samples,...}.png")
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "img"), help="output folder")
    return p


def main(args: argparse.Namespace) -> dict[str, str]:
    if args.train:
        summary = train.main(train.get_args_parser().parse_args(
            ["--preset", "best", "--data_root", args.data_root, "--tensorboard_images", "False"]))
        args.checkpoint = summary["best"]
    ckpt = load_checkpoint(args.checkpoint)
    run = ckpt["args"]
    device = select_device("auto")
    model = model_from_checkpoint(ckpt, ModelConfig(**ckpt["model_config"]), args.checkpoint).to(device)
    _, val = train_val_split(run["dataset_type"], args.data_root, run["fold"], run["num_folds"], run["seed"])
    grids = image_grids(model, val.x[:16].to(device), val.y[:16].to(device),
                        fixed_codes(run["seed"], model.latent_size, device), interpolations=True)
    os.makedirs(args.out, exist_ok=True)
    paths = {}
    for tag, grid in grids.items():
        big = F.interpolate(grid[None], scale_factor=args.scale, mode="nearest")[0]
        buf = io.BytesIO()
        save_image(big, buf, format="png")
        paths[tag] = os.path.join(args.out, f"{args.prefix}_{FILE_NAMES[tag]}.png")
        atomic_write(paths[tag], lambda f: f.write(buf.getvalue()))
        print(f"wrote {paths[tag]} ({big.shape[2]}x{big.shape[1]})")
    return paths


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
