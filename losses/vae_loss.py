"""The VAE objective: a reconstruction term plus the closed-form KL divergence.

Reductions: every term is summed over pixels (reconstruction) or latent dimensions (KL)
and averaged over the images of the batch, so values are per image (nats for BCE + KL).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from losses.disentangling import (
    OBJECTIVES,
    capacity_penalty,
    discriminator_loss,
    discriminator_tc,
    permute_dims,
    tc_decomposition,
)
from losses.likelihoods import pixel_nll
from losses.ssim import ssim_map

# logistic / gaussian: the likelihoods of losses/likelihoods.py, with the model's learnt scale
IMAGE_LOSSES = ("bce", "mse", "ssim", "bce_ssim", "logistic", "gaussian", "dmol")
# what each --objective adds to the logged terms (train_<name> in TensorBoard)
OBJECTIVE_TERMS = {"elbo": (), "capacity": ("capacity",), "betatc": ("mi", "tc", "dim_kl"),
                   "factorvae": ("tc", "disc_loss")}


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)), summed over latent dims, mean over the batch.

    Closed form, Appendix B of Kingma & Welling (2014):
    -1/2 * sum(1 + logvar - mu^2 - exp(logvar)).
    """
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / mu.shape[0]


def bce_loss(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Bernoulli negative log-likelihood from logits, summed over pixels, mean over the batch."""
    return F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / x.shape[0]


def mse_loss(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Squared error of sigmoid(logits) against x, summed over pixels, mean over the batch."""
    return F.mse_loss(torch.sigmoid(logits), x, reduction="sum") / x.shape[0]


def ssim_loss(logits: torch.Tensor, x: torch.Tensor, window_size: int = 5) -> torch.Tensor:
    """Sum over pixels of (1 - SSIM map), mean over the batch.

    That is (number of pixels) x (1 - mean SSIM) per image: on the scale of a summed
    BCE, so it competes with the KL term. The 2018 loss used the mean (at most 1 per
    image), which the KL term overwhelmed: the posterior collapsed and it "did not train".
    """
    return (1 - ssim_map(torch.sigmoid(logits), x, window_size)).sum() / x.shape[0]


def kl_per_dimension(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """The closed-form KL of each latent dimension, mean over the batch: shape (z,)."""
    return -0.5 * torch.mean(1 + logvar - mu.pow(2) - logvar.exp(), dim=0)


def reconstruction_loss(kind: str, logits: torch.Tensor, x: torch.Tensor, ssim_window_size: int = 5,
                        ssim_weight: float = 1.0, log_scale: torch.Tensor | None = None) -> torch.Tensor:
    """``bce_ssim`` is BCE + ssim_weight x the ssim loss: the likelihood keeps every pixel's
    grey level honest, the SSIM term rewards local structure (edges, texture). ``logistic`` and
    ``gaussian``: their NLL with the model's learnt ``log_scale`` per channel; ``dmol``: the NLL of the
    decoder's pixel mixtures (``logits`` holds their parameters)."""
    if kind in ("logistic", "gaussian", "dmol"):
        return pixel_nll(kind, logits, x, log_scale).sum() / x.shape[0]
    if kind == "bce":
        return bce_loss(logits, x)
    if kind == "mse":
        return mse_loss(logits, x)
    if kind == "ssim":
        return ssim_loss(logits, x, ssim_window_size)
    if kind == "bce_ssim":
        return bce_loss(logits, x) + ssim_weight * ssim_loss(logits, x, ssim_window_size)
    raise ValueError(f"unknown image loss {kind!r}; choose from {IMAGE_LOSSES}")


class VAELoss:
    """Weighted reconstruction + KL, optionally rebalanced by running means (2018 flag).

    With ``running_mean=True`` each term is divided by an exponential running mean of its
    own value (gamma 0.9, detached), so both contribute on a unit scale before weighting.
    The running means are part of the training state and go into checkpoints.

    KL controls: ``kl_scale`` (set by the training loop each step, the KL warm-up factor in
    [0, 1]) multiplies ``kl_loss_weight``; ``free_bits`` > 0 replaces each latent
    dimension's batch-mean KL by max(free_bits, KL_j) in the objective (Kingma et al. 2016),
    so dimensions under the floor are not pushed to the prior. The returned ``kl_loss``
    is always the true KL; ``kl_penalty`` is what the objective used, ``kl_weight`` its weight.

    ``objective`` (losses/disentangling.py): ``capacity`` replaces the weighted KL by
    capacity_weight x |KL - C|, C (``capacity``, set by the loop each step) in nats; ``betatc`` uses
    kl weight x (MI + dimension-wise KL) + tc_weight x TC, estimated at the sampled codes ``z`` with
    ``dataset_size``; ``factorvae`` adds tc_weight x the TC estimate of ``discriminator`` (a module
    with its own optimiser ``disc_optimizer``, trained by :meth:`discriminator_step`).
    """

    def __init__(self, image_loss_type: str = "bce", img_loss_weight: float = 1.0,
                 kl_loss_weight: float = 1.0, running_mean: bool = False, gamma: float = 0.9,
                 ssim_window_size: int = 5, free_bits: float = 0.0, ssim_weight: float = 1.0,
                 objective: str = "elbo", capacity_weight: float = 1000.0, tc_weight: float = 6.0,
                 dataset_size: int = 1):
        if image_loss_type not in IMAGE_LOSSES:
            raise ValueError(f"unknown image loss {image_loss_type!r}; choose from {IMAGE_LOSSES}")
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r}; choose from {OBJECTIVES}")
        self.objective_name, self.capacity_weight, self.tc_weight = objective, capacity_weight, tc_weight
        self.dataset_size = dataset_size
        self.capacity = 0.0
        self.discriminator: torch.nn.Module | None = None
        self.disc_optimizer: torch.optim.Optimizer | None = None
        self.image_loss_type = image_loss_type
        self.img_w, self.kl_w = img_loss_weight, kl_loss_weight
        self.running_mean, self.gamma = running_mean, gamma
        self.ssim_window_size, self.ssim_weight = ssim_window_size, ssim_weight
        self.free_bits = free_bits
        self.kl_scale = 1.0
        # logistic / gaussian: the model's learnt log-scale per channel (a parameter the optimizer trains)
        self.log_scale: torch.Tensor | None = None
        self.img_rm: torch.Tensor | None = None
        self.kl_rm: torch.Tensor | None = None
        # Under torchrun: (per-image means, images) -> global means, so the running means
        # follow the whole minibatch on every rank (distributed.World.weighted_mean).
        self.sync = None

    def __call__(self, logits: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
                 kl: torch.Tensor | None = None, z: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``kl``: the per-image mean KL of a model whose KL has no closed form in (mu, logvar) (the
        VampPrior, a hierarchical model); free bits need the closed form's per-dimension terms.
        ``z``: the sampled codes, for --objective betatc and factorvae."""
        if self.objective_name != "elbo":
            return self._disentangling(logits, x, mu, logvar, z)
        img = reconstruction_loss(self.image_loss_type, logits, x, self.ssim_window_size, self.ssim_weight,
                                  self.log_scale)
        if kl is None:
            kl_dims = kl_per_dimension(mu, logvar)
            kl = kl_dims.sum()
            penalty = kl_dims.clamp_min(self.free_bits).sum() if self.free_bits > 0 else kl
        else:
            penalty = kl
        kl_w = self.kl_w * self.kl_scale
        if self.running_mean:
            img_d, kl_d = img.detach(), penalty.detach()
            if self.sync is not None:
                img_d, kl_d = self.sync(torch.stack([img_d, kl_d]), x.shape[0]).unbind()
            if self.img_rm is None:
                self.img_rm, self.kl_rm = img_d, kl_d
            else:
                self.img_rm = self.gamma * self.img_rm + (1 - self.gamma) * img_d
                self.kl_rm = self.gamma * self.kl_rm + (1 - self.gamma) * kl_d
            loss = self.img_w * img / self.img_rm.clamp_min(1e-8) + kl_w * penalty / self.kl_rm.clamp_min(1e-8)
        else:
            loss = self.img_w * img + kl_w * penalty
        return {"loss": loss, "img_loss": img, "kl_loss": kl, "kl_penalty": penalty,
                "kl_weight": torch.tensor(kl_w, device=loss.device)}

    def _disentangling(self, logits: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
                       z: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """The capacity, beta-TCVAE and FactorVAE objectives (no running means, no free bits: config/checks.py)."""
        img = reconstruction_loss(self.image_loss_type, logits, x, self.ssim_window_size, self.ssim_weight,
                                  self.log_scale)
        kl = kl_per_dimension(mu, logvar).sum()
        kl_w = self.kl_w * self.kl_scale
        terms: dict[str, torch.Tensor] = {}
        if self.objective_name == "capacity":
            penalty = capacity_penalty(kl, self.capacity, self.capacity_weight)
            terms["capacity"] = torch.tensor(self.capacity, device=kl.device)
            loss = self.img_w * img + penalty
        elif self.objective_name == "betatc":
            terms = tc_decomposition(z, mu, logvar, self.dataset_size)
            penalty = kl_w * (terms["mi"] + terms["dim_kl"]) + self.tc_weight * self.kl_scale * terms["tc"]
            loss = self.img_w * img + penalty
        else:  # factorvae
            terms["tc"] = discriminator_tc(self.discriminator(z))
            penalty = kl_w * kl + self.tc_weight * terms["tc"]
            loss = self.img_w * img + penalty
        return {"loss": loss, "img_loss": img, "kl_loss": kl, "kl_penalty": penalty,
                "kl_weight": torch.tensor(kl_w, device=loss.device), **terms}

    def discriminator_step(self, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One Adam step of FactorVAE's discriminator on the minibatch's codes ``z`` (detached) against the
        same codes permuted per dimension; returns its loss (before the step)."""
        z = z.detach()
        loss = discriminator_loss(self.discriminator(z), self.discriminator(permute_dims(z, generator)))
        self.disc_optimizer.zero_grad(set_to_none=True)  # also drops what the VAE's backward left in it
        loss.backward()
        self.disc_optimizer.step()
        return loss.detach()

    def objective(self, img: torch.Tensor, kl: torch.Tensor) -> torch.Tensor:
        """The full objective (no warm-up, no free bits, no rebalancing): the ELBO-like loss that
        validation reports and that picks the best checkpoint."""
        return self.img_w * img + self.kl_w * kl

    def state_dict(self) -> dict:
        return {"img_rm": self.img_rm, "kl_rm": self.kl_rm}

    def load_state_dict(self, state: dict) -> None:
        self.img_rm, self.kl_rm = state.get("img_rm"), state.get("kl_rm")
