"""Train, resume, evaluate and run predictions of a VAE on MNIST / Fashion-MNIST.

The flags are those of the 2018 project and their defaults are its best command, so
``python3 train.py`` trains the 2018 best model (fc_conv, latent 10, Fashion-MNIST).
See ``python3 train.py --help``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import torch

import distributed
import speed
from distributed import World, is_main_process
from numerics import check_epoch_finite, non_finite_message
from utils import (MAX_LATENT, MAX_MULTIPLIER, MAX_SEED, OneLineParser, VaeLabError, int_in,
                   non_negative_float, non_negative_int, positive_float, positive_int, run_cli, str2bool)

DEFAULT_LOGNUMBER = "fmnist_fc_conv_l10_rebalance_no_norm"
# train_ssim is measured on the first 32 images of each (shuffled) minibatch; validation
# SSIM always covers every image.
TRAIN_SSIM_IMAGES = 32
# --iw_samples: at most this many importance samples per image (cost grows linearly).
MAX_IW_SAMPLES = 100_000


# Named configurations for --preset: they replace the defaults of these flags (flags given
# on the command line still win). "best" is the best configuration of benchmarks/quality.md.
PRESETS: dict[str, dict] = {
    "2018": {},
    "best": {"model_type": "resconv", "batch_size": 128, "epochs": 18, "lr_schedule": "cosine",
             "lognumber": "fmnist_resconv_l10_best"},
}


class PresetParser(OneLineParser):
    """An OneLineParser where ``--preset NAME`` first sets the defaults of a named configuration."""

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        pre = OneLineParser(prog=self.prog, add_help=False)
        pre.add_argument("--preset", choices=sorted(PRESETS), default="2018")
        preset = PRESETS[pre.parse_known_args(args)[0].preset]
        saved = {k: self.get_default(k) for k in preset}
        self.set_defaults(**preset)
        try:
            return super().parse_known_args(args, namespace)
        finally:
            self.set_defaults(**saved)  # the parser's own defaults stay those of --help


def get_args_parser() -> argparse.ArgumentParser:
    """The 2018 flag set (same names and meanings) plus data, fold, device, model and KL flags."""
    from losses import IMAGE_LOSSES
    from models import MODELS

    p = PresetParser(
        prog="train.py",
        description="Train a VAE on MNIST / Fashion-MNIST. Defaults reproduce the 2018 best command.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("training")
    g.add_argument("--preset", choices=sorted(PRESETS), default="2018",
                   help="named configuration whose values replace the defaults (explicit flags still win): "
                        + "; ".join(f"{name}: " + (" ".join(f"--{k} {v}" for k, v in cfg.items()) or
                                                   "the 2018 best command (the defaults below)")
                                    for name, cfg in PRESETS.items()))
    g.add_argument("--epochs", type=positive_int, default=30, help="last epoch to train (total, counting resumed ones)")
    g.add_argument("--start-epoch", type=non_negative_int, default=0,
                   help="epoch to start from when not resuming (a checkpoint sets it by itself)")
    g.add_argument("--batch-size", type=positive_int, default=512, help="images per minibatch")
    g.add_argument("--seed", type=int_in(0, MAX_SEED), default=42,
                   help="seeds torch, numpy, random, data order and the validation split")
    g.add_argument("--do_augs", type=str2bool, default=False,
                   help="2018 augmentations on whole batches: horizontal flip p=0.25, rotation up to 30 degrees")

    g = p.add_argument_group("model")
    g.add_argument("--model_type", choices=sorted(MODELS), default="fc_conv",
                   help="fc: 784-400-z-400-784 MLP; fc_conv: the 2018 best model (FC layers stored as convs); "
                        "fcn: configurable conv encoder/decoder; resconv: residual conv encoder/decoder with batch "
                        "normalisation, the quality model (benchmarks/quality.md; --model_multiplier scales its "
                        "16/32 channels)")
    g.add_argument("--latent_space_size", type=int_in(1, MAX_LATENT), default=10,
                   help="dimension z of the latent code")
    g.add_argument("--model_multiplier", type=int_in(1, MAX_MULTIPLIER), default=1,
                   help="fcn, resconv: channel width multiplier")
    g.add_argument("--split_filter", type=non_negative_int, default=2,
                   help="fcn: encoder blocks (0-3) shared by the mu and logvar heads before they split")
    g.add_argument("--conditional", type=str2bool, default=False,
                   help="conditional VAE (CVAE): the class, one-hot, goes into the encoder (added to its first "
                        "hidden layer) and the decoder (concatenated to z); TensorBoard and --predict draw a "
                        "grid of samples per class")

    g = p.add_argument_group("data")
    g.add_argument("--dataset_type", choices=["fmnist", "mnist"], default="fmnist",
                   help="fmnist: Fashion-MNIST; mnist: MNIST (auto-downloaded; Debian's Fashion-MNIST used offline)")
    g.add_argument("--data_root", default="data", help="dataset folder (torchvision layout)")
    g.add_argument("--fold", type=non_negative_int, default=0, help="validation fold of the 60k training images")
    g.add_argument("--num_folds", type=positive_int, default=5,
                   help="StratifiedKFold splits (shuffled, random_state=--seed); 5 gives 48k train / 12k val")

    g = p.add_argument_group("loss")
    g.add_argument("--image_loss_type", choices=IMAGE_LOSSES, default="bce",
                   help="reconstruction term, summed over pixels: bce (from logits), mse (of sigmoid output) or "
                        "ssim = sum over pixels of (1 - SSIM map), i.e. 784 x (1 - mean SSIM) per image, "
                        "scaled like a summed BCE so it competes with the KL term")
    g.add_argument("--img_loss_weight", type=positive_float, default=1.0, help="weight of the reconstruction term")
    g.add_argument("--kl_loss_weight", type=positive_float, default=1.0, help="weight of the KL term")
    g.add_argument("--kl_warmup_epochs", type=non_negative_float, default=0.0,
                   help="raise the KL weight linearly from 0 to --kl_loss_weight over this many epochs, "
                        "step by step (logged as train_kl_weight); 0 = full weight from the start")
    g.add_argument("--free_bits", type=non_negative_float, default=0.0,
                   help="nats per latent dimension: the objective uses sum_j max(free_bits, KL_j), KL_j the "
                        "batch-mean KL of dimension j, so no dimension is pushed below the floor "
                        "(logged as train_kl_penalty; kl_loss stays the true KL); 0 = off")
    g.add_argument("--ssim_weight", type=positive_float, default=1.0,
                   help="bce_ssim loss: BCE + this x the ssim loss (784 x (1 - mean SSIM) per image)")
    g.add_argument("--do_running_mean", type=str2bool, default=False,
                   help="divide each term by its running mean (gamma 0.9) before weighting (2018 rebalancing)")
    g.add_argument("--normalize", type=str2bool, default=False,
                   help="the 2018 commented-out Normalize(mean, std): the encoder sees (x - mean) / std, with the "
                        "pixel mean and std of the training fold (stored in the checkpoint, reused by --resume, "
                        "--evaluate, --predict). The decoder reconstructs the normalised image rescaled to [0, 1] "
                        "by its fixed range [-mean/std, (1-mean)/std], the only affine map that keeps BCE "
                        "targets in [0, 1]; undone, that is the pixel image, so every loss and metric is in "
                        "pixel space and only the encoder's input changes")
    g.add_argument("--ssim_window_size", type=positive_int, default=5,
                   help="odd side of the Gaussian SSIM window (sigma 1.5), used by the metric and the ssim loss")

    g = p.add_argument_group("optimisation")
    g.add_argument("--optimizer", choices=["adam", "rmsprop", "sgd"], default="adam", help="optimizer")
    g.add_argument("--lr", type=positive_float, default=1e-3, help="initial learning rate")
    g.add_argument("--m1", type=positive_int, default=40, help="first MultiStepLR milestone (epoch, lr x 0.1)")
    g.add_argument("--m2", type=positive_int, default=50, help="second MultiStepLR milestone (epoch, lr x 0.1)")
    g.add_argument("--lr_schedule", choices=["multistep", "cosine"], default="multistep",
                   help="multistep: lr x 0.1 at --m1 and --m2 (2018); cosine: from --lr down to 0 at --epochs, "
                        "set per epoch")
    g.add_argument("--grad_clip", type=non_negative_float, default=0.0,
                   help="clip the global L2 norm of the gradients to this value; 0 turns clipping off")

    g = p.add_argument_group("logging")
    g.add_argument("--print-freq", type=positive_int, default=10, help="console line every N minibatches")
    g.add_argument("--lognumber", default=DEFAULT_LOGNUMBER,
                   help="run name: weights/{lognumber}_*.pth.tar, tb_logs/{lognumber}/, results/{lognumber}/")
    g.add_argument("--tensorboard", type=str2bool, default=True, help="write TensorBoard scalars")
    g.add_argument("--tensorboard_images", type=str2bool, default=True,
                   help="write reconstructions (panno) and prior samples to TensorBoard each epoch")
    g.add_argument("--weights_dir", default="weights", help="checkpoint folder")
    g.add_argument("--tb_dir", default="tb_logs", help="TensorBoard folder")
    g.add_argument("--results_dir", default="results", help="--predict output folder")

    g = p.add_argument_group("checkpoints and modes")
    g.add_argument("--resume", default="", metavar="PATH",
                   help="checkpoint to continue from (ours or the 2018 one); training goes on at its next epoch")
    g.add_argument("--evaluate", type=str2bool, nargs="?", const=True, default=False,
                   help="with --resume: BCE, MSE, KL, BCE+KL, SSIM per image on validation and test; "
                        "writes weights/{lognumber}_eval.json")
    g.add_argument("--iw_samples", type=int_in(0, MAX_IW_SAMPLES), default=0, metavar="K",
                   help="with --evaluate: also the importance-weighted bound (IWAE, Burda et al. 2016) with K "
                        "samples of z per image, an upper bound on -log p(x) in nats per image that tightens "
                        "as K grows (K=1 is the sampled ELBO, not the BCE+KL of the posterior mean); written "
                        "as iwae_nll. Costs K decoder passes per image: K=1000 on the 22,000 validation and "
                        "test images took 132 s (fc_conv, one CPU core). 0 turns it off")
    g.add_argument("--predict", type=str2bool, nargs="?", const=True, default=False,
                   help="with --resume: reconstructions, samples, interpolations and posterior means "
                        "in results/{lognumber}/")
    g.add_argument("--predict_train", type=str2bool, nargs="?", const=True, default=False,
                   help="with --predict: also write the training set's posterior means")

    g = p.add_argument_group("device")
    g.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto",
                   help="auto picks CUDA, then Apple MPS, then CPU")
    g.add_argument("--no_cuda", type=str2bool, nargs="?", const=True, default=False, help="force the CPU")

    g = p.add_argument_group("speed and scale (several processes: torchrun --nproc_per_node=N train.py ...)")
    g.add_argument("--amp", type=str2bool, nargs="?", const=True, default=False,
                   help="bfloat16 autocast for the model's forward (CUDA, CPU); losses stay float32")
    g.add_argument("--compile", type=str2bool, nargs="?", const=True, default=False,
                   help="torch.compile the model and the loss; the first steps compile (seconds warm, "
                        "up to a minute cold)")
    return p


def check_args(args: argparse.Namespace) -> None:
    """Cross-flag checks argparse cannot express; raises VaeLabError."""
    w = args.ssim_window_size
    if w % 2 == 0 or w > 27:
        raise VaeLabError(f"--ssim_window_size must be odd and at most 27 for 28x28 images, got {w}")
    if args.m1 > args.m2:
        raise VaeLabError(f"--m1 ({args.m1}) must not be after --m2 ({args.m2})")
    if args.start_epoch >= args.epochs:
        raise VaeLabError(f"--start-epoch ({args.start_epoch}) must be below --epochs ({args.epochs})")
    if args.fold >= args.num_folds or args.num_folds < 2:
        raise VaeLabError(f"--fold must be in [0, --num_folds - 1] with --num_folds >= 2, "
                          f"got --fold {args.fold} --num_folds {args.num_folds}")
    if args.model_type == "fcn" and args.split_filter > 3:
        raise VaeLabError(f"--split_filter must be in [0, 3] for fcn, got {args.split_filter}")
    if args.model_type == "fcn" and args.conditional and args.split_filter == 0:
        raise VaeLabError("--conditional True with fcn needs --split_filter >= 1 (the class joins the shared block)")
    if args.kl_warmup_epochs and args.do_running_mean:
        raise VaeLabError("--kl_warmup_epochs has no effect with --do_running_mean True (it rescales each term); "
                          "use one of them")
    if (args.evaluate or args.predict) and not args.resume:
        raise VaeLabError("--evaluate and --predict need a checkpoint: pass --resume PATH")
    if args.iw_samples and not args.evaluate:
        raise VaeLabError("--iw_samples needs --evaluate (and --resume PATH)")
    if args.predict_train and not args.predict:
        raise VaeLabError("--predict_train needs --predict True")
    if not args.lognumber or os.sep in args.lognumber or args.lognumber in (".", ".."):
        raise VaeLabError(f"--lognumber must be a plain file name, got {args.lognumber!r}")


def model_config(args: argparse.Namespace):
    from models import ModelConfig

    mean, std = 0.0, 1.0
    if getattr(args, "normalize", False) and not args.resume:  # a checkpoint carries its own statistics
        from datasets import pixel_mean_std, train_val_split

        mean, std = pixel_mean_std(train_val_split(args.dataset_type, args.data_root, args.fold,
                                                   args.num_folds, args.seed)[0].x)
    return ModelConfig(model_type=args.model_type, latent_space_size=args.latent_space_size,
                       model_multiplier=args.model_multiplier, split_filter=args.split_filter,
                       input_mean=mean, input_std=std, conditional=args.conditional)


def make_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    params = list(params)
    if name == "adam":
        try:  # the fused kernel is ~10% faster per step on CPU and CUDA
            return torch.optim.Adam(params, lr=lr, fused=True)
        except (RuntimeError, TypeError):
            return torch.optim.Adam(params, lr=lr)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr)
    return torch.optim.SGD(params, lr=lr, momentum=0.9)


def lr_at(args: argparse.Namespace, epoch: int) -> float:
    """The lr of ``epoch``: cosine from --lr to 0 at --epochs, or MultiStepLR's lr x 0.1
    for each milestone reached.

    Multiplied milestone by milestone, exactly as the scheduler does, so a resumed run
    gets the same float as the uninterrupted one (lr * 0.1**2 != lr * 0.1 * 0.1).
    """
    from collections import Counter

    if getattr(args, "lr_schedule", "multistep") == "cosine":
        return args.lr * 0.5 * (1.0 + math.cos(math.pi * min(epoch, args.epochs) / args.epochs))
    lr = args.lr
    for m, times in sorted(Counter([args.m1, args.m2]).items()):
        if epoch >= m:
            lr = lr * 0.1 ** times
    return lr


def make_scheduler(optimizer: torch.optim.Optimizer, args: argparse.Namespace):
    """Per-epoch LR schedule; ``lr_at`` is its closed form (resume relies on that)."""
    if args.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: lr_at(args, e) / args.lr)
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[args.m1, args.m2], gamma=0.1)


def kl_warmup_scale(args: argparse.Namespace, epoch: int, batch: int, n_batches: int) -> float:
    """Linear KL warm-up factor in [0, 1] at minibatch ``batch`` of ``epoch`` (0-based)."""
    if not args.kl_warmup_epochs:
        return 1.0
    return min(1.0, (epoch + batch / n_batches) / args.kl_warmup_epochs)


class StepLogger:
    """Buffers per-step metrics on the device and flushes them every ``print_freq`` steps.

    One host sync per flush (not per step): TensorBoard scalars, the 2018 console line and
    the non-finite check all read the same buffer, so a NaN is reported at its exact step.
    The last flush of an epoch comes before its checkpoint, so a NaN never reaches a file.
    """

    NAMES = ("loss", "img_loss", "kl_loss", "ssim")

    def __init__(self, prefix: str, writer, print_freq: int, n_batches: int, epoch: int, lr: float | None,
                 bar=None, check_finite: bool = False, names: tuple[str, ...] = NAMES, reduce=None):
        self.prefix, self.writer, self.print_freq = prefix, writer, print_freq
        self.reduce = reduce  # (rows, sizes) -> global (rows, sizes) under torchrun
        self.n_batches, self.epoch, self.lr, self.bar = n_batches, epoch, lr, bar
        self.check_finite, self.names = check_finite, names
        self.buf: list[torch.Tensor] = []
        self.sizes: list[int] = []
        self.first_step = 0
        self.sums = dict.fromkeys(names, 0.0)
        self.count = 0
        self.t0 = time.perf_counter()

    def add(self, step: int, batch: int, size: int, terms: dict[str, torch.Tensor]) -> None:
        if not self.buf:
            self.first_step, self.first_batch = step, batch
        self.buf.append(torch.stack([terms[n].detach().float() for n in self.names]))
        self.sizes.append(size)
        if (batch + 1) % self.print_freq == 0 or batch + 1 == self.n_batches:
            self.flush()

    def flush(self) -> None:
        if not self.buf:
            return
        rows = torch.stack(self.buf)
        if self.reduce is not None:
            rows, self.sizes = self.reduce(rows, self.sizes)
        rows = rows.tolist()
        for k, (row, size) in enumerate(zip(rows, self.sizes)):
            step = self.first_step + k
            if self.check_finite and (msg := non_finite_message(dict(zip(self.names, row)), self.epoch, step)):
                raise VaeLabError(msg)
            for name, v in zip(self.names, row):
                self.sums[name] += v * size
            self.count += size
            if self.writer is not None:
                scalars = {f"{self.prefix}_{name}": v for name, v in zip(self.names, row)}
                if self.lr is not None:
                    scalars[f"{self.prefix}_lr"] = self.lr
                self.writer.add_scalar_row(scalars, step)  # one event, not one per tag
        last_batch = self.first_batch + len(rows) - 1
        elapsed = time.perf_counter() - self.t0
        if self.print_freq and self.prefix == "train":
            cur = dict(zip(self.names, rows[-1]))
            avg = self.averages()
            line = (f"Epoch: [{self.epoch}][{last_batch + 1}/{self.n_batches}]\t"
                    f"Time {elapsed / (last_batch + 1):.3f}/batch\t"
                    f"Loss {cur['loss']:.4f} ({avg['loss']:.4f})\t"
                    f"IMG {cur['img_loss']:.4f} ({avg['img_loss']:.4f})\t"
                    f"KL {cur['kl_loss']:.4f} ({avg['kl_loss']:.4f})\t"
                    f"SSIM {cur['ssim']:.4f} ({avg['ssim']:.4f})")
            if self.bar is not None and not self.bar.disable:
                self.bar.write(line)
            else:
                print(line)
        if self.bar is not None:
            self.bar.update(len(rows))
        self.buf, self.sizes = [], []

    def averages(self) -> dict[str, float]:
        return {k: v / max(self.count, 1) for k, v in self.sums.items()}


def _progress(n: int, desc: str):
    from tqdm import tqdm

    # disable=None: a bar with ETA on a terminal, nothing in logs or CI (nor on torchrun's other ranks).
    return tqdm(total=n, desc=desc, leave=False, disable=None if is_main_process() else True, unit="batch",
                dynamic_ncols=True)


def train_one_epoch(model, loss_fn, optimizer, data, args: argparse.Namespace, epoch: int,
                    generator: torch.Generator, writer=None, global_step: int = 0,
                    world: World | None = None) -> dict[str, float]:
    """One pass over a fresh permutation of ``data`` (a Split on the training device).

    Returns per-image averages of loss, img_loss, kl_loss and ssim. Under torchrun
    (``world``) this process trains on its part of each minibatch; see distributed.py.
    """
    from datasets import augment_batch
    from losses import ssim
    from numerics import grad_norm_and_clip

    model.train()
    n = len(data)
    n_batches = math.ceil(n / args.batch_size)
    perm = torch.randperm(n, generator=generator).to(data.x.device)
    bar = _progress(n_batches, f"epoch {epoch + 1}/{args.epochs}")
    world = world or World(device=data.x.device)
    log = StepLogger("train", writer, args.print_freq, n_batches, epoch,
                     optimizer.param_groups[0]["lr"], bar, check_finite=True,
                     names=StepLogger.NAMES + ("grad_norm", "kl_weight", "kl_penalty"), reduce=world.reduce_rows)
    conditional = getattr(args, "conditional", False)
    try:
        for i in range(n_batches):
            idx = perm[i * args.batch_size:(i + 1) * args.batch_size]
            rows = world.shard(len(idx))  # the whole minibatch in a single process
            x = data.x[idx[rows]]
            y = data.y[idx[rows]] if conditional else None
            if args.do_augs:
                x = augment_batch(x, generator, shard=(rows.start, len(idx)) if world.distributed else None)
            with speed.autocast(x.device, args.amp):
                logits, mu, logvar = model(x, world.noise(len(idx), args.latent_space_size, rows, x.device), y=y)
            if args.amp:
                logits, mu, logvar = speed.float32(logits, mu, logvar)
            loss_fn.kl_scale = kl_warmup_scale(args, epoch, i, n_batches)
            terms = loss_fn(logits, x, mu, logvar)
            optimizer.zero_grad(set_to_none=True)
            loss = terms["loss"] * world.loss_scale(x.shape[0], len(idx)) if world.distributed else terms["loss"]
            loss.backward()
            # under torchrun the gradients are all-reduced by now: every rank clips the same norm
            terms["grad_norm"] = grad_norm_and_clip(model.parameters(), args.grad_clip)
            optimizer.step()
            with torch.no_grad():  # a random sample of the batch: full-batch SSIM costs more than the step
                k = TRAIN_SSIM_IMAGES
                terms["ssim"] = ssim(torch.sigmoid(logits[:k].detach()), x[:k], args.ssim_window_size).mean()
            log.add(global_step + i, i, x.shape[0], terms)
    finally:
        bar.close()
    return log.averages()


@torch.no_grad()
def validate(model, loss_fn, data, args: argparse.Namespace, epoch: int, writer=None,
             global_step: int = 0, world: World | None = None) -> dict[str, float]:
    """Validation in eval mode (decoding the posterior mean); per-image averages.

    ``loss`` is the weighted objective without running-mean rebalancing, KL warm-up or
    free bits, so it is comparable across epochs and is what selects the best checkpoint. Under torchrun each
    process validates its part of every minibatch and the sums are all-reduced.
    """
    from losses import kl_divergence, reconstruction_loss, ssim

    model.eval()
    n = len(data)
    n_batches = math.ceil(n / args.batch_size)
    world = world or World(device=data.x.device)
    log = StepLogger("val", writer, args.print_freq, n_batches, epoch, None, reduce=world.reduce_rows)
    conditional = getattr(args, "conditional", False)
    for i in range(n_batches):
        batch = slice(i * args.batch_size, (i + 1) * args.batch_size)
        rows = world.shard(data.x[batch].shape[0])
        x = data.x[batch][rows]
        logits, mu, logvar = model(x, y=data.y[batch][rows].to(x.device) if conditional else None)
        img = reconstruction_loss(args.image_loss_type, logits, x, args.ssim_window_size,
                                  getattr(args, "ssim_weight", 1.0))
        kl = kl_divergence(mu, logvar)
        terms = {"loss": loss_fn.objective(img, kl), "img_loss": img, "kl_loss": kl,
                 "ssim": ssim(torch.sigmoid(logits), x, args.ssim_window_size).mean()}
        log.add(global_step + i, i, x.shape[0], terms)
    return log.averages()


@torch.no_grad()
def evaluate(model, data, device: torch.device, window_size: int = 5, batch_size: int = 1000
             ) -> dict[str, float]:
    """Per-image BCE, MSE, KL, BCE+KL and SSIM of ``data``, decoding the posterior mean."""
    from losses import bce_loss, kl_divergence, mse_loss, ssim

    model.eval()
    sums = dict.fromkeys(("bce", "mse", "kl", "ssim"), 0.0)
    for i in range(0, len(data), batch_size):
        x = data.x[i:i + batch_size].to(device)
        logits, mu, logvar = model(x, y=data.y[i:i + batch_size].to(device) if model.conditional else None)
        b = x.shape[0]
        sums["bce"] += bce_loss(logits, x).item() * b
        sums["mse"] += mse_loss(logits, x).item() * b
        sums["kl"] += kl_divergence(mu, logvar).item() * b
        sums["ssim"] += ssim(torch.sigmoid(logits), x, window_size).sum().item()
    out = {k: v / len(data) for k, v in sums.items()}
    out["bce_kl"] = out["bce"] + out["kl"]
    out["n"] = len(data)
    return {k: out[k] for k in ("bce", "mse", "kl", "bce_kl", "ssim", "n")}


def _image_grids(model, fixed_x: torch.Tensor, fixed_y: torch.Tensor, fixed_z: torch.Tensor
                 ) -> dict[str, torch.Tensor]:
    """TensorBoard's images: ``panno`` (originals over reconstructions), ``samples`` (decoded
    prior samples) and, for a CVAE, ``class_samples`` (one row per class, same z per column)."""
    from torchvision.utils import make_grid

    from predict import class_grid_codes

    model.eval()
    cond = fixed_y if model.conditional else None
    with torch.no_grad():
        logits, _, _ = model(fixed_x, y=cond)
        grids = {"panno": make_grid(torch.cat([fixed_x, torch.sigmoid(logits)]).cpu(), nrow=fixed_x.shape[0],
                                    padding=2)}
        if model.conditional:
            z, y = class_grid_codes(fixed_z[:8], model.num_classes)
            grids["class_samples"] = make_grid(model.decode(z, y).cpu(), nrow=8, padding=2)
            # plain samples need a class too: each prior sample gets its row's class
            y_rows = torch.arange(fixed_z.shape[0], device=fixed_z.device) // 8 % model.num_classes
            grids["samples"] = make_grid(model.decode(fixed_z, y_rows).cpu(), nrow=8, padding=2)
        else:
            grids["samples"] = make_grid(model.decode(fixed_z).cpu(), nrow=8, padding=2)
    return grids


def _checkpoint_state(model, optimizer, scheduler, loss_fn, args, epoch: int, best_loss: float,
                      history: list, global_step: int, generator: torch.Generator, cfg) -> dict:
    from utils import get_rng_state

    return {
        "epoch": epoch,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "best_loss": best_loss,
        "args": dict(vars(args)),
        "scheduler": scheduler.state_dict(),
        "rng_state": get_rng_state(generator),
        "loss_state": loss_fn.state_dict(),
        "model_config": cfg.to_dict(),
        "history": history,
        "global_step": global_step,
    }


def _print_eval_table(results: dict[str, dict]) -> None:
    """One row per split; an IWAE column when --iw_samples computed it."""
    iw = [r["iw_samples"] for r in results.values() if "iwae_nll" in r]
    head = f" {f'IWAE K={iw[0]}':>12}" if iw else ""
    print(f"{'split':<6} {'images':>7} {'BCE':>9} {'MSE':>8} {'KL':>8} {'BCE+KL':>9} {'SSIM':>7}{head}")
    for split, r in results.items():
        cell = f" {r['iwae_nll']:>12.2f}" if "iwae_nll" in r else ""
        print(f"{split:<6} {r['n']:>7d} {r['bce']:>9.2f} {r['mse']:>8.2f} {r['kl']:>8.2f} "
              f"{r['bce_kl']:>9.2f} {r['ssim']:>7.4f}{cell}")


def run_eval_modes(model, args: argparse.Namespace, device: torch.device) -> dict:
    """``--evaluate`` (table + eval JSON) and ``--predict`` (pictures + posterior means)."""
    from datasets import load_split, train_val_split
    from utils import ensure_writable_dir

    ensure_writable_dir(args.weights_dir if args.evaluate else args.results_dir, "output")
    _, val = train_val_split(args.dataset_type, args.data_root, args.fold, args.num_folds, args.seed)
    test = load_split(args.dataset_type, args.data_root, train=False)
    summary: dict = {}
    if args.evaluate:
        results = {"val": evaluate(model, val, device, args.ssim_window_size),
                   "test": evaluate(model, test, device, args.ssim_window_size)}
        if args.iw_samples:
            from likelihood import iwae_evaluate

            t0 = time.perf_counter()
            for split, data in (("val", val), ("test", test)):
                results[split]["iwae_nll"] = iwae_evaluate(model, data, device, args.iw_samples, seed=args.seed,
                                                          labels=model.conditional)
                results[split]["iw_samples"] = args.iw_samples
            print(f"IWAE bound (-log p(x), nats/image), K={args.iw_samples}: {len(val) + len(test)} images "
                  f"in {time.perf_counter() - t0:.1f} s")
        _print_eval_table(results)
        path = os.path.join(args.weights_dir, f"{args.lognumber}_eval.json")
        with open(path, "w") as f:
            json.dump(results, f, indent=2)
        print(f"wrote {path}")
        summary["eval"] = results
    if args.predict:
        from predict import write_predictions

        train = None
        if args.predict_train:
            train, _ = train_val_split(args.dataset_type, args.data_root, args.fold, args.num_folds, args.seed)
        out = os.path.join(args.results_dir, args.lognumber)
        summary["predict"] = write_predictions(model, val, test, out, device, args.seed, train)
        print(f"wrote predictions to {out}/")
    return summary


def restore_training_state(ckpt: dict, args: argparse.Namespace, model, optimizer, scheduler, loss_fn,
                           generator: torch.Generator, val_set, n_batches: int, world
                           ) -> tuple[int, float, list, int]:
    """Load optimizer, scheduler, RNG and loss state from ``ckpt`` (ours or 2018's).

    Returns (start epoch, best validation loss, history, global step).
    """
    from collections import Counter

    from checkpoints import is_legacy
    from utils import set_rng_state

    start_epoch = int(ckpt["epoch"])
    if start_epoch >= args.epochs:
        raise VaeLabError(f"{args.resume!r} is already at epoch {start_epoch}; "
                          f"pass --epochs above {start_epoch} to train further")
    saved_opt = (ckpt.get("args") or {}).get("optimizer", "adam")
    if saved_opt == args.optimizer:
        try:
            optimizer.load_state_dict(ckpt["optimizer"])
        except (ValueError, KeyError, RuntimeError) as e:
            raise VaeLabError(f"the optimizer state in {args.resume!r} does not fit this model ({e})") from None
    else:
        print(f"note: checkpoint used --optimizer {saved_opt}, now {args.optimizer}: optimizer state starts fresh")
    history: list = []
    if is_legacy(ckpt):
        # 2018 best_loss was a sum over batches; re-measure it on our per-image scale.
        best_loss = validate(model, loss_fn, val_set, args, start_epoch, world=world)["loss"]
        global_step = start_epoch * n_batches
    else:
        best_loss = float(ckpt["best_loss"])
        history = list(ckpt.get("history", []))
        global_step = int(ckpt.get("global_step", start_epoch * n_batches))
        if isinstance(scheduler, torch.optim.lr_scheduler.MultiStepLR) and "milestones" in ckpt["scheduler"]:
            scheduler.load_state_dict(ckpt["scheduler"])  # overridden below; loaded for its other fields
        if "rng_state" in ckpt:
            set_rng_state(ckpt["rng_state"], generator)
        loss_fn.load_state_dict(ckpt.get("loss_state", {}))
    # The flags' LR schedule governs from here on, whatever the checkpoint used.
    if isinstance(scheduler, torch.optim.lr_scheduler.MultiStepLR):
        scheduler.milestones = Counter([args.m1, args.m2])
    scheduler.base_lrs = [args.lr for _ in optimizer.param_groups]
    scheduler.last_epoch = start_epoch
    for group in optimizer.param_groups:
        group["initial_lr"] = args.lr
        group["lr"] = lr_at(args, start_epoch)
    print(f"=> resumed {args.resume!r} at epoch {start_epoch} (best val loss {best_loss:.2f})")
    return start_epoch, best_loss, history, global_step


def main(args: argparse.Namespace) -> dict:
    """Train (or evaluate / predict with ``--resume``). Returns the run's summary."""
    from checkpoints import copy_checkpoint, load_checkpoint, model_from_checkpoint, save_checkpoint, sync_best
    from datasets import ensure_raw_files, train_val_split
    from losses import VAELoss
    from models import build_model
    from utils import ensure_writable_dir, seed_everything, select_device

    check_args(args)
    device = select_device(args.device, args.no_cuda)
    if args.amp:
        speed.check_amp(device)
    if args.compile:
        speed.check_compile(device)
    speed.tune_malloc()
    world = distributed.init(device)  # a world of one unless started by torchrun
    device = world.device
    seed_everything(args.seed)
    cfg = model_config(args)

    ckpt = load_checkpoint(args.resume) if args.resume else None
    saved_dataset = (ckpt.get("args") or {}).get("dataset_type") if ckpt else None
    if saved_dataset and saved_dataset != args.dataset_type:
        raise VaeLabError(f"{args.resume!r} was trained on {saved_dataset} but --dataset_type is "
                          f"{args.dataset_type}; pass --dataset_type {saved_dataset}")
    model = (model_from_checkpoint(ckpt, cfg, args.resume) if ckpt else build_model(cfg)).to(device)

    if args.evaluate or args.predict:
        summary = run_eval_modes(model, args, device) if world.is_main else {}  # torchrun: rank 0 alone
        distributed.cleanup()
        return summary

    # ---- training set-up: check every output before spending time on data
    if world.is_main:  # only rank 0 writes files
        ensure_writable_dir(args.weights_dir, "checkpoint")
        if args.tensorboard or args.tensorboard_images:
            ensure_writable_dir(os.path.join(args.tb_dir, args.lognumber), "TensorBoard")
    world.rank0_first(ensure_raw_files, args.dataset_type, args.data_root)  # one writer in --data_root
    train_set, val_set = train_val_split(args.dataset_type, args.data_root, args.fold, args.num_folds, args.seed)
    world.check_batches(args.batch_size, len(train_set), len(val_set))
    train_set.x, val_set.x = train_set.x.to(device), val_set.x.to(device)

    optimizer = make_optimizer(args.optimizer, model.parameters(), args.lr)
    scheduler = make_scheduler(optimizer, args)
    loss_fn = VAELoss(args.image_loss_type, args.img_loss_weight, args.kl_loss_weight,
                      args.do_running_mean, 0.9, args.ssim_window_size, args.free_bits, args.ssim_weight)
    generator = torch.Generator().manual_seed(args.seed)  # data order and augmentations
    if world.distributed:
        loss_fn.sync = world.weighted_mean

    start_epoch, best_loss, history, global_step = args.start_epoch, math.inf, [], 0
    n_batches = math.ceil(len(train_set) / args.batch_size)
    if ckpt is not None:
        start_epoch, best_loss, history, global_step = restore_training_state(
            ckpt, args, model, optimizer, scheduler, loss_fn, generator, val_set, n_batches, world)
    elif start_epoch:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(args, start_epoch)
        scheduler.last_epoch = start_epoch
        global_step = start_epoch * n_batches

    # What trains: the model, wrapped in DDP under torchrun, compiled with --compile.
    # Validation, checkpoints and images use the plain model.
    net, train_loss_fn = world.wrap(model), loss_fn
    if args.compile:
        net, train_loss_fn = speed.compile_for_training(net, loss_fn)

    writer = None
    if world.is_main and (args.tensorboard or args.tensorboard_images):
        from tblog import RunWriter, resume_purge_steps

        # On resume, TensorBoard hides what a killed run wrote after its last checkpoint.
        purge = (resume_purge_steps(start_epoch, global_step, math.ceil(len(val_set) / args.batch_size))
                 if ckpt is not None else None)
        writer = RunWriter(os.path.join(args.tb_dir, args.lognumber), purge)
        writer.add_text("hparams", "\n".join(f"    {k}: {v}" for k, v in sorted(vars(args).items())), global_step)
    scalar_writer = writer if args.tensorboard else None
    fixed_x, fixed_y = val_set.x[:16], val_set.y[:16].to(device)
    fixed_z = torch.randn(64, cfg.latent_space_size, generator=torch.Generator().manual_seed(args.seed)).to(device)

    ckpt_path = os.path.join(args.weights_dir, f"{args.lognumber}_checkpoint.pth.tar")
    best_path = os.path.join(args.weights_dir, f"{args.lognumber}_best.pth.tar")
    if world.is_main and ckpt is not None and os.path.abspath(args.resume) == os.path.abspath(ckpt_path):
        sync_best(ckpt, ckpt_path, best_path)  # a kill may have come between the two writes
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{args.model_type} VAE, {n_params:,} parameters, latent {cfg.latent_space_size}, {device}; "
          f"{args.dataset_type}: {len(train_set)} train / {len(val_set)} val images; "
          f"epochs {start_epoch + 1}-{args.epochs}")
    t_start = time.perf_counter()
    epoch = start_epoch
    try:
        for epoch in range(start_epoch, args.epochs):
            t0 = time.perf_counter()
            lr = optimizer.param_groups[0]["lr"]
            tr = train_one_epoch(net, train_loss_fn, optimizer, train_set, args, epoch, generator,
                                 scalar_writer, global_step, world)
            global_step += n_batches
            va = validate(model, loss_fn, val_set, args, epoch, scalar_writer,
                          epoch * math.ceil(len(val_set) / args.batch_size), world)
            check_epoch_finite(model, va, epoch, global_step - 1)  # before anything of the epoch is saved
            scheduler.step()
            is_best = va["loss"] < best_loss
            best_loss = min(best_loss, va["loss"])
            seconds = time.perf_counter() - t0
            history.append({"epoch": epoch + 1, "lr": lr, "seconds": seconds,
                            **{f"train_{k}": v for k, v in tr.items()}, **{f"val_{k}": v for k, v in va.items()}})
            if writer is not None:
                if args.tensorboard:
                    for tag, v in (("eph_tr_loss", tr["loss"]), ("eph_tr_ssim", tr["ssim"]),
                                   ("eph_val_loss", va["loss"]), ("eph_val_ssim", va["ssim"]),
                                   ("eph_tr_img_loss", tr["img_loss"]), ("eph_tr_kl_loss", tr["kl_loss"]),
                                   ("eph_val_img_loss", va["img_loss"]), ("eph_val_kl_loss", va["kl_loss"])):
                        writer.add_scalar(tag, v, epoch + 1)
                if args.tensorboard_images:
                    for tag, grid in _image_grids(model, fixed_x, fixed_y, fixed_z).items():
                        writer.add_image(tag, grid, epoch + 1)
                writer.flush()
            if world.is_main:
                state = _checkpoint_state(model, optimizer, scheduler, loss_fn, args, epoch + 1, best_loss,
                                          history, global_step, generator, cfg)
                save_checkpoint(state, ckpt_path)
                if is_best:
                    copy_checkpoint(ckpt_path, best_path)
            print(f" * epoch {epoch + 1}/{args.epochs}  train loss {tr['loss']:.2f} ssim {tr['ssim']:.4f} | "
                  f"val loss {va['loss']:.2f} (img {va['img_loss']:.2f} kl {va['kl_loss']:.2f}) "
                  f"ssim {va['ssim']:.4f} | lr {lr:.0e} | {seconds:.2f} s{'  [best]' if is_best else ''}",
                  flush=True)
    except KeyboardInterrupt:
        # Read the file: Ctrl-C may have come in the middle of saving the epoch just trained.
        try:
            where = (f"{ckpt_path} holds epoch {load_checkpoint(ckpt_path)['epoch']}; "
                     f"continue with --resume {ckpt_path}")
        except VaeLabError:
            where = "no epoch finished, nothing was saved"
        print(f"\ninterrupted during epoch {epoch + 1}: {where}", file=sys.stderr)
        if writer is not None:
            writer.close()
        sys.exit(130)
    total = time.perf_counter() - t_start
    if writer is not None:
        if args.tensorboard and history:
            hp = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in vars(args).items()}
            writer.add_hparams(hp, {"hparam/best_val_loss": best_loss,
                                    "hparam/final_val_ssim": history[-1]["val_ssim"]}, name="hparams")
        writer.close()
    print(f"done in {total:.1f} s; best val loss {best_loss:.2f}\n"
          f"checkpoints: {ckpt_path} (last), {best_path} (best)")
    if writer is not None:
        print(f"TensorBoard: tensorboard --logdir {args.tb_dir} --port 6006")
    distributed.cleanup()
    return {"best_loss": best_loss, "history": history, "seconds": total,
            "checkpoint": ckpt_path, "best": best_path}


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
