"""The objectives of --objective besides the ELBO: annealed capacity (Burgess et al. 2018), beta-TCVAE
(Chen et al. 2018) and FactorVAE (Kim & Mnih 2018). beta-VAE (Higgins et al. 2017) is the ELBO with
--kl_loss_weight above 1.

Reductions as in losses/vae_loss.py: every term is per image (nats), averaged over the minibatch.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

OBJECTIVES = ("elbo", "capacity", "betatc", "factorvae")
_LOG_2PI = math.log(2 * math.pi)


def capacity_at(capacity_max: float, capacity_epochs: float, epoch: int, batch: int, n_batches: int) -> float:
    """Burgess et al.'s C at minibatch ``batch`` of ``epoch`` (0-based): linear from 0 to ``capacity_max``
    over ``capacity_epochs``, then constant."""
    return capacity_max * min(1.0, (epoch + batch / n_batches) / capacity_epochs)


def capacity_penalty(kl: torch.Tensor, capacity: float, weight: float) -> torch.Tensor:
    """gamma |KL - C| (Burgess et al. 2018, eq. 8): the KL (per image, summed over latents) pulled
    towards the capacity C from either side."""
    return weight * (kl - capacity).abs()


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


def permute_dims(z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each column of ``z`` (B, D) shuffled on its own (Kim & Mnih, Algorithm 1): samples of the product of
    the marginals prod_j q(z_j), where the rows of ``z`` are samples of q(z)."""
    b, d = z.shape
    order = torch.argsort(torch.rand(b, d, generator=generator, device="cpu"), dim=0).to(z.device)
    return torch.gather(z, 0, order)


def discriminator_tc(logits: torch.Tensor) -> torch.Tensor:
    """Kim & Mnih's TC estimate E[log D(z) - log(1 - D(z))] from the discriminator's logits (B, 2), column
    0 "from q(z)", column 1 "from the product of marginals": the mean difference of the two logits."""
    return (logits[:, 0] - logits[:, 1]).mean()


def discriminator_loss(logits_joint: torch.Tensor, logits_permuted: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of telling codes (class 0) from permuted codes (class 1), mean of the two halves."""
    zeros = torch.zeros(len(logits_joint), dtype=torch.long, device=logits_joint.device)
    ones = torch.ones(len(logits_permuted), dtype=torch.long, device=logits_permuted.device)
    return 0.5 * (F.cross_entropy(logits_joint, zeros) + F.cross_entropy(logits_permuted, ones))
