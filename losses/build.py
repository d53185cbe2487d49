"""The run's objective, from its settings."""
from __future__ import annotations

from collections.abc import Callable

import torch

from losses.iwae import IWAE
from losses.objective import OBJECTIVES, Objective, RunSettings


def build_objective(cfg: RunSettings, model, dataset_size: int = 1,
                    sync: Callable[[torch.Tensor, int], torch.Tensor] | None = None) -> Objective:
    """--iw_train K above 1 trains the IWAE bound, else --objective's (the registry: losses/objective.py).
    ``model``: the plain VAE; ``dataset_size``: training images; ``sync``: under torchrun, the world's
    weighted mean (the ELBO's running means follow the whole minibatch)."""
    cls = IWAE if cfg.iw_train > 1 else OBJECTIVES[cfg.objective]
    return cls(cfg, model, dataset_size, sync)
