"""The console lines of a training run: the header that opens it, a line per epoch, the footer."""
from __future__ import annotations

import torch

from config.run_config import RunConfig
from models import VAE
from runtime import metrics


def run_header(cfg: RunConfig, model: VAE, device: torch.device, n_train: int, n_val: int,
               start_epoch: int, placement: str = "", data_notes: list[str] | tuple = (), path: str = "") -> str:
    """The console line that opens a training run (``placement``: where the images are kept;
    ``data_notes``: what decoding the image files did, e.g. 16-bit images scaled, files skipped;
    ``path``: the layout and precision it trains in)."""
    notes = f" ({'; '.join(data_notes)})" if data_notes else ""
    return (f"{cfg.model_type} VAE, {sum(p.numel() for p in model.parameters()):,} parameters, latent "
            f"{model.latent_size}, {device}{f' ({path})' if path else ''}; "
            f"{cfg.dataset_type}: {n_train} train / {n_val} val images{notes}"
            f"{f', {placement}' if placement else ''}; epochs {start_epoch + 1}-{cfg.epochs}")


def epoch_line(cfg: RunConfig, epoch: int, tr: dict[str, float], va: dict[str, float], lr: float,
               seconds: float, is_best: bool) -> str:
    """The console line that closes an epoch: the loop's declared metrics (runtime/metrics.py) of the
    training and the validation pass, the validation loss's details in parentheses."""
    elbo = f" (IWAE K={cfg.iw_train}; ELBO {tr['elbo']:.2f})" if "elbo" in tr else ""
    details = " ".join(_figure(m, va) for m in metrics.logged() if m.detail)
    return (f" * epoch {epoch + 1}/{cfg.epochs}  train {_pass_figures(tr, elbo)} | "
            f"val {_pass_figures(va, f' ({details})' if details else '')} | "
            f"lr {lr:.0e} | {seconds:.2f} s{'  [best]' if is_best else ''}")


def _figure(metric: metrics.Metric, values: dict[str, float]) -> str:
    return f"{metric.label.lower()} {values[metric.name]:{metric.fmt}}"


def _pass_figures(values: dict[str, float], note: str) -> str:
    """One pass's figures on the epoch line: the first (its loss) followed by ``note``, then the rest."""
    first, *rest = (m for m in metrics.logged() if not m.detail)
    return " ".join([_figure(first, values) + note, *(_figure(m, values) for m in rest)])


def run_footer(cfg: RunConfig, seconds: float, best_loss: float, ckpt_path: str, best_path: str,
               config_file: str, tensorboard: bool) -> str:
    """The console lines that close a training run: where its checkpoints, config and logs are."""
    lines = [f"done in {seconds:.1f} s; best val loss {best_loss:.2f}",
             f"checkpoints: {ckpt_path} (last), {best_path} (best); config: {config_file}"]
    if tensorboard:
        lines.append(f"TensorBoard: tensorboard --logdir {cfg.tb_dir} --port 6006")
    return "\n".join(lines)
