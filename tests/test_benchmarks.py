"""The benchmark scripts run end to end (tiny settings; speed itself is never asserted here)."""
import os
import sys

import pytest

from helpers import ROOT

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))


def test_run_py_writes_its_report(fmnist_small, tmp_path):
    import run

    out = tmp_path / "results.md"
    args = run.get_args_parser().parse_args([
        "--models", "fc_conv", "--batch-sizes", "128", "--devices", "cpu", "--seconds", "0.05", "--repeats", "1",
        "--no-variants", "--no-full-run", "--no-malloc-ab", "--data_root", fmnist_small, "--out", str(out)])
    res = run.main(args)
    row = res["devices"]["cpu"]["grid"][0]
    for kind in ("train", "eval"):
        for method in ("train.py", "bare", "2018"):
            assert row[f"{kind}_{method}"] > 0
    text = out.read_text()
    assert "| fc_conv | 128 |" in text and "**bare** = model + optimizer" in text
    assert (tmp_path / "results.json").exists()


def test_conv_speed_times_every_path_and_marks_the_chosen_one(fmnist_small, tmp_path):
    import conv_speed

    out = tmp_path / "conv_speed.md"
    args = conv_speed.get_args_parser().parse_args([
        "--models", "resconv", "--shapes", "28x1", "32x3", "--families", "fc_conv", "--seconds", "0.01", "--repeats",
        "1", "--no-startup", "--no-full-run", "--end-to-end", "0", "--data_root", fmnist_small, "--out", str(out)])
    res = conv_speed.main(args)
    resconv, colour, fc_conv = res["grid"]
    assert resconv["steps"] >= 3 and colour["channels"] == 3
    for path in conv_speed.PATHS:
        assert resconv[f"{path}|train.py"] > 0 and resconv[f"{path}|bare"] > 0 and fc_conv[f"{path}|bare"] > 0
    assert fc_conv["chosen"] == "float32" and "channels-last" in resconv["chosen"]
    text = out.read_text()
    assert "| resconv | 32x32x3 | 64 |" in text and text.count(" * |") == 3  # one chosen path a row
    assert conv_speed.main(conv_speed.get_args_parser().parse_args(
        ["--from_json", str(tmp_path / "conv_speed.json"), "--out", str(tmp_path / "again.md")]))
    assert (tmp_path / "again.md").read_text() == text


def test_train_speed_and_the_full_run(fmnist_small, tmp_path):
    import train_speed

    import baselines

    out = tmp_path / "train_speed.md"
    res = train_speed.main(train_speed.get_args_parser().parse_args(
        ["--epochs", "1", "--data_root", fmnist_small, "--out", str(out)]))
    assert res["ratio"] > 0 and "2018: per-sample DataLoader" in out.read_text()
    full = baselines.full_run(["--epochs", "1", "--batch-size", "256", "--tensorboard", "False",
                               "--tensorboard_images", "False"], fmnist_small, str(tmp_path))
    assert full["epochs"] == 1 and full["wall_s"] > full["training_s"] > 0
    assert 100 < full["peak_rss_mb"] < 20000 and full["val_bce_kl"] > 0 and 0 < full["val_ssim"] < 1


@pytest.mark.parametrize("values,expected", [([3.0], 3.0), ([1.0, 5.0, 2.0], 2.0), ([4.0, 1.0, 3.0, 2.0], 2.5)])
def test_median(values, expected):
    import baselines

    assert baselines.median(values) == expected


def test_decode_py_compares_the_loader_with_a_plain_loop(tmp_path):
    import decode

    args = decode.get_args_parser().parse_args(["--small", "6", "--big", "0", "--many", "5",
                                                "--files", str(tmp_path / "files"), "--out", str(tmp_path / "d")])
    rows = decode.main(args)
    assert [r["loader"] for r in rows] == ["plain PIL loop", "vae-lab 1 thread", "vae-lab", "vae-lab"]
    assert rows[0]["shape"] == [6, 64, 64, 3]  # the plain loop's (N, H, W, C)
    assert rows[2]["shape"] == [6, 3, 64, 64] and rows[3]["shape"] == [5, 1, 8, 8]
    text = (tmp_path / "d.md").read_text()
    assert "| 6 178x218 JPEGs (CelebA's size) -> 64x64 | vae-lab |" in text and "| 1.0x |" in text


def test_concurrent_runs_times_each_setting_and_reads_the_threads_from_the_runs(fmnist_small, tmp_path):
    import json

    import concurrent_runs

    out = tmp_path / "concurrent.md"
    args = concurrent_runs.get_args_parser().parse_args(["--epochs", "1", "--runs", "1,2", "--data_root",
                                                         fmnist_small, "--out", str(out)])
    res = concurrent_runs.main(args)
    assert [r["runs"] for r in res["all cores"]] == [r["runs"] for r in res["share"]] == [1, 2]
    together = res["share"][1]
    assert len(together["first_lines"]) == 2 and len(together["epoch_s"]) == 2 and together["images_per_s"] > 0
    assert all("threads" in line or "thread," in line for line in together["first_lines"])
    text = out.read_text()
    assert "| share | 2 |" in text and "2,400 training images an epoch" in text
    assert json.loads((tmp_path / "concurrent.json").read_text())["info"]["epochs per run"] == 1
