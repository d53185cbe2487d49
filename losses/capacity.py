"""Annealed capacity (Burgess et al. 2018, "Understanding disentangling in beta-VAE"): reconstruction +
gamma |KL - C|, the capacity C raised linearly from 0 to --capacity_max nats over --capacity_epochs, step
by step, then held (--capacity_weight is gamma)."""
from __future__ import annotations

import torch

from losses.objective import Batch, Forward, Objective, RunSettings, register
from losses.terms import kl_per_dimension


def capacity_at(capacity_max: float, capacity_epochs: float, progress: float) -> float:
    """Burgess et al.'s C after ``progress`` epochs (fractional): linear from 0 to ``capacity_max`` over
    ``capacity_epochs``, then constant."""
    return capacity_max * min(1.0, progress / capacity_epochs)


def capacity_penalty(kl: torch.Tensor, capacity: float, weight: float) -> torch.Tensor:
    """gamma |KL - C| (Burgess et al. 2018, eq. 8): the KL (per image, summed over latents) pulled
    towards the capacity C from either side."""
    return weight * (kl - capacity).abs()


@register("capacity")
class Capacity(Objective):
    """Logs the capacity of each step (train_capacity)."""

    terms = ("capacity",)

    def __init__(self, cfg: RunSettings, model, dataset_size: int = 1, sync=None):
        super().__init__(cfg, model, dataset_size, sync)
        self.capacity_max, self.capacity_epochs = cfg.capacity_max, cfg.capacity_epochs
        self.weight = cfg.capacity_weight

    def step(self, model, forward: Forward, batch: Batch, progress: float
             ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        out = forward(batch.x, batch.noise, batch.y)
        capacity = capacity_at(self.capacity_max, self.capacity_epochs, progress)
        img = self.reconstruction(out.logits, batch.x)
        kl = kl_per_dimension(out.mu, out.logvar).sum()
        penalty = capacity_penalty(kl, capacity, self.weight)
        loss = self.img_w * img + penalty
        return {"loss": loss, "img_loss": img, "kl_loss": kl, "kl_penalty": penalty,
                "kl_weight": torch.tensor(self.kl_w * self.kl_scale(progress), device=loss.device),
                "capacity": torch.tensor(capacity, device=kl.device)}, out.logits
