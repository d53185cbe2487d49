"""Exact resume: a run stopped after any epoch and resumed is the uninterrupted run, whatever its
schedule, KL controls and model; the 2018 checkpoint resumes too."""
import math
import os
import shutil

import pytest
import torch

from helpers import TINY_BATCHES, load_ckpt, make_objective, read_events, run_cli, small_args, tiny_args

EPOCHS = 4  # the last cut (epoch 2) is followed by two epochs: a defect that shows only later is caught


def args(root, name, epochs, *extra):
    # Milestones 1 and 2 put a resume before, between and after both LR drops; augmentations
    # and running-mean rebalancing make the RNG and loss state part of what must be restored.
    return ["--data_root", root, "--dataset_type", "mnist", "--epochs", str(epochs), "--batch-size", "128",
            "--print-freq", "2", "--lognumber", name, "--no_cuda", "True", "--m1", "1", "--m2", "2",
            "--do_augs", "True", "--do_running_mean", "True", *extra]


def run_ok(argv):
    code, out, err = run_cli(argv)
    assert code == 0, err
    return out


@pytest.mark.parametrize("reader", ["accumulator", "dataserver"])
def test_killed_after_any_epoch_and_resumed_is_the_same_run(tiny_mnist, workdir, reader):
    run_ok(args(tiny_mnist, "straight", EPOCHS))
    straight = load_ckpt("weights/straight_checkpoint.pth.tar")
    straight_tb = read_events("tb_logs/straight", reader)

    for k in range(1, EPOCHS - 1):
        name = f"cut{k}"
        ckpt, best = f"weights/{name}_checkpoint.pth.tar", f"weights/{name}_best.pth.tar"
        run_ok(args(tiny_mnist, name, k))
        shutil.copy(ckpt, "saved_ckpt")
        shutil.copy(best, "saved_best")
        # The killed run: it logs epoch k + 1 to TensorBoard, then dies before that checkpoint.
        run_ok(args(tiny_mnist, name, k + 1, "--resume", ckpt))
        shutil.copy("saved_ckpt", ckpt)
        shutil.copy("saved_best", best)
        out = run_ok(args(tiny_mnist, name, EPOCHS, "--resume", ckpt))
        assert f"resumed '{ckpt}' at epoch {k}" in out

        resumed = load_ckpt(ckpt)
        for key, w in straight["state_dict"].items():
            assert torch.equal(w, resumed["state_dict"][key]), (k, key)  # bit for bit
        for a, b in zip(straight["optimizer"]["state"].values(), resumed["optimizer"]["state"].values()):
            assert all(torch.equal(a[s], b[s]) for s in a), k
        strip = [{m: v for m, v in h.items() if m != "seconds"} for h in straight["history"]]
        assert [{m: v for m, v in h.items() if m != "seconds"} for h in resumed["history"]] == strip
        assert resumed["global_step"] == straight["global_step"]

        tb = read_events(f"tb_logs/{name}", reader)
        assert set(tb) == set(straight_tb)
        for tag, series in straight_tb.items():
            # every step once, in order, with the uninterrupted run's values
            assert tb[tag] == series, (k, tag)
        assert [s for s, _ in tb["eph_val_loss"]] == list(range(1, EPOCHS + 1))
        assert tb["image:panno"] == [(0, float(EPOCHS))]


def test_resume_equals_the_uninterrupted_run(fmnist_small, workdir):
    assert run_cli(small_args(fmnist_small, epochs=3, name="straight"))[0] == 0
    assert run_cli(small_args(fmnist_small, epochs=1, name="split"))[0] == 0
    code, out, err = run_cli(small_args(fmnist_small, "--resume", "weights/split_checkpoint.pth.tar",
                                   epochs=3, name="split"))
    assert code == 0, err
    a, b = load_ckpt("weights/straight_checkpoint.pth.tar"), load_ckpt("weights/split_checkpoint.pth.tar")
    for k in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][k], b["state_dict"][k], atol=1e-6, rtol=0)
    for ha, hb in zip(a["history"], b["history"]):
        for k in ha:
            if k != "seconds":
                assert ha[k] == pytest.approx(hb[k], abs=1e-6), k
    steps = [s for s, _ in read_events("tb_logs/split")["train_loss"]]
    assert sorted(steps) == list(range(3 * 19))  # no duplicated or missing steps


def test_reference_checkpoint_resumes_and_predicts(fmnist_small, workdir, reference_ckpt):
    code, out, err = run_cli(small_args(fmnist_small, "--resume", reference_ckpt, epochs=32, name="ref"))
    assert code == 0, err
    ck = load_ckpt("weights/ref_checkpoint.pth.tar")
    assert ck["epoch"] == 32 and [h["epoch"] for h in ck["history"]] == [31, 32]
    code, out, err = run_cli(small_args(fmnist_small, "--resume", "weights/ref_checkpoint.pth.tar", "--predict",
                                   "--predict_train", "True", epochs=32, name="ref"))
    assert code == 0, err
    files = set(os.listdir("results/ref"))
    assert {"reconstructions.png", "samples.png", "interpolations.png", "val_mu.npy", "val_y.npy",
            "test_mu.npy", "test_y.npy", "train_mu.npy", "train_y.npy"} <= files
    import numpy as np

    assert np.load("results/ref/test_mu.npy").shape == (1000, 10)
    assert np.load("results/ref/val_y.npy").shape == (600,)


def test_warmup_weight_is_exact_after_resume():
    """The warm-up factor depends only on (epoch, batch): a resumed run continues the ramp."""
    warm = make_objective(kl_warmup_epochs=2.5)
    ramp = [warm.kl_scale(e + b / 4) for e in range(3) for b in range(4)]
    assert ramp == sorted(ramp) and math.isclose(ramp[1] - ramp[0], 0.1)


def test_resume_continues_cosine_warmup_free_bits_and_cvae_exactly(fmnist_small, workdir):
    flags = ["--model_type", "fc", "--conditional", "True", "--lr_schedule", "cosine", "--kl_warmup_epochs",
             "1.5", "--free_bits", "0.1", "--tensorboard_images", "False"]
    assert run_cli(small_args(fmnist_small, *flags, epochs=3, name="straight"))[0] == 0
    # epoch 1's lr is --lr whatever --epochs says, so a 1-epoch run is the first third of a 3-epoch one
    assert run_cli(small_args(fmnist_small, *flags, epochs=1, name="split"))[0] == 0
    code, _, err = run_cli(small_args(fmnist_small, *flags, "--resume", "weights/split_checkpoint.pth.tar",
                                 epochs=3, name="split"))
    assert code == 0, err
    a, b = load_ckpt("weights/straight_checkpoint.pth.tar"), load_ckpt("weights/split_checkpoint.pth.tar")
    for k in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][k], b["state_dict"][k], atol=1e-6, rtol=0)
    assert [h["lr"] for h in b["history"]] == pytest.approx([1e-3, 1e-3 * 0.75, 1e-3 * 0.25])
    ev = read_events("tb_logs/split")
    assert [v for _, v in ev["train_kl_weight"]] == pytest.approx([v for _, v in read_events(
        "tb_logs/straight")["train_kl_weight"]])


def test_a_dmol_run_stored_before_issue_36_resumes_with_its_sigmoid_mapping(tiny_mnist, workdir, monkeypatch):
    # Its decoder was trained to give sigmoid locations (losses/pixel_layout.py, MIXTURE_LOCATIONS): resumed, it
    # goes on with them, and its checkpoints say so from then on; a run of this version goes on unbounded.
    import models.base

    flags = ("--model_type", "resconv", "--image_loss_type", "dmol", "--mixture_components", "2")
    assert run_cli(tiny_args(tiny_mnist, *flags))[0] == 0
    ckpt_path = "weights/r_checkpoint.pth.tar"
    marked = load_ckpt(ckpt_path)
    mapped = []
    to_unbounded = models.base.as_unbounded
    monkeypatch.setattr(models.base, "as_unbounded", lambda *a: mapped.append(a[0].shape) or to_unbounded(*a))

    assert run_cli(tiny_args(tiny_mnist, "--resume", ckpt_path, epochs=2))[0] == 0
    unbounded = load_ckpt(ckpt_path)
    assert unbounded["model_config"]["mixture_location"] == "unbounded" and not mapped

    legacy = {**marked, "model_config": {k: v for k, v in marked["model_config"].items() if k != "mixture_location"}}
    torch.save(legacy, ckpt_path)  # as a run before issue 36 left it
    assert run_cli(tiny_args(tiny_mnist, "--resume", ckpt_path, epochs=2))[0] == 0
    resumed = load_ckpt(ckpt_path)
    assert resumed["epoch"] == 2 and resumed["model_config"]["mixture_location"] == "sigmoid"
    assert len(mapped) >= TINY_BATCHES  # every training step read the decoder's output through the sigmoid mapping
    assert not all(torch.equal(w, unbounded["state_dict"][k]) for k, w in resumed["state_dict"].items())
