"""``--predict``: pictures of what a trained VAE does, and its posterior means for later use."""
from __future__ import annotations

import os

import numpy as np
import torch
from torchvision.utils import save_image

from datasets import Split
from models import VAE


def _labels(model: VAE, y: torch.Tensor, device: torch.device) -> torch.Tensor | None:
    """The labels a conditional model needs, None for an unconditional one."""
    return y.to(device) if model.conditional else None


def class_grid_codes(z: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes and labels for a CVAE's per-class grid: row c decodes every code of ``z`` (k, z)
    with class c, so a column shows one style across all classes."""
    k = z.shape[0]
    y = torch.arange(num_classes, device=z.device).repeat_interleave(k)
    return z.repeat(num_classes, 1), y


@torch.no_grad()
def posterior_means(model: VAE, data: Split, device: torch.device, batch_size: int = 2000) -> np.ndarray:
    """The encoder's mu for every image of ``data``, shape (N, z) (a CVAE's given the true class)."""
    model.eval()
    out = [model.encode(data.x[i:i + batch_size].to(device),
                        _labels(model, data.y[i:i + batch_size], device))[0].cpu()
           for i in range(0, len(data), batch_size)]
    return torch.cat(out).numpy()


@torch.no_grad()
def write_predictions(model: VAE, val: Split, test: Split, out_dir: str, device: torch.device,
                      seed: int = 42, train: Split | None = None, n_show: int = 16) -> dict[str, str]:
    """Write reconstructions.png, samples.png, interpolations.png and *_mu.npy / *_y.npy;
    for a conditional model also class_samples.png (one row per class)."""
    os.makedirs(out_dir, exist_ok=True)
    model.eval()
    paths = {}
    x = val.x[:n_show].to(device)
    recon = torch.sigmoid(model(x, y=_labels(model, val.y[:n_show], device))[0])
    paths["reconstructions"] = os.path.join(out_dir, "reconstructions.png")
    save_image(torch.cat([x, recon]), paths["reconstructions"], nrow=n_show, padding=2)  # top: originals

    g = torch.Generator().manual_seed(seed)
    z = torch.randn(64, model.latent_size, generator=g).to(device)
    paths["samples"] = os.path.join(out_dir, "samples.png")
    # A CVAE's sample needs a class: row r of the 8x8 grid gets class r.
    y_rows = torch.arange(64, device=device) // 8 % model.num_classes if model.conditional else None
    save_image(model.decode(z, y_rows), paths["samples"], nrow=8, padding=2)
    if model.conditional:
        zc, yc = class_grid_codes(z[:8], model.num_classes)
        paths["class_samples"] = os.path.join(out_dir, "class_samples.png")
        save_image(model.decode(zc, yc), paths["class_samples"], nrow=8, padding=2)

    # Rows: linear paths in latent space between the means of pairs of validation images.
    steps = torch.linspace(0, 1, 10, device=device)[None, :, None]
    mu = model.encode(val.x[:16].to(device), _labels(model, val.y[:16], device))[0]
    a, b = mu[0::2], mu[1::2]  # 8 pairs
    path = (a[:, None] * (1 - steps) + b[:, None] * steps).reshape(-1, model.latent_size)
    # a CVAE's row keeps the class of its first image
    y_path = val.y[:16:2].to(device).repeat_interleave(10) if model.conditional else None
    paths["interpolations"] = os.path.join(out_dir, "interpolations.png")
    save_image(model.decode(path, y_path), paths["interpolations"], nrow=10, padding=2)

    splits = {"val": val, "test": test, **({"train": train} if train is not None else {})}
    for name, split in splits.items():
        paths[f"{name}_mu"] = os.path.join(out_dir, f"{name}_mu.npy")
        paths[f"{name}_y"] = os.path.join(out_dir, f"{name}_y.npy")
        np.save(paths[f"{name}_mu"], posterior_means(model, split, device))
        np.save(paths[f"{name}_y"], split.y.numpy())
    return paths
