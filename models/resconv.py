"""`resconv`: a residual conv VAE with batch normalisation, sized for a CPU budget.

Encoder: two stride-2 convs (28 -> 14 -> 7 pixels), a residual block at 7x7 and an MLP
head to (mu, logvar). Decoder: an MLP from z to a 7x7 feature map, then residual blocks
and transposed convs back up to 28x28, and a 3x3 conv to pixel logits. Channels are
16 and 32 times ``model_multiplier``. Other sizes get as many stride-2 stages as bring them
to 8 pixels or fewer (32 -> 8 in two, 64 -> 8 in three, 128 -> 8 in four); the extra stages
are 32-channel convs (and transposed convs) next to the others. Any channel count.

Why this shape: on a 2-core CPU the cost of a conv layer grows with its resolution, so
the full-resolution work is one cheap conv at each end, and the capacity sits in the MLP
layers and at 7x7 and 14x14. Batch normalisation lets Adam train it fast at a large
learning rate; the residual connections keep the decoder easy to optimise. The decoder's
conv layers model local structure (edges, texture) that an MLP decoder blurs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.base import VAE
from models.family import Family, ModelConfig, register


class ResidualBlock(nn.Module):
    """x + BN(conv(SiLU(BN(conv(x))))), then SiLU: two 3x3 convs at constant width."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(x + self.body(x))


def down_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.SiLU())


def up_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=False),
                         nn.BatchNorm2d(c_out), nn.SiLU())


def stages(image_size: int) -> int | None:
    """Stride-2 stages that take ``image_size`` to 8 pixels or fewer (at least 2), or None when
    a stage would meet an odd size (the transposed convs could not give it back)."""
    k = 2
    while image_size / 2 ** k > 8:
        k += 1
    return k if image_size % 2 ** k == 0 else None


def size_problem(image_size: int) -> str | None:
    """Why resconv's stages (and those of the families built on them) cannot take ``image_size`` pixels a
    side, or None."""
    if image_size < 8 or stages(image_size) is None:
        return ("their stride-2 stages need a size that halves evenly down to 8 pixels or fewer, e.g. 28, 32, 48, "
                "64, 96, 128")
    return None


class ResConvVAE(VAE):
    HIDDEN = 512

    def build(self, cfg: ModelConfig) -> None:
        hidden = self.HIDDEN
        k = stages(cfg.image_size)
        if k is None or cfg.image_size < 8:
            raise ValueError(f"resconv cannot be built for {cfg.image_size}x{cfg.image_size} images: its stride-2 "
                             "stages need a size that halves evenly down to 8 pixels or fewer "
                             "(e.g. 28, 32, 48, 64, 128)")
        z = self.latent_size
        c1, c2 = 16 * cfg.model_multiplier, 32 * cfg.model_multiplier
        self.c2, self.side = c2, cfg.image_size // 2 ** k
        self.enc_conv = nn.Sequential(
            nn.Conv2d(cfg.image_channels, c1, 4, stride=2, padding=1, bias=False),  # 28 -> 14
        )
        self.enc_body = nn.Sequential(
            nn.BatchNorm2d(c1), nn.SiLU(),
            down_block(c1, c2),  # 14 -> 7
            *[down_block(c2, c2) for _ in range(k - 2)],  # larger images: down to 8 or fewer
            ResidualBlock(c2),
            nn.Flatten(), nn.Linear(c2 * self.side ** 2, hidden), nn.SiLU(),
        )
        self.mu = nn.Linear(hidden, z)
        self.logvar = nn.Linear(hidden, z)
        # logvar starts at 0 (posterior = prior width): no huge early KL terms
        nn.init.zeros_(self.logvar.weight)
        nn.init.zeros_(self.logvar.bias)
        self.dec_fc = nn.Sequential(
            nn.Linear(cfg.decoder_input_size, hidden), nn.SiLU(),
            nn.Linear(hidden, c2 * self.side ** 2), nn.SiLU(),
        )
        self.dec_conv = nn.Sequential(
            ResidualBlock(c2),
            *[up_block(c2, c2) for _ in range(k - 2)],
            up_block(c2, c1),  # 7 -> 14
            ResidualBlock(c1),
            up_block(c1, c1),  # 14 -> 28
            nn.Conv2d(c1, cfg.output_channels, 3, padding=1),
        )
        self._setup_conditioning(cfg, c1)

    def _encode(self, x, y):
        h = self.enc_body(self.label_bias(self.enc_conv(x), y))
        return self.mu(h), self.logvar(h)

    def _decode(self, z):
        return self.dec_conv(self.dec_fc(z).view(-1, self.c2, self.side, self.side))


register(Family("resconv", ResConvVAE, "residual conv encoder/decoder with batch normalisation, the quality model "
                "(benchmarks/quality.md; --model_multiplier scales its 16/32 channels)", any_shape=True,
                size_problem=size_problem, channels_last_faster=True, bf16_faster=True))
