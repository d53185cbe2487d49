"""Pictures of what a VAE does (one grid builder for TensorBoard and ``--predict``), and the
``--predict`` outputs: those pictures, the latent-space pictures, and the posterior means."""
from __future__ import annotations

import io
import os

import numpy as np
import torch

from datasets import Split, as_float
from evaluation.latent_pictures import write_factor_heatmap, write_latent_map, write_traversals
from evaluation.metrics import posterior_means
from evaluation.samplers import GaussianMixtureSampler
from fileio.atomic import atomic_write
from models import VAE

SAMPLES_PER_ROW = 8  # prior samples: an 8 x 8 grid of 64 codes
INTERPOLATION_STEPS = 10
# --predict's file name of each grid; TensorBoard keeps the 2018 tag "panno" for reconstructions.
FILE_NAMES = {"panno": "reconstructions", "samples": "samples", "samples_gmm": "samples_gmm",
              "class_samples": "class_samples", "interpolations": "interpolations"}


def class_grid_codes(z: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes and labels for a CVAE's per-class grid: row c decodes every code of ``z`` (k, z)
    with class c, so a column shows one style across all classes."""
    k = z.shape[0]
    y = torch.arange(num_classes, device=z.device).repeat_interleave(k)
    return z.repeat(num_classes, 1), y


@torch.no_grad()
def image_grids(model: VAE, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor,
                interpolations: bool = False, z_gmm: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Image grids (CHW tensors in [0, 1], on the CPU) of ``model`` in eval mode.

    - ``panno``: the images ``x`` over their reconstructions (posterior mean decoded);
    - ``samples``: the prior codes ``z`` decoded, 8 per row (a CVAE's row r gets class r);
    - ``samples_gmm`` (when ``z_gmm`` is given): the same for codes of the GMM sampler;
    - ``class_samples`` (CVAE): one row per class, the first 8 codes of ``z`` in each;
    - ``interpolations`` (when asked): linear paths in latent space between the posterior
      means of pairs of ``x`` (a CVAE's row keeps the class of its first image).
    ``y``: the labels of ``x`` (used by a conditional model only).
    """
    from torchvision.utils import make_grid  # here: importing torchvision takes seconds, --help needs none

    model.eval()
    cond = y if model.conditional else None
    grids = {"panno": make_grid(torch.cat([x, model.reconstruct(x, cond)]).cpu(), nrow=x.shape[0], padding=2)}
    rows = SAMPLES_PER_ROW
    y_rows = torch.arange(z.shape[0], device=z.device) // rows % model.num_classes if model.conditional else None
    grids["samples"] = make_grid(model.decode(z, y_rows).cpu(), nrow=rows, padding=2)
    if z_gmm is not None:
        grids["samples_gmm"] = make_grid(model.decode(z_gmm, y_rows).cpu(), nrow=rows, padding=2)
    if model.conditional:
        zc, yc = class_grid_codes(z[:rows], model.num_classes)
        grids["class_samples"] = make_grid(model.decode(zc, yc).cpu(), nrow=rows, padding=2)
    if interpolations:
        steps = torch.linspace(0, 1, INTERPOLATION_STEPS, device=x.device)[None, :, None]
        mu = model.posterior(x, cond)[0]
        a, b = mu[0::2], mu[1::2]
        path = (a[:, None] * (1 - steps) + b[:, None] * steps).reshape(-1, model.latent_size)
        y_path = cond[0::2].repeat_interleave(INTERPOLATION_STEPS) if model.conditional else None
        grids["interpolations"] = make_grid(model.decode(path, y_path).cpu(), nrow=INTERPOLATION_STEPS, padding=2)
    return grids


def fixed_codes(seed: int, model: VAE, device: torch.device, n: int = 64,
                gmm: GaussianMixtureSampler | None = None) -> torch.Tensor:
    """The codes every picture of a run decodes (TensorBoard each epoch, ``--predict``): from
    ``model``'s prior, or from ``gmm``, drawn with a generator seeded by ``seed``."""
    g = torch.Generator().manual_seed(seed)
    z = model.sample_prior(n, g) if gmm is None else gmm.sample(n, g)
    return z.to(device)


def save_png(grid: torch.Tensor, path: str, scale: int = 1) -> None:
    """An image grid (C, H, W) in [0, 1] as a PNG, written atomically; ``scale`` > 1 upscales it
    (nearest neighbour) so that 28-pixel images can be seen on a page."""
    from torchvision.utils import save_image  # here: importing torchvision takes seconds, --help needs none

    if scale > 1:
        grid = torch.nn.functional.interpolate(grid[None], scale_factor=scale, mode="nearest")[0]
    buf = io.BytesIO()
    save_image(grid, buf, format="png")
    atomic_write(path, lambda f: f.write(buf.getvalue()))


def _save_npy(array: np.ndarray, path: str) -> None:
    atomic_write(path, lambda f: np.save(f, array))


@torch.no_grad()
def write_predictions(model: VAE, val: Split, test: Split, out_dir: str, device: torch.device,
                      seed: int = 42, train: Split | None = None, n_show: int = 16,
                      gmm: GaussianMixtureSampler | None = None, class_names: list[str] | None = None
                      ) -> dict[str, str]:
    """Write reconstructions.png, samples.png (and samples_gmm.png with ``gmm``),
    interpolations.png, class_samples.png (CVAE), traversals.png, latent_map.png, on a factor data set
    mi_heatmap.png (and the traversals labelled by factor), and the posterior means *_mu.npy with
    their labels *_y.npy; returns name -> path."""
    os.makedirs(out_dir, exist_ok=True)
    z_gmm = fixed_codes(seed, model, device, gmm=gmm) if gmm is not None else None
    grids = image_grids(model, as_float(val.x[:n_show].to(device)), val.y[:n_show].to(device),
                        fixed_codes(seed, model, device), interpolations=True, z_gmm=z_gmm)
    paths = {}
    for tag, grid in grids.items():
        name = FILE_NAMES[tag]
        paths[name] = os.path.join(out_dir, f"{name}.png")
        save_png(grid, paths[name])
    labels = None
    if val.factors is not None:
        paths["mi_heatmap"] = os.path.join(out_dir, "mi_heatmap.png")
        labels = write_factor_heatmap(model, val, device, paths["mi_heatmap"])
    paths["traversals"] = os.path.join(out_dir, "traversals.png")
    write_traversals(model, val, device, paths["traversals"], labels)
    paths["latent_map"] = os.path.join(out_dir, "latent_map.png")
    write_latent_map(model, val, device, paths["latent_map"], class_names, seed)
    splits = {"val": val, "test": test, **({"train": train} if train is not None else {})}
    for name, split in splits.items():
        paths[f"{name}_mu"] = os.path.join(out_dir, f"{name}_mu.npy")
        paths[f"{name}_y"] = os.path.join(out_dir, f"{name}_y.npy")
        _save_npy(posterior_means(model, split, device), paths[f"{name}_mu"])
        _save_npy(split.y.numpy(), paths[f"{name}_y"])
    return paths
