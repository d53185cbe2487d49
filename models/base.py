"""What every VAE here shares: the reparameterisation, the (logits, mu, logvar) contract, the
prior p(z) (N(0, I) or the VampPrior, models/priors.py) and the terms the ELBO and the IWAE
bound are made of (``kl_terms``, ``importance_terms``), which a hierarchical model overrides."""
from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from losses.pixel_layout import MIXTURE, as_unbounded
from models.family import ModelConfig
from models.pixels import mean_image
from models.priors import PRIORS, batchnorm_frozen, gaussian_log_prob, mixture_log_prob


@dataclass
class ModelOutput:
    """What ``forward`` returns for every family: the decoder's output ``logits`` (pixel logits, or a pixel
    mixture's parameters), the posterior ``mu`` and ``logvar`` (B, z) (of the top code for a hierarchical
    model), ``z`` the code decoded (sampled in training mode, the mean in eval mode), and ``kl`` the KL
    terms per image and level (B, len(kl_levels)) when asked for (``with_kl``), else None."""

    logits: torch.Tensor
    mu: torch.Tensor
    logvar: torch.Tensor
    z: torch.Tensor
    kl: torch.Tensor | None = None

    def float32(self) -> ModelOutput:
        """The same output in float32 (after a bfloat16 autocast forward: the losses run in float32)."""
        return ModelOutput(*float32(self.logits, self.mu, self.logvar, self.z),
                           None if self.kl is None else self.kl.float())

    def code_at(self, eps: torch.Tensor) -> torch.Tensor:
        """The code mu + eps * sigma of this posterior, in its precision: what training mode decodes for
        the noise ``eps`` (objectives whose terms read the codes take them from here)."""
        return sample_codes(self.mu, self.logvar, eps)


def sample_codes(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """The reparameterisation z = mu + eps * exp(logvar / 2) (Kingma & Welling 2014)."""
    return mu + eps * torch.exp(0.5 * logvar)


def repeat_rows(y: torch.Tensor | None, k: int) -> torch.Tensor | None:
    """Labels (B, ...) for K codes per image laid out sample-major: (K * B, ...); None stays None."""
    return None if y is None else y.repeat(k, *([1] * (y.dim() - 1)))


# forward() clamps the encoder's logvar to this range: posterior std between 3e-7 and 2.2e4.
# No trained model comes near either end, but an unclamped logvar that drifts above ~88
# makes exp(logvar) overflow float32, and the KL term and its gradient become Inf/NaN.
LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0


def float32_region(like: torch.Tensor) -> torch.autocast:
    """Where the KL terms are computed: float32 even inside --amp's bfloat16 autocast (a VampPrior's
    mixture density or a lower level's log-ratio loses too much in bfloat16)."""
    return torch.autocast(like.device.type, enabled=False)


def gaussian_params(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A latent map's (mean, log-variance) from a layer's output ``t`` (B, 2c, ...): its two halves along the
    channels, the log-variance clamped to [LOGVAR_MIN, LOGVAR_MAX]."""
    mean, logvar = t.chunk(2, dim=1)
    return mean, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)


def gaussian_kl(q_mean: torch.Tensor, q_logvar: torch.Tensor, p_mean: torch.Tensor, p_logvar: torch.Tensor
                ) -> torch.Tensor:
    """KL(q || p) of two diagonal Gaussians, closed form, summed over all but the batch dimension: (B,)."""
    return 0.5 * (p_logvar - q_logvar + (q_logvar.exp() + (q_mean - p_mean).pow(2)) * torch.exp(-p_logvar)
                  - 1).flatten(1).sum(1)


def float32(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The tensors in float32 (a no-op on float32 ones)."""
    return tuple(t.float() for t in tensors)


class VAE(nn.Module):
    """Base class: subclasses implement ``build`` (their layers), ``_encode`` (standardised input) and
    ``_decode``; the model is complete when its constructor returns.

    ``forward`` returns a :class:`ModelOutput`: pixel logits (BCE is computed from them,
    which is numerically safe), the diagonal Gaussian posterior with mu of shape (B, z)
    and logvar clamped to [LOGVAR_MIN, LOGVAR_MAX], and the code decoded: in training mode z
    is sampled; in eval mode the posterior mean is decoded.

    A conditional model (``conditional``) takes class labels ``y`` (B,) everywhere: the
    decoder gets ``cat(z, one_hot(y))``, and the encoder adds a learnt per-class vector to
    its first hidden layer (``label_bias``), which equals feeding it the one-hot as input.
    """

    # set by the constructor from the ModelConfig: the registry's name, the code's size, (C, H, W) of the
    # images it encodes and decodes, p(x|z) and p(z) (see ModelConfig), the encoder's input statistics
    model_type: str
    latent_size: int
    image_shape: tuple[int, int, int]
    likelihood: str
    # "sigmoid" for a dmol model trained before issue 36 (its output is handed over by pixel_params), else "unbounded"
    mixture_location: str = "unbounded"
    prior: str
    input_mean: float
    input_std: float
    conditional: bool = False
    num_classes: int = 10

    # The KL terms the loss sums, one per latent level (a hierarchical model has several).
    kl_levels: tuple[str, ...] = ("kl",)
    # Whether the decoder's output for a pixel depends on the pixels before it (models/pixelvae.py):
    # then ``decode_given`` needs the images, and ``decode`` draws them pixel by pixel.
    autoregressive: bool = False
    # The layout of the conv layers' images and weights (runtime/accelerators.py chooses it per device
    # and model; use_memory_format sets it): the images are put in it on the way in.
    memory_format: torch.memory_format = torch.contiguous_format

    def __init__(self, cfg: ModelConfig) -> None:
        """The whole model ``cfg`` describes: the shared settings, the family's layers (``build``), then the
        likelihood's scales and the prior's pseudo-inputs (drawn after the layers' initial weights: the
        random numbers go to the layers first)."""
        if cfg.prior not in PRIORS:
            raise KeyError(f"unknown prior {cfg.prior!r}; choose from {PRIORS}")
        if cfg.prior == "vamp" and cfg.conditional:
            raise ValueError("the VampPrior is unconditional: its pseudo-inputs have no class")
        super().__init__()
        self.model_type, self.latent_size, self.prior = cfg.model_type, cfg.latent_space_size, cfg.prior
        self.image_shape = (cfg.image_channels, cfg.image_size, cfg.image_size)
        self.likelihood = cfg.likelihood
        if cfg.likelihood == MIXTURE:
            self.mixture_location = cfg.mixture_location
        self.input_mean, self.input_std = float(cfg.input_mean), float(cfg.input_std)
        # the learnt log-scale per channel of a logistic or Gaussian likelihood; None for the Bernoulli
        # one, and then not in the state dict
        self.register_parameter("log_scale", None)
        # --prior vamp: the pseudo-inputs' pixel logits (K, C, H, W)
        self.register_parameter("pseudo_inputs", None)
        self._fixed_prior: tuple[torch.Tensor, torch.Tensor] | None = None
        self.build(cfg)
        if cfg.likelihood in ("logistic", "gaussian"):
            # one learnt log-scale per channel, starting at 0.1 of the [0, 1] range
            self.log_scale = nn.Parameter(torch.full((cfg.image_channels,), math.log(0.1)))
        if cfg.prior == "vamp":
            # pixel logits of the pseudo-inputs: small noise around grey 0.5 images (the encoder, not the
            # initialisation, decides where their posteriors sit)
            shape = (cfg.vamp_components, cfg.image_channels, cfg.image_size, cfg.image_size)
            self.pseudo_inputs = nn.Parameter(0.1 * torch.randn(shape))

    def build(self, cfg: ModelConfig) -> None:
        """The family's layers, made in the order their initial weights draw random numbers."""
        raise NotImplementedError

    def use_memory_format(self, memory_format: torch.memory_format) -> VAE:
        """Put the weights in ``memory_format`` (channels-last: NHWC), and every image on the way in."""
        self.memory_format = memory_format
        return self.to(memory_format=memory_format)

    @property
    def family(self) -> str:
        """The model family in words (the eval JSON names it)."""
        levels = f"; latent levels {', '.join(self.level_names)}" if self.level_names else ""
        prior = (f"VampPrior of {self.pseudo_inputs.shape[0]} pseudo-inputs" if self.prior == "vamp"
                 else "N(0, I) prior")
        return f"{self.model_type or type(self).__name__}, {prior}{levels}"

    @property
    def noise_size(self) -> int:
        """Standard-normal numbers one image's sampled codes take (forward's ``eps`` is (B, noise_size))."""
        return self.latent_size

    @property
    def level_names(self) -> tuple[str, ...]:
        """The KL terms also reported one by one (train_kl_top, eph_val_kl_map, the eval JSON):
        a hierarchical model's levels; none for a single code."""
        return self.kl_levels if len(self.kl_levels) > 1 else ()

    @property
    def analytic_kl(self) -> bool:
        """Whether the KL term is the closed form of one Gaussian code against N(0, I) (the
        2018 loss); otherwise it comes from ``forward(..., with_kl=True)``."""
        return self.prior == "gaussian" and not self.level_names

    def _setup_conditioning(self, cfg: ModelConfig, first_hidden: int) -> None:
        """Call from ``__init__``: the encoder's label input, of width ``first_hidden``."""
        self.conditional, self.num_classes = cfg.conditional, cfg.num_classes
        if cfg.conditional:
            self.label_embedding = nn.Linear(cfg.num_classes, first_hidden, bias=False)

    def _one_hot(self, y: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
        if y is None:
            raise ValueError("a conditional VAE needs the class labels y")
        return F.one_hot(y.long(), self.num_classes).to(like.dtype)

    def label_bias(self, h: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """``h`` (B, C, ...) plus the class's learnt vector, broadcast over any spatial dims."""
        if not self.conditional:
            return h
        b = self.label_embedding(self._one_hot(y, h))
        return h + b.view(*b.shape, *([1] * (h.dim() - 2)))

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar) of images ``x`` in [0, 1]; standardised here so every caller gets it."""
        return self._encode(self.standardise(x), y)

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        """What the encoder sees: (x - mean) / std with --normalize's statistics, else x."""
        if self.input_mean != 0.0 or self.input_std != 1.0:
            x = (x - self.input_mean) / self.input_std
        return x.contiguous(memory_format=self.memory_format)

    def _encode(self, x: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def decode_logits(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Pixel logits (B, C, H, W) of latent codes (B, z) (and classes (B,) for a CVAE)."""
        if self.conditional:
            z = torch.cat([z, self._one_hot(y, z)], dim=1)
        return self.pixel_params(self._decode(z))

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def pixel_params(self, out: torch.Tensor) -> torch.Tensor:
        """The decoder's last layer's output ``out`` as every reader of it takes it (losses/pixel_layout.py):
        itself, but a pixel mixture of the "sigmoid" location mapping (a model trained before issue 36) in the
        unbounded form. Every path that returns the decoder's output passes it through here once."""
        if self.mixture_location == "sigmoid":
            return as_unbounded(out, self.image_shape[0])
        return out

    def decode_given(self, z: torch.Tensor, y: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
        """The decoder's output for images ``x`` given their codes: what the likelihood scores. Only an
        autoregressive decoder reads ``x`` (each pixel's output from the pixels before it)."""
        return self.decode_logits(z, y)

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Images in [0, 1] from latent codes (B, z)."""
        return self.image_of(self.decode_logits(z, y))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Images in [0, 1] decoded from the posterior means of ``x`` (in eval mode)."""
        return self.image_of(self(x, y=y).logits)

    def image_of(self, logits: torch.Tensor) -> torch.Tensor:
        """The image in [0, 1] (B, C, H, W) that the decoder's output stands for: sigmoid of its logits,
        or its pixel mixture's mean (models/pixels.py)."""
        return mean_image(self.likelihood, logits, self.image_shape[0])

    def posterior(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x) as (mu, logvar), logvar clamped to [LOGVAR_MIN, LOGVAR_MAX]: what training,
        the likelihood bound and the embeddings all use."""
        mu, logvar = self.encode(x, y)
        return mu, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)

    def forward(self, x: torch.Tensor, eps: torch.Tensor | None = None, y: torch.Tensor | None = None,
                with_kl: bool = False) -> ModelOutput:
        """``eps``: the reparameterisation noise, drawn here when not given (torchrun ranks pass
        their rows of the whole minibatch's noise, see runtime/distributed.py).

        ``with_kl``: also the KL terms per image and level (B, len(kl_levels)), estimated
        at the sampled code where there is no closed form (in eval mode at a code drawn with a
        fixed seed, so validation is deterministic)."""
        mu, logvar = self.posterior(x, y)
        if self.training and eps is None:
            eps = torch.randn_like(mu)
        z = self.reparameterize(mu, logvar, eps)
        logits = self.decode_given(z, y, x)
        if not with_kl:
            return ModelOutput(logits, mu, logvar, z)
        with float32_region(mu):
            kls = self.kl_terms(*float32(mu, logvar, self._eval_noise(mu) if eps is None else eps))
        return ModelOutput(logits, mu, logvar, z, kls)

    def _eval_noise(self, like: torch.Tensor) -> torch.Tensor:
        """Noise of a fixed seed: eval-mode estimates that need a sample stay deterministic."""
        g = torch.Generator(device=like.device).manual_seed(0)
        return torch.randn(like.shape, generator=g, device=like.device, dtype=like.dtype)

    def kl_terms(self, mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """KL(q(z|x) || p(z)) per image, shape (B, 1): closed form for N(0, I); for the VampPrior
        the one-sample estimate log q(z|x) - log p(z) at z = mu + eps * sigma."""
        if self.prior == "gaussian":
            return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(-1)).unsqueeze(1)
        return -self.code_log_ratio(mu, logvar, eps)[1].unsqueeze(1)

    def pseudo_posterior(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The VampPrior's components: q(z | u_k) of the pseudo-inputs u_k, as (means, logvars) (K, z)."""
        if self._fixed_prior is not None:
            return self._fixed_prior
        with batchnorm_frozen(self):
            return self.posterior(torch.sigmoid(self.pseudo_inputs))

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) of codes (..., z), summed over latent dims."""
        if self.prior == "vamp":
            return mixture_log_prob(z, *self.pseudo_posterior())
        return gaussian_log_prob(z)

    @contextmanager
    def prior_fixed(self) -> Iterator[None]:
        """For evaluation loops: the VampPrior's components computed once, not per call."""
        if self.prior != "vamp":
            yield
            return
        with torch.no_grad():
            self._fixed_prior = self.pseudo_posterior()
        try:
            yield
        finally:
            self._fixed_prior = None

    @torch.no_grad()
    def sample_prior(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` codes (n, z) drawn from p(z) on the CPU with ``generator``: N(0, I), or for the
        VampPrior a pseudo-input's posterior chosen uniformly, then a draw from it."""
        if self.prior != "vamp":
            return torch.randn(n, self.latent_size, generator=generator)
        means, logvars = (t.float().cpu() for t in self.pseudo_posterior())
        k = torch.randint(means.shape[0], (n,), generator=generator)
        return means[k] + torch.randn(n, self.latent_size, generator=generator) * torch.exp(0.5 * logvars[k])

    def importance_terms(self, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor,
                         y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """For K codes per image z_k = mu + eps_k * sigma (``eps`` (K, B, noise_size)): the
        log-ratios log p(z_k) - log q(z_k|x), (K, B, L) with one per latent level (``kl_levels``;
        their sum is the code's), and the decoded pixel logits (K, B, C, H, W).
        ``x``: read by an autoregressive decoder (and a hierarchical model's lower levels)."""
        k, b = eps.shape[0], mu.shape[0]
        z, log_ratio = self.code_log_ratio(mu, logvar, eps)
        logits = self.decode_given(z.reshape(k * b, -1), repeat_rows(y, k), repeat_rows(x, k))
        return log_ratio.unsqueeze(-1), logits.view(k, b, *logits.shape[1:])

    def code_log_ratio(self, mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """The codes z = mu + eps * sigma (..., z) and log p(z) - log q(z|x) (...)."""
        z = mu + torch.exp(0.5 * logvar) * eps
        if self.prior == "gaussian":
            # the Gaussian normalisers (log 2 pi) cancel, and (z - mu) / std = eps
            return z, 0.5 * (eps.pow(2) - z.pow(2) + logvar).sum(-1)
        return z, self.log_prior(z) - (gaussian_log_prob(eps) - 0.5 * logvar.sum(-1))

    def reparameterize(self, mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor | None = None
                       ) -> torch.Tensor:
        """z = mu + eps * sigma in training mode (eps drawn when not given), the mean in eval mode."""
        if not self.training:
            return mu
        return sample_codes(mu, logvar, torch.randn_like(mu) if eps is None else eps)
