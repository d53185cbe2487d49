"""The ELBO: reconstruction + KL (beta-VAE with --kl_loss_weight above 1), the 2018 loss and the default.

Its controls: the KL warm-up (--kl_warmup_epochs, losses/objective.py), free bits (--free_bits: each latent
dimension's batch-mean KL counts as at least the floor, Kingma et al. 2016) and the 2018 rebalancing
(--do_running_mean: each term divided by an exponential running mean of its own value, gamma 0.9, so both
contribute on a unit scale before weighting; the running means go into checkpoints).
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from losses.objective import Batch, Forward, Objective, RunSettings, register
from losses.terms import kl_per_dimension

# The running means' decay per step (the 2018 project's value).
RUNNING_MEAN_GAMMA = 0.9


@register("elbo")
class Elbo(Objective):
    """``kl_loss`` is always the true KL; ``kl_penalty`` is what the objective used (free bits), ``kl_weight``
    its weight (warm-up included). A model whose KL has no closed form in (mu, logvar) (the VampPrior, a
    hierarchical model) gives its KL per image and level from its forward; free bits need the closed form."""

    def __init__(self, cfg: RunSettings, model, dataset_size: int = 1,
                 sync: Callable[[torch.Tensor, int], torch.Tensor] | None = None):
        super().__init__(cfg, model, dataset_size, sync)
        self.running_mean, self.gamma = cfg.do_running_mean, RUNNING_MEAN_GAMMA
        self.free_bits = cfg.free_bits
        self.img_rm: torch.Tensor | None = None
        self.kl_rm: torch.Tensor | None = None
        self.loss = self.terms_of  # --compile replaces it by its compiled form

    def step(self, model, forward: Forward, batch: Batch, progress: float
             ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        out = forward(batch.x, batch.noise, batch.y, with_kl=not model.analytic_kl)
        kls = out.kl
        terms = self.loss(out.logits, batch.x, out.mu, out.logvar, None if kls is None else kls.sum(1).mean(),
                          self.kl_scale(progress))
        terms.update({level: kls[:, j].mean() for j, level in enumerate(model.level_names)})
        return terms, out.logits

    def terms_of(self, logits: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
                 kl: torch.Tensor | None = None, kl_scale: float = 1.0) -> dict[str, torch.Tensor]:
        """The step's arithmetic. ``kl``: the per-image mean KL of a model without the closed form, else
        None; ``kl_scale``: the warm-up factor."""
        img = self.reconstruction(logits, x)
        if kl is None:
            kl_dims = kl_per_dimension(mu, logvar)
            kl = kl_dims.sum()
            penalty = kl_dims.clamp_min(self.free_bits).sum() if self.free_bits > 0 else kl
        else:
            penalty = kl
        kl_w = self.kl_w * kl_scale
        if self.running_mean:
            img_rm, kl_rm = self._rebalance(img, penalty, x.shape[0])
            loss = self.img_w * img / img_rm.clamp_min(1e-8) + kl_w * penalty / kl_rm.clamp_min(1e-8)
        else:
            loss = self.img_w * img + kl_w * penalty
        return {"loss": loss, "img_loss": img, "kl_loss": kl, "kl_penalty": penalty,
                "kl_weight": torch.tensor(kl_w, device=loss.device)}

    def _rebalance(self, img: torch.Tensor, penalty: torch.Tensor, images: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The running means updated with this step's terms (under torchrun: the whole minibatch's)."""
        img_d, kl_d = img.detach(), penalty.detach()
        if self.sync is not None:
            img_d, kl_d = self.sync(torch.stack([img_d, kl_d]), images).unbind()
        if self.img_rm is None:
            self.img_rm, self.kl_rm = img_d, kl_d
        else:
            self.img_rm = self.gamma * self.img_rm + (1 - self.gamma) * img_d
            self.kl_rm = self.gamma * self.kl_rm + (1 - self.gamma) * kl_d
        return self.img_rm, self.kl_rm

    def compile(self) -> None:
        # fuses BCE-from-logits (several passes over the batch in eager mode) into one loop; the model is
        # compiled separately
        self.loss = torch.compile(self.terms_of)

    def state_dict(self) -> dict:
        return {"img_rm": self.img_rm, "kl_rm": self.kl_rm}

    def load_state_dict(self, state: dict) -> None:
        self.img_rm, self.kl_rm = state.get("img_rm"), state.get("kl_rm")
