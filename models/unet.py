"""`unet`: the fcn encoder-decoder with skip connections across the bottleneck (a 2018 failure).

Encoder: the fcn blocks (28 -> 28 -> 14 -> 7 pixels, 16/32/64 channels) and 7x7 convs to mu
and logvar. Decoder: the fcn decoder, except that before each of its layers at 7, 14 and 28
pixels the encoder's feature maps of that resolution can be concatenated (``skips``). With no
skips it is the fcn model with ``split_filter 3``, layer for layer. With skips, the decoder
sees the input through a path that bypasses the latent code, so reconstructions can be good
while the code carries little: the 2018 README's "UNet inspired architectures" that did not work.
Decoding a code alone (prior samples, interpolations) has no encoder maps: they are zeros.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.base import LOGVAR_MAX, LOGVAR_MIN, VAE, ModelConfig, ModelOutput, float32, float32_region
from models.family import Family, register, setting
from models.fcn import _encoder_blocks

RESOLUTIONS = (7, 14, 28)
WIDTHS = {7: 64, 14: 32, 28: 16}  # encoder channels at each resolution


def parse_skips(text: str) -> tuple[int, ...]:
    """``none`` / ``coarsest`` / ``all`` / e.g. ``7,14`` -> the skipped resolutions, sorted."""
    named = {"none": (), "": (), "coarsest": (7,), "all": RESOLUTIONS}
    if text in named:
        return named[text]
    try:
        res = tuple(sorted({int(v) for v in text.split(",")}))
    except ValueError:
        raise ValueError(f"skips must be none, coarsest, all or resolutions from {RESOLUTIONS}, got {text!r}") from None
    if not res or not set(res) <= set(RESOLUTIONS):
        raise ValueError(f"skips must be none, coarsest, all or resolutions from {RESOLUTIONS}, got {text!r}")
    return res


def skips_setting(text: str) -> str:
    """``--unet_skips``: checked by :func:`parse_skips` (ValueError), kept as the text."""
    parse_skips(text)
    return text


@dataclass
class UNetConfig(ModelConfig):
    model_type: str = "unet"
    unet_skips: str = setting("all", "unet: the resolutions (7, 14, 28 pixels) whose encoder maps the decoder also "
                                     "gets: none, coarsest (7), all, or a list such as 7,14", parse=skips_setting)


class UNetVAE(VAE):
    def build(self, cfg: UNetConfig) -> None:
        if cfg.image_size != 28 or cfg.conditional or cfg.model_multiplier != 1:
            raise ValueError("unet is built for 28x28 images, unconditional, multiplier 1")
        z = self.latent_size
        self.skips = parse_skips(cfg.unet_skips)
        c = cfg.image_channels
        self.trunk = nn.Sequential(*_encoder_blocks(c, 1))
        self.mu_head = nn.Conv2d(64, z, 7)
        self.logvar_head = nn.Conv2d(64, z, 7)
        nn.init.zeros_(self.logvar_head.weight)
        nn.init.zeros_(self.logvar_head.bias)
        extra = {r: WIDTHS[r] if r in self.skips else 0 for r in RESOLUTIONS}
        self.up7 = nn.Sequential(nn.ConvTranspose2d(z, 64, 7), nn.ReLU())  # 1 -> 7
        self.up14 = nn.Sequential(nn.ConvTranspose2d(64 + extra[7], 32, 4, stride=2, padding=1), nn.ReLU())
        self.up28 = nn.Sequential(nn.ConvTranspose2d(32 + extra[14], 16, 4, stride=2, padding=1), nn.ReLU())
        self.out = nn.Conv2d(16 + extra[28], c, 3, padding=1)

    def _features(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        maps, h = {}, x
        for block, res in zip(self.trunk, (28, 14, 7)):
            h = block(h)
            maps[res] = h
        return maps

    def _encode(self, x, y):
        h = self._features(x)[7]
        return self.mu_head(h).flatten(1), self.logvar_head(h).flatten(1)

    def _decode_from(self, z: torch.Tensor, maps: dict[int, torch.Tensor] | None) -> torch.Tensor:
        def join(h: torch.Tensor, res: int) -> torch.Tensor:
            if res not in self.skips:
                return h
            skip = maps[res] if maps is not None else h.new_zeros(h.shape[0], WIDTHS[res], res, res)
            return torch.cat([h, skip], dim=1)

        h = self.up7(z[:, :, None, None])
        h = self.up14(join(h, 7))
        h = self.up28(join(h, 14))
        return self.out(join(h, 28))

    def _decode(self, z):
        return self._decode_from(z, None)  # a code alone: no encoder maps

    def decode_with_skips(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Pixel logits of codes ``z`` decoded with the encoder maps of images ``x``: with z
        swapped for a prior draw or zeros, this measures what reaches the output by the skips."""
        return self._decode_from(z, self._features(x))

    def forward(self, x: torch.Tensor, eps: torch.Tensor | None = None, y: torch.Tensor | None = None,
                with_kl: bool = False) -> ModelOutput:
        """As ``VAE.forward``, with the decoder also given this input's encoder maps."""
        maps = self._features(x)
        mu, logvar = self.mu_head(maps[7]).flatten(1), self.logvar_head(maps[7]).flatten(1)
        logvar = logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)
        if self.training and eps is None:
            eps = torch.randn_like(mu)
        z = self.reparameterize(mu, logvar, eps)
        logits = self._decode_from(z, maps)
        if not with_kl:
            return ModelOutput(logits, mu, logvar, z)
        with float32_region(mu):
            kls = self.kl_terms(*float32(mu, logvar, self._eval_noise(mu) if eps is None else eps))
        return ModelOutput(logits, mu, logvar, z, kls)


register(Family("unet", UNetVAE, "fcn with skips across the bottleneck", config=UNetConfig, plain_only=True,
                no_iw_train="its decoder needs the input's maps", channels_last_faster=True, bf16_faster=True))
