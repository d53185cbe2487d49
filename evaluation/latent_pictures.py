"""Pictures of the latent space (``--predict``): traversals and the 2-D latent map; on a factor data
set also the latent x factor mutual-information heat map, and traversals labelled with the factor each
latent carries.

Both are placed in units of the aggregate posterior q(z) = mean over images of q(z|x), whose
per-dimension variance is Var(mu_j) + E[sigma_j^2]: where the decoder has seen codes.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from datasets import Split
from evaluation.disentanglement import factor_entropies, mutual_information
from evaluation.metrics import batches
from fileio.atomic import write_figure
from losses import kl_per_dimension
from models import VAE

TRAVERSAL_STEPS = np.linspace(-3.0, 3.0, 7)  # in aggregate-posterior std of the swept dimension
TRAVERSAL_IMAGES = 3
MAP_SIDE = 15  # the latent map decodes MAP_SIDE x MAP_SIDE codes
MAP_POINTS = 5000  # validation means drawn beside it
# a latent "carries" the factor it shares most information with, when that is at least this share of the
# factor's entropy (below it the row is labelled with no factor)
CARRIES = 0.1


@torch.no_grad()
def posterior_stats(model: VAE, data: Split, device: torch.device, batch_size: int = 2000
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Over ``data``: the posterior means (N, d) on the CPU, the aggregate posterior's mean and
    std per dimension (d,), and the KL per dimension (d,), nats per image."""
    model.eval()
    mus, logvars = [], []
    for x, y in batches(data, batch_size, device, model.conditional):
        mu, logvar = model.posterior(x, y)
        mus.append(mu.cpu())
        logvars.append(logvar.cpu())
    mu, logvar = torch.cat(mus), torch.cat(logvars)
    std = (mu.var(0, unbiased=False) + logvar.exp().mean(0)).sqrt()
    return mu, mu.mean(0), std, kl_per_dimension(mu, logvar)


def traversal_codes(base: torch.Tensor, centre: torch.Tensor, std: torch.Tensor, dims: Sequence[int],
                    steps: Sequence[float] = TRAVERSAL_STEPS) -> torch.Tensor:
    """Codes (len(dims) * len(steps), d): row r sweeps dimension dims[r] over
    centre + step * std while every other dimension keeps ``base``'s value."""
    rows = []
    for j in dims:
        codes = base.repeat(len(steps), 1)
        codes[:, j] = centre[j] + torch.as_tensor(steps, dtype=base.dtype) * std[j]
        rows.append(codes)
    return torch.cat(rows)


def _grid(images: torch.Tensor, nrow: int) -> np.ndarray:
    from torchvision.utils import make_grid  # here: importing torchvision takes seconds, --help needs none

    return make_grid(images.cpu(), nrow=nrow, padding=2, pad_value=1.0).permute(1, 2, 0).numpy()


@torch.no_grad()
def write_traversals(model: VAE, val: Split, device: torch.device, path: str,
                     labels: dict[int, str] | None = None) -> dict:
    """traversals.png: for the first validation images, every latent dimension swept from -3 to
    +3 aggregate-posterior stds, the others fixed; rows ordered by KL (the active ones first), each
    named with ``labels[j]`` when given (the factor it carries). Returns the KL per dimension and the order."""
    from matplotlib.figure import Figure  # here: ~1 s, only the figures need it

    mu, centre, std, kl = posterior_stats(model, val, device)
    order = torch.argsort(kl, descending=True).tolist()
    n = min(TRAVERSAL_IMAGES, len(val))
    fig = Figure(figsize=(3.2 * n + 1.2, 0.45 * len(order) + 1.0), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, n))
    side = val.x.shape[-1] + 2
    for i, ax in enumerate(axes):
        codes = traversal_codes(mu[i], centre, std, order).to(device)
        y = val.y[i].repeat(len(codes)).to(device) if model.conditional else None
        ax.imshow(_grid(model.decode(codes, y), len(TRAVERSAL_STEPS)), interpolation="nearest")
        ax.set_xticks([side * (k + 0.5) for k in range(len(TRAVERSAL_STEPS))],
                      [f"{s:+.1f}" for s in TRAVERSAL_STEPS], fontsize=6)
        ax.set_yticks([side * (r + 0.5) for r in range(len(order))],
                      [f"z{j}  KL {kl[j]:.2f}" + (f"  {labels[j]}" if labels else "") if i == 0 else ""
                       for r, j in enumerate(order)], fontsize=7)
        ax.set_title(f"validation image {i}", fontsize=9)
    fig.suptitle("Latent traversals: each row sweeps one dimension (aggregate-posterior stds), "
                 "rows by KL per dimension (nats)", fontsize=9)
    write_figure(fig, path, dpi=100)
    return {"kl_per_dimension": kl.tolist(), "order": order}


def latent_plane(mu: torch.Tensor, centre: torch.Tensor, std: torch.Tensor, seed: int = 42
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[str, str]]:
    """The plane the latent map shows, from posterior means ``mu`` (N, d), their ``centre`` and the
    aggregate posterior's ``std`` (d,): its axes (2, d), the means' coordinates on it (N, 2), the
    spread of each coordinate (2,) and the axes' names. z itself for a 2-d code, else the first two
    principal axes of the means; a point p of the plane is the code ``centre + p @ axes``."""
    if mu.shape[1] == 2:
        labels = (f"z0 - {float(centre[0]):.2f} (its mean)", f"z1 - {float(centre[1]):.2f} (its mean)")
        return torch.eye(2, dtype=mu.dtype), mu - centre, std, labels
    from sklearn.decomposition import PCA  # here: importing sklearn costs ~1 s of every run's start-up

    pca = PCA(2, random_state=seed).fit(mu.numpy())
    axes_2d = torch.from_numpy(pca.components_).to(mu.dtype)  # (2, d)
    plane = (mu - centre) @ axes_2d.T
    labels = (f"PC1 ({pca.explained_variance_ratio_[0]:.0%} of the means' variance)",
              f"PC2 ({pca.explained_variance_ratio_[1]:.0%})")
    return axes_2d, plane, plane.std(0), labels


@torch.no_grad()
@torch.no_grad()
def write_factor_heatmap(model: VAE, data: Split, device: torch.device, path: str) -> dict[int, str]:
    """mi_heatmap.png: I(z_j; v_k) / H(v_k) of ``data``'s posterior means and factors (MI as MIG measures
    it: 20 bins per latent, evaluation/disentanglement.py), latents in rows by KL. Returns each latent's
    label for the traversals: the factor it carries and the share, or "-" when none reaches CARRIES."""
    from matplotlib.figure import Figure  # here: ~1 s, only the figures need it

    mu, _, _, kl = posterior_stats(model, data, device)
    factors = data.factors.numpy()
    share = mutual_information(mu.numpy(), factors) / np.maximum(factor_entropies(factors), 1e-12)
    order = torch.argsort(kl, descending=True).tolist()
    names = data.factor_names
    fig = Figure(figsize=(1.1 * len(names) + 2.2, 0.4 * len(order) + 1.4), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(share[order], cmap="viridis", vmin=0, vmax=1, aspect="auto")
    for r, j in enumerate(order):
        for k in range(len(names)):
            ax.text(k, r, f"{share[j, k]:.2f}", ha="center", va="center", fontsize=7,
                    color="black" if share[j, k] > 0.5 else "white")
    ax.set_xticks(range(len(names)), names, fontsize=8)
    ax.set_yticks(range(len(order)), [f"z{j}  KL {kl[j]:.2f}" for j in order], fontsize=7)
    fig.colorbar(im, ax=ax, label="I(z_j; factor) / H(factor)")
    fig.suptitle(f"What each latent knows of each factor ({len(mu)} validation images)", fontsize=9)
    write_figure(fig, path, dpi=100)
    best = share.argmax(axis=1)
    return {j: f"{names[best[j]]} {share[j, best[j]]:.2f}" if share[j, best[j]] >= CARRIES else "-"
            for j in range(len(share))}


def write_latent_map(model: VAE, val: Split, device: torch.device, path: str,
                     class_names: Sequence[str] | None = None, seed: int = 42) -> dict:
    """latent_map.png: codes on a grid over the latent plane decoded, beside the validation
    means coloured by class. The plane is z itself for a 2-d code, else the first two
    principal axes of the means (the other directions at the means' centre)."""
    from matplotlib.figure import Figure  # here: ~1 s, only the figures need it

    mu, centre, std, _ = posterior_stats(model, val, device)
    d = mu.shape[1]
    axes_2d, plane, spread, labels = latent_plane(mu, centre, std, seed)
    ticks = torch.linspace(-3, 3, MAP_SIDE, dtype=mu.dtype)
    a, b = torch.meshgrid(ticks * spread[0], ticks.flip(0) * spread[1], indexing="xy")  # top row: high b
    coords = torch.stack([a.flatten(), b.flatten()], 1)
    codes = (centre + coords @ axes_2d).to(device)
    y = None
    if model.conditional:  # each grid point takes the class of the nearest validation mean
        y = val.y[torch.cdist(coords, plane).argmin(1)].to(device)
    fig = Figure(figsize=(11, 5.2), layout="constrained")
    left, right = fig.subplots(1, 2)
    extent = (-3 * float(spread[0]), 3 * float(spread[0]), -3 * float(spread[1]), 3 * float(spread[1]))
    left.imshow(_grid(model.decode(codes, y), MAP_SIDE), extent=extent, interpolation="nearest", aspect="auto")
    left.set_title("decoded on a grid over the plane", fontsize=9)
    show = np.random.default_rng(seed).permutation(len(mu))[:MAP_POINTS]
    classes = val.y.numpy()[show]
    right.scatter(plane[show, 0].numpy(), plane[show, 1].numpy(), c=[f"C{c % 10}" for c in classes], s=2, alpha=0.6,
                  linewidths=0, rasterized=True)
    right.set_xlim(extent[0], extent[1])
    right.set_ylim(extent[2], extent[3])
    right.set_title(f"validation posterior means ({len(show):,}), by class", fontsize=9)
    if class_names is not None:
        from matplotlib.lines import Line2D  # here, as Figure above

        right.legend(handles=[Line2D([], [], ls="", marker="o", color=f"C{i}", label=n)
                              for i, n in enumerate(class_names)], fontsize=7, loc="upper right")
    for ax in (left, right):
        ax.set_xlabel(labels[0], fontsize=8)
        ax.set_ylabel(labels[1], fontsize=8)
    fig.suptitle(f"The latent plane ({d}-d code" + (")" if d == 2 else ", first two principal axes of the means)"),
                 fontsize=10)
    write_figure(fig, path, dpi=90)
    return {"plane": "z" if d == 2 else "pca", "spread": spread.tolist()}
