"""`hvae`: a two-level hierarchical VAE with top-down inference, on resconv's building blocks.

Latents: the top code z (``latent_space_size``, 10 by default; the code embeddings and
compare_embeddings.py use) and a lower latent map z1 of ``hvae_channels`` channels at the
encoder's coarsest resolution (7x7 for 28x28 images).

    generative:  z ~ p(z)  ->  d = MLP(z)  ->  z1 ~ p(z1 | z) = N(conv(d))  ->  x ~ p(x | d + conv(z1))
    inference:   h = bottom-up convs(x);  z ~ q(z | x) = N(MLP(h));  z1 ~ q(z1 | x, z) = N(p's + conv(h, d))

Inference is top-down as in the ladder VAE (Sønderby et al. 2016) and NVAE (Vahdat & Kautz 2020):
q(z1 | x, z) shares the decoder's path to d and is written as a correction of the prior's mean
and log-variance, so at initialisation (corrections zero) q = p and the lower KL is 0. The
KL has one term per level: KL(q(z|x) || p(z)) (closed form for N(0, I), one sample for the
VampPrior) and KL(q(z1|x,z) || p(z1|z)) in closed form given the sampled z; both are
non-negative and the loss sums them. Decoding a top code alone (samples, traversals) uses
the prior's mean of z1 given it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from core.limits import MAX_HVAE_CHANNELS
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


@dataclass
class HVAEConfig(ModelConfig):
    model_type: str = "hvae"
    hvae_channels: int = setting(2, "hvae: channels of the lower latent map (7x7 for 28x28 images)", low=1,
                                 high=MAX_HVAE_CHANNELS)


class HierarchicalVAE(VAE):
    kl_levels = ("kl_top", "kl_map")

    HIDDEN = 512

    def build(self, cfg: HVAEConfig) -> None:
        hidden = self.HIDDEN
        k = stages(cfg.image_size)
        if k is None or cfg.image_size < 8:
            raise ValueError(f"hvae cannot be built for {cfg.image_size}x{cfg.image_size} images")
        z = self.latent_size
        c1, c2, cz = 16 * cfg.model_multiplier, 32 * cfg.model_multiplier, cfg.hvae_channels
        self.c2, self.cz, self.side = c2, cz, cfg.image_size // 2 ** k
        self.enc_conv = nn.Conv2d(cfg.image_channels, c1, 4, stride=2, padding=1, bias=False)
        self.enc_body = nn.Sequential(nn.BatchNorm2d(c1), nn.SiLU(), down_block(c1, c2),
                                      *[down_block(c2, c2) for _ in range(k - 2)], ResidualBlock(c2))
        self.enc_head = nn.Sequential(nn.Flatten(), nn.Linear(c2 * self.side ** 2, hidden), nn.SiLU())
        self.mu = nn.Linear(hidden, z)
        self.logvar = nn.Linear(hidden, z)
        self.dec_fc = nn.Sequential(nn.Linear(cfg.decoder_input_size, hidden), nn.SiLU(),
                                    nn.Linear(hidden, c2 * self.side ** 2), nn.SiLU())
        self.prior_map = nn.Conv2d(c2, 2 * cz, 3, padding=1)  # p(z1 | z)
        self.posterior_map = nn.Sequential(nn.Conv2d(2 * c2, c2, 3, padding=1), nn.SiLU(),
                                           nn.Conv2d(c2, 2 * cz, 3, padding=1))  # q's correction of p
        self.z1_in = nn.Conv2d(cz, c2, 3, padding=1)
        self.dec_conv = nn.Sequential(ResidualBlock(c2), *[up_block(c2, c2) for _ in range(k - 2)], up_block(c2, c1),
                                      ResidualBlock(c1), up_block(c1, c1),
                                      nn.Conv2d(c1, cfg.output_channels, 3, padding=1))
        # start with q(z|x) as wide as the prior and q(z1|x,z) = p(z1|z): no huge early KL terms
        for layer in (self.logvar, self.prior_map, self.posterior_map[-1]):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self._setup_conditioning(cfg, c1)

    @property
    def noise_size(self) -> int:
        return self.latent_size + self.cz * self.side ** 2

    def _bottom_up(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return self.enc_body(self.label_bias(self.enc_conv(x), y))

    def _heads(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.enc_head(h)
        return self.mu(f), self.logvar(f).clamp(LOGVAR_MIN, LOGVAR_MAX)

    def _encode(self, x, y):
        return self._heads(self._bottom_up(x, y))

    def _map(self, zy: torch.Tensor) -> torch.Tensor:
        """The top code (with a CVAE's one-hot class) as the decoder's coarsest map d."""
        return self.dec_fc(zy).view(-1, self.c2, self.side, self.side)

    def _top(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return self._map(torch.cat([z, self._one_hot(y, z)], dim=1) if self.conditional else z)

    def _pixels(self, d: torch.Tensor, z1: torch.Tensor) -> torch.Tensor:
        return self.dec_conv(d + self.z1_in(z1.view(-1, self.cz, self.side, self.side)))

    def _decode(self, z):  # z with the class already concatenated (VAE.decode_logits: then pixel_params)
        d = self._map(z)
        return self._pixels(d, gaussian_params(self.prior_map(d))[0])

    def _lower(self, d: torch.Tensor, h: torch.Tensor, eps1: torch.Tensor | None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """From the top's map ``d`` and the bottom-up ``h``: p's and q's (mean, logvar) of z1 and z1
        itself (q's mean when ``eps1`` is None), each (B, cz, side, side)."""
        p_mean, p_logvar = gaussian_params(self.prior_map(d))
        dm, dlv = self.posterior_map(torch.cat([h, d], dim=1)).chunk(2, dim=1)
        q_mean, q_logvar = p_mean + dm, (p_logvar + dlv).clamp(LOGVAR_MIN, LOGVAR_MAX)
        z1 = q_mean if eps1 is None else q_mean + eps1.view_as(q_mean) * torch.exp(0.5 * q_logvar)
        return p_mean, p_logvar, q_mean, q_logvar, z1

    def _split(self, eps: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        return (None, None) if eps is None else (eps[..., :self.latent_size], eps[..., self.latent_size:])

    def forward(self, x, eps=None, y=None, with_kl=False) -> ModelOutput:
        """As ``VAE.forward``; ``eps`` (B, noise_size) holds both levels' noise, and the KL terms
        are (B, 2): top and map; ``z`` is the top code. In eval mode both levels decode their posterior
        means."""
        h = self._bottom_up(self.standardise(x), y)
        mu, logvar = self._heads(h)
        if self.training and eps is None:
            eps = torch.randn(mu.shape[0], self.noise_size, device=mu.device, dtype=mu.dtype)
        e_top, e_map = self._split(eps if self.training else None)
        z = self.reparameterize(mu, logvar, e_top)
        d = self._top(z, y)
        p_mean, p_logvar, q_mean, q_logvar, z1 = self._lower(d, h, e_map)
        logits = self.pixel_params(self._pixels(d, z1))
        if not with_kl:
            return ModelOutput(logits, mu, logvar, z)
        with float32_region(mu):
            kl_top = self.kl_terms(*float32(mu, logvar, self._eval_noise(mu) if e_top is None else e_top))[:, 0]
            # KL of two diagonal Gaussians, closed form, summed over the map
            p_mean, p_logvar, q_mean, q_logvar = float32(p_mean, p_logvar, q_mean, q_logvar)
            kl_map = gaussian_kl(q_mean, q_logvar, p_mean, p_logvar)
        return ModelOutput(logits, mu, logvar, z, torch.stack([kl_top, kl_map], dim=1))

    def importance_terms(self, x, mu, logvar, eps, y=None):
        """Both levels sampled top-down: log p(z) p(z1|z) - log q(z|x) q(z1|x,z) per code. The
        bottom-up maps are recomputed here from ``x`` (an encoder pass per call)."""
        k, b = eps.shape[0], mu.shape[0]
        e_top, e_map = self._split(eps)
        z, log_ratio = self.code_log_ratio(mu, logvar, e_top)
        h = self._bottom_up(self.standardise(x), y)
        d = self._top(z.reshape(k * b, -1), repeat_rows(y, k))
        p_mean, p_logvar, q_mean, q_logvar, z1 = self._lower(d, h.repeat(k, 1, 1, 1), e_map.reshape(k * b, -1))
        z1, p_mean, p_logvar, q_mean, q_logvar = (t.flatten(1) for t in (z1, p_mean, p_logvar, q_mean, q_logvar))
        lower = gaussian_log_prob(z1, p_mean, p_logvar) - gaussian_log_prob(z1, q_mean, q_logvar)
        logits = self.pixel_params(self._pixels(d, z1))
        return torch.stack([log_ratio, lower.view(k, b)], dim=-1), logits.view(k, b, *logits.shape[1:])

    def top_only_terms(self, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor,
                       y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """As ``importance_terms``, but z1 drawn from its conditional prior p(z1 | z) instead of q(z1 | x, z):
        the bound L>1 of Havtorn et al. 2021, in which only the top code has seen the image. Its
        log-ratio is the top level's alone (z1's p and q are the same and cancel), (K, B, 1)."""
        k, b = eps.shape[0], mu.shape[0]
        e_top, e_map = self._split(eps)
        z, log_ratio = self.code_log_ratio(mu, logvar, e_top)
        d = self._top(z.reshape(k * b, -1), repeat_rows(y, k))
        p_mean, p_logvar = gaussian_params(self.prior_map(d))
        z1 = p_mean + e_map.reshape(k * b, -1).view_as(p_mean) * torch.exp(0.5 * p_logvar)
        logits = self.pixel_params(self._pixels(d, z1))
        return log_ratio.unsqueeze(-1), logits.view(k, b, *logits.shape[1:])


register(Family("hvae", HierarchicalVAE, "resconv made hierarchical, a top code of --latent_space_size (the code "
                "embeddings use) over a 7x7 latent map of --hvae_channels, inferred top-down, its KL per level",
                config=HVAEConfig, any_shape=True, size_problem=size_problem, hierarchical=True,
                channels_last_faster=True, bf16_faster=True))
