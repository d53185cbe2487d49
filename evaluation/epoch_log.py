"""What train.py writes to TensorBoard at the start of a run and at the end of each epoch: the writer with the
run's flags, the epoch's scalars and its image grids (reconstructions, samples of the prior, and with
--sampler gmm samples of a mixture fitted on the training codes)."""
from __future__ import annotations

import os

import torch

from config.run_config import RunConfig
from datasets import Split
from evaluation.metrics import posterior_means
from evaluation.pictures import fixed_codes, image_grids
from evaluation.samplers import GaussianMixtureSampler, check_components
from models import VAE
from runtime.step_log import write_epoch_scalars
from runtime.tensorboard import RunWriter, resume_purge_steps

# --sampler gmm in TensorBoard: the mixture of each epoch is fitted on this many training images.
GMM_FIT_IMAGES = 10_000

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
        write_epoch_scalars(writer, epoch, tr, va, model.level_names)
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
