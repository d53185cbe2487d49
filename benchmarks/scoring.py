"""Scores of one trained checkpoint, shared by the ablation and quality benchmarks.

Validation BCE+KL and SSIM (fold of the run, posterior mean decoded, ``train.evaluate``),
KNN test accuracy on the posterior means (``knn_bench.sampled_test_accuracy``) and, when
asked, the importance-weighted bound on -log p(x) (``likelihood.iwae_evaluate``).
"""
from __future__ import annotations

import functools
import os

import train

KNN_K = 10
KNN_DRAWS = 5


@functools.lru_cache(maxsize=4)
def official_split(dataset: str, data_root: str, train_set: bool):
    """The official training or test set, read once per sweep."""
    from datasets import load_split

    return load_split(dataset, data_root, train=train_set)


def score_checkpoint(best_ckpt: str, data_root: str, seed: int, device_name: str, knn_per_class: int,
                     iw_samples: int = 0) -> dict:
    """Validation BCE+KL / SSIM, KNN test accuracy (None for a conditional model, whose encoder
    would need the test labels) and, with ``iw_samples``, the IWAE bound of one checkpoint."""
    import torch

    from checkpoints import load_checkpoint, model_from_checkpoint
    from datasets import Split, kfold_indices
    from knn_bench import sampled_test_accuracy
    from models import ModelConfig
    from predict import posterior_means
    from utils import select_device

    ckpt = load_checkpoint(best_ckpt)
    saved = ckpt["args"]
    device = select_device(device_name)
    model = model_from_checkpoint(ckpt, ModelConfig(**ckpt["model_config"]), best_ckpt).to(device)
    full_train = official_split(saved["dataset_type"], os.path.abspath(data_root), True)
    test = official_split(saved["dataset_type"], os.path.abspath(data_root), False)
    _, va = kfold_indices(full_train.y, saved["fold"], saved["num_folds"], saved["seed"])  # the run's own fold
    va_t = torch.from_numpy(va)
    val = Split(full_train.x[va_t], full_train.y[va_t])
    # batch 512: ~2x faster than evaluate's default 1000 on a CPU (SSIM stays in cache)
    ev = train.evaluate(model, val, device, window_size=5, batch_size=512)
    out = {"val_bce_kl": ev["bce_kl"], "val_bce": ev["bce"], "val_kl": ev["kl"], "val_ssim": ev["ssim"],
           "best_epoch": int(ckpt["epoch"]), "params": sum(p.numel() for p in model.parameters()),
           "knn_acc": None}
    if not model.conditional:
        knn = sampled_test_accuracy(posterior_means(model, full_train, device), full_train.y.numpy(),
                                    posterior_means(model, test, device), test.y.numpy(),
                                    per_class=knn_per_class, ks=[KNN_K], draws=KNN_DRAWS, seed=seed)[KNN_K]
        out["knn_acc"] = knn["mean"]
    if iw_samples:
        from likelihood import iwae_evaluate

        out["iwae_nll"] = iwae_evaluate(model, val, device, iw_samples, seed=seed, labels=model.conditional)
        out["iw_samples"] = iw_samples
    return out


def add_sweep_args(p, name: str, root: str) -> None:
    """The flags every training sweep shares (data, KNN protocol, device, outputs)."""
    from utils import positive_int

    p.add_argument("--data_root", default="data")
    p.add_argument("--knn_per_class", type=positive_int, default=500,
                   help="training points per class the KNN is fit on (2018 protocol: 500)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    p.add_argument("--work_dir", default=os.path.join(root, "results", name),
                   help="the runs' weights and per-run scores (reused when the settings match)")
    p.add_argument("--out", default=os.path.join(root, "benchmarks", name),
                   help="output path without extension (.md and .json are written)")


def parse_seeds(text: str) -> list[int]:
    """``--seeds`` "42,1,2" -> [42, 1, 2]; a one-line VaeLabError otherwise."""
    from utils import VaeLabError

    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise VaeLabError(f"--seeds must be comma-separated integers, got {text!r}") from None
    if not seeds:
        raise VaeLabError("--seeds is empty")
    return seeds
