"""What every VAE here shares: the reparameterisation and the (logits, mu, logvar) contract."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
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

    def to_dict(self) -> dict:
        return asdict(self)


# forward() clamps the encoder's logvar to this range: posterior std between 3e-7 and 2.2e4.
# No trained model comes near either end, but an unclamped logvar that drifts above ~88
# makes exp(logvar) overflow float32, and the KL term and its gradient become Inf/NaN.
LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0


class VAE(nn.Module):
    """Base class: subclasses implement ``_encode`` (standardised input) and ``decode_logits``.

    ``forward`` returns ``(logits, mu, logvar)``: pixel logits (BCE is computed from them,
    which is numerically safe), and the diagonal Gaussian posterior with mu of shape (B, z)
    and logvar clamped to [LOGVAR_MIN, LOGVAR_MAX]. In training mode z is sampled; in eval
    mode the posterior mean is decoded.
    """

    latent_size: int
    input_mean: float = 0.0
    input_std: float = 1.0

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar) of images ``x`` in [0, 1]; standardised here so every caller gets it."""
        if self.input_mean != 0.0 or self.input_std != 1.0:
            x = (x - self.input_mean) / self.input_std
        return self._encode(x)

    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] from latent codes (B, z)."""
        return torch.sigmoid(self.decode_logits(z))

    def forward(self, x: torch.Tensor, eps: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``eps``: the reparameterisation noise, drawn here when not given (torchrun ranks pass
        their rows of the whole minibatch's noise, see distributed.py)."""
        mu, logvar = self.encode(x)
        logvar = logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)
        if self.training:
            z = mu + (torch.randn_like(mu) if eps is None else eps) * torch.exp(0.5 * logvar)
        else:
            z = mu
        return self.decode_logits(z), mu, logvar
