"""train.py's model flags (the model family, its prior and sizes) and the combinations it refuses
(here, not in models/, which import nothing but torch)."""
from __future__ import annotations

import argparse

from models import MODELS, PLAIN_ONLY, PRIORS
from models.conv1xn import KERNELS
from models.unet import skips_flag
from runtime.distributed import launched_processes
from utils import (MAX_HVAE_CHANNELS, MAX_LATENT, MAX_MULTIPLIER, MAX_VAMP_COMPONENTS, VaeLabError, int_in,
                   non_negative_int, str2bool)


def add_model_args(g: argparse._ArgumentGroup) -> None:
    """The model group of train.py (also read by --resume, --evaluate and compare_embeddings.py)."""
    g.add_argument("--model_type", choices=sorted(MODELS), default="fc_conv",
                   help="fc: 784-400-z-400-784 MLP; fc_conv: the 2018 best model (FC layers stored as convs); "
                        "fcn: configurable conv encoder/decoder; resconv: residual conv encoder/decoder with batch "
                        "normalisation, the quality model (benchmarks/quality.md; --model_multiplier scales its "
                        "16/32 channels); hvae: resconv made hierarchical, a top code of --latent_space_size (the "
                        "code embeddings use) over a 7x7 latent map of --hvae_channels, inferred top-down, its KL "
                        "per level; unet: fcn with skips across the bottleneck; conv1xn: fcn of 1xN/Nx1 pairs")
    g.add_argument("--latent_space_size", type=int_in(1, MAX_LATENT), default=10,
                   help="dimension z of the latent code (hvae: of its top code)")
    g.add_argument("--model_multiplier", type=int_in(1, MAX_MULTIPLIER), default=1,
                   help="fcn, resconv, hvae: channel width multiplier")
    g.add_argument("--split_filter", type=non_negative_int, default=2,
                   help="fcn: encoder blocks (0-3) shared by the mu and logvar heads before they split")
    g.add_argument("--unet_skips", type=skips_flag, default="all",
                   help="unet: the resolutions (7, 14, 28 pixels) whose encoder maps the decoder also gets: none, "
                        "coarsest (7), all, or a list such as 7,14")
    g.add_argument("--conv_n", type=int, choices=KERNELS, default=3, help="conv1xn: N of the 1xN / Nx1 pairs")
    g.add_argument("--hvae_channels", type=int_in(1, MAX_HVAE_CHANNELS), default=2,
                   help="hvae: channels of the lower latent map (7x7 for 28x28 images)")
    g.add_argument("--prior", choices=PRIORS, default="gaussian",
                   help="p(z) of the (top) code: gaussian N(0, I), or vamp, the VampPrior (Tomczak & Welling 2018): "
                        "the mixture of the encoder's posteriors at --vamp_components learnt pseudo-inputs; its KL "
                        "term has no closed form and is estimated by one sample of the code (log q(z|x) - log p(z)); "
                        "evaluation, IWAE and samples use the mixture itself")
    g.add_argument("--vamp_components", type=int_in(1, MAX_VAMP_COMPONENTS), default=500,
                   help="--prior vamp: pseudo-inputs K (each goes through the encoder every step)")
    g.add_argument("--conditional", type=str2bool, default=False,
                   help="conditional VAE (CVAE): the class, one-hot, goes into the encoder (added to its first "
                        "hidden layer) and the decoder (concatenated to z); TensorBoard and --predict draw a "
                        "grid of samples per class")


def check_model_args(args: argparse.Namespace) -> None:
    """One line (VaeLabError) for a model flag combination that cannot be built or trained."""
    if args.model_type == "fcn" and args.split_filter > 3:
        raise VaeLabError(f"--split_filter must be in [0, 3] for fcn, got {args.split_filter}")
    if args.model_type == "fcn" and args.conditional and args.split_filter == 0:
        raise VaeLabError("--conditional True with fcn needs --split_filter >= 1 (the class joins the shared block)")
    if args.model_type in PLAIN_ONLY and (args.conditional or args.normalize or args.model_multiplier > 1
                                         or args.prior != "gaussian"):
        raise VaeLabError(f"--model_type {args.model_type} supports neither --conditional, --normalize, --prior "
                          f"vamp nor --model_multiplier above 1")
    if args.prior == "vamp" and args.conditional:
        raise VaeLabError("--prior vamp does not combine with --conditional True: the VampPrior's pseudo-inputs "
                          "have no class")
    family = "--prior vamp" if args.prior == "vamp" else "--model_type hvae" if args.model_type == "hvae" else None
    if family is None:
        return
    bad = [flag for flag, on in (
        ("--free_bits (it needs the closed-form KL per dimension)", args.free_bits > 0),
        ("--amp (the KL terms are computed in the forward, which --amp runs in bfloat16)", args.amp),
        ("--compile", args.compile),
        # validation draws the VampPrior's KL sample per batch, so shards would draw other noise than one process
        ("torchrun", args.prior == "vamp" and launched_processes() > 1)) if on]
    if bad:
        raise VaeLabError(f"{family} does not combine with {bad[0]}")
