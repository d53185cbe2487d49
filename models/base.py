"""What every VAE here shares: the reparameterisation and the (logits, mu, logvar) contract."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model; stored in checkpoints as a plain dict."""

    model_type: str = "fc_conv"
    latent_space_size: int = 10
    model_multiplier: int = 1  # channel width multiplier of `fcn`
    split_filter: int = 2  # `fcn`: encoder blocks shared by the mu and logvar heads
    image_channels: int = 1
    image_size: int = 28
    # --normalize: the training split's pixel mean/std; the encoder sees (x - mean) / std.
    input_mean: float = 0.0
    input_std: float = 1.0
    # --conditional: a CVAE whose encoder and decoder both see the class as a one-hot vector.
    conditional: bool = False
    num_classes: int = 10
    # `unet`: the resolutions whose encoder maps the decoder also gets ("none", "all", "7,14", ...)
    unet_skips: str = "all"
    # `conv1xn`: N of the 1xN / Nx1 convolution pairs
    conv_n: int = 3
    # p(x|z): bernoulli (the 2018 BCE), or logistic / gaussian with a learnt scale per channel
    # (losses/likelihoods.py), held by the model as ``log_scale``
    likelihood: str = "bernoulli"

    @property
    def decoder_input_size(self) -> int:
        """What the decoder's first layer takes: z, plus the one-hot class of a CVAE."""
        return self.latent_space_size + (self.num_classes if self.conditional else 0)

    def to_dict(self) -> dict:
        return asdict(self)


# forward() clamps the encoder's logvar to this range: posterior std between 3e-7 and 2.2e4.
# No trained model comes near either end, but an unclamped logvar that drifts above ~88
# makes exp(logvar) overflow float32, and the KL term and its gradient become Inf/NaN.
LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0


class VAE(nn.Module):
    """Base class: subclasses implement ``_encode`` (standardised input) and ``_decode``.

    ``forward`` returns ``(logits, mu, logvar)``: pixel logits (BCE is computed from them,
    which is numerically safe), and the diagonal Gaussian posterior with mu of shape (B, z)
    and logvar clamped to [LOGVAR_MIN, LOGVAR_MAX]. In training mode z is sampled; in eval
    mode the posterior mean is decoded.

    A conditional model (``conditional``) takes class labels ``y`` (B,) everywhere: the
    decoder gets ``cat(z, one_hot(y))``, and the encoder adds a learnt per-class vector to
    its first hidden layer (``label_bias``), which equals feeding it the one-hot as input.
    """

    latent_size: int
    likelihood: str = "bernoulli"  # see ModelConfig.likelihood; set by models.build_model
    input_mean: float = 0.0
    input_std: float = 1.0
    conditional: bool = False
    num_classes: int = 10
    # `unet`: the resolutions whose encoder maps the decoder also gets ("none", "all", "7,14", ...)
    unet_skips: str = "all"
    # `conv1xn`: N of the 1xN / Nx1 convolution pairs
    conv_n: int = 3

    def __init__(self) -> None:
        super().__init__()
        # the learnt log-scale per channel of a logistic or Gaussian likelihood (models.build_model
        # sets it); None for the Bernoulli one, and then not in the state dict
        self.register_parameter("log_scale", None)

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
        if self.input_mean != 0.0 or self.input_std != 1.0:
            x = (x - self.input_mean) / self.input_std
        return self._encode(x, y)

    def _encode(self, x: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def decode_logits(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Pixel logits (B, C, H, W) of latent codes (B, z) (and classes (B,) for a CVAE)."""
        if self.conditional:
            z = torch.cat([z, self._one_hot(y, z)], dim=1)
        return self._decode(z)

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Images in [0, 1] from latent codes (B, z)."""
        return torch.sigmoid(self.decode_logits(z, y))

    def posterior(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x) as (mu, logvar), logvar clamped to [LOGVAR_MIN, LOGVAR_MAX]: what training,
        the likelihood bound and the embeddings all use."""
        mu, logvar = self.encode(x, y)
        return mu, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)

    def forward(self, x: torch.Tensor, eps: torch.Tensor | None = None, y: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``eps``: the reparameterisation noise, drawn here when not given (torchrun ranks pass
        their rows of the whole minibatch's noise, see runtime/distributed.py)."""
        mu, logvar = self.posterior(x, y)
        return self.decode_logits(self.reparameterize(mu, logvar, eps), y), mu, logvar

    def reparameterize(self, mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor | None = None
                       ) -> torch.Tensor:
        """z = mu + eps * sigma in training mode (eps drawn when not given), the mean in eval mode."""
        if not self.training:
            return mu
        return mu + (torch.randn_like(mu) if eps is None else eps) * torch.exp(0.5 * logvar)
