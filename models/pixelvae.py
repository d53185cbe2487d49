"""`pixelvae`: the resconv VAE with a decoder that sees its neighbours (PixelVAE, Gulrajani et al.
2017; the gated stacks of van den Oord et al. 2016, "Conditional Image Generation with PixelCNN
Decoders").

The resconv decoder turns the code (and class) into a feature map at full resolution, as before;
instead of mapping it to the pixels' parameters directly, a small gated PixelCNN does, each pixel's
parameters computed from that map *and the pixels before it* in raster order (all channels of the
earlier pixels; the channels of one pixel are coupled by the likelihood, the colour ``dmol``'s
coefficients). Every likelihood works; ``dmol`` is the one that compresses.

The causal stack. A vertical stack sees the rows above (its output at row r is used at row r + 1),
a horizontal stack sees the pixels to the left in the row, so there is no blind spot:
- layer 0 (the raw pixels): a (k0/2 + 1) x k0 convolution over rows r - k0/2 .. r for the vertical
  stack and a 1 x (k0/2 + 1) one over the pixels strictly to the left for the horizontal one;
- ``pixel_layers`` gated layers after it, 2 x 3 and 1 x 2: each adds one row above and one pixel to
  the left to what a pixel sees (``receptive_field``): the setting that bounds how much the decoder
  can do without the code, the first control that keeps the code in use (free bits and KL warm-up
  are the others, in the loss);
- every layer adds a 1 x 1 projection of the code's feature map to both stacks before its gate
  tanh(a) * sigmoid(b).
No batch normalisation in the stack: a pixel's output must not depend on other images in the batch.

Sampling (``decode``) runs pixel by pixel, caching what does not change: the code's feature map and
its projections once per batch, the vertical stack once per row (on the band of rows it can see),
and per pixel only the horizontal stack on the few pixels to its left that it can see.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from core.limits import MAX_PIXEL_CHANNELS, MAX_PIXEL_LAYERS
from models.family import Family, ModelConfig, register, setting
from models.pixels import sample_pixels
from models.resconv import ResConvVAE, size_problem

FIRST_KERNEL = 7  # layer 0's window on the raw pixels: 3 rows above and 3 pixels to the left (and right above)
NOISE_SEED = 0  # decode's pixel noise: one code always gives one image (and nearby codes share their noise)


def _gate(t: torch.Tensor) -> torch.Tensor:
    a, b = t.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


def _shift_down(t: torch.Tensor) -> torch.Tensor:
    """Row r gets row r - 1 (row 0 gets zeros): what the vertical stack saw becomes strictly above."""
    return F.pad(t, (0, 0, 1, 0))[..., :-1, :]


class CausalStack(nn.Module):
    """The gated PixelCNN: pixels (B, C, H, W) in [0, 1] and a conditioning map (B, cond, H, W) ->
    per-pixel outputs (B, out, H, W), each a function of the map and the earlier pixels only."""

    def __init__(self, channels: int, width: int, layers: int, cond: int, out: int):
        super().__init__()
        k = FIRST_KERNEL
        self.v_convs = nn.ModuleList([nn.Conv2d(channels, 2 * width, (k // 2 + 1, k))]
                                     + [nn.Conv2d(width, 2 * width, (2, 3)) for _ in range(layers)])
        self.h_convs = nn.ModuleList([nn.Conv2d(channels, 2 * width, (1, k // 2 + 1))]
                                     + [nn.Conv2d(width, 2 * width, (1, 2)) for _ in range(layers)])
        self.v_to_h = nn.ModuleList(nn.Conv2d(2 * width, 2 * width, 1) for _ in range(layers + 1))
        self.h_out = nn.ModuleList(nn.Conv2d(width, width, 1) for _ in range(layers + 1))
        # the code's map, projected for every layer's two stacks at once
        self.cond = nn.Conv2d(cond, (layers + 1) * 4 * width, 1)
        self.head = nn.Sequential(nn.SiLU(), nn.Conv2d(width, out, 1))
        # rows above / pixels to the left a pixel's output can depend on
        self.rows_above = k // 2 + 1 + layers
        self.cols_left = k // 2 + 1 + layers

    @property
    def receptive_field(self) -> tuple[int, int]:
        """(rows above, pixels to the left) a pixel's parameters can see, besides the code."""
        return self.rows_above, self.cols_left

    def conditions(self, c: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The code map's projection per layer: (vertical, horizontal) lists of (B, 2 width, H, W)."""
        parts = self.cond(c).chunk(2 * len(self.v_convs), dim=1)
        return list(parts[0::2]), list(parts[1::2])

    def vertical(self, x: torch.Tensor, cv: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each layer's pre-gate vertical features (B, 2 width, H', W) of rows ``x`` (B, C, H', W):
        row r's from rows r - rows_above + 1 .. r (zeros above the first row given)."""
        pre, v = [], 2 * x - 1
        for i, conv in enumerate(self.v_convs):
            kh, kw = conv.kernel_size
            t = conv(F.pad(v, (kw // 2, kw // 2, kh - 1, 0))) + cv[i]
            pre.append(t)
            v = _gate(t)
        return pre

    def horizontal(self, x: torch.Tensor, above: list[torch.Tensor], ch: list[torch.Tensor]) -> torch.Tensor:
        """The outputs (B, out, H', W') of pixels ``x`` (B, C, H', W'), given each layer's projection of
        the vertical features from the rows above (``above``) and of the code map (``ch``)."""
        h = None
        for i, conv in enumerate(self.h_convs):
            if h is None:  # layer 0 sees the pixels strictly to the left
                src = F.pad(2 * x - 1, (1, 0))[..., :-1]
            else:
                src = h
            t = conv(F.pad(src, (conv.kernel_size[1] - 1, 0))) + above[i] + ch[i]
            out = self.h_out[i](_gate(t))
            h = out if h is None else h + out
        return self.head(h)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        cv, ch = self.conditions(c)
        above = [proj(_shift_down(t)) for proj, t in zip(self.v_to_h, self.vertical(x, cv), strict=True)]
        return self.horizontal(x, above, ch)


@dataclass
class PixelVAEConfig(ModelConfig):
    model_type: str = "pixelvae"
    pixel_layers: int = setting(3, "pixelvae: gated layers of the autoregressive decoder after its 7x7-window first "
                                   "one; a pixel sees 4 + this many rows above and pixels to its left: the less it "
                                   "sees, the more the code must carry", low=0, high=MAX_PIXEL_LAYERS)
    pixel_channels: int = setting(32, "pixelvae: width of those layers", low=1, high=MAX_PIXEL_CHANNELS)


class PixelVAE(ResConvVAE):
    """resconv's encoder and decoder trunk; the trunk's last layer gives the causal stack its map."""

    autoregressive = True

    def build(self, cfg: PixelVAEConfig) -> None:
        super().build(cfg)
        trunk = self.dec_conv[-1]  # resconv's 3x3 conv to the pixels' parameters: now to the map
        self.dec_conv[-1] = nn.Conv2d(trunk.in_channels, cfg.pixel_channels, 3, padding=1)
        self.stack = CausalStack(cfg.image_channels, cfg.pixel_channels, cfg.pixel_layers, cfg.pixel_channels,
                                 cfg.output_channels)

    def decode_given(self, z: torch.Tensor, y: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
        return self.pixel_params(self.stack(x.contiguous(memory_format=self.memory_format), self.code_map(z, y)))

    def code_map(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The conditioning map (B, pixel_channels, H, W) of codes (B, z) (and classes)."""
        if self.conditional:
            z = torch.cat([z, self._one_hot(y, z)], dim=1)
        return self._decode(z)

    def decode_logits(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        raise TypeError("an autoregressive decoder's output depends on the pixels it predicts: use "
                        "decode_given(z, y, x) for given images, or decode(z, y) to draw them")

    @torch.no_grad()
    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Images drawn pixel by pixel from p(x | z) in raster order, each pixel's noise from a fixed
        seed (models/pixels.py: a discrete likelihood's pixel is drawn, a Bernoulli or Gaussian one's
        is its mean)."""
        c_img, h, w = self.image_shape
        b = z.shape[0]
        g = torch.Generator().manual_seed(NOISE_SEED)
        noise = torch.rand(b, self.stack.head[-1].out_channels + c_img, h, w, generator=g).to(z.device, z.dtype)
        x = torch.zeros(b, c_img, h, w, device=z.device, dtype=z.dtype)
        cv, ch = self.stack.conditions(self.code_map(z, y))
        rows, cols = self.stack.receptive_field
        for r in range(h):
            if r == 0:
                above = [proj(torch.zeros_like(t[:, :, :1])) for proj, t in zip(self.stack.v_to_h, cv, strict=True)]
            else:  # the vertical stack of row r - 1, from the rows it can see
                lo = max(0, r - rows)
                pre = self.stack.vertical(x[:, :, lo:r], [t[:, :, lo:r] for t in cv])
                above = [proj(t[:, :, -1:]) for proj, t in zip(self.stack.v_to_h, pre, strict=True)]
            for col in range(w):
                lo = max(0, col - cols)
                out = self.stack.horizontal(x[:, :, r:r + 1, lo:col + 1], [t[..., lo:col + 1] for t in above],
                                            [t[:, :, r:r + 1, lo:col + 1] for t in ch])
                params = self.pixel_params(out[:, :, :, -1:])[:, :, 0, 0]
                x[:, :, r, col] = sample_pixels(self.likelihood, params, self.log_scale, noise[:, :, r, col], c_img)
        return x

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The posterior mean decoded (drawn pixel by pixel): what the code alone keeps of ``x``."""
        return self.decode(self.posterior(x, y)[0], y)


register(Family("pixelvae", PixelVAE, "resconv whose decoder sees its neighbours (a gated PixelCNN over the "
                "code's feature map: each pixel predicted from the code and the pixels before it; drawn pixel by "
                "pixel)", config=PixelVAEConfig, any_shape=True, size_problem=size_problem,
                channels_last_faster=True, bf16_faster=True))
