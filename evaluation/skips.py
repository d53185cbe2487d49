"""How much of a UNet VAE's reconstruction goes through its skips instead of its latent code.

The decoder of `unet` (models/unet.py) gets the encoder's feature maps besides the code. Swap
the code for a prior draw or for zeros while keeping the input's maps, and the reconstruction
shows what the skips alone carry; decode the code without the maps (zeros in their place, as
for a prior sample) and it shows what the code alone carries. The KL per latent dimension and
the active units (Burda et al. 2016) say how much the code is used at all.
"""
from __future__ import annotations

import torch

from datasets import Split
from evaluation.latent_pictures import posterior_stats
from evaluation.metrics import active_units, batches
from losses import bce_loss
from models.unet import UNetVAE


@torch.no_grad()
def skip_usage(model: UNetVAE, val: Split, device: torch.device, seed: int, batch_size: int = 500) -> dict:
    """Per image (nats): ``bce`` of the normal decode (posterior mean, the input's maps),
    ``bce_prior_code`` and ``bce_zero_code`` (the code replaced, the maps kept), ``bce_no_maps``
    (the posterior mean decoded without the maps); ``kl``, ``kl_per_dim`` (largest first),
    ``kl_top_dim`` and ``active_units``. The prior draws come from a generator seeded ``seed``."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    sums = dict.fromkeys(("bce", "bce_prior_code", "bce_zero_code", "bce_no_maps"), 0.0)
    for x, _ in batches(val, batch_size, device):
        mu, _ = model.posterior(x)
        prior = torch.randn(mu.shape, generator=gen).to(device)
        for key, logits in (("bce", model.decode_with_skips(x, mu)),
                            ("bce_prior_code", model.decode_with_skips(x, prior)),
                            ("bce_zero_code", model.decode_with_skips(x, torch.zeros_like(mu))),
                            ("bce_no_maps", model.decode_logits(mu))):
            sums[key] += bce_loss(logits, x).item() * len(x)
    means, _, _, kl_dims = posterior_stats(model, val, device)
    out = {key: total / len(val) for key, total in sums.items()}
    out.update(kl=kl_dims.sum().item(), kl_per_dim=sorted(kl_dims.tolist(), reverse=True),
               kl_top_dim=kl_dims.max().item(),
               active_units=active_units(means))
    return out


@torch.no_grad()
def skip_picture_rows(model: UNetVAE, x: torch.Tensor, seed: int) -> list[torch.Tensor]:
    """Four rows of images of ``x``: reconstructions, reconstructions from a prior-drawn code (the
    input's maps kept), the posterior mean decoded without the maps, prior samples."""
    model.eval()
    mu, _ = model.posterior(x)
    prior = torch.randn(mu.shape, generator=torch.Generator().manual_seed(seed)).to(x.device)
    return [torch.sigmoid(t) for t in (model.decode_with_skips(x, mu), model.decode_with_skips(x, prior),
                                       model.decode_logits(mu), model.decode_logits(prior))]
