"""Train, resume, evaluate and run predictions of a VAE on MNIST / Fashion-MNIST (see --help).

The flags are the 2018 project's and their defaults its best command. The loop is in engine.py,
what a run relies on in runtime/, and --evaluate / --predict in evaluation/modes.py."""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

import torch

from datasets import (Split, add_data_args, as_float, check_fits_model, data_options, ensure_raw_files,
                      pixel_mean_std, place_images, train_val_split)
from engine import (add_iw_args, check_iw_args, check_outputs, epoch_line, log_epoch, make_loss, open_writer,
                    run_footer, run_header, train_one_epoch, validate)
from evaluation.modes import add_mode_args, check_mode_args, run_eval_modes
from evaluation.pictures import fixed_codes
from losses import IMAGE_LOSSES, likelihood_of
from models import ModelConfig, build_model
from runtime.model_flags import add_model_args, check_model_args
from runtime import accelerators, distributed
from runtime.checkpoints import check_dataset, check_fits_checkpoint, load_checkpoint, model_from_checkpoint, sync_best
from runtime.nonfinite import check_epoch_finite
from runtime.optim import make_optimizer, make_scheduler, start_schedule_at
from runtime.training_state import (checkpoint_paths, checkpoint_state, interrupted_message, resolve_run_name,
                                    restore_training_state, save_epoch)
from utils import (MAX_SEED, PresetParser, VaeLabError, int_in, non_negative_float,
                   non_negative_int, positive_float, positive_int, run_cli, seed_everything, select_device, str2bool)

DEFAULT_LOGNUMBER = "fmnist_fc_conv_l10_rebalance_no_norm"

# Named configurations for --preset: they replace the defaults of these flags (flags given
# on the command line still win). "best" is the best configuration of benchmarks/quality.md.
PRESETS: dict[str, dict] = {
    "2018": {},
    "best": {"model_type": "resconv", "batch_size": 128, "epochs": 18, "lr_schedule": "cosine",
             "lognumber": "fmnist_resconv_l10_best"},
    # the best likelihood of benchmarks/quality_families.md: `best` made hierarchical, KL warmed up
    "hvae": {"model_type": "hvae", "batch_size": 128, "epochs": 18, "lr_schedule": "cosine", "kl_warmup_epochs": 6,
             "lognumber": "fmnist_hvae_l10_best"},
}


def get_args_parser() -> argparse.ArgumentParser:
    """The 2018 flag set (same names and meanings) plus data, fold, device, model and KL flags."""
    p = PresetParser(
        PRESETS, prog="train.py",
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

    add_model_args(p.add_argument_group("model"))

    g = p.add_argument_group("data")
    add_data_args(g)
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
                        "--evaluate, --predict); the decoder still outputs pixels, so every loss and metric is in "
                        "pixel space and only the encoder's input changes")
    add_iw_args(g)
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
                   help="run name: weights/{lognumber}_*.pth.tar, tb_logs/{lognumber}/, results/{lognumber}/; "
                        "a default name (this or a preset's) takes the run's dataset, model, latent size and prior")
    g.add_argument("--tensorboard", type=str2bool, default=True, help="write TensorBoard scalars")
    g.add_argument("--tensorboard_images", type=str2bool, default=True,
                   help="write reconstructions (panno) and prior samples to TensorBoard each epoch")
    g.add_argument("--weights_dir", default="weights", help="checkpoint folder")
    g.add_argument("--tb_dir", default="tb_logs", help="TensorBoard folder")
    g.add_argument("--results_dir", default="results", help="--predict output folder")

    g = p.add_argument_group("checkpoints and modes")
    g.add_argument("--resume", default="", metavar="PATH",
                   help="checkpoint to continue from (ours or the 2018 one); training goes on at its next epoch")
    add_mode_args(g)

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
    if args.kl_warmup_epochs and args.do_running_mean:
        raise VaeLabError("--kl_warmup_epochs has no effect with --do_running_mean True (it rescales each term); "
                          "use one of them")
    check_model_args(args)
    check_mode_args(args)
    check_iw_args(args)
    resolve_run_name(args, {DEFAULT_LOGNUMBER} | {p["lognumber"] for p in PRESETS.values() if "lognumber" in p})


def model_config(args: argparse.Namespace, train: Split | None = None, statistics: bool = True) -> ModelConfig:
    """The model the flags describe, for ``train``'s image shape and classes; with --normalize
    (and ``statistics``), its pixel statistics."""
    mean, std = pixel_mean_std(train.x) if args.normalize and statistics and train is not None else (0.0, 1.0)
    data = {} if train is None else {"image_channels": train.x.shape[1], "image_size": train.x.shape[2],
                                     "num_classes": len(train.classes or [None])}
    return ModelConfig(model_type=args.model_type, latent_space_size=args.latent_space_size,
                       model_multiplier=args.model_multiplier, split_filter=args.split_filter,
                       input_mean=mean, input_std=std, conditional=args.conditional, unet_skips=args.unet_skips,
                       conv_n=args.conv_n, likelihood=likelihood_of(args.image_loss_type), prior=args.prior,
                       vamp_components=args.vamp_components, hvae_channels=args.hvae_channels, **data)


def main(args: argparse.Namespace) -> dict:
    """Train (or evaluate / predict with ``--resume``). Returns the run's summary."""
    check_args(args)
    device = select_device(args.device, args.no_cuda)
    accelerators.check_flags(device, args.amp, args.compile)
    accelerators.tune_malloc()
    world = distributed.init(device)  # a world of one unless started by torchrun
    try:  # whatever happens (an error, Ctrl-C), leave the process group
        seed_everything(args.seed)
        ckpt = load_checkpoint(args.resume) if args.resume else None
        if ckpt is not None:
            check_dataset(ckpt, args, args.resume)
        if args.evaluate or args.predict:
            model = model_from_checkpoint(ckpt, model_config(args), args.resume).to(world.device)
            return run_eval_modes(model, args, world.device) if world.is_main else {}  # torchrun: rank 0 alone
        return fit(args, ckpt, world)
    finally:
        distributed.cleanup()


def fit(args: argparse.Namespace, ckpt: dict | None, world: distributed.World) -> dict:
    """The training run: set up, resume, train epoch by epoch (checkpoint each), report."""
    device = world.device
    if world.is_main:  # only rank 0 writes files
        check_outputs(args)  # before spending time on data
    world.rank0_first(ensure_raw_files, args.dataset_type, args.data_root)  # one writer in --data_root
    train_set, val_set = train_val_split(args.dataset_type, args.data_root, args.fold, args.num_folds, args.seed,
                                         **data_options(args))
    check_fits_model(train_set, args.model_type, args.conditional, args.data_root)
    if ckpt is not None:
        check_fits_checkpoint(ckpt, tuple(train_set.x.shape[1:]), args.image_loss_type, args.resume)
    world.check_batches(args.batch_size, len(train_set), len(val_set))
    cfg = model_config(args, train_set, statistics=ckpt is None)  # a checkpoint has its own statistics
    model = (model_from_checkpoint(ckpt, cfg, args.resume) if ckpt else build_model(cfg)).to(device)
    (train_set.x, placement), (val_set.x, _) = place_images(train_set.x, device), place_images(val_set.x, device)
    optimizer = make_optimizer(args.optimizer, model.parameters(), args.lr)
    scheduler = make_scheduler(optimizer, args)
    loss_fn = make_loss(args, world, model)
    generator = torch.Generator().manual_seed(args.seed)  # data order and augmentations
    n_batches, val_batches = math.ceil(len(train_set) / args.batch_size), math.ceil(len(val_set) / args.batch_size)

    start_epoch, best_loss, history, global_step = args.start_epoch, math.inf, [], args.start_epoch * n_batches
    if ckpt is not None:
        start_epoch, best_loss, history, global_step = restore_training_state(
            ckpt, args, optimizer, scheduler, loss_fn, generator, n_batches,
            lambda epoch: validate(model, loss_fn, val_set, args, epoch, world=world)["loss"])
    elif start_epoch:
        start_schedule_at(optimizer, scheduler, args, start_epoch)
    # What trains: the model, wrapped in DDP under torchrun, compiled with --compile.
    # Validation, checkpoints and images use the plain model.
    net, train_loss_fn = world.wrap(model), loss_fn
    if args.compile:
        net, train_loss_fn = accelerators.compile_for_training(net, loss_fn)

    writer = (open_writer(args, ckpt is not None, start_epoch, global_step, val_batches, len(train_set))
              if world.is_main else None)
    scalar_writer = writer if args.tensorboard else None
    pictures = (as_float(val_set.x[:16].to(device)), val_set.y[:16].to(device),
                fixed_codes(args.seed, model, device))
    ckpt_path, best_path = checkpoint_paths(args.weights_dir, args.lognumber)
    if world.is_main and ckpt is not None and os.path.abspath(args.resume) == os.path.abspath(ckpt_path):
        sync_best(ckpt, ckpt_path, best_path)  # a kill may have come between the two writes
    print(run_header(args, model, device, len(train_set), len(val_set), start_epoch, placement))

    t_start, epoch = time.perf_counter(), start_epoch
    try:
        for epoch in range(start_epoch, args.epochs):
            t0, lr = time.perf_counter(), optimizer.param_groups[0]["lr"]
            tr = train_one_epoch(net, train_loss_fn, optimizer, train_set, args, epoch, generator,
                                 scalar_writer, global_step, world)
            global_step += n_batches
            va = validate(model, loss_fn, val_set, args, epoch, scalar_writer, epoch * val_batches, world)
            check_epoch_finite(model, va, epoch, global_step - 1)  # before anything of the epoch is saved
            scheduler.step()
            is_best, best_loss = va["loss"] < best_loss, min(best_loss, va["loss"])
            seconds = time.perf_counter() - t0
            history.append({"epoch": epoch + 1, "lr": lr, "seconds": seconds,
                            **{f"train_{k}": v for k, v in tr.items()}, **{f"val_{k}": v for k, v in va.items()}})
            if writer is not None:
                log_epoch(writer, args, epoch, tr, va, model, pictures, train_set)
            if world.is_main:
                save_epoch(checkpoint_state(model, optimizer, scheduler, loss_fn, args, epoch + 1, best_loss,
                                            history, global_step, generator, cfg), ckpt_path, best_path, is_best)
            print(epoch_line(args, epoch, tr, va, lr, seconds, is_best), flush=True)
    except KeyboardInterrupt:
        print(interrupted_message(ckpt_path, epoch), file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        if writer is not None:
            writer.close()
    total = time.perf_counter() - t_start
    if writer is not None and args.tensorboard and history:
        writer.add_run_hparams(vars(args), best_loss, history[-1]["val_ssim"])
    print(run_footer(args, total, best_loss, ckpt_path, best_path, writer is not None))
    return {"best_loss": best_loss, "history": history, "seconds": total, "checkpoint": ckpt_path, "best": best_path}


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
