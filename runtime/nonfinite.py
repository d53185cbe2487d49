"""Non-finite values in training: measuring gradients cheaply, and saying what went wrong."""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from core.errors import VaeLabError


def grad_norm_and_clip(parameters: Iterable[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """Total L2 norm of the gradients (before clipping); clip them to ``max_norm`` if > 0.

    Returns a 0-d tensor on the gradients' device and never reads it on the host: the
    training loop checks it for NaN/Inf together with the loss, in StepLogger's buffered
    flush, so there is no extra device sync per step.
    """
    params = [p for p in parameters if p.grad is not None]
    if not params:
        return torch.zeros(())
    if max_norm > 0:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    grads = [p.grad for p in params]
    if hasattr(torch.nn.utils, "get_total_norm"):  # torch >= 2.6: one fused kernel per device
        return torch.nn.utils.get_total_norm(grads)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


def non_finite_message(values: dict[str, float], epoch: int, step: int) -> str | None:
    """The one-line error for a training step's logged values, or None if all are finite."""
    if all(math.isfinite(v) for v in values.values()):
        return None
    where = f"at epoch {epoch + 1}, global step {step}"
    keep = "stopped without saving: the checkpoint and best files still hold the last finished epoch"
    loss = {k: values[k] for k in ("loss", "img_loss", "kl_loss") if k in values}
    if not all(math.isfinite(v) for v in loss.values()):
        return (f"non-finite loss {where} (loss {values.get('loss')}, image {values.get('img_loss')}, "
                f"KL {values.get('kl_loss')}); {keep}. Try a lower --lr, --grad_clip, or --image_loss_type bce")
    if "grad_norm" in values and not math.isfinite(values["grad_norm"]):
        return (f"non-finite gradient {where} (gradient norm {values['grad_norm']}, the loss "
                f"{values.get('loss'):.4g} was finite); {keep}. Try a lower --lr")
    bad = ", ".join(f"{k} {v}" for k, v in values.items() if not math.isfinite(v))
    return f"non-finite value {where} ({bad}); {keep}"


def check_epoch_finite(model: torch.nn.Module, val: dict[str, float], epoch: int, last_step: int) -> None:
    """Raise a one-line VaeLabError, before anything of the epoch is saved, if its weights or
    its validation metrics are not finite.

    The per-step check sees the loss *before* each update; an update that overflows the
    weights shows up in the next step's loss, except after the epoch's last step: this
    check covers it (one device sync per epoch).
    """
    keep = "stopped without saving: the checkpoint and best files still hold the last finished epoch"
    finite = torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all()
    if not bool(finite):
        raise VaeLabError(f"non-finite weights after global step {last_step}, the last of epoch {epoch + 1}; "
                          f"{keep}. Try a lower --lr or --grad_clip")
    bad = {k: v for k, v in val.items() if not math.isfinite(v)}
    if bad:
        raise VaeLabError(f"non-finite validation {', '.join(f'{k} {v}' for k, v in bad.items())} at epoch "
                          f"{epoch + 1}; {keep}. Try a lower --lr or --grad_clip")
