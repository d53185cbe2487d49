"""What a model family is, and the registry of them: each models/<family>.py declares its family (a
:class:`Family`: its config dataclass, the image shapes it takes, whether channels-last / bfloat16 help
it, what a checkpoint fixes, its ``--model_type`` help line) and registers it with :func:`register`. The
flags, the run's config, the checks, the fast path and the checkpoint loader read these declarations,
so a new family is one file (plus its import in models/__init__.py, or any import for one outside the tree)."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from losses.pixel_layout import MIXTURE_LOCATIONS, output_channels


@dataclass
class ModelConfig:
    """What every family's model is built from; each family's config subclasses it with its own fields
    (:func:`setting`). Stored in checkpoints as a plain dict. ``ModelConfig(model_type=NAME, ...)`` makes
    the config of the family registered as NAME (as pythae's AutoConfig), so its own fields are accepted."""

    model_type: str = "fc_conv"
    latent_space_size: int = 10
    model_multiplier: int = 1  # channel width multiplier of `fcn`, `resconv` and `hvae`
    image_channels: int = 1
    image_size: int = 28
    # --normalize: the training split's pixel mean/std; the encoder sees (x - mean) / std.
    input_mean: float = 0.0
    input_std: float = 1.0
    # --conditional: a CVAE whose encoder and decoder both see the class as a one-hot vector.
    conditional: bool = False
    num_classes: int = 10
    # p(x|z): bernoulli (the 2018 BCE), or logistic / gaussian with a learnt scale per channel
    # (losses/likelihoods.py), held by the model as ``log_scale``
    likelihood: str = "bernoulli"
    # p(z): "gaussian" N(0, I), or "vamp", the VampPrior with `vamp_components` learnt pseudo-inputs
    prior: str = "gaussian"
    vamp_components: int = 500
    # likelihood "dmol": logistics in the mixture of each pixel (models/pixels.py)
    mixture_components: int = 5
    # likelihood "dmol": how the decoder's output gives the logistics' locations (losses/pixel_layout.py,
    # MIXTURE_LOCATIONS): "unbounded", or "sigmoid" for a model trained before issue 36 (a stored config
    # without this field: models.config_from_dict)
    mixture_location: str = "unbounded"

    def __new__(cls, *args: Any, **kwargs: Any) -> ModelConfig:
        # the base class stands for the family named by model_type (an unknown name stays a base config:
        # build_model refuses it with the list of names)
        if cls is ModelConfig:
            family = MODELS.get(kwargs.get("model_type", ModelConfig.model_type))
            cls = family.config if family is not None else cls
        return super().__new__(cls)

    def __post_init__(self) -> None:
        family = MODELS.get(self.model_type)
        if family is not None and type(self) is not family.config:
            raise ValueError(f"{type(self).__name__} is not the config of --model_type {self.model_type}")
        if self.mixture_location not in MIXTURE_LOCATIONS:
            raise ValueError(f"mixture_location {self.mixture_location!r:.40} is not one of {MIXTURE_LOCATIONS}")

    @property
    def output_channels(self) -> int:
        """What the decoder's last layer outputs per pixel: a logit per channel, or the mixture's parameters."""
        return output_channels(self.likelihood, self.image_channels, self.mixture_components)

    @property
    def decoder_input_size(self) -> int:
        """What the decoder's first layer takes: z, plus the one-hot class of a CVAE."""
        return self.latent_space_size + (self.num_classes if self.conditional else 0)

    def to_dict(self) -> dict:
        return asdict(self)


def setting(default: Any, help: str, *, low: int | None = None, high: int | None = None,
            choices: tuple | None = None, parse: Callable[[str], Any] | None = None) -> Any:
    """A family's own config field, which is also a train.py flag of the same name (``--help``: ``help``),
    a key of the run's YAML config and of its checkpoint: an integer in [``low``, ``high``] (``high`` None:
    no upper bound), one of ``choices``, or what ``parse`` makes of the flag's text (ValueError if bad)."""
    return field(default=default, metadata={"help": help, "low": low, "high": high, "choices": choices,
                                            "parse": parse})


@dataclass(frozen=True)
class Family:
    """A model family, as its file declares it."""

    name: str  # --model_type
    model: Callable[[Any], nn.Module]  # its models.base.VAE subclass: the model of a config of type ``config``
    help: str  # --model_type's help for it
    config: type[ModelConfig] = ModelConfig  # its config: ModelConfig, or a subclass with its own settings
    # Built for any (C, H, W) and any likelihood (its last layer outputs cfg.output_channels); the others are
    # 2018 models of 28x28 grey images, one logit per pixel.
    any_shape: bool = False
    # Why an image size cannot be built ("" or None: it can), given the size; only for any_shape families
    size_problem: Callable[[int], str | None] | None = None
    # Unconditional, un-normalised, Gaussian prior and multiplier 1 only (the 2018 failures rebuilt for study).
    plain_only: bool = False
    # A KL term per latent level, not one Gaussian code per image: no free bits, no --compile, no objective
    # but the ELBO.
    hierarchical: bool = False
    # Why --iw_train cannot train it ("": it can).
    no_iw_train: str = ""
    # The fastest numerically safe path (benchmarks/conv_speed.py, docs/speed.md): channels-last conv
    # layers and bfloat16 autocast (where the device has it natively) made its training step faster.
    channels_last_faster: bool = False
    bf16_faster: bool = False
    # Its own settings that a resumed checkpoint fixes (a flag that contradicts them is refused); None: all.
    fixed_by_checkpoint: tuple[str, ...] | None = None
    # More checks of a run's settings (config.RunConfig, read by name): the one-line problem, or None.
    check: Callable[[Any], str | None] | None = None

    @property
    def settings(self) -> tuple[dataclasses.Field, ...]:
        """Its own config fields (beyond ModelConfig's), each a flag."""
        shared = {f.name for f in dataclasses.fields(ModelConfig)}
        return tuple(f for f in dataclasses.fields(self.config) if f.name not in shared)

    @property
    def fixed(self) -> tuple[str, ...]:
        """Its settings a checkpoint fixes."""
        names = tuple(f.name for f in self.settings)
        return names if self.fixed_by_checkpoint is None else self.fixed_by_checkpoint


# --model_type name -> its family, in registration order (--help's)
MODELS: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Add ``family`` to the registry (a family of the same name is replaced). Two families may share a
    setting (one flag) only with the same default."""
    for other in MODELS.values():
        for f in other.settings:
            mine = family.config.__dataclass_fields__.get(f.name)
            if other.name != family.name and mine is not None and mine.default != f.default:
                raise ValueError(f"family {family.name!r}: the setting {f.name!r} is also {other.name!r}'s, "
                                 "with another default")
    MODELS[family.name] = family
    return family
