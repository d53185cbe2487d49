"""benchmarks/ablation.py rows and train.py --normalize, on a few real Fashion-MNIST images."""
import json
import os

import pytest
import torch

from helpers import ROOT, run_cli, run_module_cli


def ablation_cli(argv):
    from benchmarks import ablation

    return run_module_cli(ablation, argv)


def test_only_one_row_writes_a_parseable_row_and_reuses_it(fmnist_small, workdir, monkeypatch):
    argv = ["--only", "loss_mse", "--epochs", "1", "--seeds", "42", "--knn_per_class", "20",
            "--data_root", fmnist_small, "--device", "cpu", "--work_dir", "runs", "--out", "out/abl"]
    code, out, err = ablation_cli(argv)
    assert code == 0, err
    report = json.load(open("out/abl.json"))
    assert report["epochs"] == 1 and report["knn"] == {"per_class": 20, "k": 10, "draws": 5}
    (row,) = report["rows"]
    assert row["row"] == "loss_mse" and row["flags"] == "--image_loss_type mse" and row["seeds"] == [42]
    assert 100 < row["val_bce_kl"]["mean"] < 600  # nats per image after one short epoch
    assert 0 < row["val_ssim"]["mean"] < 1
    assert 0.2 < row["knn_acc"]["mean"] <= 1  # well above the 0.1 of chance
    assert row["train_seconds"]["mean"] > 0
    md = open("out/abl.md").read()
    assert "| loss_mse | `--image_loss_type mse` | 1 |" in md
    # Same settings: the run is scored from its cache, not trained again.
    code, out, err = ablation_cli(argv)
    assert code == 0 and "reusing" in out, err
    assert json.load(open("out/abl.json"))["rows"][0]["val_ssim"] == row["val_ssim"]
    # Other code: the cached score is not reused.
    from benchmarks import scaffold

    monkeypatch.setattr(scaffold, "code_version", lambda: "another version of the code")
    code, out, err = ablation_cli(argv)
    assert code == 0 and "reusing" not in out and "train.py --image_loss_type mse" in out, err


def test_the_code_version_follows_the_source_not_the_reports(tmp_path):
    import shutil

    from benchmarks import scaffold

    for rel in scaffold.SOURCE_FILES + scaffold.SOURCE_DIRS:
        src, dst = os.path.join(ROOT, rel), tmp_path / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if os.path.isdir(src) else shutil.copy)(src, dst)
    (tmp_path / "README.md").write_text("a report")
    before = scaffold.code_version(str(tmp_path))
    assert before == scaffold.code_version.__wrapped__(ROOT)  # the copy hashes like the tree
    (tmp_path / "README.md").write_text("another report")
    (tmp_path / "benchmarks" / "ablation.md").write_text("a table")
    assert scaffold.code_version.__wrapped__(str(tmp_path)) == before
    with open(tmp_path / "train.py", "a") as f:
        f.write("\n# a change\n")
    assert scaffold.code_version.__wrapped__(str(tmp_path)) != before


def test_lr_decay_row_scales_the_2018_milestones():
    from benchmarks import ablation

    assert ablation.ROWS["lr_decay"](30) == ["--m1", "10", "--m2", "20"]
    assert ablation.ROWS["lr_decay"](2) == ["--m1", "1", "--m2", "2"]


@pytest.mark.parametrize("argv, needle", [(["--only", "nope"], "unknown configuration"),
                                         (["--seeds", "a,b"], "--seeds")])
def test_bad_input_is_one_line(argv, needle, workdir):
    code, _, err = ablation_cli(argv + ["--work_dir", "runs", "--out", "out/abl"])
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err


def test_normalize_standardises_the_encoder_input_and_travels_in_the_checkpoint(fmnist_small, workdir):
    from datasets import pixel_mean_std, train_val_split

    common = ["--data_root", fmnist_small, "--batch-size", "256", "--no_cuda", "True", "--lognumber", "n",
              "--tensorboard", "False", "--tensorboard_images", "False"]
    code, _, err = run_cli(common + ["--epochs", "1", "--normalize", "True"])
    assert code == 0, err
    ck = torch.load("weights/n_best.pth.tar", map_location="cpu", weights_only=True)
    mean, std = pixel_mean_std(train_val_split("fmnist", fmnist_small, 0, 5, 42)[0].x)
    assert ck["model_config"]["input_mean"] == pytest.approx(mean) and 0.2 < mean < 0.4
    assert ck["model_config"]["input_std"] == pytest.approx(std) and 0.2 < std < 0.5

    from config.run_config import RunConfig
    from runtime.checkpoints import load_checkpoint, model_from_checkpoint

    # no --normalize flag: the checkpoint decides
    model = model_from_checkpoint(load_checkpoint("weights/n_best.pth.tar"), RunConfig()).eval()
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(model.encode(x)[0], model._encode((x - mean) / std, None)[0])
    # --evaluate without --normalize reports pixel-space metrics of the normalised model.
    code, _, err = run_cli(common + ["--resume", "weights/n_best.pth.tar", "--evaluate"])
    assert code == 0, err
    ev = json.load(open("weights/n_eval.json"))
    assert 0 < ev["val"]["ssim"] < 1 and ev["val"]["bce_kl"] == pytest.approx(ck["best_loss"], rel=1e-4)


def test_normalize_reads_the_dataset_once(tiny_mnist, workdir, monkeypatch):
    from dataio import split

    real_load, loads = split._load_bytes, []

    def counted(*a, **k):
        loads.append(a)
        return real_load(*a, **k)

    monkeypatch.setattr(split, "_load_bytes", counted)  # load_split and train_val_split read through it
    code, _, err = run_cli(["--data_root", tiny_mnist, "--dataset_type", "mnist", "--epochs", "1", "--batch-size",
                            "128", "--no_cuda", "True", "--lognumber", "n", "--tensorboard", "False",
                            "--tensorboard_images", "False", "--normalize", "True"])
    assert code == 0, err
    assert len(loads) == 1  # the statistics come from the split that trains, not from a second read
