"""train.py end to end, in-process (fast) and, for the real entry point, as a subprocess."""
import json
import os
import pickle
import subprocess
import sys

import pytest

from helpers import ROOT, assert_cli_error, load_ckpt, read_events, run_cli, small_args, tiny_args

SCALAR_TAGS = ["train_loss", "train_img_loss", "train_kl_loss", "train_ssim", "train_lr",
               "val_loss", "val_img_loss", "val_kl_loss", "val_ssim",
               "eph_tr_loss", "eph_tr_ssim", "eph_val_loss", "eph_val_ssim",
               "eph_tr_img_loss", "eph_tr_kl_loss", "eph_val_img_loss", "eph_val_kl_loss"]


def test_short_real_run_learns_and_writes_checkpoints_and_events(fmnist_small, workdir):
    code, out, err = run_cli(small_args(fmnist_small))
    assert code == 0, err
    ck = load_ckpt("weights/t_checkpoint.pth.tar")
    assert {"epoch", "optimizer", "state_dict", "best_loss", "args", "scheduler", "rng_state",
            "model_config", "history"} <= set(ck)
    assert ck["epoch"] == 3 and isinstance(ck["args"], dict)
    val = [h["val_loss"] for h in ck["history"]]
    assert val[-1] < val[0] - 20, val  # a real fall, in nats per image
    assert ck["best_loss"] == min(val)
    assert load_ckpt("weights/t_best.pth.tar")["epoch"] == val.index(min(val)) + 1
    events = read_events("tb_logs/t")
    for tag in SCALAR_TAGS:
        assert tag in events, tag
    steps = [s for s, _ in events["train_loss"]]
    assert steps == list(range(3 * 19))  # 2400 images / 128 = 19 minibatches per epoch
    assert [s for s, _ in events["eph_val_loss"]] == [1, 2, 3]
    assert events["eph_val_loss"][-1][1] == pytest.approx(val[-1], rel=1e-5)
    assert events["image:panno"][0][1] == 3 and events["image:samples"][0][1] == 3
    assert "Epoch: [0][5/19]" in out and "tensorboard --logdir" in out


def test_reference_checkpoint_evaluates_to_the_2018_metrics(fmnist_root, workdir, reference_ckpt):
    code, out, err = run_cli(["--resume", reference_ckpt, "--evaluate", "--data_root", fmnist_root,
                              "--no_cuda", "True"])
    assert code == 0, err
    res = json.load(open("weights/fmnist_fc_conv_l10_rebalance_no_norm_eval.json"))
    assert res["val"]["n"] == 12000 and res["test"]["n"] == 10000
    assert res["val"]["bce"] == pytest.approx(230.06, abs=0.1)
    assert res["val"]["kl"] == pytest.approx(14.13, abs=0.1)
    assert res["val"]["bce_kl"] == pytest.approx(244.19, abs=0.1)
    assert res["val"]["ssim"] == pytest.approx(0.6717, abs=0.001)
    assert res["test"]["bce"] == pytest.approx(231.55, abs=0.1)
    assert res["test"]["ssim"] == pytest.approx(0.6694, abs=0.001)
    assert "BCE+KL" in out


@pytest.mark.parametrize("extra", [
    ["--model_type", "fc"],
    ["--model_type", "fcn", "--split_filter", "1"],
    ["--image_loss_type", "mse"],
    ["--image_loss_type", "ssim"],
    ["--do_augs", "True", "--do_running_mean", "True", "--optimizer", "rmsprop"],
    ["--optimizer", "sgd", "--lr", "1e-4", "--m1", "1", "--m2", "2", "--latent_space_size", "3"],
])
def test_every_model_loss_and_optimizer_trains(fmnist_small, workdir, extra):
    code, out, err = run_cli(small_args(fmnist_small, *extra, "--tensorboard_images", "False", epochs=2))
    assert code == 0, err
    hist = load_ckpt("weights/t_checkpoint.pth.tar")["history"]
    assert hist[1]["train_img_loss"] < hist[0]["train_img_loss"]
    assert hist[1]["val_ssim"] > hist[0]["val_ssim"] - 0.01
    if "--m1" in extra:
        assert [h["lr"] for h in hist] == pytest.approx([1e-4, 1e-5])


def test_same_seed_same_losses(fmnist_small, workdir):
    run_cli(small_args(fmnist_small, "--tensorboard", "False", epochs=1, name="a"))
    run_cli(small_args(fmnist_small, "--tensorboard", "False", epochs=1, name="b"))
    ha = load_ckpt("weights/a_checkpoint.pth.tar")["history"][0]
    hb = load_ckpt("weights/b_checkpoint.pth.tar")["history"][0]
    assert {k: v for k, v in ha.items() if k != "seconds"} == {k: v for k, v in hb.items() if k != "seconds"}


# ------------------------------------------------------------------ bad input

@pytest.mark.parametrize("argv", [
    ["--model_type", "transformer"], ["--image_loss_type", "l1"], ["--dataset_type", "cifar"],
    ["--optimizer", "lbfgs"], ["--do_augs", "Flase"], ["--tensorboard", "maybe"],
    ["--epochs", "0"], ["--batch-size", "-1"], ["--latent_space_size", "0"], ["--lr", "0"],
    ["--lr", "nan"], ["--ssim_window_size", "4"], ["--ssim_window_size", "29"],
    ["--m1", "50", "--m2", "40"], ["--start-epoch", "5", "--epochs", "5"], ["--evaluate"],
    ["--resume", "no/such/file.pth.tar"], ["--fold", "5"], ["--device", "tpu"],
])
def test_bad_flags_are_one_line_and_exit_2(argv, workdir):
    code, out, err = run_cli(argv)
    assert_cli_error(code, err)


def test_unwritable_output_folder(tiny_mnist, workdir):
    (workdir / "a_file").write_text("x")
    code, out, err = run_cli(small_args(tiny_mnist, "--dataset_type", "mnist", "--weights_dir", "a_file/weights"))
    assert_cli_error(code, err)
    assert "cannot write" in err


def test_no_data_and_no_network(workdir, monkeypatch):
    import urllib.error

    import datasets

    def offline(self, *a, **k):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(datasets.DATASETS["mnist"], "download", offline)
    code, out, err = run_cli(["--dataset_type", "mnist", "--data_root", str(workdir / "nothing")])
    assert_cli_error(code, err)
    assert "downloading it failed" in err


def test_reference_checkpoint_with_other_flags_is_refused(reference_ckpt, workdir):
    for flags in (["--latent_space_size", "5"], ["--model_type", "fc"]):
        code, _, err = run_cli(["--resume", reference_ckpt, "--evaluate", *flags])
        assert_cli_error(code, err)
        assert "does not fit" in err


def test_bad_checkpoints_are_refused_and_left_alone(tiny_mnist, workdir):
    args = small_args(tiny_mnist, "--dataset_type", "mnist", "--latent_space_size", "4", epochs=1, name="z4")
    assert run_cli(args)[0] == 0
    good = "weights/z4_checkpoint.pth.tar"
    before = open(good, "rb").read()
    # another latent size than the flags say
    code, _, err = run_cli(small_args(tiny_mnist, "--dataset_type", "mnist", "--resume", good,
                                      "--latent_space_size", "10", epochs=2, name="z4"))
    assert_cli_error(code, err)
    assert "--latent_space_size 4" in err
    # another model type
    code, _, err = run_cli(small_args(tiny_mnist, "--dataset_type", "mnist", "--resume", good, "--model_type", "fc",
                                 "--latent_space_size", "4", epochs=2, name="z4"))
    assert_cli_error(code, err)
    # another dataset
    code, _, err = run_cli(small_args(tiny_mnist, "--resume", good, "--dataset_type", "fmnist", epochs=2, name="z4"))
    assert_cli_error(code, err)
    assert "trained on mnist" in err
    # truncated and garbage files
    with open("weights/trunc.pth.tar", "wb") as f:
        f.write(before[: len(before) // 2])
    code, _, err = run_cli(small_args(tiny_mnist, "--resume", "weights/trunc.pth.tar", epochs=2))
    assert_cli_error(code, err)
    assert "corrupt" in err
    # a pickle that would run code when loaded without weights_only
    marker = workdir / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with open("weights/evil.pth.tar", "wb") as f:
        pickle.dump({"state_dict": Payload()}, f)
    code, _, err = run_cli(small_args(tiny_mnist, "--resume", "weights/evil.pth.tar", epochs=2))
    assert_cli_error(code, err)
    assert not marker.exists()
    assert open(good, "rb").read() == before


def test_non_finite_loss_stops_and_keeps_the_checkpoint(tiny_mnist, workdir):
    base = small_args(tiny_mnist, "--dataset_type", "mnist", "--tensorboard", "False", epochs=1, name="nan")
    assert run_cli(base)[0] == 0
    before = open("weights/nan_checkpoint.pth.tar", "rb").read()
    code, _, err = run_cli(base + ["--optimizer", "sgd", "--lr", "1e12", "--overwrite"])
    assert_cli_error(code, err)
    assert "non-finite loss" in err and "global step" in err
    assert open("weights/nan_checkpoint.pth.tar", "rb").read() == before


def test_ctrl_c_keeps_the_last_epoch_and_exits_130(tiny_mnist, workdir, monkeypatch):
    import train

    real = train.train_one_epoch
    calls = []

    def interrupt_second(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(train, "train_one_epoch", interrupt_second)
    code, out, err = run_cli(small_args(tiny_mnist, "--dataset_type", "mnist", epochs=3, name="int"))
    assert code == 130
    assert "holds epoch 1" in err
    assert load_ckpt("weights/int_checkpoint.pth.tar")["epoch"] == 1
    # and the run goes on from there, two epochs past the interruption
    monkeypatch.setattr(train, "train_one_epoch", real)
    code, out, err = run_cli(small_args(tiny_mnist, "--dataset_type", "mnist", "--resume",
                                        "weights/int_checkpoint.pth.tar", epochs=3, name="int"))
    assert code == 0, err
    assert [h["epoch"] for h in load_ckpt("weights/int_checkpoint.pth.tar")["history"]] == [1, 2, 3]


def test_help_documents_every_2018_flag():
    out = subprocess.run([sys.executable, "train.py", "--help"], cwd=ROOT, capture_output=True, text=True).stdout
    for flag in ("--epochs", "--start-epoch", "--batch-size", "--seed", "--model_multiplier", "--do_augs",
                 "--model_type", "--dataset_type", "--latent_space_size", "--lr", "--m1", "--m2", "--optimizer",
                 "--do_running_mean", "--img_loss_weight", "--kl_loss_weight", "--image_loss_type",
                 "--ssim_window_size", "--split_filter", "--print-freq", "--lognumber", "--tensorboard",
                 "--tensorboard_images", "--resume", "--no_cuda", "--predict", "--predict_train", "--evaluate",
                 "--data_root", "--fold", "--num_folds", "--device"):
        assert flag in out, flag
    assert "(default: fc_conv)" in " ".join(out.split())  # argparse wraps the help at the terminal's width


@pytest.mark.parametrize("argv,needle", [(["--do_augs", "Flase"], "Flase"),
                                         (["--resume", "missing.pth.tar"], "does not exist")])
def test_real_entry_point_errors(argv, needle, tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *argv], cwd=tmp_path,
                          capture_output=True, text=True)
    assert_cli_error(proc.returncode, proc.stderr)
    assert needle in proc.stderr
    assert not os.listdir(tmp_path)  # nothing written


def test_the_run_comparison_tool_tells_the_same_run_from_another(tiny_mnist, tmp_path, monkeypatch):
    from tools.compare_runs import compare

    for folder, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        (tmp_path / folder).mkdir()
        monkeypatch.chdir(tmp_path / folder)
        assert run_cli(tiny_args(tiny_mnist, "--seed", seed, epochs=2))[0] == 0
    assert compare(str(tmp_path / "a"), str(tmp_path / "b"), "r") == []
    assert "checkpoint: state_dict differs" in compare(str(tmp_path / "a"), str(tmp_path / "c"), "r")
