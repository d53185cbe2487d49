"""FactorVAE (Kim & Mnih 2018, "Disentangling by factorising"): the ELBO + --tc_weight (gamma) x the total
correlation estimated by a discriminator that tells codes drawn from q(z) from codes permuted per dimension
(samples of the product of the marginals). The discriminator (Appendix: 6 layers of 1000 units, leaky ReLU
0.2) trains by its own Adam (--disc_lr, betas 0.5, 0.9 as the paper's) after each step of the VAE, and is
saved with its optimiser in the run's checkpoint."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.checkpoint import Checkpoint
from core.errors import VaeLabError
from losses.betatc import sampled_noise
from losses.objective import Batch, Forward, Objective, RunSettings, register
from losses.terms import kl_per_dimension

DISC_LAYERS = 6
DISC_UNITS = 1000


class Discriminator(nn.Module):
    """MLP from a code (B, latent) to two logits (B, 2): "from q(z)", "permuted"."""

    def __init__(self, latent: int, units: int = DISC_UNITS, layers: int = DISC_LAYERS):
        super().__init__()
        self.latent = latent
        blocks: list[nn.Module] = []
        width = latent
        for _ in range(layers - 1):
            blocks += [nn.Linear(width, units), nn.LeakyReLU(0.2)]
            width = units
        self.net = nn.Sequential(*blocks, nn.Linear(width, 2))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def permute_dims(z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each column of ``z`` (B, D) shuffled on its own (Kim & Mnih, Algorithm 1): samples of the product of
    the marginals prod_j q(z_j), where the rows of ``z`` are samples of q(z)."""
    b, d = z.shape
    order = torch.argsort(torch.rand(b, d, generator=generator, device="cpu"), dim=0).to(z.device)
    return torch.gather(z, 0, order)


def discriminator_tc(logits: torch.Tensor) -> torch.Tensor:
    """Kim & Mnih's TC estimate E[log D(z) - log(1 - D(z))] from the discriminator's logits (B, 2), column
    0 "from q(z)", column 1 "from the product of marginals": the mean difference of the two logits."""
    return (logits[:, 0] - logits[:, 1]).mean()


def discriminator_loss(logits_joint: torch.Tensor, logits_permuted: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of telling codes (class 0) from permuted codes (class 1), mean of the two halves."""
    zeros = torch.zeros(len(logits_joint), dtype=torch.long, device=logits_joint.device)
    ones = torch.ones(len(logits_permuted), dtype=torch.long, device=logits_permuted.device)
    return 0.5 * (F.cross_entropy(logits_joint, zeros) + F.cross_entropy(logits_permuted, ones))


@register("factorvae")
class FactorVAE(Objective):
    """Draws the noise itself (float32), as beta-TCVAE: the discriminator reads the codes the decoder saw."""

    terms = ("tc", "disc_loss")

    def __init__(self, cfg: RunSettings, model, dataset_size: int = 1, sync=None):
        super().__init__(cfg, model, dataset_size, sync)
        self.tc_weight = cfg.tc_weight
        device = next(model.parameters()).device
        self.discriminator = Discriminator(model.latent_size, cfg.disc_units).to(device)
        self.disc_optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=cfg.disc_lr, betas=(0.5, 0.9))
        self._codes: torch.Tensor | None = None  # this step's, for the discriminator's step after it

    def step(self, model, forward: Forward, batch: Batch, progress: float
             ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        noise = batch.noise if batch.noise is not None else sampled_noise(model, batch.x)
        out = forward(batch.x, noise, batch.y)
        self._codes = out.code_at(noise)
        img = self.reconstruction(out.logits, batch.x)
        kl = kl_per_dimension(out.mu, out.logvar).sum()
        kl_w = self.kl_w * self.kl_scale(progress)
        tc = discriminator_tc(self.discriminator(self._codes))
        penalty = kl_w * kl + self.tc_weight * tc
        loss = self.img_w * img + penalty
        return {"loss": loss, "img_loss": img, "kl_loss": kl, "kl_penalty": penalty,
                "kl_weight": torch.tensor(kl_w, device=loss.device), "tc": tc}, out.logits

    def after_step(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """One Adam step of the discriminator on the step's codes (detached) against the same codes permuted
        per dimension (the permutations drawn from the data-order generator: resumed exactly); its loss
        before the step."""
        z = self._codes.detach()
        loss = discriminator_loss(self.discriminator(z), self.discriminator(permute_dims(z, generator)))
        self.disc_optimizer.zero_grad(set_to_none=True)  # also drops what the VAE's backward left in it
        loss.backward()
        self.disc_optimizer.step()
        self._codes = None
        return {"disc_loss": loss.detach()}

    def checkpoint_entries(self) -> dict:
        return {"discriminator": {k: v.detach().cpu() for k, v in self.discriminator.state_dict().items()},
                "disc_optimizer": self.disc_optimizer.state_dict()}

    def restore_entries(self, ckpt: Checkpoint | dict, source: str) -> None:
        if isinstance(ckpt, dict):  # a checkpoint as written on disk
            ckpt = Checkpoint.from_dict(ckpt)
        saved = ckpt.entries
        if "discriminator" not in saved or "disc_optimizer" not in saved:
            trained = ckpt.trained_with("objective", "elbo")
            raise VaeLabError(f"{source!r} has no FactorVAE discriminator (it was trained with --objective "
                              f"{trained}); resume it with --objective {trained}, or start a new run")
        try:
            self.discriminator.load_state_dict(saved["discriminator"])
            self.disc_optimizer.load_state_dict(saved["disc_optimizer"])
        except (ValueError, KeyError, RuntimeError, TypeError) as e:
            raise VaeLabError(f"the FactorVAE discriminator in {source!r} does not fit this model "
                              f"({str(e).splitlines()[0][:100]})") from None
