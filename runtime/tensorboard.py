"""TensorBoard logs that survive kills and resumes (tests/tools/tb_reader.py reads them back).

Two properties of a plain tensorboardX ``SummaryWriter`` break "a resumed run is the same
run" and are fixed here:

* Its events go through a queue to a background thread, and ``flush()`` does not wait for
  the queue, so a kill just after a checkpoint could lose that epoch's last events. Here
  every event is written synchronously, and ``flush()`` puts them on disk (fsync).
* On resume, TensorBoard hides events after the checkpoint through a ``SessionLog.START``
  event at a purge step P: when it reads one, it drops every earlier event *of the same run
  folder* with step >= P, whatever its tag. Our curves count steps on three axes (training
  minibatches, validation minibatches, epochs), so no single P is right for all of them.
  Each axis therefore gets its own run folder with its own purge step:

  ====== ============================ ============================ =========================
  axis   folder                       tags                         purge step on resume
  ====== ============================ ============================ =========================
  train  ``tb_logs/<name>/``          ``train_*``, text            global step of the ckpt
  val    ``tb_logs/<name>/val/``      ``val_*``                    epoch x val minibatches
  epoch  ``tb_logs/<name>/epoch/``    ``eph_*``, images            epoch + 1
  ====== ============================ ============================ =========================

A training step's scalars go out as one event (``add_scalar_row``): each event costs a
pure-Python CRC and a write, so one per step instead of six.

Event files are named ``events.out.tfevents.<seconds>.<host>.<nanoseconds>``: unique even
for two runs started in the same second (tensorboardX's own names would collide and the
second run would truncate the first one's file) and sorted in start order, which is the
order TensorBoard reads them in.
"""
from __future__ import annotations

import math
import os
import time
from typing import Any

from tensorboardX.event_file_writer import EventsWriter
from tensorboardX.proto.event_pb2 import Event, SessionLog
from tensorboardX.proto.summary_pb2 import Summary
from tensorboardX.summary import hparams as hparams_summaries
from tensorboardX.summary import image, scalar
from tensorboardX.summary import text as text_summary

from core.errors import VaeLabError

AXIS_FOLDERS = {"train": "", "val": "val", "epoch": "epoch"}
HPARAMS_FOLDER = "hparams"


def axis_of(tag: str, kind: str = "scalar") -> str:
    """The step axis a tag is logged on (see the module docstring)."""
    if tag.startswith("val_"):
        return "val"
    if tag.startswith("eph_") or kind == "image":
        return "epoch"
    return "train"


def resume_purge_steps(epoch: int, global_step: int, val_batches: int) -> dict[str, int]:
    """First step of each axis that belongs after a checkpoint taken at the end of ``epoch``."""
    return {"train": global_step, "val": epoch * val_batches, "epoch": epoch + 1}


def _open_events(folder: str):
    os.makedirs(folder, exist_ok=True)
    # Zero-padded nanoseconds: same-second files stay distinct and sort by start time.
    return EventsWriter(os.path.join(folder, "events"), f".{time.time_ns():020d}")


class RunWriter:
    """The subset of ``SummaryWriter`` that train.py uses, written synchronously.

    ``purge_steps`` (axis -> step, from :func:`resume_purge_steps`) marks a resume: events
    that an earlier, killed process wrote at or after those steps are hidden by TensorBoard.
    """

    def __init__(self, logdir: str, purge_steps: dict[str, int] | None = None):
        self.logdir = logdir
        self._writers: dict[str, Any] = {}
        try:
            for axis, sub in AXIS_FOLDERS.items():
                w = self._writers[axis] = _open_events(os.path.join(logdir, sub))
                if purge_steps is not None:
                    w.write_event(Event(wall_time=time.time(), step=int(purge_steps[axis]),
                                        session_log=SessionLog(status=SessionLog.START)))
            self.flush()
        except OSError as e:
            raise VaeLabError(f"cannot write TensorBoard events under {logdir!r}: {e.strerror or e}") from None

    def _write(self, axis: str, summary, step: int) -> None:
        try:
            self._writers[axis].write_event(Event(wall_time=time.time(), step=int(step), summary=summary))
        except OSError as e:
            raise VaeLabError(f"cannot write TensorBoard events under {self.logdir!r} "
                              f"({e.strerror or e}); checkpoints up to the last epoch are intact") from None

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        # The proto directly, not tensorboardX.summary.scalar: that one logs a warning line on
        # stderr for every NaN, and a NaN is worth a curve point, not console noise.
        self._write(axis_of(tag), Summary(value=[Summary.Value(tag=tag, simple_value=float(value))]), step)

    def add_scalar_row(self, scalars: dict[str, float], step: int) -> None:
        """Several scalars of one step as one event per axis (one for a training step's six).

        Each event costs a pure-Python CRC and a write: ~38 us for one event of six values
        against ~110 us for six events, on a 2-core machine.
        """

        by_axis: dict[str, list] = {}
        for tag, value in scalars.items():
            by_axis.setdefault(axis_of(tag), []).append(Summary.Value(tag=tag, simple_value=float(value)))
        for axis, values in by_axis.items():
            self._write(axis, Summary(value=values), step)

    def add_image(self, tag: str, img, step: int) -> None:
        """``img``: a CHW tensor in [0, 1]."""

        self._write(axis_of(tag, "image"), image(tag, img), step)

    def add_text(self, tag: str, text: str, step: int) -> None:
        self._write(axis_of(tag, "text"), text_summary(tag, text), step)

    def add_hparams(self, hparams: dict, metrics: dict[str, float], name: str = HPARAMS_FOLDER) -> None:
        """The HParams dashboard's session, in its own run folder (as tensorboardX does)."""

        # tensorboardX turns numbers into numpy values: an int beyond int64 (--m2 10**30) or a
        # NaN crashes it, so anything that is not a plain, finite number goes in as text.
        hparams = {k: v if isinstance(v, (bool, str)) or (isinstance(v, (int, float)) and math.isfinite(v)
                                                          and abs(v) < 2**53) else str(v)
                   for k, v in hparams.items()}
        try:
            w = _open_events(os.path.join(self.logdir, name))
            for summary in hparams_summaries(hparams, metrics):
                w.write_event(Event(wall_time=time.time(), summary=summary))
            for tag, value in metrics.items():
                w.write_event(Event(wall_time=time.time(), step=0, summary=scalar(tag, float(value))))
            w.close()
        except OSError as e:
            raise VaeLabError(f"cannot write TensorBoard hparams under {self.logdir!r}: {e.strerror or e}") from None

    def add_run_hparams(self, args: dict[str, Any], best_val_loss: float, final_val_ssim: float) -> None:
        """A finished run's flags and results in the HParams dashboard."""
        hp = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in args.items()}
        self.add_hparams(hp, {"hparam/best_val_loss": best_val_loss, "hparam/final_val_ssim": final_val_ssim})

    def flush(self) -> None:
        """Everything written so far is on disk when this returns (write + fsync)."""
        try:
            for w in self._writers.values():
                w.flush()
        except OSError as e:
            raise VaeLabError(f"cannot write TensorBoard events under {self.logdir!r}: {e.strerror or e}") from None

    def close(self) -> None:
        try:
            for w in self._writers.values():
                w.close()
        except OSError:
            pass  # closing happens on the way out; the epoch's events were flushed before its checkpoint
        self._writers = {}
