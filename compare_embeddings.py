"""Which embedding separates the classes best? PCA vs UMAP vs a trained VAE, scored by KNN.

Every method is fitted on the training images only and embeds the test images by
``transform`` (the VAE by its posterior mean; ``vae+umap``, UMAP fitted on the VAE's
posterior means, by the means' UMAP transform). The 2018 protocol then scores each embedding:
a cross-validated KNN grid over samples-per-class x k, test accuracy with KNN fit on a few
hundred images per class (several random draws), and KNN on every training image.
Outputs in ``--out``: results.json, results.csv, table.md, knn_accuracy.png, embeddings_2d.png.
See ``python3 compare_embeddings.py --help``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import numpy as np
import torch

from config.flag_types import int_in, non_negative_int, positive_int
from config.flags import add_data_args
from config.parsers import OneLineParser, run_cli
from config.resolve import given_settings
from config.run_config import RunConfig, data_options
from core.errors import VaeLabError
from core.limits import MAX_SEED
from datasets import Split, load_split
from evaluation import embedding_report as report
from evaluation import knn
from evaluation.embeddings import (
    METHODS,
    Embedding,
    VaeEncoder,
    embed,
    flatten,
    load_vae,
    make_method,
    uses_vae,
    view_2d,
)
from fileio.atomic import write_json
from fileio.dirs import ensure_writable_dir
from runtime.device import select_device

DEFAULT_CHECKPOINT = "weights/fmnist_fc_conv_l10_rebalance_no_norm_best.pth.tar"
TEST_KS = (5, 10)  # the 2018 notebook's test accuracies: VAE at k=10, PCA at k=5
PLOT_POINTS = 8000  # training points per panel of embeddings_2d.png: enough to see the clusters
DATASET_NAMES = {"fmnist": "Fashion-MNIST", "mnist": "MNIST", "folder": "image folder"}
DATA_FIELDS = ("dataset_type", "data_root", "image_size", "channels", "test_fraction", "factor", "factor_images")


def int_list(value: str) -> list[int]:
    """A comma-separated list of distinct positive integers, e.g. ``50,100,500``."""
    items = [v.strip() for v in value.split(",")]
    if not value.strip() or any(not v for v in items):
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of positive integers, got {value!r}")
    out = [positive_int(v) for v in items]
    if len(set(out)) != len(out):
        raise argparse.ArgumentTypeError(f"the list {value!r} repeats a value")
    return sorted(out)


def method_list(value: str) -> list[str]:
    """A comma-separated list of distinct method names, kept in the given order."""
    items = [v.strip().lower() for v in value.split(",")]
    if not value.strip() or any(not v for v in items):
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of methods, got {value!r}")
    unknown = [v for v in items if v not in METHODS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown method {unknown[0]!r}; choose from {','.join(METHODS)}")
    if len(set(items)) != len(items):
        raise argparse.ArgumentTypeError(f"the list {value!r} repeats a method")
    return items


def get_args_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="compare_embeddings.py",
        description="Compare PCA, UMAP and a trained VAE's embeddings, alone and combined, by KNN accuracy "
                    "(the 2018 protocol).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--resume", default=DEFAULT_CHECKPOINT, metavar="CKPT",
                   help="the VAE checkpoint (ours or the 2018 one); model type and latent size are read from it")
    add_data_args(p)  # with a VAE, the flags not given are its run's: dataset, folder, image size and channels
    p.add_argument("--methods", type=method_list, default="pca,umap,vae",
                   help="comma-separated, from pca,umap,vae,vae+umap,pixels (vae+umap: UMAP fitted on the VAE's "
                        "posterior means; pixels: the raw 784 pixels, a baseline)")
    p.add_argument("--n_components", type=positive_int, default=None,
                   help="embedding dimension of PCA and UMAP; default: the VAE's latent size (10 without a VAE). "
                        "Must equal the VAE's latent size, so every method gets the same dimension")
    p.add_argument("--samples_per_class", type=int_list, default="50,100,500,1000,3000",
                   help="CV grid: training images drawn per class")
    p.add_argument("--n_neighbours", type=int_list, default="1,5,10,25,50", help="CV grid: values of k")
    p.add_argument("--test_samples_per_class", type=positive_int, default=500,
                   help=f"test accuracy: KNN (k={' and '.join(map(str, TEST_KS))}) fit on this many training "
                        f"images per class")
    p.add_argument("--draws", type=positive_int, default=5, help="random draws of those training images")
    p.add_argument("--umap_pca", type=non_negative_int, default=50,
                   help="reduce the pixels to this many dimensions by PCA before UMAP (0: UMAP on raw pixels); "
                        "a little faster; the README measures the effect. Not for vae+umap (UMAP on the VAE means)")
    p.add_argument("--seed", type=int_in(0, MAX_SEED), default=42, help="seeds UMAP, PCA and every sample and split")
    p.add_argument("--out", default="results/compare_{name}",
                   help="output folder; {name} is the checkpoint's file name (or the dataset without a VAE)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto",
                   help="device for encoding with the VAE")
    return p


def set_by_user(args: argparse.Namespace) -> set[str]:
    """The flags (dests) given on the command line; a Namespace made by hand counts as given in full."""
    given = getattr(args, "given_flags", None)
    return set(vars(args)) if given is None else set(given)


def out_dir(template: str, args: argparse.Namespace, dataset_type: str) -> str:
    name = dataset_type
    if any(map(uses_vae, args.methods)):
        name = os.path.basename(args.resume).removesuffix(".tar").removesuffix(".pth")
    return template.replace("{name}", name)


@dataclass
class Source:
    """What is embedded: the data (its config) and, when a method uses one, the VAE."""

    data: RunConfig
    n_components: int  # the embedding dimension of every method
    vae: VaeEncoder | None = None
    vae_info: dict[str, Any] | None = None  # evaluation.embeddings.load_vae's facts for the report


def choose_source(args: argparse.Namespace, given: dict[str, Any]) -> Source:
    """The VAE (when a method uses one: checked before any data is read) and the data: the flags given, the
    others the VAE's run's (dataset, folder, image shape)."""
    with_vae = [name for name in args.methods if uses_vae(name)]
    if not with_vae:
        return Source(RunConfig(**given), args.n_components or 10)
    if not os.path.isfile(args.resume):
        raise VaeLabError(f"checkpoint {args.resume!r} does not exist: train one with `python3 train.py`, "
                          f"pass --resume PATH, or leave {', '.join(with_vae)} out of --methods")
    model, run, vae_info = load_vae(args.resume, given.get("dataset_type"), args.n_components)
    shape = model.image_shape
    vae = VaeEncoder(model, select_device(args.device), shape)
    # the images as the VAE saw them (a no-op for data already of that shape)
    data = run.replace(**{"image_size": shape[1], "channels": shape[0], **given})
    return Source(data, model.latent_size, vae, vae_info)


def load_images(data: RunConfig, log: Callable[[str], None]) -> tuple[Split, Split]:
    """The training and test splits; refused unless they hold at least two classes (KNN recovers them)."""
    log(f"loading {data.dataset_type} from {data.data_root!r}")
    train = load_split(data.dataset_type, data.data_root, True, **data_options(data))
    test = load_split(data.dataset_type, data.data_root, False, **data_options(data))
    if len(train.classes or []) < 2:
        raise VaeLabError(f"the embeddings are scored by how well KNN recovers the classes, and {data.data_root!r} "
                          f"has {'no class sub-folders' if train.classes is None else 'one class'}")
    return train, test


def knn_protocol(args: argparse.Namespace, y_train: np.ndarray, log: Callable[[str], None]
                 ) -> tuple[list[int], list[int], int, list[str]]:
    """The CV grid's sizes and k, the test's images per class, and how the defaults were cut to the data."""
    try:  # the default sizes cut to what the classes hold; sizes the user gave are checked as given
        sizes, ks, n, cut = knn.fit_sizes(y_train, args.samples_per_class, args.n_neighbours,
                                          args.test_samples_per_class, set_by_user(args))
        knn.check_protocol(y_train, sizes, ks, n, TEST_KS)
    except ValueError as e:
        raise VaeLabError(str(e)) from None
    if cut:
        log(f"the smallest class has {knn.class_sizes(y_train)[0]} training images: {'; '.join(cut)}")
    return sizes, ks, n, cut


def check_dimensions(args: argparse.Namespace, n_components: int, pixels: int) -> None:
    """PCA and UMAP reduce: their dimensions must lie below the pixels'."""
    if {"pca", "umap"} & set(args.methods) and n_components >= pixels:
        raise VaeLabError(f"--n_components {n_components} must be below the {pixels} pixels")
    if "umap" in args.methods and args.umap_pca and not n_components < args.umap_pca < pixels:
        raise VaeLabError(f"--umap_pca {args.umap_pca} must be between --n_components ({n_components}) and the "
                          f"{pixels} pixels, or 0 to turn it off")


def score_embedding(name: str, e: Embedding, y_train: np.ndarray, y_test: np.ndarray, grid: tuple,
                    args: argparse.Namespace, vae_info: dict[str, Any] | None, log: Callable[[str], None]
                    ) -> tuple[dict[str, Any], list[dict]]:
    """One method's row of results.json and its CV grid rows; ``grid``: knn_protocol's (sizes, ks, n)."""
    sizes, ks, n = grid
    t0 = time.perf_counter()
    log(f"[knn] {name}: CV grid, {len(sizes)} sizes x {len(ks)} k ...")
    cv_rows = [{"method": name, **row} for row in knn.cv_grid(e.train, y_train, sizes, ks, args.seed)]
    t1 = time.perf_counter()
    sampled = knn.sampled_test_accuracy(e.train, y_train, e.test, y_test, n, TEST_KS, args.draws, args.seed)
    full = knn.full_test_accuracy(e.train, y_train, e.test, y_test, TEST_KS)
    t2 = time.perf_counter()
    row = {
        **{f"test_acc_{n}_k{k}": sampled[k] for k in TEST_KS},
        **{f"test_acc_full_k{k}": full[k] for k in TEST_KS},
        "fit_seconds": round(e.fit_seconds, 2), "transform_seconds": round(e.transform_seconds, 2),
        "cv_seconds": round(t1 - t0, 2), "test_knn_seconds": round(t2 - t1, 2),
        "dimensions": int(e.train.shape[1]),
        **({"umap_pca": args.umap_pca} if name == "umap" else {}),
        **({"vae": vae_info} if uses_vae(name) else {}),
    }
    log(f"[knn] {name}: CV grid {t1 - t0:.1f} s, test {t2 - t1:.1f} s; test acc {n}/class k={TEST_KS[-1]} "
        f"{sampled[TEST_KS[-1]]['mean']:.4f} ± {sampled[TEST_KS[-1]]['std']:.4f}, "
        f"k={TEST_KS[0]} {sampled[TEST_KS[0]]['mean']:.4f}, all k={TEST_KS[-1]} {full[TEST_KS[-1]]:.4f}")
    return row, cv_rows


def protocol_of(args: argparse.Namespace, source: Source, train: Split, y_test: np.ndarray, sizes: list[int],
                ks: list[int], n: int, cut: list[str]) -> dict[str, Any]:
    """How the embeddings were fitted and scored, for results.json."""
    data = source.data
    return {
        "dataset": data.dataset_type, **({"factor": data.factor or "shape"} if train.factors is not None else {}),
        "dataset_name": DATASET_NAMES.get(data.dataset_type, data.dataset_type),
        "n_train": len(train.y), "n_test": len(y_test), "n_components": source.n_components,
        "fit_on": "the training images only; test images embedded by transform (VAE: posterior mean; "
                  "vae+umap: UMAP fitted on the training images' posterior means)",
        "samples_per_class": sizes, "n_neighbours": ks, **({"sizes_cut_to_the_data": cut} if cut else {}),
        "cv_folds": knn.CV_FOLDS, "test_samples_per_class": n, "test_ks": list(TEST_KS),
        "draws": args.draws, "seed": args.seed, "umap_pca": args.umap_pca,
        "vae_fit_seconds": "encoding the training images; training the VAE is not counted",
        "cpu_threads": torch.get_num_threads(),
        "versions": {p: version(p) for p in ("torch", "scikit-learn", "umap-learn", "numpy")},
    }


def write_outputs(results: dict[str, Any], out: str, embeddings: dict[str, Embedding], train: Split,
                  dataset_type: str, seed: int) -> dict[str, str]:
    """results.json, results.csv, table.md and the two figures; returns report.write_all's paths (the caller
    writes results.json again, with the total time)."""
    paths = report.write_all(results, out)
    report.plot_knn_accuracy(results, os.path.join(out, "knn_accuracy.png"))
    y_train = train.y.numpy()
    show = np.sort(np.random.default_rng(seed).choice(len(y_train), min(PLOT_POINTS, len(y_train)), replace=False))
    views = {name: view_2d(e.train, seed)[show] for name, e in embeddings.items()}
    report.plot_embeddings_2d(views, y_train[show], train.classes,
                              os.path.join(out, "embeddings_2d.png"),
                              f"{DATASET_NAMES.get(dataset_type, dataset_type)} training set: first two "
                              f"principal axes of each embedding ({len(show):,} points)")
    return paths


def main(args: argparse.Namespace) -> dict:
    """Run the comparison; returns the results dict also written to ``results.json``."""
    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"{time.perf_counter() - t_start:6.1f} s  {msg}", flush=True)

    # the data flags given; with a VAE, the others are its run's (dataset, folder, image shape)
    given = {k: v for k, v in given_settings(args).items() if k in DATA_FIELDS}
    source = choose_source(args, given)  # cheap checks first: the checkpoint and the output folder
    out = out_dir(args.out, args, source.data.dataset_type)
    ensure_writable_dir(out, "output")
    if source.vae_info is not None:
        log(f"VAE: {source.vae_info['family']}; embedding the {source.vae_info['code']}")
    train, test = load_images(source.data, log)
    y_train, y_test = train.y.numpy(), test.y.numpy()
    sizes, ks, n, cut = knn_protocol(args, y_train, log)
    x_train, x_test = flatten(train), flatten(test)
    check_dimensions(args, source.n_components, x_train.shape[1])

    embeddings = {}
    for name in args.methods:
        method = make_method(name, source.n_components, args.seed, args.umap_pca, source.vae)
        embeddings[name] = embed(name, method, x_train, x_test, log)
    methods: dict[str, dict] = {}
    cv_rows: list[dict] = []
    for name, e in embeddings.items():
        methods[name], rows = score_embedding(name, e, y_train, y_test, (sizes, ks, n), args, source.vae_info, log)
        cv_rows += rows
    protocol = protocol_of(args, source, train, y_test, sizes, ks, n, cut)
    results = {"methods": methods, "cv": cv_rows, "protocol": protocol}

    log("writing tables and figures")
    paths = write_outputs(results, out, embeddings, train, source.data.dataset_type, args.seed)
    protocol["total_seconds"] = round(time.perf_counter() - t_start, 1)
    write_json(paths["json"], results)  # again, now with the total time
    print(open(paths["table"]).read())
    log(f"done in {protocol['total_seconds']:.1f} s; wrote {out}/ (results.json, results.csv, table.md, "
        f"knn_accuracy.png, embeddings_2d.png)")
    return results


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
