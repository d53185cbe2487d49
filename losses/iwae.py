"""The importance-weighted bound (IWAE, Burda, Grosse & Salakhutdinov 2016) as a training objective
(--iw_train K), and the log-weights it is made of, which the evaluation's bound (evaluation/likelihood.py)
and the anomaly scores share."""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from losses.likelihoods import pixel_nll
from losses.objective import Batch, Forward, Objective, RunSettings
from losses.terms import kl_divergence


def log_weights(model, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor,
                y: torch.Tensor | None = None, terms: Callable | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The importance log-weights log p(x|z_k) + log p(z_k) - log q(z_k|x) of the codes
    z_k = mu + eps_k * sigma, shape (K, B), the reconstruction terms -log p(x|z_k) (K, B), the
    decoded pixel logits (K, B, C, H, W), and log p(z_k) - log q(z_k|x) per latent level (K, B, L).

    ``model``: a VAE (models/base.py); ``eps``: (K, B, model.noise_size). Differentiable: the IWAE bound and
    the training objective of ``--iw_train`` (:class:`IWAE`) are both made of it. ``y``: labels of a
    conditional model. ``terms``: the model's method that draws the codes and decodes them (default
    ``importance_terms``; the anomaly scores pass a hierarchical model's ``top_only_terms``).
    """
    k = eps.shape[0]
    ratios, logits = (terms or model.importance_terms)(x, mu, logvar, eps, y)
    # -log p(x|z) summed over pixels, under the model's likelihood (the training loss's term);
    # the expanded x is a view, not K copies.
    nll = pixel_nll(model.likelihood, logits, x.expand(k, *x.shape), model.log_scale).flatten(2).sum(-1)
    return ratios.sum(-1) - nll, nll, logits, ratios


class IWAE(Objective):
    """``--iw_train K``: the loss is the IWAE bound -(logsumexp_k log w_k - log K) with K codes per image drawn
    from the global RNG (as the ELBO's one code is), mean over images; ``elbo`` is the same samples' mean
    -log w_k, the ordinary ELBO (sampled KL), with a hierarchical model's KL per level (the samples' estimate
    of each). Single process, eager, float32 (config/checks.py): it calls the plain model's methods."""

    def __init__(self, cfg: RunSettings, model, dataset_size: int = 1, sync=None):
        super().__init__(cfg, model, dataset_size, sync)
        self.k = cfg.iw_train

    def logged_terms(self, levels: tuple[str, ...]) -> tuple[str, ...]:
        return ("kl_weight", "kl_penalty", "elbo") + levels

    def step(self, model, forward: Forward, batch: Batch, progress: float
             ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        return iw_terms(model, batch.x, batch.y, self.k)


def iw_terms(model, x: torch.Tensor, y: torch.Tensor | None, k: int) -> tuple[dict[str, torch.Tensor],
                                                                             torch.Tensor]:
    """:class:`IWAE`'s terms of images ``x`` with ``k`` codes each, and the first sample's logits."""
    mu, logvar = model.posterior(x, y)
    eps = torch.randn(k, mu.shape[0], model.noise_size, device=mu.device, dtype=mu.dtype)
    lw, nll, logits, ratios = log_weights(model, x, mu, logvar, eps, y)
    # logged: the closed form, or the samples' estimate E[log q - log p] (VampPrior, hierarchical)
    kl = kl_divergence(mu, logvar) if model.analytic_kl else -ratios.sum(-1).mean()
    terms = {"loss": -(torch.logsumexp(lw, 0) - math.log(k)).mean(), "img_loss": nll.mean(), "kl_loss": kl,
             "kl_penalty": kl, "kl_weight": torch.ones((), device=x.device), "elbo": -lw.mean(),
             **{level: -ratios[..., j].mean() for j, level in enumerate(model.level_names)}}
    return terms, logits[0]
