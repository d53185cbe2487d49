"""Out-of-distribution scores of a trained VAE: how unlike its training data each image is.

Every score is per image, higher means more anomalous, and all come from one pass over the images
(``score_images``); docs/anomaly.md explains each with its paper and benchmarks/ood.md measures them.

- ``nelbo``: the negative ELBO, bits per dimension (the mean of the K importance samples' -log w). The
  naive likelihood score: it fails famously, because simple images (MNIST digits, for a model of
  Fashion-MNIST) cost fewer bits than the training images themselves (Nalisnick et al. 2019).
- ``iwae``: the importance-weighted bound on -log p(x) with K samples (Burda et al. 2016), bits/dim.
- ``iwae_png`` / ``iwae_webp``: the bound minus the bits of the image saved alone as a PNG / lossless WebP
  file, per dimension: Serrà et al. 2020's complexity correction, a likelihood ratio against a generic
  compressor. Only for a likelihood that is a code length (a distribution over the 256 levels).
- ``llr``: for a hierarchical model, the ELBO minus the bound L>1 whose lower latents are drawn from their
  conditional prior given the top code (Havtorn et al. 2021, LLR>1), bits/dim: how much the image needs
  its low-level latents, which any image can use, beyond what its semantic top code explains.
- ``regret``: Likelihood Regret (Xiao et al. 2020): how much the negative ELBO falls when q(z|x) is fitted to
  this one image by a few Adam steps, bits/dim. Here the posterior's parameters (mean and log-variance of
  the top code) are fitted directly, the limit of fitting the encoder's weights to one image, so a batch
  of images is fitted at once.
- ``recon_mse``: the squared error of the image the decoder makes of the posterior mean, per dimension in
  [0, 1] units (the practitioners' baseline; for an autoregressive decoder, its one-step-ahead prediction
  from the code and the true pixels before each one).

The per-pixel map (``pixel_bits``) is -log p(x|z) at the posterior mean in bits, channels summed: a heat map is
an image's map minus the validation images' mean map, so it shows where this image costs more than typical
images do at that place.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from dataio.placement import as_float
from evaluation.codecs import image_bytes
from evaluation.likelihood import DECODED_PER_PASS
from losses import DISCRETE, log_weights, pixel_nll
from models import VAE

# name -> what it is, in a few words (score.py --help, the CSV's documentation, the explorer)
SCORES: dict[str, str] = {
    "nelbo": "negative ELBO, bits/dim (naive likelihood)",
    "iwae": "IWAE bound on -log p(x), bits/dim (naive likelihood)",
    "iwae_png": "IWAE bits/dim minus the PNG file's bits/dim (Serra et al. 2020)",
    "iwae_webp": "IWAE bits/dim minus the lossless WebP file's bits/dim (Serra et al. 2020)",
    "llr": "ELBO minus the bound with the lower latents from their prior, bits/dim (Havtorn et al. 2021)",
    "regret": "Likelihood Regret: -ELBO gained by fitting q(z|x) to the image, bits/dim (Xiao et al. 2020)",
    "recon_mse": "mean squared error of the reconstruction, per dimension (an autoregressive decoder's: one step "
                 "ahead, from the true pixels before each)",
}
CODEC_SCORES = {"iwae_png": "png", "iwae_webp": "webp"}
USES_K = ("nelbo", "iwae", *CODEC_SCORES, "llr")  # the scores made of the K importance samples
# The score flags use unless --score says otherwise: the best of benchmarks/ood.md; it needs a likelihood that
# is a code length (FALLBACK_SCORE otherwise).
DEFAULT_SCORE = "iwae_webp"
FALLBACK_SCORE = "recon_mse"


@dataclass(frozen=True)
class ScoreSettings:
    """How the scores are computed; stored with a threshold so that it is reused only for the same ones."""

    iw_samples: int = 4  # K of the IWAE bound (the ELBO and LLR average the same K samples)
    regret_steps: int = 10  # Adam steps fitting q(z|x) to each image (0: no Likelihood Regret)
    regret_lr: float = 0.1  # their step size
    codecs: tuple[str, ...] = ("png", "webp")  # the complexity corrections computed
    # WebP's effort for the complexity estimate: 4 costs 0.26 ms per 28x28 image where 6 (the codec table's)
    # costs 9 ms, for 2% more bytes (AMD EPYC, one core)
    webp_method: int = 4
    batch_size: int = 250
    seed: int = 0  # the importance samples' noise: the same images get the same scores
    only: tuple[str, ...] = ()  # compute just these scores (empty: every one the model has)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["codecs"] = list(self.codecs)
        return d


def available_scores(model: VAE, settings: ScoreSettings) -> tuple[list[str], list[str]]:
    """The scores this model has, and one line for each kind that is left out and why."""
    names, left_out = ["nelbo", "iwae"], []
    if model.likelihood in DISCRETE:
        names += [s for s, codec in CODEC_SCORES.items() if codec in settings.codecs]
    else:
        left_out.append(f"{', '.join(CODEC_SCORES)} (its likelihood, {model.likelihood}, is not a code length)")
    if hasattr(model, "top_only_terms"):
        names.append("llr")
    else:
        left_out.append("llr (it has one latent level)")
    if settings.regret_steps > 0:
        names.append("regret")
    names.append("recon_mse")
    if settings.only:
        names = [n for n in names if n in settings.only]
    return names, left_out


def default_score(model: VAE, settings: ScoreSettings) -> str:
    """DEFAULT_SCORE where the model has it, else FALLBACK_SCORE."""
    return DEFAULT_SCORE if DEFAULT_SCORE in available_scores(model, settings)[0] else FALLBACK_SCORE


def _dims(x: torch.Tensor) -> int:
    return x[0].numel()


def _nats_to_bpd(nats: torch.Tensor, dims: int) -> torch.Tensor:
    return nats / (dims * math.log(2))


def _log_weights(model: VAE, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor,
                 terms: Callable | None = None) -> torch.Tensor:
    """log p(x|z_k) + log p(z_k) - log q(z_k|x), (K, B) (evaluation/likelihood.py; ``terms``: which codes)."""
    return log_weights(model, x, mu, logvar, eps, terms=terms)[0]


def image_noise(images: torch.Tensor, rows: int, size: int, seed: int) -> torch.Tensor:
    """Standard-normal noise (rows, N, size) for uint8 images (N, C, H, W), each image's drawn from a
    generator seeded by ``seed`` and a hash of its bytes: an image's scores are the same whether it is
    scored alone, in any batch or at any place in a set."""
    import hashlib

    out = torch.empty(rows, len(images), size)
    for i, im in enumerate(images.cpu()):
        digest = hashlib.blake2b(im.numpy().tobytes(), digest_size=8, key=str(seed).encode()).digest()
        g = torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2 ** 63 - 1))
        out[:, i] = torch.randn(rows, size, generator=g)
    return out


def noise_rows(names: list[str], settings: ScoreSettings) -> int:
    """Rows of noise an image needs: the K importance samples, then one per Likelihood Regret step."""
    return settings.iw_samples + (settings.regret_steps if "regret" in names else 0)


def _bounds(model: VAE, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor,
            hierarchical: bool) -> dict[str, torch.Tensor]:
    """-ELBO, the IWAE bound and (hierarchical models) LLR>1 in nats, (B,), from the noise ``eps`` (K, B, n),
    decoded a chunk of samples at a time so that memory stays bounded whatever K and B are."""
    k, b = eps.shape[:2]
    chunk = max(1, DECODED_PER_PASS // b)
    lse = torch.full((b,), -math.inf, device=x.device)
    total, total_top = torch.zeros(b, device=x.device), torch.zeros(b, device=x.device)
    for start in range(0, k, chunk):
        e = eps[start:start + chunk]
        lw = _log_weights(model, x, mu, logvar, e).float()
        lse = torch.logaddexp(lse, torch.logsumexp(lw, 0))
        total += lw.sum(0)
        if hierarchical:
            total_top += _log_weights(model, x, mu, logvar, e, model.top_only_terms).float().sum(0)
    out = {"nelbo": -total / k, "iwae": -(lse - math.log(k))}
    if hierarchical:
        out["llr"] = (total - total_top) / k
    return out


def _regret(model: VAE, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, settings: ScoreSettings,
            step_eps: torch.Tensor, eval_eps: torch.Tensor) -> torch.Tensor:
    """Likelihood Regret in nats, (B,): -ELBO at the encoder's q minus -ELBO at q fitted to each image by
    ``regret_steps`` Adam steps on its own (mean, log-variance); both -ELBOs estimated with the same noise
    ``eval_eps`` so that the difference is not noise; ``step_eps`` (steps, B, n): each step's noise. The
    model's weights do not move."""
    m, lv = mu.detach().clone().requires_grad_(True), logvar.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([m, lv], lr=settings.regret_lr)
    with torch.enable_grad():
        for step in range(settings.regret_steps):
            eps = step_eps[step:step + 1]
            # the images' -ELBOs are independent: their sum's gradient moves each image's q alone
            loss = -_log_weights(model, x, m, lv, eps).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    with torch.no_grad():
        before = -_log_weights(model, x, mu, logvar, eval_eps).mean(0)
        after = -_log_weights(model, x, m.detach(), lv.detach(), eval_eps).mean(0)
    return (before - after).clamp_min(0.0)  # q fitted for a few steps cannot be worse, up to noise


@torch.no_grad()
def pixel_bits(model: VAE, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """-log p(x|z) of each pixel at the posterior mean code in bits, channels summed, (B, H, W), and the
    decoded mean image (B, C, H, W). ``x``: images in [0, 1], the model in eval mode."""
    logits = model(x).logits.float()
    bits = pixel_nll(model.likelihood, logits, x.float(), model.log_scale).sum(1) / math.log(2)
    return bits, model.image_of(logits).float()


def score_batch(model: VAE, x: torch.Tensor, settings: ScoreSettings, noise: torch.Tensor,
                codec_bytes: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Every score of ``available_scores`` for images ``x`` (B, C, H, W) in [0, 1], each (B,), float64 on
    the CPU. ``noise``: (noise_rows, B, model.noise_size) standard normal (``image_noise``);
    ``codec_bytes``: each codec's file size per image in bytes (B,), for the codec-corrected scores. The
    model is left in eval mode."""
    model.eval()
    names = available_scores(model, settings)[0]
    dims = _dims(x)
    bounds = {"nelbo", "iwae", "llr", *CODEC_SCORES} & set(names)
    nats: dict[str, torch.Tensor] = {}
    with torch.no_grad(), model.prior_fixed():
        mu, logvar = model.posterior(x)
        noise = noise.to(x.device, mu.dtype)
        eps = noise[:settings.iw_samples]
        if bounds:
            nats = _bounds(model, x, mu, logvar, eps, "llr" in names)
        if "recon_mse" in names:
            mean_image = model.image_of(model(x).logits.float()).float()
    if "regret" in names:
        with model.prior_fixed():
            nats["regret"] = _regret(model, x, mu, logvar, settings, noise[settings.iw_samples:], eps[:1])
    out = {name: _nats_to_bpd(v, dims) for name, v in nats.items()}
    for name, codec in CODEC_SCORES.items():
        if name in names:
            out[name] = out["iwae"] - 8 * codec_bytes[codec].to(out["iwae"]) / dims
    if "recon_mse" in names:
        out["recon_mse"] = (mean_image - x.float()).pow(2).flatten(1).mean(1)
    return {name: out[name].double().cpu() for name in names}


def score_images(model: VAE, images: torch.Tensor, settings: ScoreSettings, device: torch.device,
                 progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """Every available score of uint8 images (N, C, H, W), batch by batch: name -> (N,) float64. An
    image's scores depend on it and ``settings`` alone (``image_noise``), up to float rounding.
    ``progress`` is called with each batch's size."""
    if images.dtype != torch.uint8:
        raise ValueError("score_images takes the images as uint8 (N, C, H, W)")
    names = available_scores(model, settings)[0]
    codecs = [CODEC_SCORES[n] for n in names if n in CODEC_SCORES]
    sizes = image_bytes(images, tuple(codecs), settings.webp_method) if codecs else None
    rows = noise_rows(names, settings)
    out: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    for start in range(0, len(images), settings.batch_size):
        batch = images[start:start + settings.batch_size]
        x = as_float(batch.to(device))
        noise = image_noise(batch, rows, model.noise_size, settings.seed)
        codec_bytes = None if sizes is None else {
            c: torch.from_numpy(sizes[start:start + len(x), j]) for j, c in enumerate(codecs)}
        for name, v in score_batch(model, x, settings, noise, codec_bytes).items():
            out[name].append(v)
        if progress is not None:
            progress(len(x))
    return {n: torch.cat(v).numpy() if v else np.zeros(0) for n, v in out.items()}


@torch.no_grad()
def mean_pixel_bits(model: VAE, images: torch.Tensor, device: torch.device, batch_size: int = 500) -> np.ndarray:
    """The mean per-pixel bits map (H, W) of uint8 images: what a typical image costs at each place."""
    model.eval()
    total = None
    for start in range(0, len(images), batch_size):
        bits = pixel_bits(model, as_float(images[start:start + batch_size].to(device)))[0].double().sum(0).cpu()
        total = bits if total is None else total + bits
    return (total / len(images)).numpy()


def heat_maps(model: VAE, images: torch.Tensor, typical: np.ndarray, device: torch.device) -> np.ndarray:
    """Where each uint8 image (N, C, H, W) costs more bits than typical images do at that place: its
    per-pixel bits minus ``typical`` (H, W), (N, H, W)."""
    model.eval()
    bits = pixel_bits(model, as_float(images.to(device)))[0].double().cpu().numpy()
    return bits - typical[None]


def detection_metrics(inlier_scores: np.ndarray, outlier_scores: np.ndarray) -> dict[str, float]:
    """How well a score (higher: more anomalous) separates outliers from inliers, outliers the positive
    class: AUROC, AUPRC (average precision) and the false-positive rate at 95% true positives
    (scikit-learn's metrics)."""
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

    if len(inlier_scores) == 0 or len(outlier_scores) == 0:
        raise ValueError("detection metrics need both inliers and outliers")
    y = np.r_[np.zeros(len(inlier_scores)), np.ones(len(outlier_scores))]
    s = np.r_[inlier_scores, outlier_scores]
    fpr, tpr, _ = roc_curve(y, s)
    return {"auroc": float(roc_auc_score(y, s)), "auprc": float(average_precision_score(y, s)),
            "fpr95": float(fpr[np.searchsorted(tpr, 0.95, side="left")])}


def threshold_at(inlier_scores: np.ndarray, fpr: float) -> float:
    """The score above which a fraction ``fpr`` of inlier images lie (its 1 - fpr quantile)."""
    if not 0.0 < fpr < 1.0:
        raise ValueError(f"fpr must be in (0, 1), got {fpr}")
    return float(np.quantile(inlier_scores, 1.0 - fpr))


QUANTILES = 1001  # quantiles of the validation scores kept with a threshold: percentiles to 0.1%


def quantiles(scores: np.ndarray) -> list[float]:
    """The scores' quantiles at 0, 0.1%, ..., 100%: enough to place any image's score among them."""
    return [float(v) for v in np.quantile(scores, np.linspace(0.0, 1.0, QUANTILES))]


def threshold_from_quantiles(table: list[float], fpr: float) -> float:
    """``threshold_at`` of the scores whose ``quantiles`` are ``table`` (exact where 1 - fpr is on its grid)."""
    if not 0.0 < fpr < 1.0:
        raise ValueError(f"fpr must be in (0, 1), got {fpr}")
    return float(np.interp(1.0 - fpr, np.linspace(0.0, 1.0, len(table)), table))


def percentile(value: float, table: list[float]) -> float:
    """Where ``value`` falls among the scores whose ``quantiles`` are ``table``, in percent (0-100)."""
    return float(np.interp(value, table, np.linspace(0.0, 100.0, len(table))))
