"""TensorBoard logs: synchronous writes, distinct files, and exact purge on resume."""
import os

import pytest
import torch

from runtime.tensorboard import RunWriter, resume_purge_steps
from tools.tb_reader import read_logdir, read_run

N_TRAIN, N_VAL = 4, 2  # minibatches per epoch on each axis


def log_epoch(w: RunWriter, epoch: int, tagged: float) -> None:
    """What train.py writes for one epoch (0-based), values marked with ``tagged``."""
    for i in range(N_TRAIN):
        w.add_scalar("train_loss", tagged, epoch * N_TRAIN + i)
    for i in range(N_VAL):
        w.add_scalar("val_loss", tagged, epoch * N_VAL + i)
    w.add_scalar("eph_val_loss", tagged, epoch + 1)
    w.add_image("panno", torch.zeros(1, 4, 4), epoch + 1)
    w.flush()


def test_tags_go_to_one_folder_per_step_axis(tmp_path):
    w = RunWriter(str(tmp_path))
    log_epoch(w, 0, 1.0)
    assert set(read_run(str(tmp_path))) == {"train_loss"}
    assert set(read_run(str(tmp_path / "val"))) == {"val_loss"}
    assert set(read_run(str(tmp_path / "epoch"))) == {"eph_val_loss", "panno"}
    w.close()


def test_flush_puts_events_on_disk_before_close(tmp_path):
    w = RunWriter(str(tmp_path))
    w.add_scalar("train_loss", 3.0, 7)
    w.flush()  # no close: a kill could come right after a checkpoint
    assert read_run(str(tmp_path)) == {"train_loss": [(7, 3.0)]}
    w.close()


def test_runs_started_in_the_same_second_keep_separate_files(tmp_path):
    a = RunWriter(str(tmp_path))
    a.add_scalar("train_loss", 1.0, 0)
    a.close()
    b = RunWriter(str(tmp_path))
    b.add_scalar("train_loss", 2.0, 1)
    b.close()
    files = sorted(f for f in os.listdir(tmp_path) if "tfevents" in f)
    assert len(files) == 2
    assert read_run(str(tmp_path))["train_loss"] == [(0, 1.0), (1, 2.0)]  # file order = start order


@pytest.mark.parametrize("reader", ["accumulator", "dataserver"])
def test_resume_hides_what_the_killed_run_wrote_after_its_checkpoint(tmp_path, reader):
    first = RunWriter(str(tmp_path))
    for epoch in range(3):
        log_epoch(first, epoch, 1.0)
    first.close()  # "killed" with the checkpoint at epoch 2, after logging epoch 3 (0-based 2)
    resumed = RunWriter(str(tmp_path), resume_purge_steps(2, 2 * N_TRAIN, N_VAL))
    for epoch in range(2, 4):
        log_epoch(resumed, epoch, 2.0)
    resumed.close()

    shown = read_logdir(str(tmp_path), reader)
    assert [s for s, _ in shown["train_loss"]] == list(range(4 * N_TRAIN))
    assert [s for s, _ in shown["val_loss"]] == list(range(4 * N_VAL))
    assert [s for s, _ in shown["eph_val_loss"]] == [1, 2, 3, 4]
    assert [s for s, _ in shown["panno"]] == [1, 2, 3, 4]
    # the kept events are the first run's up to its checkpoint, then the resumed run's
    assert [v for _, v in shown["eph_val_loss"]] == [1.0, 1.0, 2.0, 2.0]
    # on disk, the killed run's epoch 3 is there twice on every axis
    raw = read_logdir(str(tmp_path), "raw")
    assert [s for s, _ in raw["eph_val_loss"]] == [1, 2, 3, 3, 4]
    assert len(raw["train_loss"]) == 5 * N_TRAIN and len(raw["val_loss"]) == 5 * N_VAL


def test_the_accumulator_needs_one_folder_per_axis(tmp_path):
    # Why the axes have their own folders: one START purge step cannot fit epoch-numbered and
    # minibatch-numbered tags at once. Here all of them share a folder, as a plain SummaryWriter
    # would have it: a purge at the global step keeps the killed run's epoch-3 value.
    from tensorboardX.proto.event_pb2 import Event, SessionLog
    from tensorboardX.summary import scalar

    from runtime.tensorboard import _open_events

    first = _open_events(str(tmp_path))
    for epoch in range(3):
        first.write_event(Event(step=epoch * N_TRAIN, summary=scalar("train_loss", 1.0)))
        first.write_event(Event(step=epoch + 1, summary=scalar("eph_val_loss", 1.0)))
    first.close()
    resumed = _open_events(str(tmp_path))
    resumed.write_event(Event(step=2 * N_TRAIN, session_log=SessionLog(status=SessionLog.START)))
    resumed.write_event(Event(step=3, summary=scalar("eph_val_loss", 2.0)))
    resumed.close()
    assert [s for s, _ in read_run(str(tmp_path))["eph_val_loss"]] == [1, 2, 3, 3]


def test_a_torn_last_record_ends_the_file(tmp_path):
    w = RunWriter(str(tmp_path))
    w.add_scalar("train_loss", 1.0, 0)
    w.add_scalar("train_loss", 2.0, 1)
    w.close()
    (path,) = [tmp_path / f for f in os.listdir(tmp_path) if "tfevents" in f]
    data = path.read_bytes()
    path.write_bytes(data[:-5])  # a writer killed in the middle of its last record
    assert read_run(str(tmp_path))["train_loss"] == [(0, 1.0)]
