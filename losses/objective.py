"""What the training loop knows of an objective: one interface, and a registry of them by name.

The loop (engine.train_one_epoch) draws a minibatch, calls ``terms, logits = objective.step(model, forward,
batch, progress)``, back-propagates ``terms["loss"]``, steps the optimiser, then merges what
``objective.after_step(generator)`` returns (a second optimiser's step, e.g. FactorVAE's discriminator). An
objective owns everything in between: which noise it needs, whether it asks the model for its KL terms, its
schedules (KL warm-up, capacity) read off ``progress``, and the terms it logs (``train_<name>`` in
TensorBoard). Validation asks it for ``validation_loss(img, kl)``; the checkpoint stores ``state_dict()``
(``loss_state``) and ``checkpoint_entries()``.

Add one: subclass :class:`Objective` in one file and decorate it with ``@register("name")``; ``--objective
name`` then trains it (the module must be imported before the flags are parsed, as losses/__init__.py does
for the project's own). Reductions: every term is per image (nats), averaged over the minibatch.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from core.checkpoint import Checkpoint
from losses.terms import IMAGE_LOSSES, reconstruction_loss

if TYPE_CHECKING:  # the model's types, for the hints only: models import losses.pixel_layout
    from models.base import VAE, ModelOutput

# config.run_config.RunConfig: the run's frozen settings (a higher layer, so not imported here); an objective
# reads the fields it needs by name.
RunSettings = Any
# The model's forward as the loop runs it (under bfloat16 autocast with --amp, the output in float32):
# forward(x, eps, y, with_kl) -> ModelOutput.
Forward = Callable[..., "ModelOutput"]


@dataclass(frozen=True)
class Batch:
    """One training minibatch as this process holds it: images ``x`` in [0, 1], labels ``y`` of a conditional
    model (else None), and ``noise``: this process's rows of the whole minibatch's reparameterisation noise
    under torchrun (runtime/distributed.py), None in a single process (drawn where the objective says)."""

    x: torch.Tensor
    y: torch.Tensor | None
    noise: torch.Tensor | None


class Objective:
    """Reconstruction term and weights shared by the objectives; subclasses define :meth:`step`.

    Built from the run's settings ``cfg`` and the model it trains (a likelihood with a learnt scale reads
    ``model.log_scale``); ``dataset_size``: images in the training set; ``sync``: under torchrun,
    (per-image means, images) -> global means (distributed.World.weighted_mean), else None.
    """

    # What step / after_step log besides loss, img_loss, kl_loss, kl_weight, kl_penalty and the model's KL
    # levels: train_<name> in TensorBoard and the history.
    terms: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: RunSettings, model: VAE, dataset_size: int = 1,
                 sync: Callable[[torch.Tensor, int], torch.Tensor] | None = None):
        if cfg.image_loss_type not in IMAGE_LOSSES:
            raise ValueError(f"unknown image loss {cfg.image_loss_type!r}; choose from {IMAGE_LOSSES}")
        self.image_loss_type = cfg.image_loss_type
        self.img_w, self.kl_w = cfg.img_loss_weight, cfg.kl_loss_weight
        self.ssim_window_size, self.ssim_weight = cfg.ssim_window_size, cfg.ssim_weight
        self.warmup_epochs = cfg.kl_warmup_epochs
        self.log_scale = model.log_scale  # logistic / gaussian: the parameter the optimiser trains; else None
        self.dataset_size, self.sync = dataset_size, sync

    def step(self, model: VAE, forward: Forward, batch: Batch, progress: float
             ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The terms of one minibatch (``loss`` is what the loop back-propagates) and the decoder's output
        (the train SSIM's images). ``model``: the plain VAE (its properties and methods); ``forward``: its
        forward as trained (DDP, compiled, autocast); ``progress``: epochs done, e.g. 1.25 a quarter into
        the second epoch."""
        raise NotImplementedError

    def after_step(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """After the optimiser's step: anything else this objective trains; its logged terms. ``generator``:
        the run's data-order generator (checkpointed, so a resumed run draws the same numbers)."""
        return {}

    def logged_terms(self, levels: tuple[str, ...]) -> tuple[str, ...]:
        """The names :meth:`step` and :meth:`after_step` log beyond loss, img_loss and kl_loss, in order;
        ``levels``: the model's KL levels (a hierarchical model's)."""
        return ("kl_weight", "kl_penalty") + levels + self.terms

    def reconstruction(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The --image_loss_type term, per image."""
        return reconstruction_loss(self.image_loss_type, logits, x, self.ssim_window_size, self.ssim_weight,
                                   self.log_scale)

    def kl_scale(self, progress: float) -> float:
        """Linear KL warm-up factor in [0, 1] over --kl_warmup_epochs, step by step."""
        if not self.warmup_epochs:
            return 1.0
        return min(1.0, progress / self.warmup_epochs)

    def validation_loss(self, img: torch.Tensor, kl: torch.Tensor) -> torch.Tensor:
        """The full objective (no warm-up, free bits or rebalancing): the ELBO-like loss that validation
        reports and that picks the best checkpoint."""
        return self.img_w * img + self.kl_w * kl

    def compile(self) -> None:
        """--compile: torch.compile this objective's per-step arithmetic (only the ELBO's combines)."""
        raise NotImplementedError(f"{type(self).__name__} has no compiled form")

    def state_dict(self) -> dict:
        """The checkpoint's ``loss_state``: the ELBO's running means (losses/elbo.py); an objective
        without them stores the same keys empty, as every checkpoint since 2018 holds them."""
        return {"img_rm": None, "kl_rm": None}

    def load_state_dict(self, state: dict) -> None:
        """Put back what :meth:`state_dict` stored (nothing here)."""

    def checkpoint_entries(self) -> dict:
        """Top-level checkpoint keys of this objective's own modules (FactorVAE's discriminator); none here."""
        return {}

    def restore_entries(self, ckpt: Checkpoint | dict, source: str) -> None:
        """Load what :meth:`checkpoint_entries` saved from ``ckpt`` (read from ``source``; its ``entries``);
        VaeLabError when it is missing or does not fit."""


OBJECTIVES: dict[str, type[Objective]] = {}  # --objective name -> objective


def register(name: str) -> Callable[[type[Objective]], type[Objective]]:
    """Class decorator: ``--objective name`` trains this objective."""
    def add(cls: type[Objective]) -> type[Objective]:
        if name in OBJECTIVES and OBJECTIVES[name] is not cls:
            raise ValueError(f"objective {name!r} is registered already ({OBJECTIVES[name].__name__})")
        OBJECTIVES[name] = cls
        return cls
    return add
