"""`deep_hvae`: a deep hierarchical VAE in the NVAE / VDVAE line (Vahdat & Kautz 2020; Child 2021), sized
for a CPU: no autoregressive decoder, so every picture it draws comes from its code alone.

Latents: the top code z (``latent_space_size``: what the embeddings, KNN and traversals use) and, at every
resolution of the decoder below the image's own (7 and 14 for 28x28 images, 8 and 16 for 32x32),
``deep_groups`` latent maps of ``deep_latent_channels`` channels each, sampled one after another.

    generative:  z ~ N(0, I) -> d = MLP(z) -> for each group g, coarse to fine:
                 z_g ~ p(z_g | d) = N(conv(d));  d = cell(d + conv(z_g));  (2x up between resolutions)
                 -> x ~ p(x | d) (the likelihood of --image_loss_type, e.g. a pixel mixture)
    inference:   h_r = bottom-up residual cells at each resolution r;  z ~ q(z | x) = N(MLP(h_coarsest));
                 z_g ~ q(z_g | x, z_<g) = N(p's mean and log-variance + conv(h_r, d))

Inference is top-down and shares the generative path, as in the ladder VAE and NVAE; each posterior is
written as a correction of its prior (NVAE's residual normal), zero at initialisation, so the KL of every
group starts at 0 and the code is used from the first step instead of collapsing. Training stability comes
from the run's settings, as the papers needed: the KL warmed up (--kl_warmup_epochs), the gradient's
norm limited (--grad_clip), the log-variances clamped (models/base.py). The KL is reported per
resolution (kl_top, kl_7, kl_14 ...). Decoding a top code alone (samples from N(0, I), traversals) follows
the priors' means below it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from core.limits import MAX_DEEP_GROUPS, MAX_DEEP_LATENT_CHANNELS
from models.base import (
    LOGVAR_MAX,
    LOGVAR_MIN,
    VAE,
    ModelConfig,
    ModelOutput,
    float32,
    float32_region,
    gaussian_kl,
    gaussian_params,
    repeat_rows,
)
from models.family import Family, register, setting
from models.priors import gaussian_log_prob
from models.resconv import ResidualBlock, down_block, size_problem, stages, up_block

UPSAMPLES = ("resize", "transposed")


@dataclass
class DeepHVAEConfig(ModelConfig):
    model_type: str = "deep_hvae"
    deep_groups: int = setting(2, "deep_hvae: latent groups at each resolution below the image's", low=1,
                               high=MAX_DEEP_GROUPS)
    deep_latent_channels: int = setting(4, "deep_hvae: channels of each latent group's map", low=1,
                                        high=MAX_DEEP_LATENT_CHANNELS)
    deep_upsample: str = setting("resize", "deep_hvae: how the decoder doubles its maps: a nearest-neighbour resize "
                                 "then a 3x3 convolution, or a stride-2 transposed convolution (whose uneven overlap "
                                 "left a 2-pixel checkerboard in the pictures; checkpoints before the fix)",
                                 choices=UPSAMPLES)


def resize_up_block(c_in: int, c_out: int) -> nn.Sequential:
    """Twice the size by nearest-neighbour resize, then a 3x3 convolution: every output pixel gets the same number
    of kernel taps, where a stride-2 transposed convolution's uneven overlap paints a 2-pixel checkerboard
    (Odena et al. 2016, "Deconvolution and checkerboard artifacts"); on Twemoji, the pixels at odd rows and
    columns had 1.41x the reconstruction error of the others, 1.04x after (benchmarks/checkerboard.md)."""
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                         nn.BatchNorm2d(c_out), nn.SiLU())


def _zero(layer: nn.Conv2d | nn.Linear) -> None:
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)


@dataclass
class GroupDraw:
    """One latent group's prior and posterior (mean, log-variance) maps and the code drawn (B, c, r, r)."""

    p_mean: torch.Tensor
    p_logvar: torch.Tensor
    q_mean: torch.Tensor
    q_logvar: torch.Tensor
    z: torch.Tensor

    def kl(self) -> torch.Tensor:
        """KL(q || p) of two diagonal Gaussians, closed form, summed over the map: (B,)."""
        p_mean, p_logvar, q_mean, q_logvar = float32(self.p_mean, self.p_logvar, self.q_mean, self.q_logvar)
        return gaussian_kl(q_mean, q_logvar, p_mean, p_logvar)

    def log_ratio(self) -> torch.Tensor:
        """log p(z) - log q(z) at the drawn code, summed over the map: (B,)."""
        z, p_mean, p_logvar, q_mean, q_logvar = (t.float().flatten(1) for t in (self.z, self.p_mean, self.p_logvar,
                                                                                 self.q_mean, self.q_logvar))
        return gaussian_log_prob(z, p_mean, p_logvar) - gaussian_log_prob(z, q_mean, q_logvar)


class TopDownCell(nn.Module):
    """One latent group: its prior from the decoder's state ``d``, its posterior as a correction of the
    prior from the bottom-up map ``h`` and ``d``, and ``d`` updated with the code drawn."""

    def __init__(self, channels: int, latent_channels: int):
        super().__init__()
        self.prior = nn.Conv2d(channels, 2 * latent_channels, 3, padding=1)
        self.posterior = nn.Sequential(nn.Conv2d(2 * channels, channels, 3, padding=1), nn.SiLU(),
                                       nn.Conv2d(channels, 2 * latent_channels, 3, padding=1))
        self.code_in = nn.Conv2d(latent_channels, channels, 1)
        self.cell = ResidualBlock(channels)
        # p = N(0, I) and q = p at initialisation: every group's KL starts at 0
        _zero(self.prior)
        _zero(self.posterior[-1])

    def forward(self, d: torch.Tensor, h: torch.Tensor | None, eps: torch.Tensor | None
                ) -> tuple[torch.Tensor, GroupDraw]:
        """``h`` None: the prior (q = p); ``eps`` None: the mean, else mean + eps * sigma (eps shaped as the map)."""
        p_mean, p_logvar = gaussian_params(self.prior(d))
        q_mean, q_logvar = p_mean, p_logvar
        if h is not None:
            dm, dlv = self.posterior(torch.cat([h, d], dim=1)).chunk(2, dim=1)
            q_mean, q_logvar = p_mean + dm, (p_logvar + dlv).clamp(LOGVAR_MIN, LOGVAR_MAX)
        z = q_mean if eps is None else q_mean + eps * torch.exp(0.5 * q_logvar)
        return self.cell(d + self.code_in(z)), GroupDraw(p_mean, p_logvar, q_mean, q_logvar, z)


class DeepHierarchicalVAE(VAE):
    HIDDEN = 256

    def build(self, cfg: DeepHVAEConfig) -> None:
        k = stages(cfg.image_size)
        if k is None or cfg.image_size < 8:
            raise ValueError(f"deep_hvae cannot be built for {cfg.image_size}x{cfg.image_size} images")
        c, cz, z = 32 * cfg.model_multiplier, cfg.deep_latent_channels, self.latent_size
        # the latent resolutions, coarse to fine: every decoder resolution below the image's
        self.sizes = tuple(cfg.image_size // 2 ** i for i in range(k, 0, -1))
        self.c, self.cz, self.groups = c, cz, cfg.deep_groups
        self.kl_levels = ("kl_top", *(f"kl_{r}" for r in self.sizes))
        self.stem = nn.Conv2d(cfg.image_channels, c, 3, padding=1)
        self.enc_cells = nn.ModuleList(ResidualBlock(c) for _ in range(k + 1))  # at image_size / 2**i
        self.downs = nn.ModuleList(down_block(c, c) for _ in range(k))
        side = self.sizes[0]
        self.enc_head = nn.Sequential(nn.Flatten(), nn.Linear(c * side ** 2, self.HIDDEN), nn.SiLU())
        self.mu, self.logvar = nn.Linear(self.HIDDEN, z), nn.Linear(self.HIDDEN, z)
        _zero(self.logvar)  # q(z|x) starts as wide as the prior
        self.dec_fc = nn.Sequential(nn.Linear(cfg.decoder_input_size, self.HIDDEN), nn.SiLU(),
                                    nn.Linear(self.HIDDEN, c * side ** 2), nn.SiLU())
        self.cells = nn.ModuleList(nn.ModuleList(TopDownCell(c, cz) for _ in range(self.groups)) for _ in self.sizes)
        up = resize_up_block if cfg.deep_upsample == "resize" else up_block
        self.ups = nn.ModuleList(up(c, c) for _ in self.sizes)
        self.out = nn.Sequential(ResidualBlock(c), nn.Conv2d(c, cfg.output_channels, 3, padding=1))
        self._setup_conditioning(cfg, c)

    @property
    def noise_size(self) -> int:
        return self.latent_size + sum(self.groups * self.cz * r * r for r in self.sizes)

    def _bottom_up(self, x: torch.Tensor, y: torch.Tensor | None) -> list[torch.Tensor]:
        """The encoder's maps at the latent resolutions, coarse to fine (the coarsest also feeds the top code)."""
        h = self.label_bias(self.stem(x), y)
        maps = []
        for i, cell in enumerate(self.enc_cells):
            h = cell(h)
            if i > 0:
                maps.append(h)
            if i < len(self.downs):
                h = self.downs[i](h)
        return maps[::-1]

    def _heads(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.enc_head(h)
        return self.mu(f), self.logvar(f).clamp(LOGVAR_MIN, LOGVAR_MAX)

    def _encode(self, x, y):
        return self._heads(self._bottom_up(x, y)[0])

    def _map(self, zy: torch.Tensor) -> torch.Tensor:
        return self.dec_fc(zy).view(-1, self.c, self.sizes[0], self.sizes[0])

    def _top(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return self._map(torch.cat([z, self._one_hot(y, z)], dim=1) if self.conditional else z)

    def _top_down(self, d: torch.Tensor, maps: list[torch.Tensor] | None, eps: torch.Tensor | None
                  ) -> tuple[torch.Tensor, list[list[GroupDraw]]]:
        """The decoder from the top's map ``d``: each group from q (given the bottom-up ``maps``) or from p
        (``maps`` None), at ``eps`` (B, noise_size - latent_size) or at the means; the output and the draws
        per resolution."""
        draws, offset = [], 0
        for i, (r, cells) in enumerate(zip(self.sizes, self.cells)):
            level = []
            for cell in cells:
                n = self.cz * r * r
                e = None if eps is None else eps[:, offset:offset + n].reshape(-1, self.cz, r, r)
                d, draw = cell(d, None if maps is None else maps[i], e)
                level.append(draw)
                offset += n
            draws.append(level)
            d = self.ups[i](d)
        return self.out(d), draws

    def _decode(self, z):  # z with the class already concatenated (VAE.decode_logits: then pixel_params)
        return self._top_down(self._map(z), None, None)[0]

    def _split(self, eps: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        return (None, None) if eps is None else (eps[..., :self.latent_size], eps[..., self.latent_size:])

    def forward(self, x, eps=None, y=None, with_kl=False) -> ModelOutput:
        """As ``VAE.forward``; ``eps`` (B, noise_size) holds every level's noise, the KL terms are (B, levels):
        the top code's, then each resolution's groups summed; ``z`` is the top code. In eval mode every level
        decodes its posterior mean."""
        maps = self._bottom_up(self.standardise(x), y)
        mu, logvar = self._heads(maps[0])
        if self.training and eps is None:
            eps = torch.randn(mu.shape[0], self.noise_size, device=mu.device, dtype=mu.dtype)
        e_top, e_rest = self._split(eps if self.training else None)
        z = self.reparameterize(mu, logvar, e_top)
        out, draws = self._top_down(self._top(z, y), maps, e_rest)
        logits = self.pixel_params(out)
        if not with_kl:
            return ModelOutput(logits, mu, logvar, z)
        with float32_region(mu):
            kl_top = self.kl_terms(*float32(mu, logvar, self._eval_noise(mu) if e_top is None else e_top))[:, 0]
            levels = [sum(draw.kl() for draw in level) for level in draws]
        return ModelOutput(logits, mu, logvar, z, torch.stack([kl_top, *levels], dim=1))

    def importance_terms(self, x, mu, logvar, eps, y=None):
        """Every level sampled top-down from q: log p - log q per level and code, (K, B, levels)."""
        k, b = eps.shape[0], mu.shape[0]
        e_top, e_rest = self._split(eps)
        z, log_ratio = self.code_log_ratio(mu, logvar, e_top)
        maps = [h.repeat(k, 1, 1, 1) for h in self._bottom_up(self.standardise(x), y)]
        out, draws = self._top_down(self._top(z.reshape(k * b, -1), repeat_rows(y, k)), maps,
                                    e_rest.reshape(k * b, -1))
        logits = self.pixel_params(out)
        with float32_region(mu):
            levels = [sum(draw.log_ratio() for draw in level).view(k, b) for level in draws]
        return torch.stack([log_ratio, *levels], dim=-1), logits.view(k, b, *logits.shape[1:])


register(Family("deep_hvae", DeepHierarchicalVAE,
                "a deep hierarchical VAE (NVAE / VDVAE line): a top code of --latent_space_size over --deep_groups "
                "latent maps at each decoder resolution, inferred top-down, no autoregressive decoder (--preset deep)",
                config=DeepHVAEConfig, any_shape=True, size_problem=size_problem, hierarchical=True))
