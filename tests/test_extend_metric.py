"""A metric is declared once: one declared in one file outside the tree (tests/extensions/mae_metric.py),
registered here, shows in the console lines, TensorBoard, the history and --evaluate's table and JSON."""
import json
import re

import pytest

from helpers import load_ckpt, read_events, run_cli, tiny_args
from runtime import metrics


@pytest.fixture
def mae(monkeypatch):
    """The extension's metric registered for this test only (the registry is restored after it)."""
    monkeypatch.setattr(metrics, "METRICS", dict(metrics.METRICS))
    from extensions.mae_metric import MAE

    return metrics.register(MAE)


def test_a_registered_metric_is_logged_printed_and_evaluated(tiny_mnist, workdir, mae):
    code, out, err = run_cli(tiny_args(tiny_mnist, "--print-freq", "2", "--tensorboard", "True", epochs=2, name="m"))
    assert code == 0, err

    # the 2018 step line: after SSIM, now and (averaged over the epoch)
    step_lines = [line for line in out.splitlines() if line.startswith("Epoch: [")]
    assert len(step_lines) == 4, out  # 4 batches an epoch, printed every 2
    assert all(re.search(r"\tSSIM \S+ \(\S+\)\tMAE \d+\.\d{4} \(\d+\.\d{4}\)$", line) for line in step_lines), out
    # the epoch line: after each pass's SSIM
    epoch_lines = [line for line in out.splitlines() if line.startswith(" * epoch")]
    assert len(epoch_lines) == 2
    assert all(re.search(r"train loss .* ssim \S+ mae \d+\.\d\d \| val loss .* ssim \S+ mae \d+\.\d\d \|", line)
               for line in epoch_lines), epoch_lines

    # TensorBoard per step and per epoch, equal to the history the checkpoint keeps
    tb = read_events("tb_logs/m")
    assert [s for s, _ in tb["train_mae"]] == list(range(8)) and [s for s, _ in tb["val_mae"]] == [0, 1]
    history = load_ckpt("weights/m_checkpoint.pth.tar")["history"]
    for tag, key in (("eph_tr_mae", "train_mae"), ("eph_val_mae", "val_mae")):
        assert [s for s, _ in tb[tag]] == [1, 2]
        assert [v for _, v in tb[tag]] == pytest.approx([h[key] for h in history], rel=1e-6)
    assert 0 < history[-1]["val_mae"] < 28 * 28  # per image, summed over pixels in [0, 1]
    assert history[-1]["val_mae"] != pytest.approx(history[-1]["val_img_loss"])

    # --evaluate: a column of the table and a figure of the JSON, the validation split's as validate measured it
    code, out, err = run_cli(["--evaluate", "--resume", "weights/m_checkpoint.pth.tar", "--data_root", tiny_mnist])
    assert code == 0, err
    header = next(line for line in out.splitlines() if line.startswith("split"))
    assert header.split()[-1] == "MAE", out
    with open("weights/m_eval.json") as f:
        results = json.load(f)
    row = next(line for line in out.splitlines() if line.startswith("val "))
    assert row.split()[-1] == f"{results['val']['mae']:.2f}"
    assert results["val"]["mae"] == pytest.approx(history[-1]["val_mae"], rel=1e-4)
    assert results["test"]["mae"] > 0


def test_without_registration_nothing_reports_it(tiny_mnist, workdir):
    assert "mae" not in metrics.METRICS
    code, out, err = run_cli(tiny_args(tiny_mnist, "--print-freq", "2", "--tensorboard", "True", name="p"))
    assert code == 0, err
    assert "MAE" not in out and " mae " not in out
    assert not any("mae" in tag for tag in read_events("tb_logs/p"))


def test_a_name_is_declared_once(mae):
    with pytest.raises(ValueError, match="declared already"):
        metrics.register(mae)
    with pytest.raises(ValueError, match="needs a compute"):
        metrics.register(metrics.Metric("shown_only", "S", logged=True))


class Rows:
    """A stand-in for RunWriter that keeps what the step logger writes."""

    def __init__(self):
        self.rows = []

    def add_scalar_row(self, scalars, step):
        self.rows.append((step, scalars))


def test_a_metric_declared_per_epoch_only_is_averaged_but_not_written_per_step(monkeypatch, capsys):
    import torch

    from runtime.step_log import StepLogger, epoch_scalars

    monkeypatch.setattr(metrics, "METRICS", dict(metrics.METRICS))
    metrics.register(metrics.Metric("quiet", "Q", compute=lambda b: b.x.mean(), logged=True, step=False))
    writer = Rows()
    log = StepLogger("train", writer, print_freq=2, n_batches=2, epoch=0, lr=None)
    for i, (value, size) in enumerate(((1.0, 3), (4.0, 1))):
        log.add(i, i, size, {name: torch.tensor(value) for name in log.names})
    assert [set(scalars) for _, scalars in writer.rows] == [{"train_loss", "train_img_loss", "train_kl_loss",
                                                             "train_ssim"}] * 2
    assert log.averages()["quiet"] == pytest.approx((1.0 * 3 + 4.0) / 4)
    assert "Q " not in capsys.readouterr().out
    assert epoch_scalars()["eph_val_quiet"] == ("val", "quiet")
