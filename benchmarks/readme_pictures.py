"""The README's pictures: what the best model draws, upscaled so that a 28-pixel image can be
seen on a page, and the latent-space pictures of ``--predict``.

From the best checkpoint (``--checkpoint``): reconstructions, prior samples, samples of the
GMM sampler beside them, interpolations (the grids of ``train.py --predict``, the first 16
validation images of the run's fold, codes drawn with the run's seed), latent traversals; and
the latent map of a model with a 2-d code (``--map_checkpoint``; "" for none); and the
validation metrics of the best model (bits per dimension with the discretised logistic) in
``{prefix}_metrics.json``. The colour showcase (Twemoji, docs/datasets.md):

    python3 -m benchmarks.readme_pictures --checkpoint weights/twemoji32_best.pth.tar --map_checkpoint "" \
        --data_root data/twemoji --prefix twemoji

    python3 -m benchmarks.readme_pictures --train     # first train both models (~10 CPU minutes)
    python3 -m benchmarks.readme_pictures --checkpoint weights/fmnist_resconv_l10_best_best.pth.tar \\
        --map_checkpoint weights/fmnist_fc_conv_l2_best.pth.tar
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

import train
from benchmarks.scaffold import ROOT
from config.flag_types import positive_int
from config.parsers import OneLineParser, run_cli
from config.run_config import data_options
from datasets import CLASS_NAMES, as_float, train_val_split
from evaluation.latent_pictures import write_latent_map, write_traversals
from evaluation.metrics import evaluate, posterior_means
from evaluation.pictures import fixed_codes, image_grids, save_png
from evaluation.samplers import GaussianMixtureSampler
from fileio.atomic import write_json
from runtime.checkpoints import load_model
from runtime.device import select_device

DEFAULT_CHECKPOINT = os.path.join(ROOT, "weights", "fmnist_resconv_l10_best_best.pth.tar")
DEFAULT_MAP_CHECKPOINT = os.path.join(ROOT, "weights", "fmnist_fc_conv_l2_best.pth.tar")


def get_args_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python3 -m benchmarks.readme_pictures", description=__doc__.splitlines()[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help="the best model (a checkpoint of ours)")
    p.add_argument("--map_checkpoint", default=DEFAULT_MAP_CHECKPOINT,
                   help="a model with a 2-d latent code, on data with classes (\"\": no latent map)")
    p.add_argument("--train", action="store_true",
                   help="first train `train.py --preset best` and `train.py --latent_space_size 2` into weights/")
    p.add_argument("--overwrite", action="store_true",
                   help="with --train: replace runs of those names already in weights/ (else refused)")
    p.add_argument("--data_root", default="data")
    p.add_argument("--gmm_components", type=positive_int, default=10)
    p.add_argument("--scale", type=positive_int, default=3, help="upscaling factor of the grids (nearest neighbour)")
    p.add_argument("--prefix", default="best", help="file names: {prefix}_{reconstructions,samples,...}.png")
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "img"), help="output folder")
    return p


def _load(path: str, data_root: str, device: torch.device):
    """A checkpoint's model on ``device``, the config of its run, and that run's training and validation folds."""
    model, run = load_model(path)
    train_set, val = train_val_split(run.dataset_type, data_root, run.fold, run.num_folds, run.seed,
                                     **data_options(run))
    return model.to(device), run, train_set, val


def _save_upscaled(grid: torch.Tensor, path: str, scale: int) -> None:
    save_png(grid, path, scale)
    print(f"wrote {path} ({grid.shape[2] * scale}x{grid.shape[1] * scale})")


def main(args: argparse.Namespace) -> dict[str, str]:
    if args.train:
        common = ["--data_root", args.data_root, "--tensorboard_images", "False"]
        if args.overwrite:  # weights/ also holds the user's own `train.py --preset best`: replaced when asked only
            common.append("--overwrite")
        args.checkpoint = train.main(train.get_args_parser().parse_args(["--preset", "best", *common]))["best"]
        args.map_checkpoint = train.main(train.get_args_parser().parse_args(
            ["--latent_space_size", "2", "--lognumber", "fmnist_fc_conv_l2", *common]))["best"]
    device = select_device("auto")
    model, run, train_set, val = _load(args.checkpoint, args.data_root, device)
    gmm = GaussianMixtureSampler.fit(posterior_means(model, train_set, device), args.gmm_components, run.seed)
    grids = image_grids(model, as_float(val.x[:16].to(device)), val.y[:16].to(device),
                        fixed_codes(run.seed, model, device), interpolations=True,
                        z_gmm=fixed_codes(run.seed, model, device, gmm=gmm))
    os.makedirs(args.out, exist_ok=True)
    paths = {name: os.path.join(args.out, f"{args.prefix}_{name}.png") for name in
             ("reconstructions", "samples_prior_vs_gmm", "interpolations", "traversals", "latent_map_2d")}
    _save_upscaled(grids["panno"], paths["reconstructions"], args.scale)
    _save_upscaled(grids["interpolations"], paths["interpolations"], args.scale)
    gap = torch.ones(3, grids["samples"].shape[1], 16)  # a white strip between the two grids
    _save_upscaled(torch.cat([grids["samples"], gap, grids["samples_gmm"]], dim=2), paths["samples_prior_vs_gmm"],
                   args.scale)
    write_traversals(model, val, device, paths["traversals"])
    print(f"wrote {paths['traversals']}")
    metrics = evaluate(model, val, device, run.ssim_window_size)
    paths["metrics"] = os.path.join(args.out, f"{args.prefix}_metrics.json")
    write_json(paths["metrics"], {"checkpoint": os.path.relpath(args.checkpoint, ROOT), "split": "val",
                                  "images": len(val), **metrics})
    print(f"wrote {paths['metrics']}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()
                                                  if isinstance(v, float)))
    if not args.map_checkpoint:
        del paths["latent_map_2d"]
        return paths
    map_model, map_run, _, map_val = _load(args.map_checkpoint, args.data_root, device)
    write_latent_map(map_model, map_val, device, paths["latent_map_2d"], CLASS_NAMES[map_run.dataset_type],
                     map_run.seed)
    print(f"wrote {paths['latent_map_2d']}")
    return paths


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
