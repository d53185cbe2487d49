"""Embeddings to compare: PCA, UMAP, a trained VAE's posterior means (and raw pixels).

Combined methods chain two of them, each step fitted on the previous step's training output:
``vae+umap`` is UMAP fitted on the VAE's posterior means (the 2018 README's untried
"meta-architecture"). PCA before UMAP on the pixels is ``umap`` itself (``umap_pca``).

Every method is an object with scikit-learn's ``fit_transform(X)`` / ``transform(X)`` on
flattened images (N, 784) in [0, 1]; :func:`embed` fits it on the training images only,
transforms the test images, and times both.
"""
from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from config.run_config import RunConfig
from core.errors import VaeLabError
from datasets import Split, as_float
from evaluation.metrics import posterior_means
from models import VAE
from runtime.checkpoints import load_checkpoint, load_model

METHODS = ("pca", "umap", "vae", "vae+umap", "pixels")


@dataclass
class Embedding:
    """One method's training and test embeddings and what they cost."""

    method: str
    train: np.ndarray
    test: np.ndarray
    fit_seconds: float  # fit on the training images and embed them
    transform_seconds: float  # embed the test images


def flatten(split: Split) -> np.ndarray:
    """Images of a Split as a float32 array (N, pixels), the input every method takes."""
    return as_float(split.x).flatten(1).numpy()


class VaeEncoder:
    """A trained VAE as a transformer: the posterior mean mu of each image. Nothing to fit."""

    def __init__(self, model: VAE, device: torch.device, image_shape: tuple[int, ...] = (1, 28, 28)):
        self.model, self.device, self.image_shape = model.to(device), device, image_shape

    def transform(self, x: np.ndarray) -> np.ndarray:
        images = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).view(-1, *self.image_shape)
        return posterior_means(self.model, Split(images, torch.zeros(len(images), dtype=torch.int64)),
                               self.device)

    def fit_transform(self, x: np.ndarray, y=None) -> np.ndarray:  # y: a Pipeline step's signature
        return self.transform(x)


def uses_vae(name: str) -> bool:
    """Whether method ``name`` needs the trained VAE (``vae`` alone or as a step)."""
    return "vae" in name.split("+")


def make_method(name: str, n_components: int, seed: int, umap_pca: int = 0,
                vae: VaeEncoder | None = None):
    """The transformer for ``name``; UMAP on pixels is preceded by PCA to ``umap_pca`` dims when > 0.

    ``vae+umap`` is the VAE's encoder then UMAP to ``n_components`` (the latent size): UMAP is
    fitted on the training images' posterior means and embeds the test images' means.
    """
    if name == "pca":
        return PCA(n_components, random_state=seed)
    if name in ("umap", "vae+umap"):
        import umap  # ~5 s to import (numba): only when asked for

        reducer = umap.UMAP(n_components=n_components, random_state=seed, transform_seed=seed)
        if name == "vae+umap":
            return make_pipeline(make_method("vae", n_components, seed, vae=vae), reducer)
        return make_pipeline(PCA(umap_pca, random_state=seed), reducer) if umap_pca else reducer
    if name == "vae":
        if vae is None:
            raise ValueError("method 'vae' needs a VaeEncoder")
        return vae
    if name == "pixels":
        return FunctionTransformer()  # identity: the 784 raw pixels, the baseline to beat
    raise ValueError(f"unknown method {name!r}; choose from {METHODS}")


def embed(name: str, method, x_train: np.ndarray, x_test: np.ndarray,
          log: Callable[[str], None] = print) -> Embedding:
    """Fit ``method`` on the training images, transform the test images, time both."""
    log(f"[{name}] fitting on {x_train.shape[0]} training images ...")
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        # umap-learn warns that a random_state makes it single-threaded: reproducibility is the point.
        warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
        train = np.asarray(method.fit_transform(x_train), dtype=np.float32)
    fit_s = time.perf_counter() - t0
    log(f"[{name}] fitted in {fit_s:.1f} s; transforming {x_test.shape[0]} test images ...")
    t0 = time.perf_counter()
    test = np.asarray(method.transform(x_test), dtype=np.float32)
    transform_s = time.perf_counter() - t0
    log(f"[{name}] transformed in {transform_s:.1f} s -> {train.shape[1]} dimensions")
    return Embedding(name, train, test, fit_s, transform_s)


def load_vae(path: str, dataset_type: str | None = None, latent_size: int | None = None
             ) -> tuple[VAE, RunConfig, dict[str, Any]]:
    """The VAE of checkpoint ``path`` and its run's config (runtime.checkpoints.load_model),
    refusing one made for another dataset or latent size than asked (None: the checkpoint's).

    A 2018 checkpoint holds only weights and is taken to be the published one (fc_conv, latent
    10, Fashion-MNIST). Returns the model, the run's config, and facts for the report (dataset,
    epoch, training time).
    """
    ckpt = load_checkpoint(path)
    model, run = load_model(path, ckpt)
    legacy = ckpt.legacy
    if dataset_type is not None and run.dataset_type != dataset_type:
        what = "a 2018 checkpoint, taken to be" if legacy else "was"
        raise VaeLabError(f"{path!r} ({what} trained on {run.dataset_type}) does not match --dataset_type "
                          f"{dataset_type}; pass --dataset_type {run.dataset_type} or another checkpoint")
    if latent_size is not None and latent_size != model.latent_size:
        raise VaeLabError(f"{path!r} has latent size {model.latent_size} but --n_components is "
                          f"{latent_size}; pass --n_components {model.latent_size} so every method "
                          f"embeds in the same dimension")
    if model.conditional:
        raise VaeLabError(f"{path!r} is a conditional VAE: its encoder needs each image's class, so embedding "
                          "the test images would use their labels; compare an unconditional checkpoint")
    history = ckpt.history
    info = {"checkpoint": os.path.abspath(path), "legacy_2018": legacy, "dataset_type": run.dataset_type,
            "model_type": run.model_type, "latent_space_size": model.latent_size, "family": model.family,
            # what is embedded: q(z|x)'s mean; a hierarchical model's top code, not its lower latent map
            "code": (f"posterior mean of the {model.latent_size}-d top code (the lower latent map is not "
                     "embedded)" if model.level_names else
                     f"posterior mean of the {model.latent_size}-d code"),
            "epoch": ckpt.epoch,
            "train_seconds": round(sum(h.get("seconds", 0.0) for h in history), 1) if history else None}
    return model, run, info


def view_2d(train: np.ndarray, seed: int = 42) -> np.ndarray:
    """A 2-D view of an embedding: its first two principal axes (linear, so nothing is invented)."""
    return PCA(2, random_state=seed).fit_transform(train)
