"""The importance-weighted bound on -log p(x) (IWAE, Burda, Grosse & Salakhutdinov 2016).

For K samples z_k ~ q(z|x) = N(mu, exp(logvar)) and the model's prior p(z) (N(0, I), or the
VampPrior's mixture evaluated exactly; a hierarchical model's codes are all its levels, drawn
top-down, with p and q the products of the levels' densities),

    -log p(x) <= -(logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log K),

in nats per image. K = 1 is a one-sample estimate of the negative ELBO (BCE + KL); the
bound tightens (decreases) towards -log p(x) as K grows (Theorem 1 of the paper).

log p(x|z) is the model's likelihood (losses/likelihoods.py). For the 2018 Bernoulli one it is
minus the BCE from the decoder's logits, summed over pixels. The pixels x are grey levels in
[0, 1], not binary, so this is the continuous Bernoulli density without its normalising
constant, not a normalised density of x; the bound is therefore on the same scale as the ELBO
(BCE + KL) and comparable with it, not with log-likelihoods of binarised or 8-bit-discretised
data. With the discretised logistic it is a true bound on -log P(x) of the 8-bit image, and
comparable with the literature in bits per dimension.

The log-weights are losses/iwae.py's ``log_weights``, the ones ``--iw_train`` trains on.
"""
from __future__ import annotations

import math

import torch

from datasets import Split
from losses import log_weights
from models import VAE
from runtime.batch_pass import batches

# With chunk=None, iwae_nll decodes this many images (samples x batch) per pass: ~3 MB of
# float32 logits, so memory stays bounded whatever K and the batch size are (and the
# fastest of 256-16,384 on a 2-core CPU, where it stays in cache).
DECODED_PER_PASS = 1024


@torch.no_grad()
def iwae_nll(model: VAE, x: torch.Tensor, k: int, chunk: int | None = None,
             y: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-image IWAE upper bound on -log p(x) with ``k`` samples, nats, shape (B,).

    ``x``: images (B, C, H, W) in [0, 1]. ``chunk``: samples of z decoded per pass (None:
    DECODED_PER_PASS // B, at least 1); the K log-weights are combined by a streaming
    logsumexp, so memory is O(chunk x B x pixels), not O(K x B x pixels). ``y``: labels,
    passed to ``posterior`` and ``decode_logits`` only when given (conditional models).
    ``generator`` draws the noise (the global RNG when None). The noise is drawn one sample
    (B, z) at a time, so for a given generator state the draws, hence the value up to float
    rounding, do not depend on ``chunk``. Call it with the model in eval mode.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    b = x.shape[0]
    chunk = max(1, DECODED_PER_PASS // b) if chunk is None else chunk
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, got {chunk}")
    mu, logvar = model.posterior(x, y)
    noise_device = generator.device if generator is not None else mu.device
    lse = torch.full((b,), -math.inf, device=mu.device, dtype=mu.dtype)
    for start in range(0, k, chunk):
        c = min(chunk, k - start)
        eps = torch.stack([torch.randn((b, model.noise_size), generator=generator, device=noise_device,
                                       dtype=mu.dtype)
                           for _ in range(c)]).to(mu.device)  # (c, B, noise_size)
        lse = torch.logaddexp(lse, torch.logsumexp(log_weights(model, x, mu, logvar, eps, y)[0], dim=0))
    return -(lse - math.log(k))


@torch.no_grad()
def iwae_evaluate(model: VAE, data: Split, device: torch.device, k: int, batch_size: int = 100,
                  seed: int = 0, chunk: int | None = None, labels: bool = False) -> float:
    """Mean per-image IWAE bound (nats) over ``data``, in eval mode.

    Deterministic given ``seed``, ``batch_size`` and ``k``: the noise comes from a CPU
    torch.Generator of its own (the global RNG is left alone), so the value is the same on
    any device up to float rounding. ``labels=True`` passes ``data.y`` to the model.
    """
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    total = 0.0
    with model.prior_fixed():
        for x, y in batches(data, batch_size, device, labels):
            total += iwae_nll(model, x, k, chunk, y, generator).double().sum().item()
    return total / len(data)
