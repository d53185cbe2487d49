"""The fully connected VAEs: `fc` (an MLP) and `fc_conv` (the 2018 best model)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.base import VAE
from models.family import Family, ModelConfig, register


class FCVAE(VAE):
    """784-400-z-400-784 MLP VAE (Kingma & Welling 2014, as in pytorch/examples)."""

    HIDDEN = 400

    def build(self, cfg: ModelConfig) -> None:
        hidden = self.HIDDEN
        n_pix = cfg.image_channels * cfg.image_size * cfg.image_size
        self.fc1 = nn.Linear(n_pix, hidden)
        self.fc21 = nn.Linear(hidden, self.latent_size)
        self.fc22 = nn.Linear(hidden, self.latent_size)
        self.fc3 = nn.Linear(cfg.decoder_input_size, hidden)
        self.out_shape = (cfg.output_channels, cfg.image_size, cfg.image_size)
        self.fc4 = nn.Linear(hidden, cfg.output_channels * cfg.image_size * cfg.image_size)
        self._setup_conditioning(cfg, hidden)

    def _encode(self, x, y):
        h = F.relu(self.label_bias(self.fc1(x.flatten(1)), y))
        return self.fc21(h), self.fc22(h)

    def _decode(self, z):
        return self.fc4(F.relu(self.fc3(z))).view(-1, *self.out_shape)


class FCConvVAE(VAE):
    """The 2018 best model: an FC VAE whose layers are stored as convolutions.

    Parameter names and shapes are those of the published checkpoint (fc1 a 28x28 conv,
    fc21/fc22 1x1 convs, fc3/fc4 transposed convs; fc4 has one bias shared by all pixels),
    so it loads unchanged. A conv whose kernel covers the whole input is a matrix product,
    so ``forward`` runs them as ``F.linear`` on reshaped weights: the same numbers, without
    the overhead of a 28x28 convolution.
    """

    ENC_HIDDEN, DEC_HIDDEN = 32, 118

    def build(self, cfg: ModelConfig) -> None:
        enc_hidden, dec_hidden = self.ENC_HIDDEN, self.DEC_HIDDEN
        z, c, s = self.latent_size, cfg.image_channels, cfg.image_size
        self.fc1 = nn.Conv2d(c, enc_hidden, kernel_size=s)
        self.fc21 = nn.Conv2d(enc_hidden, z, kernel_size=1)
        self.fc22 = nn.Conv2d(enc_hidden, z, kernel_size=1)
        self.fc3 = nn.ConvTranspose2d(cfg.decoder_input_size, dec_hidden, kernel_size=1)
        self.fc4 = nn.ConvTranspose2d(dec_hidden, c, kernel_size=s)
        self.reset_parameters()
        self._setup_conditioning(cfg, enc_hidden)

    def reset_parameters(self) -> None:
        """PyTorch 0.4's conv init, which the 2018 model trained with: U(-1/sqrt(n), 1/sqrt(n)),
        n = in_channels x kernel area. For the transposed convs n counts the real inputs, so
        fc4 starts ~10x smaller than today's default; that is what reaches 2018 quality in 30 epochs.
        """
        for layer in (self.fc1, self.fc21, self.fc22, self.fc3, self.fc4):
            n = layer.in_channels * layer.kernel_size[0] * layer.kernel_size[1]
            bound = 1.0 / n ** 0.5
            nn.init.uniform_(layer.weight, -bound, bound)
            nn.init.uniform_(layer.bias, -bound, bound)

    def _encode(self, x, y):
        h = F.relu(self.label_bias(F.linear(x.flatten(1), self.fc1.weight.flatten(1), self.fc1.bias), y))
        return (F.linear(h, self.fc21.weight.flatten(1), self.fc21.bias),
                F.linear(h, self.fc22.weight.flatten(1), self.fc22.bias))

    def _decode(self, z):
        # ConvTranspose2d weights are (in, out, kH, kW): transpose to Linear's (out, in).
        h = F.relu(F.linear(z, self.fc3.weight.flatten(1).t(), self.fc3.bias))
        c = self.fc4.out_channels
        w4 = self.fc4.weight.flatten(1)  # (hidden, c*s*s)
        b4 = self.fc4.bias.repeat_interleave(w4.shape[1] // c)  # one bias per channel
        return torch.addmm(b4, h, w4).view(-1, *self.image_shape)

    def forward_as_conv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The literal 2018 conv formulation (eval mode, unconditional), kept to test the fast path against."""
        h = F.relu(self.fc1(x))
        mu, logvar = self.fc21(h), self.fc22(h)
        logits = self.fc4(F.relu(self.fc3(mu)))
        return logits, mu.flatten(1), logvar.flatten(1)


register(Family("fc", FCVAE, "784-400-z-400-784 MLP", any_shape=True))
register(Family("fc_conv", FCConvVAE, "the 2018 best model (FC layers stored as convs)"))
