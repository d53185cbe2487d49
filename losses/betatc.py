"""beta-TCVAE (Chen et al. 2018, "Isolating sources of disentanglement in VAEs"): the KL split into
index-code mutual information, total correlation and dimension-wise KL, each estimated on the minibatch at
the sampled codes; the TC weighted by --tc_weight (beta), the others by --kl_loss_weight, all by the KL
warm-up."""
from __future__ import annotations

import math

import torch

from losses.objective import Batch, Forward, Objective, RunSettings, register
from losses.terms import kl_per_dimension

_LOG_2PI = math.log(2 * math.pi)


def gaussian_log_density(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, exp(logvar)) per dimension, broadcast over the leading shapes."""
    return -0.5 * (_LOG_2PI + logvar + (z - mu).pow(2) * torch.exp(-logvar))


def tc_decomposition(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, dataset_size: int
                     ) -> dict[str, torch.Tensor]:
    """Chen et al.'s split of the KL: index-code mutual information E[log q(z|x) - log q(z)], total
    correlation E[log q(z) - sum_j log q(z_j)] and dimension-wise KL E[sum_j log q(z_j) - log p(z)], at
    the codes ``z`` (B, D) sampled from q(z|x) = N(mu, exp(logvar)), with p = N(0, I).

    The aggregate posterior q(z_i) = 1/N sum_n q(z_i|x_n) (N ``dataset_size``) is estimated on the minibatch
    of M codes by weighting q(z_i|x_i) (the code's own image: exact) by 1/N and each other image's
    q(z_i|x_j) by (N - 1) / (N (M - 1)): those M - 1 images are a uniform sample of the other N - 1, so the
    sum is unbiased inside the log (Chen et al.'s minibatch stratified sampling in intent, Appendix C; this
    form is ours, and exact when the minibatch is the whole data set). Each marginal q(z_ij) likewise. The
    three terms sum to the sampled KL E[log q(z|x) - log p(z)] exactly."""
    m = z.shape[0]
    pairs = gaussian_log_density(z.unsqueeze(1), mu.unsqueeze(0), logvar.unsqueeze(0))  # (i, j, d)
    own = torch.eye(m, dtype=torch.bool, device=z.device)
    log_w = torch.full((m, m), math.log((dataset_size - 1) / (dataset_size * max(m - 1, 1))) if dataset_size > 1
                       else -math.inf, device=z.device, dtype=z.dtype)
    log_w = log_w.masked_fill(own, -math.log(dataset_size))
    log_qz = torch.logsumexp(pairs.sum(2) + log_w, dim=1)
    log_qz_dims = torch.logsumexp(pairs + log_w.unsqueeze(2), dim=1).sum(1)
    log_qz_x = gaussian_log_density(z, mu, logvar).sum(1)
    log_pz = (-0.5 * (_LOG_2PI + z.pow(2))).sum(1)
    return {"mi": (log_qz_x - log_qz).mean(), "tc": (log_qz - log_qz_dims).mean(),
            "dim_kl": (log_qz_dims - log_pz).mean()}


@register("betatc")
class BetaTC(Objective):
    """Draws the noise itself (float32, whatever the forward's precision): the terms need the codes the
    decoder saw. ``dataset_size``: the training set's, for the estimator."""

    terms = ("mi", "tc", "dim_kl")

    def __init__(self, cfg: RunSettings, model, dataset_size: int = 1, sync=None):
        super().__init__(cfg, model, dataset_size, sync)
        self.tc_weight = cfg.tc_weight

    def step(self, model, forward: Forward, batch: Batch, progress: float
             ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        noise = batch.noise if batch.noise is not None else sampled_noise(model, batch.x)
        out = forward(batch.x, noise, batch.y)
        z = out.code_at(noise)
        img = self.reconstruction(out.logits, batch.x)
        kl = kl_per_dimension(out.mu, out.logvar).sum()
        kl_scale = self.kl_scale(progress)
        kl_w = self.kl_w * kl_scale
        terms = tc_decomposition(z, out.mu, out.logvar, self.dataset_size)
        penalty = kl_w * (terms["mi"] + terms["dim_kl"]) + self.tc_weight * kl_scale * terms["tc"]
        loss = self.img_w * img + penalty
        return {"loss": loss, "img_loss": img, "kl_loss": kl, "kl_penalty": penalty,
                "kl_weight": torch.tensor(kl_w, device=loss.device), **terms}, out.logits


def sampled_noise(model, x: torch.Tensor) -> torch.Tensor:
    """The minibatch's reparameterisation noise (B, noise_size), float32 from the global RNG, drawn here rather
    than by the model when an objective's terms need the codes (beta-TCVAE, FactorVAE)."""
    return torch.randn(x.shape[0], model.noise_size, device=x.device)
