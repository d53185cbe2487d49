"""The run's configuration: one frozen dataclass, each default stated once, built once by the CLI
(config/resolve.py) and handed down to the engine, the optimiser, the training state, the
evaluation and the checkpoints. Its field names are train.py's flag names (``--batch-size`` is
``batch_size``); the model's config (models.ModelConfig) takes the fields of the same name. The model
families' own settings (--hvae_channels, --pixel_layers, ...) are declared in their models/<family>.py,
and every RunConfig has them too (run_config_type)."""
from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import asdict, dataclass, fields
from typing import Any

from datasets import TEST_FRACTION
from losses import likelihood_of
from models import MODELS, ModelConfig

DEFAULT_LOGNUMBER = "fmnist_fc_conv_l10_rebalance_no_norm"

# Named configurations for --preset: they replace the defaults of these fields (flags, a config
# file and a resumed checkpoint still win). "best" is the best configuration of benchmarks/quality.md.
PRESETS: dict[str, dict[str, Any]] = {
    "2018": {},
    "best": {"model_type": "resconv", "batch_size": 128, "epochs": 18, "lr_schedule": "cosine",
             "lognumber": "fmnist_resconv_l10_best"},
    # the best likelihood of benchmarks/quality_families.md: `best` made hierarchical, KL warmed up
    "hvae": {"model_type": "hvae", "batch_size": 128, "epochs": 18, "lr_schedule": "cosine", "kl_warmup_epochs": 6,
             "lognumber": "fmnist_hvae_l10_best"},
    # the best test bits/dim of benchmarks/density.md in under 30 minutes on 2 CPU cores (about 2 minutes an
    # epoch with --amp auto's bfloat16): resconv whose decoder sees its neighbours, a mixture of 5 discretised
    # logistics per pixel
    "density": {"model_type": "pixelvae", "image_loss_type": "dmol", "pixel_layers": 1, "pixel_channels": 32,
                "batch_size": 128, "epochs": 12, "lr_schedule": "cosine", "lognumber": "fmnist_pixelvae_l10_density"},
    # pictures and code lengths from the code alone (issue 36): the deep hierarchical VAE with a pixel mixture, its
    # KL warmed up over the first epoch and its gradient's norm limited to cut the spikes (the stability the NVAE /
    # VDVAE papers needed; on Fashion-MNIST the first epoch's norms had median 1,676 and 99th percentile 6,169, in
    # nats per image); about 3.3 minutes an epoch on 2 CPU cores in float32, so 9 epochs fit in 30 minutes
    "deep": {"model_type": "deep_hvae", "image_loss_type": "dmol", "batch_size": 128, "epochs": 9,
             "lr_schedule": "cosine", "kl_warmup_epochs": 1, "grad_clip": 5000.0,
             "lognumber": "fmnist_deep_hvae_l10_deep"},
}
# The run names that describe the run (fmnist_<model>_l<latent>_<rest>): see run_name.
DEFAULT_NAMES = frozenset({DEFAULT_LOGNUMBER} | {p["lognumber"] for p in PRESETS.values() if "lognumber" in p})


@dataclass(frozen=True)
class RunConfig:
    """Every setting of a run. Defaults: the 2018 best command."""

    # ---- training
    preset: str = "2018"  # the named configuration the run started from (PRESETS)
    epochs: int = 30  # last epoch to train, counting resumed ones
    start_epoch: int = 0  # first epoch when not resuming
    batch_size: int = 512  # images per minibatch (global, under torchrun)
    seed: int = 42  # torch, numpy, random, data order and the validation split
    do_augs: bool = False  # the 2018 batch augmentations
    # ---- model (models.ModelConfig takes these by name, and the family's own settings: run_config_type)
    model_type: str = "fc_conv"
    latent_space_size: int = 10  # z (hvae: its top code)
    model_multiplier: int = 1  # channel width multiplier (fcn, resconv, hvae)
    prior: str = "gaussian"  # p(z): gaussian or vamp
    vamp_components: int = 500  # VampPrior pseudo-inputs
    conditional: bool = False  # CVAE
    # ---- data
    dataset_type: str = "fmnist"
    data_root: str = "data"  # dataset folder (torchvision layout, or the user's images)
    image_size: int | None = None  # pixels a side; None: the data's own
    channels: int | None = None  # 1 or 3; None: the data's own
    test_fraction: float = TEST_FRACTION  # a folder without train/ and test/: share held out
    background: str = "white"  # image files: the colour under transparent pixels (white, black or R,G,B)
    fold: int = 0  # validation fold of the training images
    num_folds: int = 5  # StratifiedKFold splits: 5 gives 48k train / 12k val
    factor: str = ""  # factor data sets: the factor that labels the images (KNN, folds, CVAE); "": shape
    factor_images: int = 0  # factor data sets: images drawn (fixed seed) from the grid, train + test; 0: all
    # ---- loss
    image_loss_type: str = "bce"
    img_loss_weight: float = 1.0
    kl_loss_weight: float = 1.0
    kl_warmup_epochs: float = 0.0  # epochs of linear KL warm-up; 0: off
    free_bits: float = 0.0  # nats per latent dimension; 0: off
    ssim_weight: float = 1.0  # bce_ssim: weight of the SSIM term
    do_running_mean: bool = False  # 2018 rebalancing of the terms by their running means
    normalize: bool = False  # the encoder sees (x - mean) / std of the training fold
    iw_train: int = 1  # IWAE samples per image; 1: the ELBO
    mixture_components: int = 5  # --image_loss_type dmol: logistics in each pixel's mixture
    objective: str = "elbo"  # elbo (beta-VAE through kl_loss_weight), capacity, betatc, factorvae (losses/)
    capacity_max: float = 25.0  # capacity: nats the KL is pulled towards at the end of the ramp
    capacity_epochs: float = 1.0  # capacity: epochs over which C grows linearly from 0 to capacity_max
    capacity_weight: float = 1000.0  # capacity: gamma of gamma * |KL - C|
    tc_weight: float = 6.0  # betatc: beta, the weight of the total correlation; factorvae: gamma
    disc_lr: float = 1e-4  # factorvae: the discriminator's Adam learning rate
    disc_units: int = 1000  # factorvae: width of the discriminator's hidden layers
    ssim_window_size: int = 5  # odd side of the Gaussian SSIM window
    # ---- optimisation
    optimizer: str = "adam"
    lr: float = 1e-3
    m1: int = 40  # MultiStepLR milestones (epochs)
    m2: int = 50
    lr_schedule: str = "multistep"
    grad_clip: float = 0.0  # global L2 norm; 0: off
    # ---- logging
    print_freq: int = 10  # console line every N minibatches
    lognumber: str = DEFAULT_LOGNUMBER  # the run's name: its files in weights/, tb_logs/, results/
    overwrite: bool = False  # replace the files of an existing run of this name
    tensorboard: bool = True
    tensorboard_images: bool = True
    weights_dir: str = "weights"
    tb_dir: str = "tb_logs"
    results_dir: str = "results"
    # ---- checkpoints and modes
    config: str = ""  # the YAML file the run was started from
    resume: str = ""  # checkpoint to continue from (or to evaluate / predict)
    evaluate: bool = False
    iw_samples: int = 0  # --evaluate: IWAE samples per image; 0: off
    fid: int = 0  # --evaluate: images for the FIDs; 0: off
    disentanglement: bool = False  # --evaluate on a factor data set: MIG, FactorVAE score, DCI, SAP
    predict: bool = False
    predict_train: bool = False
    sampler: str = "prior"  # prior, or gmm: a mixture fitted on the training codes
    gmm_components: int = 10
    # ---- device, speed and scale
    device: str = "auto"
    no_cuda: bool = False
    # auto: the fastest numerically safe path for this device and model (runtime/accelerators.py)
    amp: str = "auto"  # bfloat16 autocast of the forward: auto, on or off
    channels_last: str = "auto"  # conv layers in the channels-last layout: auto, on or off
    compile: bool = False
    threads: int | None = None  # CPU compute threads; None: a share of the cores among the runs (runtime/threads.py)

    def __new__(cls, *args: Any, **kwargs: Any) -> RunConfig:
        # RunConfig(...) is made with the registered families' settings as fields (run_config_type)
        return super().__new__(run_config_type() if cls is RunConfig else cls)

    def __reduce__(self) -> tuple:
        # pickled as its settings: the class with the families' fields is made at run time
        return _from_dict, (self.to_dict(),)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with ``changes`` (the config itself never changes)."""
        return dataclasses.replace(self, **changes)


def _from_dict(values: dict[str, Any]) -> RunConfig:
    return RunConfig(**values)


def family_settings() -> dict[str, dataclasses.Field]:
    """Every registered family's own settings (models/<family>.py), by name, in the registry's order."""
    out: dict[str, dataclasses.Field] = {}
    for family in MODELS.values():
        out.update({f.name: f for f in family.settings if f.name not in out})
    return out


def run_config_type() -> type[RunConfig]:
    """RunConfig with a field per family setting (its default the family's): what ``RunConfig(...)`` makes,
    so a family registered at any time has its settings in the run's config, YAML file and checkpoint."""
    return _with_settings(tuple((f.name, f.type, f.default) for f in family_settings().values()))


@functools.cache
def _with_settings(settings: tuple[tuple[str, Any, Any], ...]) -> type[RunConfig]:
    return dataclasses.make_dataclass("RunConfig", [(name, kind, dataclasses.field(default=default))
                                                    for name, kind, default in settings],
                                      bases=(RunConfig,), frozen=True, namespace={"__module__": __name__})


def run_fields() -> tuple[str, ...]:
    """The names of every setting of a run (RunConfig's fields and the families' settings)."""
    return tuple(f.name for f in fields(run_config_type()))


# What only the command line asks for (the modes, --resume, --config, --overwrite): a config file that
# sets one is refused.
COMMAND_LINE_ONLY = frozenset({"config", "resume", "evaluate", "iw_samples", "fid", "predict", "predict_train",
                               "overwrite", "disentanglement"})
# What an invocation asks for rather than what the run is (those, the device and threads, output folders): neither
# taken from a resumed checkpoint nor written to the run's config file.
INVOCATION = COMMAND_LINE_ONLY | {"device", "no_cuda", "threads", "weights_dir", "tb_dir", "results_dir"}
# What a checkpoint's model and data were made for: a flag or file that contradicts the checkpoint is
# refused. (--image_loss_type may change on resume within the same likelihood: checked against the data.)
# With the settings each family says a checkpoint fixes: fixed_by_checkpoint.
FIXED_BY_CHECKPOINT = ("model_type", "latent_space_size", "model_multiplier", "prior", "vamp_components",
                       "conditional", "normalize", "dataset_type", "image_size", "channels", "background",
                       "mixture_components")


def fixed_by_checkpoint() -> tuple[str, ...]:
    """What a resumed checkpoint fixes: FIXED_BY_CHECKPOINT and what each family says of its own settings."""
    own = dict.fromkeys(name for family in MODELS.values() for name in family.fixed)
    return FIXED_BY_CHECKPOINT + tuple(own)


def run_name(cfg: RunConfig) -> str:
    """The run's name. The default names (the 2018 one, the presets': fmnist_<model>_l<latent>_<rest>)
    describe the run: their dataset, model, latent size and prior become the config's
    (cifar10_..., fmnist_hvae_l10_best_vamp), so a run of other data or another model with a default
    name never takes the Fashion-MNIST default run's name."""
    parts = re.fullmatch(r"fmnist_(.+)_l\d+_(.+)", cfg.lognumber) if cfg.lognumber in DEFAULT_NAMES else None
    if parts is None:
        return cfg.lognumber
    return (f"{cfg.dataset_type}_{cfg.model_type}_l{cfg.latent_space_size}_{parts.group(2)}"
            + ("_vamp" if cfg.prior == "vamp" else ""))


def model_config(cfg: RunConfig, image_channels: int = 1, image_size: int = 28, num_classes: int = 10,
                 input_mean: float = 0.0, input_std: float = 1.0) -> ModelConfig:
    """The model ``cfg`` describes, for images of this shape and classes (and with --normalize, the
    training fold's pixel statistics): the fields of its family's config taken from ``cfg`` by name."""
    config = MODELS[cfg.model_type].config
    names = set(run_fields()) - {"image_size"}
    shared = {f.name: getattr(cfg, f.name) for f in fields(config) if f.name in names}
    return config(**shared, image_channels=image_channels, image_size=image_size, num_classes=num_classes,
                       input_mean=input_mean, input_std=input_std, likelihood=likelihood_of(cfg.image_loss_type))


def data_options(cfg: RunConfig) -> dict[str, Any]:
    """The run's image shape, held-out fraction and background as keyword arguments of
    datasets.load_split and datasets.train_val_split."""
    return {"image_size": cfg.image_size, "channels": cfg.channels, "test_fraction": cfg.test_fraction,
            "background": cfg.background, "factor": cfg.factor, "factor_images": cfg.factor_images}
