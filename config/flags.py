"""Every flag of train.py, in one place, grouped as ``--help`` shows them. Defaults come from
RunConfig (config/run_config.py), so each is stated once; the cross-flag checks are in
config/checks.py."""
from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
from collections.abc import Callable
from typing import Any

from config.flag_types import (
    auto_on_off,
    fraction,
    int_in,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    str2bool,
)
from config.parsers import PresetParser
from config.run_config import PRESETS, RunConfig, family_settings, run_config_type
from core.errors import VaeLabError
from core.limits import (
    MAX_DISC_UNITS,
    MAX_FACTOR_IMAGES,
    MAX_FID_SAMPLES,
    MAX_IMAGE_SIZE,
    MAX_IW_SAMPLES,
    MAX_IW_TRAIN,
    MAX_LATENT,
    MAX_MIXTURE,
    MAX_MULTIPLIER,
    MAX_SEED,
    MAX_VAMP_COMPONENTS,
)
from datasets import DATASET_TYPES, parse_background
from losses import IMAGE_LOSSES, OBJECTIVES
from models import MODELS, PRIORS

# --sampler: where samples come from besides the prior (evaluation/samplers.py)
SAMPLERS = ("prior", "gmm")


@functools.cache
def _defaults(config_type: type[RunConfig]) -> RunConfig:
    return config_type()


def _add(g: Any, *names: str, **kwargs: Any) -> None:
    """``g.add_argument`` with the default of the RunConfig field it sets."""
    action = g.add_argument(*names, **kwargs)
    action.default = getattr(_defaults(run_config_type()), action.dest)


def _switch(g: Any, name: str, help: str) -> None:
    """A boolean that may be given bare (``--compile``) or with a value (``--compile True``)."""
    _add(g, name, type=str2bool, nargs="?", const=True, help=help)


def train_parser() -> argparse.ArgumentParser:
    """train.py's parser: the 2018 flag set (same names and meanings) plus ours."""
    p = PresetParser(PRESETS, prog="train.py",
                     description="Train a VAE on Fashion-MNIST, another torchvision dataset or a folder of your "
                                 "images; evaluate it or draw its pictures. Defaults reproduce the 2018 best command.",
                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_training_args(p.add_argument_group("training"))
    add_model_args(p.add_argument_group("model"))
    g = p.add_argument_group("data")
    add_data_args(g)
    _add(g, "--fold", type=non_negative_int, help="validation fold of the training images")
    _add(g, "--num_folds", type=positive_int,
         help="StratifiedKFold splits (shuffled, random_state=--seed); 5 gives 48k train / 12k val")

    g = p.add_argument_group("loss")
    add_loss_args(g)
    add_objective_args(g)
    _add(g, "--ssim_window_size", type=positive_int,
         help="odd side of the Gaussian SSIM window (sigma 1.5), at most the image size; used by the metric and "
              "the ssim loss")

    add_optimisation_args(p.add_argument_group("optimisation"))
    add_logging_args(p.add_argument_group("logging"))
    g = p.add_argument_group("checkpoints and modes")
    _add(g, "--resume", metavar="PATH",
         help="checkpoint to continue from (ours or the 2018 one): training goes on at its next epoch, with the "
              "settings it was trained with (flags given still win, except those that fix its model and data)")
    add_mode_args(g)

    add_device_args(p)
    return p


def add_training_args(g: Any) -> None:
    """The training group: the preset, the config file, epochs, batches, seed, augmentations."""
    _add(g, "--preset", choices=sorted(PRESETS),
         help="named configuration whose values replace the defaults (a config file and explicit flags still "
              "win): " + "; ".join(f"{name}: " + (" ".join(f"--{k} {v}" for k, v in cfg.items()) or
                                                  "the 2018 best command (the defaults below)")
                                   for name, cfg in PRESETS.items()))
    _add(g, "--config", metavar="FILE",
         help="train from a run's config file (YAML, as every run writes to weights/{lognumber}_config.yaml); "
              "flags given with it still win")
    _add(g, "--epochs", type=positive_int, help="last epoch to train (total, counting resumed ones)")
    _add(g, "--start-epoch", type=non_negative_int,
         help="epoch to start from when not resuming (a checkpoint sets it by itself)")
    _add(g, "--batch-size", type=positive_int, help="images per minibatch")
    _add(g, "--seed", type=int_in(0, MAX_SEED), help="seeds torch, numpy, random, data order and the validation split")
    _add(g, "--do_augs", type=str2bool,
         help="2018 augmentations on whole batches: horizontal flip p=0.25, rotation up to 30 degrees")



def add_loss_args(g: Any) -> None:
    """The loss terms: the reconstruction term, the weights, the KL controls, the IWAE bound."""
    _add(g, "--image_loss_type", choices=IMAGE_LOSSES,
         help="reconstruction term, summed over pixels: bce (from logits), mse (of sigmoid output), ssim = sum "
              "over pixels of (1 - SSIM map), i.e. pixels x (1 - mean SSIM) per image, scaled like a summed BCE so "
              "it competes with the KL term; bce_ssim: bce + --ssim_weight x ssim; logistic, gaussian: discretised "
              "logistic / Gaussian likelihoods with a learnt scale per channel; dmol: the decoder predicts a mixture "
              "of --mixture_components discretised logistics per pixel (location and scale per pixel and channel, "
              "colour channels coupled as in PixelCNN++): fc, resconv, hvae")
    _add(g, "--img_loss_weight", type=positive_float, help="weight of the reconstruction term")
    _add(g, "--kl_loss_weight", type=positive_float, help="weight of the KL term")
    _add(g, "--kl_warmup_epochs", type=non_negative_float,
         help="raise the KL weight linearly from 0 to --kl_loss_weight over this many epochs, step by step (logged "
              "as train_kl_weight); 0 = full weight from the start")
    _add(g, "--free_bits", type=non_negative_float,
         help="nats per latent dimension: the objective uses sum_j max(free_bits, KL_j), KL_j the batch-mean KL of "
              "dimension j, so no dimension is pushed below the floor (logged as train_kl_penalty; kl_loss stays "
              "the true KL); 0 = off")
    _add(g, "--ssim_weight", type=positive_float,
         help="bce_ssim loss: BCE + this x the ssim loss (pixels x (1 - mean SSIM) per image)")
    _add(g, "--do_running_mean", type=str2bool,
         help="divide each term by its running mean (gamma 0.9) before weighting (2018 rebalancing)")
    _add(g, "--normalize", type=str2bool,
         help="the 2018 commented-out Normalize(mean, std): the encoder sees (x - mean) / std, with the pixel mean "
              "and std of the training fold (stored in the checkpoint, reused by --resume, --evaluate, --predict); "
              "the decoder still outputs pixels, so every loss and metric is in pixel space and only the encoder's "
              "input changes")
    _add(g, "--iw_train", type=int_in(1, MAX_IW_TRAIN), metavar="K",
         help="train on the importance-weighted bound on -log p(x) with K samples per image (IWAE, Burda et al. "
              "2016) instead of the ELBO; 1 = the ELBO. Logged beside it: the ELBO of the same samples "
              "(train_elbo). Single process, eager, float32, with a likelihood loss (bce, logistic, gaussian), "
              "unweighted terms and no KL controls")
    _add(g, "--mixture_components", type=int_in(1, MAX_MIXTURE), metavar="K",
         help="--image_loss_type dmol: discretised logistics in each pixel's mixture (PixelCNN++); 1 = one "
              "logistic with its own location and scale per pixel and channel")


def add_objective_args(g: Any) -> None:
    """--objective and its settings."""
    _add(g, "--objective", choices=OBJECTIVES,
         help="elbo: reconstruction + --kl_loss_weight x KL (beta-VAE when that is above 1); capacity: "
              "reconstruction + --capacity_weight x |KL - C|, C raised linearly from 0 to --capacity_max nats over "
              "--capacity_epochs, step by step (Burgess et al. 2018); betatc: the KL split into index-code MI, "
              "total correlation and dimension-wise KL (Chen et al. 2018), each estimated on the minibatch by "
              "stratified sampling with the training set's size (losses/betatc.py), the TC weighted by "
              "--tc_weight and the others by --kl_loss_weight; factorvae: the ELBO + --tc_weight x the TC "
              "estimated by a discriminator (MLP, 6 layers of --disc_units, leaky ReLU) between the codes and the "
              "codes permuted per dimension, trained by its "
              "own Adam (--disc_lr) and saved with the run (Kim & Mnih 2018). Terms logged as train_mi, train_tc, "
              "train_dim_kl, train_capacity, train_disc_loss")
    _add(g, "--capacity_max", type=non_negative_float, help="--objective capacity: the final capacity C in nats")
    _add(g, "--capacity_epochs", type=positive_float,
         help="--objective capacity: epochs over which C grows from 0 to --capacity_max")
    _add(g, "--capacity_weight", type=positive_float, help="--objective capacity: gamma of gamma x |KL - C|")
    _add(g, "--tc_weight", type=non_negative_float,
         help="--objective betatc: beta, the total correlation's weight; factorvae: gamma, the weight of the "
              "discriminator's TC estimate")
    _add(g, "--disc_units", type=int_in(1, MAX_DISC_UNITS),
         help="--objective factorvae: units of each of the discriminator's 5 hidden layers (Kim & Mnih: 1000)")
    _add(g, "--disc_lr", type=positive_float,
         help="--objective factorvae: the discriminator's learning rate (Adam, betas 0.5, 0.9)")


def add_optimisation_args(g: Any) -> None:
    """The optimiser, the learning rate and its schedule, gradient clipping."""
    _add(g, "--optimizer", choices=["adam", "rmsprop", "sgd"], help="optimizer")
    _add(g, "--lr", type=positive_float, help="initial learning rate")
    _add(g, "--m1", type=positive_int, help="first MultiStepLR milestone (epoch, lr x 0.1)")
    _add(g, "--m2", type=positive_int, help="second MultiStepLR milestone (epoch, lr x 0.1)")
    _add(g, "--lr_schedule", choices=["multistep", "cosine"],
         help="multistep: lr x 0.1 at --m1 and --m2 (2018); cosine: from --lr down to 0 at --epochs, set per epoch")
    _add(g, "--grad_clip", type=non_negative_float,
         help="clip the global L2 norm of the gradients to this value; 0 turns clipping off")



def add_logging_args(g: Any) -> None:
    """The run's name, its console lines, TensorBoard and output folders."""
    _add(g, "--print-freq", type=positive_int, help="console line every N minibatches")
    _add(g, "--lognumber",
         help="run name: weights/{lognumber}_*.pth.tar and _config.yaml, tb_logs/{lognumber}/, "
              "results/{lognumber}/; a default name (this or a preset's) takes the run's dataset, model, latent "
              "size and prior. A new run never takes the name of an existing one (see --overwrite)")
    _switch(g, "--overwrite",
            "start a new run under the name of an existing one (without it, such a run is refused: resume it or "
            "pick another --lognumber): its checkpoints are replaced when the new run saves its first epoch, so a "
            "start that fails loses nothing; its eval JSON and fitted mixtures are deleted then, and TensorBoard "
            "shows the new run's events only")
    _add(g, "--tensorboard", type=str2bool, help="write TensorBoard scalars")
    _add(g, "--tensorboard_images", type=str2bool,
         help="write reconstructions (panno) and prior samples to TensorBoard each epoch")
    _add(g, "--weights_dir", help="checkpoint folder")
    _add(g, "--tb_dir", help="TensorBoard folder")
    _add(g, "--results_dir", help="--predict output folder")



def add_device_args(p: argparse.ArgumentParser) -> None:
    """The device group and the speed and scale group."""
    g = p.add_argument_group("device")
    _add(g, "--device", choices=["auto", "cpu", "cuda", "mps"], help="auto picks CUDA, then Apple MPS, then CPU")
    _switch(g, "--no_cuda", "force the CPU")


    g = p.add_argument_group("speed and scale (several processes: torchrun --nproc_per_node=N train.py ...)")
    _add(g, "--amp", type=auto_on_off, nargs="?", const="on", choices=("auto", "on", "off"),
         help="bfloat16 autocast of the model's forward; the losses, the KL and the optimiser stay float32. auto: "
              "on where the device computes in bfloat16 natively (a GPU of compute capability 8.0+, a CPU with "
              "AVX512-BF16 or AMX) and the model is one the benchmark found faster in it (docs/speed.md); a bare "
              "--amp is on")
    _add(g, "--channels_last", type=auto_on_off, nargs="?", const="on", choices=("auto", "on", "off"),
         help="run the conv layers in the channels-last (NHWC) memory layout; auto: for the conv models the "
              "benchmark found faster in it (docs/speed.md)")
    _switch(g, "--compile", "torch.compile the model and the loss; the first steps compile (seconds warm, up to a "
                            "minute cold)")
    _add(g, "--threads", type=int, metavar="N",
         help="CPU compute threads (default: the cores shared among the vae-lab runs on this machine, counted "
              "every epoch; OMP_NUM_THREADS if set). Runs side by side then finish sooner than one after the "
              "other (docs/speed.md); fix N where runs must agree bit for bit (it changes float rounding)")


def add_model_args(g: Any) -> None:
    """The model group (also what a checkpoint's model was built with): the shared settings, and each
    family's own as its models/<family>.py declares them."""
    _add(g, "--model_type", choices=sorted(MODELS),
         help="; ".join(f"{name}: {family.help}" for name, family in MODELS.items()))
    _add(g, "--latent_space_size", type=int_in(1, MAX_LATENT),
         help="dimension z of the latent code (hvae: of its top code)")
    _add(g, "--model_multiplier", type=int_in(1, MAX_MULTIPLIER), help="fcn, resconv, hvae: channel width multiplier")
    for name, f in family_settings().items():
        _add(g, f"--{name}", help=f.metadata["help"], **setting_flag(f))
    _add(g, "--prior", choices=PRIORS,
         help="p(z) of the (top) code: gaussian N(0, I), or vamp, the VampPrior (Tomczak & Welling 2018): the "
              "mixture of the encoder's posteriors at --vamp_components learnt pseudo-inputs; its KL term has no "
              "closed form and is estimated by one sample of the code (log q(z|x) - log p(z)); evaluation, IWAE "
              "and samples use the mixture itself")
    _add(g, "--vamp_components", type=int_in(1, MAX_VAMP_COMPONENTS),
         help="--prior vamp: pseudo-inputs K (each goes through the encoder every step)")
    _add(g, "--conditional", type=str2bool,
         help="conditional VAE (CVAE): the class, one-hot, goes into the encoder (added to its first hidden layer) "
              "and the decoder (concatenated to z); TensorBoard and --predict draw a grid of samples per class")


# the Python types of family settings (annotations are text under `from __future__ import annotations`)
_KINDS: dict[Any, Callable[[str], Any]] = {"int": int, "str": str, "float": float, int: int, str: str, float: float}


def setting_flag(f: dataclasses.Field) -> dict[str, Any]:
    """``add_argument``'s type (and choices) for a family's setting, from what it declares (models.setting)."""
    meta = f.metadata
    if meta.get("parse") is not None:
        return {"type": _argparse_type(meta["parse"])}
    kind = _KINDS[f.type]
    if meta.get("choices") is not None:
        return {"type": kind, "choices": meta["choices"]}
    low, high = meta.get("low"), meta.get("high")
    if kind is int and low is not None:
        bounded = {0: non_negative_int, 1: positive_int}.get(low) if high is None else None
        return {"type": bounded or int_in(low, sys.maxsize if high is None else high)}
    return {"type": kind}


def _argparse_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse`` as an argparse type: its ValueError's message becomes the flag's error."""

    def flag_type(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    flag_type.__name__ = parse.__name__
    return flag_type


def background_flag(text: str) -> str:
    """--background: white, black or R,G,B, as given (lower case, no spaces)."""
    try:
        parse_background(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return str(text).strip().lower().replace(" ", "")


def add_data_args(g: Any) -> None:
    """The data flags (``g``: a parser or an argument group): which images, and their shape."""
    _add(g, "--dataset_type", choices=DATASET_TYPES,
         help="fmnist: Fashion-MNIST; mnist, kmnist, cifar10, svhn, celeba: torchvision's (downloaded when online; "
              "Debian's Fashion-MNIST used offline); folder: the images (png, jpg, bmp, webp, gif, tif; the first "
              "frame of an animation) under --data_root, "
              "labelled by their class sub-folders if any, split by train/ and test/ sub-folders if any; dsprites: "
              "a dSprites-like factor grid (3 shapes x 6 scales x 40 orientations x 32 x 32 positions, 64x64 binary) "
              "re-rendered offline by our own code, NOT DeepMind's file (which is read instead when "
              "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz is in --data_root); dsprites_colour: the same grid x "
              "6 colours on black (docs/disentanglement.md)")
    _add(g, "--factor", metavar="NAME",
         help="dsprites, dsprites_colour: the factor whose values label the images (for KNN, "
              "compare_embeddings.py, the stratified folds and --conditional): shape, scale, orientation, pos_x, "
              "pos_y (and colour); empty = shape")
    _add(g, "--factor_images", type=int_in(0, MAX_FACTOR_IMAGES), metavar="N",
         help="dsprites, dsprites_colour: images drawn from the factor grid with a fixed seed (the same for every "
              "run), --test_fraction of them held out as the test set; 0 = the whole grid (737,280 images of "
              "64x64, 3 GB as uint8: on a small machine train on a subset)")
    _add(g, "--data_root", help="dataset folder (torchvision layout, or your images)")
    _add(g, "--image_size", type=int_in(4, MAX_IMAGE_SIZE),
         help="centre-crop to a square and resize every image to N x N (default: the data's own size)")
    _add(g, "--channels", type=int, choices=[1, 3],
         help="convert the images to grey (1) or colour (3) (default: the data's own)")
    _add(g, "--background", type=background_flag, metavar="white|black|R,G,B",
         help="image files with transparency (alpha, a transparent palette index: icons, emoji, logos, sprites) "
              "are composited onto this colour, so no model sees the colours hidden under transparent pixels; "
              "grey+alpha images onto its grey level. White by default: it is what browsers, document viewers and "
              "file managers show behind transparency, so the images look as their makers drew them")
    _add(g, "--test_fraction", type=fraction,
         help="folder without train/ and test/: the fraction held out (seeded, stratified) as the test set, the "
              "same images whatever --seed")


def add_mode_args(g: Any) -> None:
    """The flags of --evaluate and --predict (and the samplers they share with TensorBoard)."""
    _switch(g, "--evaluate", "with --resume: BCE, MSE, KL, BCE+KL, SSIM per image on validation and test; writes "
                             "weights/{lognumber}_eval.json")
    _add(g, "--iw_samples", type=int_in(0, MAX_IW_SAMPLES), metavar="K",
         help="with --evaluate: also the importance-weighted bound (IWAE, Burda et al. 2016) with K samples of z "
              "per image, an upper bound on -log p(x) in nats per image that tightens as K grows (K=1 is the "
              "sampled ELBO, not the BCE+KL of the posterior mean); written as iwae_nll. Every family is bounded "
              "the same way: the VampPrior's mixture density is computed exactly; hvae's lower latent map is "
              "importance-sampled together with the top code (top-down). Costs K decoder passes per image; 0 "
              "turns it off")
    _add(g, "--fid", type=int_in(0, MAX_FID_SAMPLES), metavar="N",
         help="with --evaluate: the Frechet distance between features of N generated images and of each split's "
              "images, in the penultimate layer of a small classifier trained once on this dataset's training "
              "images (cached as weights/{dataset_type}_fid_classifier.pth.tar), for N prior samples, N GMM "
              "samples and N reconstructions (lower is better); a CVAE also gets the classifier's accuracy on its "
              "class-conditional samples. The scores compare our models on one dataset only, never published "
              "Inception FIDs (docs/samples.md). 0 turns it off")
    _switch(g, "--disentanglement", "with --evaluate on dsprites or dsprites_colour: MIG (with and without the "
                                    "shape factor), FactorVAE score, DCI and SAP of the posterior means "
                                    "(evaluation/disentanglement.py states every choice), in the eval JSON")
    _switch(g, "--predict", "with --resume: reconstructions, samples, interpolations, latent traversals, the latent "
                            "map and posterior means in results/{lognumber}/")
    _switch(g, "--predict_train", "with --predict: also write the training set's posterior means")
    _add(g, "--sampler", choices=SAMPLERS,
         help="where --predict's and TensorBoard's samples come from besides the prior: gmm adds samples from a "
              "Gaussian mixture fitted after training on the training images' posterior means (ex-post density "
              "estimation, Ghosh et al. 2020), saved beside the checkpoint as *_gmm.pth.tar (--predict: "
              "samples_gmm.png; TensorBoard: samples_gmm, refitted each epoch on 10,000 training images). --fid "
              "always scores both")
    _add(g, "--gmm_components", type=positive_int, help="components of the GMM sampler (full covariance, seeded by "
                                                         "--seed)")


def flag_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The parser's flags by the RunConfig field they set."""
    return {a.dest: a for a in parser._actions if a.dest != "help"}


def parse_settings(values: dict[str, Any], where: str, ignore_unknown: bool = False,
                   parser: argparse.ArgumentParser | None = None) -> dict[str, Any]:
    """``values`` (field -> value, from a config file or a checkpoint) checked as train.py checks its
    flags: each through its flag's type and choices, so a file or checkpoint accepts exactly what the
    command line does. Unknown keys are refused (or skipped: a checkpoint of an older version), and so
    is a wrong type or a bad value, in one line naming the key and ``where``."""
    actions = flag_actions(parser or train_parser())
    out: dict[str, Any] = {}
    for key, value in values.items():
        action = actions.get(key)
        if action is None:
            if ignore_unknown:
                continue
            raise VaeLabError(f"{where}: unknown key {key!r} (the keys are train.py's flags, e.g. batch_size for "
                              f"--batch-size)")
        if value is None and action.default is None:
            out[key] = None
            continue
        if isinstance(value, (dict, list, tuple)) or value is None:
            raise VaeLabError(f"{where}: {key} must be a single value, got {value!r:.60}")
        try:
            parsed = action.type(str(value)) if action.type is not None else str(value)
        except (argparse.ArgumentTypeError, ValueError) as e:
            raise VaeLabError(f"{where}: {key}: {e or 'bad value'} (got {value!r:.60})") from None
        if action.choices is not None and parsed not in action.choices:
            raise VaeLabError(f"{where}: {key} must be one of {', '.join(map(str, action.choices))}, got {value!r:.60}")
        out[key] = parsed
    return out


def group_of(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Field -> the short name of its --help group (training, model, data, loss, ...), as config files
    group them."""
    return {a.dest: g.title.split()[0] for g in parser._action_groups for a in g._group_actions
            if g.title and a.dest != "help"}
