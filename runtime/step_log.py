"""What the training loop writes as it goes: the step logger (TensorBoard per step, the 2018 console
line, the non-finite check) and the per-epoch TensorBoard scalars, both named by runtime/metrics.py."""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import torch

from core.errors import VaeLabError
from runtime import metrics
from runtime.nonfinite import non_finite_message
from runtime.tensorboard import RunWriter


def epoch_scalars() -> dict[str, tuple[str, str]]:
    """The per-epoch TensorBoard scalars of the declared metrics: tag (eph_tr_<name> / eph_val_<name>) ->
    (which pass, metric); those on the epoch line first, then its details (the order of the 2018 tags)."""
    out = {}
    for details in (False, True):
        for split, tag in (("train", "tr"), ("val", "val")):
            out.update({f"eph_{tag}_{m.name}": (split, m.name) for m in metrics.logged() if m.detail == details})
    return out


def write_epoch_scalars(writer: RunWriter, epoch: int, tr: Mapping[str, float], va: Mapping[str, float],
                        levels: Sequence[str]) -> None:
    """An epoch's scalars at step ``epoch + 1``: the declared metrics', --iw_train's ELBO beside the bound
    it trains (eph_tr_loss), and a hierarchical model's KL per level (``levels``)."""
    for tag, (split, name) in epoch_scalars().items():
        writer.add_scalar(tag, (tr if split == "train" else va)[name], epoch + 1)
    if "elbo" in tr:
        writer.add_scalar("eph_tr_elbo", tr["elbo"], epoch + 1)
    for level in levels:
        for split, values in (("tr", tr), ("val", va)):
            if level in values:
                writer.add_scalar(f"eph_{split}_{level}", values[level], epoch + 1)


class StepLogger:
    """Buffers per-step metrics on the device and flushes them every ``print_freq`` steps.

    One host sync per flush (not per step): TensorBoard scalars, the 2018 console line and
    the non-finite check all read the same buffer, so a NaN is reported at its exact step.
    The last flush of an epoch comes before its checkpoint, so a NaN never reaches a file.
    ``names``: what it averages (default: the declared metrics the loop logs, runtime/metrics.py);
    each is a TensorBoard scalar ``<prefix>_<name>`` per step unless declared otherwise.
    """

    def __init__(self, prefix: str, writer: RunWriter | None, print_freq: int, n_batches: int, epoch: int,
                 lr: float | None, bar=None, check_finite: bool = False, names: Sequence[str] | None = None,
                 reduce: Callable | None = None):
        names = tuple(metrics.logged_names() if names is None else names)
        self.prefix, self.writer, self.print_freq = prefix, writer, print_freq
        self.reduce = reduce  # (rows, sizes) -> global (rows, sizes) under torchrun
        self.n_batches, self.epoch, self.lr, self.bar = n_batches, epoch, lr, bar
        self.check_finite, self.names = check_finite, names
        # the declared metrics of the step line, and the names not written per step (declared per epoch only)
        self.shown = [m for m in metrics.logged() if m.step and m.name in names]
        self.epoch_only = {m.name for m in metrics.logged() if not m.step}
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
                scalars = {f"{self.prefix}_{name}": v for name, v in zip(self.names, row)
                           if name not in self.epoch_only}
                if self.lr is not None:
                    scalars[f"{self.prefix}_lr"] = self.lr
                self.writer.add_scalar_row(scalars, step)  # one event, not one per tag
        last_batch = self.first_batch + len(rows) - 1
        if self.print_freq and self.prefix == "train":
            self._print(self.step_line(last_batch, dict(zip(self.names, rows[-1]))))
        if self.bar is not None:
            self.bar.update(len(rows))
        self.buf, self.sizes = [], []

    def step_line(self, last_batch: int, current: Mapping[str, float]) -> str:
        """The 2018 console line: each declared metric of the step line now and (averaged over the epoch)."""
        elapsed, avg = time.perf_counter() - self.t0, self.averages()
        return "\t".join([f"Epoch: [{self.epoch}][{last_batch + 1}/{self.n_batches}]",
                          f"Time {elapsed / (last_batch + 1):.3f}/batch",
                          *(f"{m.label} {current[m.name]:.4f} ({avg[m.name]:.4f})" for m in self.shown)])

    def _print(self, line: str) -> None:
        if self.bar is not None and not self.bar.disable:
            self.bar.write(line)
        else:
            print(line)

    def averages(self) -> dict[str, float]:
        return {k: v / max(self.count, 1) for k, v in self.sums.items()}
