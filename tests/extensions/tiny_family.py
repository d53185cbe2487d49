"""A model family written outside the tree's lists, in this one file, to prove that a family needs nothing
else: an MLP VAE with one hidden layer each way, whose width is its own setting (and so its own flag,
--tiny_hidden). tests/test_extend_family.py registers it (models.register) and trains, resumes, evaluates
and predicts with it."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models import VAE, Family, ModelConfig, setting


@dataclass
class TinyConfig(ModelConfig):
    model_type: str = "tiny"
    tiny_hidden: int = setting(16, "tiny: hidden units of its encoder and decoder", low=1, high=1024)


class TinyVAE(VAE):
    def build(self, cfg: TinyConfig) -> None:
        c, s, h = cfg.image_channels, cfg.image_size, cfg.tiny_hidden
        self.enc = nn.Linear(c * s * s, h)
        self.mu, self.logvar = nn.Linear(h, self.latent_size), nn.Linear(h, self.latent_size)
        self.dec = nn.Sequential(nn.Linear(cfg.decoder_input_size, h), nn.ReLU(),
                                 nn.Linear(h, cfg.output_channels * s * s))
        self.out_shape = (cfg.output_channels, s, s)
        self._setup_conditioning(cfg, h)

    def _encode(self, x: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.relu(self.label_bias(self.enc(x.flatten(1)), y))
        return self.mu(h), self.logvar(h)

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.dec(z).view(-1, *self.out_shape)


FAMILY = Family("tiny", TinyVAE, "one hidden layer of --tiny_hidden units each way (tests/extensions)",
                config=TinyConfig, any_shape=True)
