"""`fcn`: the 2018 configurable fully convolutional encoder/decoder, made to train.

Encoder: three conv blocks (28 -> 28 -> 14 -> 7 pixels) and a 7x7 conv to the latent
code. The first ``split_filter`` blocks are a trunk shared by mu and logvar; the rest are
built twice, once per head. Channels are 16/32/64 times ``model_multiplier``. The decoder
mirrors it with transposed convs. What the 2018 version lacked: a latent code that is a
vector (a 7x7 conv to 1x1, so ``--latent_space_size`` applies) and a logvar head that starts
near zero, so early KL terms do not explode.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from models.base import VAE
from models.family import Family, ModelConfig, register, setting


@dataclass
class FCNConfig(ModelConfig):
    model_type: str = "fcn"
    split_filter: int = setting(2, "fcn: encoder blocks (0-3) shared by the mu and logvar heads before they split",
                                low=0)


def _encoder_blocks(in_ch: int, m: int) -> list[nn.Module]:
    c1, c2, c3 = 16 * m, 32 * m, 64 * m
    return [
        nn.Sequential(nn.Conv2d(in_ch, c1, 3, padding=1), nn.ReLU()),  # 28x28
        nn.Sequential(nn.Conv2d(c1, c2, 4, stride=2, padding=1), nn.ReLU()),  # 14x14
        nn.Sequential(nn.Conv2d(c2, c3, 4, stride=2, padding=1), nn.ReLU()),  # 7x7
    ]


class FCNVAE(VAE):
    N_BLOCKS = 3

    def build(self, cfg: FCNConfig) -> None:
        if not 0 <= cfg.split_filter <= self.N_BLOCKS:
            raise ValueError(f"split_filter must be in [0, {self.N_BLOCKS}]")
        if cfg.image_size != 28:
            raise ValueError("fcn is built for 28x28 images")
        z = self.latent_size
        m, c = cfg.model_multiplier, cfg.image_channels
        k = cfg.split_filter
        if cfg.conditional and k == 0:
            raise ValueError("a conditional fcn needs split_filter >= 1 (the label joins the shared first block)")
        self.trunk = nn.Sequential(*_encoder_blocks(c, m)[:k])
        self.mu_head = nn.Sequential(*_encoder_blocks(c, m)[k:], nn.Conv2d(64 * m, z, 7))
        self.logvar_head = nn.Sequential(*_encoder_blocks(c, m)[k:], nn.Conv2d(64 * m, z, 7))
        self._setup_conditioning(cfg, 16 * m)
        nn.init.zeros_(self.logvar_head[-1].weight)
        nn.init.zeros_(self.logvar_head[-1].bias)
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(cfg.decoder_input_size, 64 * m, 7), nn.ReLU(),  # 1 -> 7
            nn.ConvTranspose2d(64 * m, 32 * m, 4, stride=2, padding=1), nn.ReLU(),  # 14
            nn.ConvTranspose2d(32 * m, 16 * m, 4, stride=2, padding=1), nn.ReLU(),  # 28
            nn.Conv2d(16 * m, c, 3, padding=1),
        )

    def _encode(self, x, y):
        if self.conditional:  # the class vector joins the first block's pre-activation
            first = self.trunk[0]
            h = self.trunk[1:](first[1](self.label_bias(first[0](x), y)))
        else:
            h = self.trunk(x)
        return self.mu_head(h).flatten(1), self.logvar_head(h).flatten(1)

    def _decode(self, z):
        return self.decoder(z[:, :, None, None])


def _check(run: Any) -> str | None:
    """The run's settings (config.RunConfig) that fcn cannot build."""
    if run.split_filter > FCNVAE.N_BLOCKS:
        return f"--split_filter must be in [0, {FCNVAE.N_BLOCKS}] for fcn, got {run.split_filter}"
    if run.conditional and run.split_filter == 0:
        return "--conditional True with fcn needs --split_filter >= 1 (the class joins the shared block)"
    return None


register(Family("fcn", FCNVAE, "configurable conv encoder/decoder", config=FCNConfig, check=_check,
                channels_last_faster=True, bf16_faster=True))
