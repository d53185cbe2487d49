"""The epoch loop: ``train_one_epoch`` and ``validate`` (each returns per-image averages),
the step logger they share, and what is written at the end of an epoch.

Data is a :class:`datasets.Split` on the training device; a minibatch is an index slice.
Under torchrun (``world``) each process handles its rows of every minibatch, and the logged
metrics are all-reduced (runtime/distributed.py).
"""
from __future__ import annotations

import math
import os
import time

import torch
from tqdm import tqdm

from config.run_config import RunConfig
from core.errors import VaeLabError
from datasets import Split, as_float, augment_batch
from evaluation.likelihood import log_weights
from evaluation.metrics import batch_metrics, batches, posterior_means
from evaluation.pictures import fixed_codes, image_grids
from evaluation.samplers import GaussianMixtureSampler, check_components
from losses import OBJECTIVE_TERMS, VAELoss, kl_divergence, ssim
from losses.disentangling import capacity_at
from models import VAE
from models.base import float32
from models.discriminator import Discriminator
from runtime import accelerators
from runtime.distributed import World, is_main_process
from runtime.nonfinite import grad_norm_and_clip, non_finite_message
from runtime.optim import kl_warmup_scale
from runtime.tensorboard import RunWriter, resume_purge_steps

# train_ssim is measured on the first images of each (shuffled) minibatch, as many as make 32 images of
# 28x28 grey (32 at 28x28x1, 8 at 32x32x3, 2 at 64x64x3), so its cost stays a small share of a step: 32
# images of 64x64 colour cost 9 ms, a fifth of resconv's bfloat16 step (docs/speed.md). Validation SSIM
# always covers every image.
TRAIN_SSIM_PIXELS = 32 * 28 * 28
# --sampler gmm in TensorBoard: the mixture of each epoch is fitted on this many training images.
GMM_FIT_IMAGES = 10_000
# The per-epoch TensorBoard scalars: tag -> (which pass, metric).
EPOCH_SCALARS = {"eph_tr_loss": ("train", "loss"), "eph_tr_ssim": ("train", "ssim"),
                 "eph_val_loss": ("val", "loss"), "eph_val_ssim": ("val", "ssim"),
                 "eph_tr_img_loss": ("train", "img_loss"), "eph_tr_kl_loss": ("train", "kl_loss"),
                 "eph_val_img_loss": ("val", "img_loss"), "eph_val_kl_loss": ("val", "kl_loss")}


class StepLogger:
    """Buffers per-step metrics on the device and flushes them every ``print_freq`` steps.

    One host sync per flush (not per step): TensorBoard scalars, the 2018 console line and
    the non-finite check all read the same buffer, so a NaN is reported at its exact step.
    The last flush of an epoch comes before its checkpoint, so a NaN never reaches a file.
    """

    NAMES = ("loss", "img_loss", "kl_loss", "ssim")

    def __init__(self, prefix: str, writer: RunWriter | None, print_freq: int, n_batches: int, epoch: int,
                 lr: float | None, bar=None, check_finite: bool = False, names: tuple[str, ...] = NAMES,
                 reduce=None):
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
    # disable=None: a bar with ETA on a terminal, nothing in logs or CI (nor on torchrun's other ranks).
    return tqdm(total=n, desc=desc, leave=False, disable=None if is_main_process() else True, unit="batch",
                dynamic_ncols=True)


def train_one_epoch(model: torch.nn.Module, loss_fn: VAELoss, optimizer: torch.optim.Optimizer, data: Split,
                    cfg: RunConfig, epoch: int, generator: torch.Generator,
                    writer: RunWriter | None = None, global_step: int = 0,
                    world: World | None = None, amp: bool = False) -> dict[str, float]:
    """One pass over a fresh permutation of ``data`` (a Split on the training device); ``amp``: the
    forward in bfloat16 autocast (runtime/accelerators.choose_path), the losses in float32.

    Returns per-image averages of loss, img_loss, kl_loss, ssim, grad_norm, kl_weight and
    kl_penalty. ``model`` may be DDP-wrapped or compiled.
    """
    model.train()
    n = len(data)
    n_batches = math.ceil(n / cfg.batch_size)
    device = next(model.parameters()).device  # data.x may stay on the host (datasets.place_images)
    perm = torch.randperm(n, generator=generator).to(data.x.device)
    bar = _progress(n_batches, f"epoch {epoch + 1}/{cfg.epochs}")
    world = world or World(device=device)
    iw = cfg.iw_train
    plain = plain_model(model)
    levels = plain.level_names
    log = StepLogger("train", writer, cfg.print_freq, n_batches, epoch,
                     optimizer.param_groups[0]["lr"], bar, check_finite=True,
                     names=StepLogger.NAMES + ("grad_norm", "kl_weight", "kl_penalty") + (("elbo",) if iw > 1 else ())
                     + levels + OBJECTIVE_TERMS[cfg.objective], reduce=world.reduce_rows)
    sampled_codes = cfg.objective in ("betatc", "factorvae")
    conditional = cfg.conditional
    try:
        for i in range(n_batches):
            idx = perm[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            rows = world.shard(len(idx))  # the whole minibatch in a single process
            x = as_float(data.x[idx[rows]].to(device, non_blocking=True))
            y = data.y[idx[rows].to(data.y.device)].to(device) if conditional else None
            if cfg.do_augs:
                x = augment_batch(x, generator, shard=(rows.start, len(idx)) if world.distributed else None)
            if iw > 1:  # float32 (config.checks refuses --amp on, choose_path leaves auto off)
                terms, logits = iw_terms(model, x, y, iw)
            else:
                noise = world.noise(len(idx), plain.noise_size, rows, x.device)
                if sampled_codes and noise is None:  # drawn here, not by the model: the TC terms need the codes
                    noise = torch.randn(len(idx), plain.noise_size, device=x.device)
                with accelerators.autocast(x.device, amp):
                    if plain.analytic_kl:
                        (logits, mu, logvar), kls = model(x, noise, y=y), None
                    else:  # the VampPrior's sampled KL, a hierarchical model's KL per level
                        logits, mu, logvar, kls = model(x, noise, y=y, with_kl=True)
                if amp:
                    logits, mu, logvar = float32(logits, mu, logvar)
                    kls = None if kls is None else kls.float()
                loss_fn.kl_scale = kl_warmup_scale(cfg, epoch, i, n_batches)
                loss_fn.capacity = capacity_at(cfg.capacity_max, cfg.capacity_epochs, epoch, i, n_batches)
                # the codes the decoder saw (models/base.py reparameterize), for the TC terms
                z = mu + noise * torch.exp(0.5 * logvar) if sampled_codes else None
                terms = loss_fn(logits, x, mu, logvar, None if kls is None else kls.sum(1).mean(), z=z)
                terms.update({level: kls[:, j].mean() for j, level in enumerate(levels)})
            optimizer.zero_grad(set_to_none=True)
            loss = terms["loss"] * world.loss_scale(x.shape[0], len(idx)) if world.distributed else terms["loss"]
            loss.backward()
            # under torchrun the gradients are all-reduced by now: every rank clips the same norm
            terms["grad_norm"] = grad_norm_and_clip(model.parameters(), cfg.grad_clip)
            optimizer.step()
            if cfg.objective == "factorvae":  # its permutations drawn from the data-order generator: resumed exactly
                terms["disc_loss"] = loss_fn.discriminator_step(z, generator)
            with torch.no_grad():  # a random sample of the batch: full-batch SSIM costs more than the step
                k = max(1, TRAIN_SSIM_PIXELS // x[0].numel())
                terms["ssim"] = ssim(plain.image_of(logits[:k].detach()), x[:k], cfg.ssim_window_size).mean()
            log.add(global_step + i, i, x.shape[0], terms)
    finally:
        bar.close()
    return log.averages()


@torch.no_grad()
def validate(model: VAE, loss_fn: VAELoss, data: Split, cfg: RunConfig, epoch: int,
             writer: RunWriter | None = None, global_step: int = 0, world: World | None = None
             ) -> dict[str, float]:
    """Validation in eval mode (decoding the posterior mean); per-image averages.

    ``loss`` is the weighted objective without running-mean rebalancing, KL warm-up or
    free bits, so it is comparable across epochs and is what selects the best checkpoint.
    """
    model.eval()
    n_batches = math.ceil(len(data) / cfg.batch_size)
    device = next(model.parameters()).device
    world = world or World(device=device)
    levels = model.level_names
    log = StepLogger("val", writer, cfg.print_freq, n_batches, epoch, None, names=StepLogger.NAMES + levels,
                     reduce=world.reduce_rows)
    labels = cfg.conditional
    with model.prior_fixed():
        for i, (x, y) in enumerate(batches(data, cfg.batch_size, device, labels, world.shard)):
            m = batch_metrics(model, x, y, ("img_loss", "kl", "ssim") + levels, cfg.ssim_window_size,
                              cfg.image_loss_type, cfg.ssim_weight)
            terms = {"loss": loss_fn.objective(m["img_loss"], m["kl"]), "img_loss": m["img_loss"],
                     "kl_loss": m["kl"], "ssim": m["ssim"], **{level: m[level] for level in levels}}
            log.add(global_step + i, i, x.shape[0], terms)
    return log.averages()


def plain_model(model: torch.nn.Module) -> VAE:
    """The VAE inside a DDP wrapper and/or a torch.compile module."""
    while not isinstance(model, VAE):
        model = model._orig_mod if hasattr(model, "_orig_mod") else model.module
    return model



def iw_terms(model: VAE, x: torch.Tensor, y: torch.Tensor | None, k: int) -> tuple[dict[str, torch.Tensor],
                                                                                  torch.Tensor]:
    """``--iw_train K``: the loss is the IWAE bound -(logsumexp_k log w_k - log K) with K codes per
    image drawn from the global RNG (as the ELBO's one code is), mean over images; ``elbo`` is the
    same samples' mean -log w_k, the ordinary ELBO (sampled KL), with a hierarchical model's KL
    per level (the samples' estimate of each). Also the first sample's logits."""
    mu, logvar = model.posterior(x, y)
    eps = torch.randn(k, mu.shape[0], model.noise_size, device=mu.device, dtype=mu.dtype)
    lw, nll, logits, ratios = log_weights(model, x, mu, logvar, eps, y)
    # logged: the closed form, or the samples' estimate E[log q - log p] (VampPrior, hierarchical)
    kl = kl_divergence(mu, logvar) if model.analytic_kl else -ratios.sum(-1).mean()
    terms = {"loss": -(torch.logsumexp(lw, 0) - math.log(k)).mean(), "img_loss": nll.mean(), "kl_loss": kl,
             "kl_penalty": kl, "kl_weight": torch.ones((), device=x.device), "elbo": -lw.mean(),
             **{level: -ratios[..., j].mean() for j, level in enumerate(model.level_names)}}
    return terms, logits[0]


def make_loss(cfg: RunConfig, world: World, model: VAE, dataset_size: int = 1) -> VAELoss:
    """The training objective the flags describe (under torchrun its running means follow the
    whole minibatch; a logistic or Gaussian likelihood uses ``model``'s learnt scale; beta-TCVAE's
    estimator needs the training set's size ``dataset_size``; FactorVAE gets its discriminator and
    the discriminator's Adam, betas (0.5, 0.9) as Kim & Mnih's)."""
    loss_fn = VAELoss(cfg.image_loss_type, cfg.img_loss_weight, cfg.kl_loss_weight, cfg.do_running_mean, 0.9,
                      cfg.ssim_window_size, cfg.free_bits, cfg.ssim_weight, cfg.objective, cfg.capacity_weight,
                      cfg.tc_weight, dataset_size)
    loss_fn.log_scale = model.log_scale
    if cfg.objective == "factorvae":
        device = next(model.parameters()).device
        loss_fn.discriminator = Discriminator(model.latent_size, cfg.disc_units).to(device)
        loss_fn.disc_optimizer = torch.optim.Adam(loss_fn.discriminator.parameters(), lr=cfg.disc_lr,
                                                  betas=(0.5, 0.9))
    if world.distributed:
        loss_fn.sync = world.weighted_mean
    return loss_fn


def open_writer(cfg: RunConfig, resumed: bool, start_epoch: int, global_step: int, val_batches: int,
                n_train: int) -> RunWriter | None:
    """The run's TensorBoard writer (None when it logs nothing), its flags written as text.

    On resume, TensorBoard hides what a killed run wrote after its last checkpoint.
    """
    if not (cfg.tensorboard or cfg.tensorboard_images):
        return None
    if cfg.tensorboard_images and cfg.sampler == "gmm":
        check_components(cfg.gmm_components, n_train)  # before an epoch is spent
    logdir = os.path.join(cfg.tb_dir, cfg.lognumber)
    # a resume, or a new run where an earlier one of this name wrote events but saved no checkpoint:
    # TensorBoard hides what came after this run's first step
    earlier = resumed or any(name.startswith("events.") for _, _, names in os.walk(logdir) for name in names)
    purge = resume_purge_steps(start_epoch, global_step, val_batches) if earlier else None
    writer = RunWriter(logdir, purge)
    writer.add_text("hparams", "\n".join(f"    {k}: {v}" for k, v in sorted(cfg.to_dict().items())), global_step)
    return writer


def log_epoch(writer: RunWriter, cfg: RunConfig, epoch: int, tr: dict[str, float],
              va: dict[str, float], model: VAE, pictures: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
              train_set: Split) -> None:
    """An epoch's TensorBoard scalars and image grids (``pictures``: images, labels, prior codes;
    with --sampler gmm also samples of a mixture fitted on ``train_set``'s posterior means),
    flushed to disk before the epoch's checkpoint is written."""
    if cfg.tensorboard:
        for tag, (split, name) in EPOCH_SCALARS.items():
            writer.add_scalar(tag, (tr if split == "train" else va)[name], epoch + 1)
        if "elbo" in tr:  # --iw_train: the ELBO beside the bound being trained (eph_tr_loss)
            writer.add_scalar("eph_tr_elbo", tr["elbo"], epoch + 1)
        for level in model.level_names:  # a hierarchical model's KL per level
            for split, values in (("tr", tr), ("val", va)):
                if level in values:
                    writer.add_scalar(f"eph_{split}_{level}", values[level], epoch + 1)
    if cfg.tensorboard_images:
        if model.prior == "vamp":  # the prior learns: the same draws (seeded) from this epoch's mixture
            pictures = (*pictures[:2], fixed_codes(cfg.seed, model, pictures[2].device))
        z_gmm = None
        if cfg.sampler == "gmm":  # refitted on a fixed sample of the training images: ~1 s, not ~5 s
            keep = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(cfg.seed))[:GMM_FIT_IMAGES]
            device = next(model.parameters()).device
            codes = posterior_means(model, Split(train_set.x[keep.to(train_set.x.device)], train_set.y[keep]), device)
            gmm = GaussianMixtureSampler.fit(codes, cfg.gmm_components, cfg.seed)
            z_gmm = fixed_codes(cfg.seed, model, device, gmm=gmm)
        for tag, grid in image_grids(model, *pictures, z_gmm=z_gmm).items():
            writer.add_image(tag, grid, epoch + 1)
    writer.flush()
