"""FactorVAE's discriminator (Kim & Mnih 2018, Appendix: 6 layers of 1000 units, leaky ReLU 0.2): tells
codes drawn from q(z) from codes permuted per dimension. Trained by --objective factorvae beside the VAE
(losses/disentangling.py) and saved with its optimiser in the run's checkpoint."""
from __future__ import annotations

import torch
from torch import nn

DISC_LAYERS = 6
DISC_UNITS = 1000


class Discriminator(nn.Module):
    """MLP from a code (B, latent) to two logits (B, 2): "from q(z)", "permuted"."""

    def __init__(self, latent: int, units: int = DISC_UNITS, layers: int = DISC_LAYERS):
        super().__init__()
        self.latent = latent
        blocks: list[nn.Module] = []
        width = latent
        for _ in range(layers - 1):
            blocks += [nn.Linear(width, units), nn.LeakyReLU(0.2)]
            width = units
        self.net = nn.Sequential(*blocks, nn.Linear(width, 2))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)
