"""What a checkpoint file holds, by name and type: the one definition of its contents.

On disk a checkpoint stays a plain dict of tensors, numbers and strings (it loads with
``torch.load(weights_only=True)``): the 2018 keys ``epoch``, ``optimizer``, ``state_dict`` and
``best_loss``, and ours, ``args``, ``scheduler``, ``rng_state``, ``loss_state``, ``model_config``,
``history``, ``global_step``, plus what an objective keeps of its own (FactorVAE's ``discriminator``
and ``disc_optimizer``). :class:`Checkpoint` is that dict read once: runtime/checkpoints.py's
``load_checkpoint`` checks every key (runtime/checkpoint_validation.py) and returns one, so a reader
asks for ``ckpt.epoch`` or ``ckpt.history`` and needs neither a key nor a default of its own.
It lives on the lowest floor because the config (config/resolve.py) reads a resumed run's settings from it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

LEGACY_KEYS = ("epoch", "state_dict", "optimizer", "best_loss")  # the 2018 format: these four only
OUR_KEYS = LEGACY_KEYS + ("args", "scheduler", "rng_state", "loss_state", "model_config", "history", "global_step")
# What a 2018 checkpoint's model was: the published fc_conv on 28x28 grey images, a Bernoulli likelihood.
LEGACY_MODEL = {"model_type": "fc_conv (2018)", "image_channels": 1, "image_size": 28, "likelihood": "bernoulli"}


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint's contents (ours or 2018's); build it with :meth:`from_dict` from a dict already checked
    by runtime.checkpoint_validation, write it with :meth:`to_dict`."""

    epoch: int  # epochs trained so far (1-based count): training resumes at this 0-based epoch
    state_dict: dict[str, torch.Tensor]  # the model's weights, on the CPU
    optimizer: dict[str, Any]  # torch.optim.Optimizer.state_dict()
    best_loss: float  # lowest validation loss so far (2018: a sum over batches, re-measured on resume)
    model_config: dict[str, Any] | None = None  # models' ModelConfig.to_dict(); None: a 2018 checkpoint
    args: dict[str, Any] = field(default_factory=dict)  # RunConfig.to_dict() of the run that wrote it
    scheduler: dict[str, Any] | None = None  # the learning-rate schedule's state_dict()
    rng_state: dict[str, Any] | None = None  # runtime.seeding.get_rng_state(): every RNG the run draws from
    loss_state: dict[str, Any] = field(default_factory=dict)  # the objective's state_dict() (running means)
    history: list[dict[str, Any]] = field(default_factory=list)  # one dict per epoch trained (train.py)
    global_step: int | None = None  # training batches so far (None: not stored, epoch x batches is used)
    entries: dict[str, Any] = field(default_factory=dict)  # an objective's own (losses/*.checkpoint_entries)

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> Checkpoint:
        """The view of a loaded checkpoint dict (checked already: runtime.checkpoints.load_checkpoint)."""
        ours = "model_config" in state
        known = OUR_KEYS if ours else LEGACY_KEYS
        optional = {k: state[k] for k in ("args", "scheduler", "rng_state", "loss_state", "history", "global_step")
                    if ours and k in state}
        return cls(epoch=int(state["epoch"]), state_dict=state["state_dict"], optimizer=state["optimizer"],
                   best_loss=float(state["best_loss"]), model_config=state.get("model_config") if ours else None,
                   entries={k: v for k, v in state.items() if k not in known}, **optional)

    def to_dict(self) -> dict[str, Any]:
        """The plain dict written to disk, keys in the order train.py has always written them."""
        state: dict[str, Any] = {"epoch": self.epoch, "state_dict": self.state_dict, "optimizer": self.optimizer,
                                 "best_loss": self.best_loss}
        if not self.legacy:
            state.update(args=self.args, scheduler=self.scheduler, rng_state=self.rng_state,
                         loss_state=self.loss_state, model_config=self.model_config, history=self.history,
                         global_step=self.global_step)
            state = {k: v for k, v in state.items() if v is not None}  # an absent optional key stays absent
        return {**state, **self.entries}

    @property
    def legacy(self) -> bool:
        """A 2018 checkpoint: the four 2018 keys, no model config (nor settings, history or RNG state)."""
        return self.model_config is None

    def trained_with(self, setting: str, default: Any = None) -> Any:
        """The value of a RunConfig ``setting`` in the run that wrote it (``default`` if it stored none,
        e.g. a 2018 checkpoint)."""
        return self.args.get(setting, default)

    def model_setting(self, key: str) -> Any:
        """A field of the stored model config; for a 2018 checkpoint, what the published model was
        (LEGACY_MODEL); a field the file lacks is the ModelConfig default of the base commit."""
        stored = LEGACY_MODEL if self.model_config is None else self.model_config
        return stored.get(key, LEGACY_MODEL.get(key))

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of the images its model was built for."""
        size = self.model_setting("image_size")
        return self.model_setting("image_channels"), size, size
