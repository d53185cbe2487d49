"""`conv1xn`: the fcn encoder-decoder with every convolution split into a 1xN and an Nx1 pair
("1xN convolutions", which the 2018 README lists among what did not work).

Same resolutions and channels as fcn (28 -> 28 -> 14 -> 7 pixels, 16/32/64 channels, a 7x7
step to the latent code and back); each square kernel becomes a (1, N) convolution followed by
an (N, 1) one, the stride split the same way, so the pair sees an N x N window with 2N instead
of N^2 weights per channel pair. N is odd (3, 5 or 7) so that "same" padding exists.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from models.base import VAE
from models.family import Family, ModelConfig, register, setting

KERNELS = (3, 5, 7)


@dataclass
class Conv1xNConfig(ModelConfig):
    model_type: str = "conv1xn"
    conv_n: int = setting(3, "conv1xn: N of the 1xN / Nx1 pairs", choices=KERNELS)


def _pair(cin: int, cout: int, n: int, stride: int = 1) -> nn.Sequential:
    """(1, n) then (n, 1): the pair's output has the size of a stride-``stride`` n x n conv's."""
    p = n // 2
    return nn.Sequential(nn.Conv2d(cin, cout, (1, n), stride=(1, stride), padding=(0, p)),
                         nn.Conv2d(cout, cout, (n, 1), stride=(stride, 1), padding=(p, 0)))


def _pair_up(cin: int, cout: int, n: int) -> nn.Sequential:
    """The transposed pair that doubles the size (7 -> 14 -> 28)."""
    p = n // 2
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, (1, n), stride=(1, 2), padding=(0, p), output_padding=(0, 1)),
                         nn.ConvTranspose2d(cout, cout, (n, 1), stride=(2, 1), padding=(p, 0), output_padding=(1, 0)))


class Conv1xNVAE(VAE):
    def build(self, cfg: Conv1xNConfig) -> None:
        n = cfg.conv_n
        if n not in KERNELS:
            raise ValueError(f"conv_n must be one of {KERNELS}, got {n}")
        if cfg.image_size != 28 or cfg.conditional or cfg.model_multiplier != 1:
            raise ValueError("conv1xn is built for 28x28 images, unconditional, multiplier 1")
        z, c = self.latent_size, cfg.image_channels
        self.encoder = nn.Sequential(
            _pair(c, 16, n), nn.ReLU(),  # 28x28
            _pair(16, 32, n, stride=2), nn.ReLU(),  # 14x14
            _pair(32, 64, n, stride=2), nn.ReLU(),  # 7x7
        )
        # the 7x7 step to a 1x1 code, as a (1, 7) and a (7, 1) convolution, for mu and for logvar
        self.mu_head = nn.Sequential(nn.Conv2d(64, 64, (1, 7)), nn.Conv2d(64, z, (7, 1)))
        self.logvar_head = nn.Sequential(nn.Conv2d(64, 64, (1, 7)), nn.Conv2d(64, z, (7, 1)))
        nn.init.zeros_(self.logvar_head[-1].weight)
        nn.init.zeros_(self.logvar_head[-1].bias)
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(z, 64, (7, 1)), nn.ConvTranspose2d(64, 64, (1, 7)), nn.ReLU(),  # 1 -> 7
            _pair_up(64, 32, n), nn.ReLU(),  # 14
            _pair_up(32, 16, n), nn.ReLU(),  # 28
            _pair(16, c, n),
        )

    def _encode(self, x, y):
        h = self.encoder(x)
        return self.mu_head(h).flatten(1), self.logvar_head(h).flatten(1)

    def _decode(self, z):
        return self.decoder(z[:, :, None, None])


register(Family("conv1xn", Conv1xNVAE, "fcn of 1xN/Nx1 pairs", config=Conv1xNConfig, plain_only=True,
                channels_last_faster=True, bf16_faster=True))
