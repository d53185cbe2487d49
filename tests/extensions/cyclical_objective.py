"""An objective defined outside the tree, for tests/test_extend_objective.py: the ELBO with cyclical KL
annealing (Fu et al. 2019, "Cyclical annealing schedule"): the KL weight rises linearly from 0 to
--kl_loss_weight over the first half of each cycle of CYCLE_EPOCHS epochs, then holds, and starts again.
Registered by the test (``losses.register("cyclical")(Cyclical)``); nothing else in the project knows it."""
from __future__ import annotations

import torch

from losses import Batch, Objective, kl_divergence

CYCLE_EPOCHS = 1.0  # one cycle per epoch
RAMP = 0.5  # the share of a cycle spent rising


def beta_at(progress: float) -> float:
    """The annealing factor after ``progress`` epochs: 0 at each cycle's start, 1 from its middle on."""
    return min(1.0, (progress % CYCLE_EPOCHS) / (RAMP * CYCLE_EPOCHS))


class Cyclical(Objective):
    """Logs its factor as train_beta; a hierarchical model's KL levels as the ELBO does."""

    terms = ("beta",)

    def step(self, model, forward, batch: Batch, progress: float) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        out = forward(batch.x, batch.noise, batch.y, with_kl=not model.analytic_kl)
        img = self.reconstruction(out.logits, batch.x)
        kl = kl_divergence(out.mu, out.logvar) if out.kl is None else out.kl.sum(1).mean()
        beta = beta_at(progress)
        loss = self.img_w * img + self.kl_w * beta * kl
        terms = {"loss": loss, "img_loss": img, "kl_loss": kl, "kl_penalty": kl,
                 "kl_weight": torch.tensor(self.kl_w * beta, device=loss.device),
                 "beta": torch.tensor(beta, device=loss.device)}
        terms.update({level: out.kl[:, j].mean() for j, level in enumerate(model.level_names)})
        return terms, out.logits
