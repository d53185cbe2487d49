"""Every figure a run reports, declared once: its name, its console label and number format, where it
is reported, and how it is computed from one batch's model output.

From these declarations come the step logger's names and the per-step TensorBoard scalars
(``train_<name>`` / ``val_<name>``, runtime/step_log.py), the per-epoch ones (``eph_tr_<name>`` /
``eph_val_<name>``), the 2018 console line of a step and the line that closes an epoch
(runtime/report.py), and ``--evaluate``'s per-split figures (the eval JSON) and table columns
(evaluation/metrics.py, evaluation/modes.py). Adding a metric is one :func:`register` call of one
:class:`Metric`.

Where the decoder reads pixels (``model.autoregressive``: pixelvae), its output for an image is a
one-step-ahead prediction (each pixel from the code and the true pixels before it), not the picture a user
gets, which is drawn from the code alone. A metric declared ``pictures_of`` another measures that other
figure again on those pictures; both are then reported, labelled apart (:func:`label`).

The terms of the training objective (loss, img_loss, kl_loss while training, grad_norm, ...) come from
the objective; a declared metric with a ``compute`` is measured on the batch where the objective does not
give it (validation, ``--evaluate``, and every training step on a sample of the batch).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch

from config.run_config import RunConfig
from losses import bce_loss, kl_divergence, mse_loss, pixel_nll, reconstruction_loss, ssim
from losses.pixel_layout import MIXTURE

# A training step's measured metrics (SSIM) read the first images of each (shuffled) minibatch, as many as
# make 32 images of 28x28 grey (32 at 28x28x1, 8 at 32x32x3, 2 at 64x64x3), so their cost stays a small
# share of a step: SSIM of 32 images of 64x64 colour costs 9 ms, a fifth of resconv's bfloat16 step
# (docs/speed.md). Validation and --evaluate measure every image.
TRAIN_SSIM_PIXELS = 32 * 28 * 28


@dataclass
class Batch:
    """One batch's images ``x`` in [0, 1] and ``model``'s output for them: what a metric is computed from.

    ``kl``: the KL per image and latent level (B, levels) where the model gives it (VampPrior, a
    hierarchical model), else None (the closed form of ``mu``, ``logvar``). The rest: the run's settings
    the reconstruction term and SSIM take.
    """

    model: Any  # the plain VAE (image_of, likelihood, log_scale, level_names)
    x: torch.Tensor
    logits: torch.Tensor
    mu: torch.Tensor | None
    logvar: torch.Tensor | None
    kl: torch.Tensor | None = None
    window_size: int = 5
    image_loss_type: str = "bce"
    ssim_weight: float = 1.0
    y: torch.Tensor | None = None  # a CVAE's classes (the pictures are drawn for them)

    @cached_property
    def image(self) -> torch.Tensor:
        """The image in [0, 1] the output stands for."""
        return self.model.image_of(self.logits)

    @cached_property
    def image_logits(self) -> torch.Tensor:
        """Logits of that image, one per pixel (what the BCE and MSE score): the output itself unless it is
        a pixel mixture."""
        return self.logits if self.model.likelihood != MIXTURE else torch.logit(self.image, eps=1e-6)

    @cached_property
    def pictures(self) -> torch.Tensor:
        """The pictures the code alone draws of ``x``: ``model.reconstruct``, what --predict and the explorer
        show (for a decoder that reads pixels, drawn pixel by pixel from the posterior mean: slow)."""
        return self.model.reconstruct(self.x, self.y)


@dataclass(frozen=True)
class Column:
    """A column of ``--evaluate``'s table: right-aligned in ``width`` characters, shown when some split
    has the figure and ``shown(results)`` (if given) agrees. A label may name a result field in braces."""

    width: int = 10
    shown: Callable[[list[dict]], bool] | None = None


@dataclass(frozen=True)
class Metric:
    """One reported figure, per image.

    ``name``: its key everywhere (history ``train_<name>``, TensorBoard tags, the eval JSON).
    ``label``: the console's (the step line as is, the epoch line in lower case, the table's header).
    ``fmt``: its number format on the epoch line and in the table (the 2018 step line prints 4 decimals).
    ``compute``: its per-image mean over a batch (a 0-d tensor, never read on the host); None: the
    objective gives it (``loss``) or it is computed over a whole split (FID, codec sizes, the IWAE bound).
    ``derive``: a figure of ``--evaluate`` made from a split's other figures (BCE+KL).
    ``logged``: the training loop averages it per step and per epoch: TensorBoard per step (with
    ``step``) and per epoch, the step console line (with ``step``) and the epoch line.
    ``detail``: on the epoch line, in parentheses after the validation loss.
    ``evaluate``: ``--evaluate`` reports it per split (the eval JSON); ``column``: in its table.
    ``pictures_of``: the name of the figure this one measures again on ``Batch.pictures``; reported only for a
    decoder that reads pixels (for any other the two are one figure), on the first images of a split
    (evaluation/metrics.py, PICTURE_IMAGES).
    """

    name: str
    label: str
    fmt: str = ".4f"
    compute: Callable[[Batch], torch.Tensor] | None = None
    derive: Callable[[Mapping[str, float]], float] | None = None
    logged: bool = False
    step: bool = True
    detail: bool = False
    evaluate: bool = False
    column: Column | None = None
    pictures_of: str | None = None


def _kl(b: Batch) -> torch.Tensor:
    return kl_divergence(b.mu, b.logvar) if b.kl is None else b.kl.sum(1).mean()


def _img_loss(b: Batch) -> torch.Tensor:  # the training reconstruction term, --image_loss_type
    return reconstruction_loss(b.image_loss_type, b.logits, b.x, b.window_size, b.ssim_weight, b.model.log_scale)


def _ssim(b: Batch) -> torch.Tensor:
    return ssim(b.image, b.x, b.window_size).mean()


def _picture_mse(b: Batch) -> torch.Tensor:  # mse_loss's sum, of pictures in [0, 1] rather than logits
    return torch.nn.functional.mse_loss(b.pictures, b.x, reduction="sum") / b.x.shape[0]


def _nll(b: Batch) -> torch.Tensor:  # -log p(x|z) under the model's likelihood (the BCE for a Bernoulli one)
    return pixel_nll(b.model.likelihood, b.logits, b.x, b.model.log_scale).sum() / b.x.shape[0]


def _not_only_bernoulli(results: list[dict]) -> bool:  # NLL+KL of a Bernoulli likelihood is BCE+KL
    return any(r.get("likelihood", "bernoulli") != "bernoulli" for r in results)


# In the order they are reported: the loop's figures (the step line, the epoch line) and --evaluate's (the
# eval JSON, the table's columns) each keep this order among themselves.
_DECLARED = (
    # the training loop's: the objective gives loss (validation: without warm-up or running means), and
    # while training img_loss and kl_loss; they are measured in validation
    Metric("loss", "Loss", ".2f", logged=True),
    Metric("img_loss", "IMG", ".2f", _img_loss, logged=True, detail=True),
    Metric("kl_loss", "KL", ".2f", _kl, logged=True, detail=True),
    # --evaluate's, decoding the posterior mean (kl: the loop's kl_loss under the eval JSON's name)
    Metric("bce", "BCE", ".2f", lambda b: bce_loss(b.image_logits, b.x), evaluate=True, column=Column(9)),
    Metric("mse", "MSE", ".2f", lambda b: mse_loss(b.image_logits, b.x), evaluate=True, column=Column(8)),
    Metric("mse_from_code", "MSE (from the code)", ".2f", _picture_mse, evaluate=True, column=Column(19),
           pictures_of="mse"),
    Metric("kl", "KL", ".2f", _kl, evaluate=True, column=Column(8)),
    Metric("bce_kl", "BCE+KL", ".2f", derive=lambda r: r["bce"] + r["kl"], evaluate=True, column=Column(9)),
    Metric("ssim", "SSIM", ".4f", _ssim, logged=True, evaluate=True, column=Column(7)),
    Metric("ssim_from_code", "SSIM (from the code)", ".4f", lambda b: ssim(b.pictures, b.x, b.window_size).mean(),
           evaluate=True, column=Column(20), pictures_of="ssim"),
    # computed over a whole split in evaluation/ (the IWAE bound, codecs, FID), in the table when there
    Metric("iwae_nll", "IWAE K={iw_samples}", ".2f", column=Column(12)),
    Metric("kl_top", "KL top", ".2f", column=Column()),  # a hierarchical model's KL per level
    Metric("kl_map", "KL map", ".2f", column=Column()),
    Metric("nll", "NLL", ".2f", _nll, evaluate=True),
    Metric("nll_kl", "NLL+KL", ".2f", derive=lambda r: r["nll"] + r["kl"], evaluate=True,
           column=Column(shown=_not_only_bernoulli)),
    Metric("bits_per_dim", "bits/dim", ".4f", column=Column()),
    Metric("iwae_bits_per_dim", "IWAE b/d", ".4f", column=Column()),
    # lossless codecs on the same images (evaluation/codecs.py): the bar for the two above
    Metric("png_bits_per_dim", "PNG b/d", ".4f", column=Column()),
    Metric("webp_bits_per_dim", "WebP b/d", ".4f", column=Column()),
    Metric("xz_bits_per_dim", "xz b/d", ".4f", column=Column()),
    Metric("fid_prior", "FID prior", ".2f", column=Column()),
    Metric("fid_gmm", "FID GMM", ".2f", column=Column()),
    Metric("fid_recon", "FID recon", ".2f", column=Column()),
    Metric("class_sample_accuracy", "class acc", ".4f", column=Column()),
)
METRICS: dict[str, Metric] = {m.name: m for m in _DECLARED}


def register(metric: Metric) -> Metric:
    """Add a metric: from then on every report its declaration names shows it, after the built-in ones."""
    if metric.name in METRICS:
        raise ValueError(f"metric {metric.name!r} is declared already")
    if metric.logged and metric.compute is None:
        raise ValueError(f"metric {metric.name!r}: a logged metric needs a compute (the objective gives only its own)")
    if metric.evaluate and metric.compute is None and metric.derive is None:
        raise ValueError(f"metric {metric.name!r}: --evaluate needs a compute or a derive")
    if metric.pictures_of is not None and metric.pictures_of not in METRICS:
        raise ValueError(f"metric {metric.name!r}: pictures_of names no declared metric ({metric.pictures_of!r})")
    METRICS[metric.name] = metric
    return metric


def metric(name: str) -> Metric:
    """The declaration of ``name`` (looked up at call time, so a registration made later is seen)."""
    return METRICS[name]


def declared() -> list[Metric]:
    """Every declaration, built-in ones first, then the registered ones in the order of registration."""
    return list(METRICS.values())


def label(metric: Metric, reads_pixels: bool) -> str:
    """``metric``'s label in --evaluate's table and JSON for a model whose decoder reads pixels or not: a
    figure that is measured again on the pictures is, for such a model, one step ahead."""
    if reads_pixels and any(m.pictures_of == metric.name for m in declared()):
        return f"{metric.label} (one step ahead)"
    return metric.label


def logged() -> list[Metric]:
    """The figures the training loop logs, in the order of the step line."""
    return [m for m in declared() if m.logged]


def logged_names() -> tuple[str, ...]:
    """The step logger's names (loss, img_loss, kl_loss, ssim, then the registered ones)."""
    return tuple(m.name for m in logged())


def evaluated() -> list[Metric]:
    """The figures ``--evaluate`` reports per split, in the eval JSON's order."""
    return [m for m in declared() if m.evaluate]


def columns() -> list[Metric]:
    """``--evaluate``'s table columns after split and images, in order."""
    return [m for m in declared() if m.column is not None]


def measure(batch: Batch, names: Iterable[str]) -> dict[str, torch.Tensor]:
    """Per-image means (0-d tensors) of ``batch``: each name a declared metric with a ``compute``, or one of
    the model's KL levels (``model.level_names``, from ``batch.kl``)."""
    levels = batch.model.level_names
    out = {}
    for name in names:
        metric = METRICS.get(name)
        if metric is not None and metric.compute is not None:
            out[name] = metric.compute(batch)
        elif name in levels and batch.kl is not None:
            out[name] = batch.kl[:, levels.index(name)].mean()
        else:
            raise KeyError(f"no metric {name!r} is computed from a batch")
    return out


def training_sample(model: Any, x: torch.Tensor, logits: torch.Tensor, cfg: RunConfig,
                    given: Iterable[str]) -> dict[str, torch.Tensor]:
    """The logged metrics a training step's terms (names ``given``) lack, measured without gradients from the
    decoder's output ``logits`` for the batch ``x``, on its first images (TRAIN_SSIM_PIXELS): today its SSIM.
    (A step has no single code for every objective: IWAE draws K, so mu, logvar and kl are not at hand.)"""
    given = set(given)
    names = [m.name for m in logged() if m.compute is not None and m.name not in given]
    if not names:
        return {}
    k = max(1, TRAIN_SSIM_PIXELS // x[0].numel())
    with torch.no_grad():
        batch = Batch(model, x[:k], logits[:k].detach(), None, None, None, cfg.ssim_window_size,
                      cfg.image_loss_type, cfg.ssim_weight)
        return measure(batch, names)


def evaluation_figures(means: Mapping[str, float]) -> dict[str, float]:
    """A split's ``--evaluate`` figures in order, from the per-image means of the computed ones (the pictures'
    figures where measured)."""
    out: dict[str, float] = {}
    for m in evaluated():
        if m.pictures_of is not None and m.name not in means:
            continue
        out[m.name] = m.derive(out) if m.derive is not None else means[m.name]
    return out
