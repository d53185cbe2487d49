"""An objective is one file: one defined outside the tree (tests/extensions/cyclical_objective.py), registered
here, trains with its schedule and logged term, resumes bit for bit, and its runs evaluate and predict; the
project changes nothing for it."""
import json

import numpy as np
import pytest
import torch

from helpers import assert_cli_error, load_ckpt, read_events, run_cli, tiny_args
from losses import OBJECTIVES, register

EXTRA = ("--objective", "cyclical", "--do_running_mean", "False", "--tensorboard", "True")


@pytest.fixture
def cyclical():
    """The extension's objective registered for this test only."""
    from extensions.cyclical_objective import Cyclical

    register("cyclical")(Cyclical)
    yield Cyclical
    del OBJECTIVES["cyclical"]


def test_an_unregistered_objective_is_refused(tiny_mnist, workdir):
    code, _, err = run_cli(tiny_args(tiny_mnist, *EXTRA))
    assert_cli_error(code, err, "--objective", "cyclical")


def test_a_registered_objective_trains_resumes_evaluates_and_predicts(tiny_mnist, workdir, cyclical):
    code, _, err = run_cli(tiny_args(tiny_mnist, *EXTRA, epochs=2, name="straight"))
    assert code == 0, err
    # its schedule, stepped by the loop's progress (4 minibatches an epoch, one cycle per epoch), and its term
    tb = read_events("tb_logs/straight")
    assert [v for _, v in tb["train_beta"]] == [0.0, 0.5, 1.0, 1.0] * 2
    assert [v for _, v in tb["train_kl_weight"]] == [0.0, 0.5, 1.0, 1.0] * 2
    straight = load_ckpt("weights/straight_checkpoint.pth.tar")
    assert straight["args"]["objective"] == "cyclical" and "train_beta" in straight["history"][-1]
    # the validation loss is the objective's (the full ELBO here), what picks the best checkpoint
    last = straight["history"][-1]
    assert last["val_loss"] == pytest.approx(last["val_img_loss"] + last["val_kl_loss"], rel=1e-6)

    # cut after one epoch and resumed: the same run, bit for bit
    assert run_cli(tiny_args(tiny_mnist, *EXTRA, epochs=1, name="split"))[0] == 0
    code, _, err = run_cli(tiny_args(tiny_mnist, *EXTRA, "--resume", "weights/split_checkpoint.pth.tar", epochs=2,
                                     name="split"))
    assert code == 0, err
    split = load_ckpt("weights/split_checkpoint.pth.tar")
    assert split["epoch"] == 2
    for k, v in straight["state_dict"].items():
        assert torch.equal(v, split["state_dict"][k]), k
    assert [v for _, v in read_events("tb_logs/split")["train_beta"]] == [0.0, 0.5, 1.0, 1.0] * 2

    # --evaluate and --predict with the checkpoint alone (the objective comes from it)
    best = "weights/straight_best.pth.tar"
    code, out, err = run_cli(["--resume", best, "--evaluate", "True", "--data_root", tiny_mnist, "--no_cuda", "True"])
    assert code == 0, err
    report = json.load(open("weights/straight_eval.json"))["val"]
    # the evaluation's negative ELBO of the validation images is the loss the best epoch was chosen by
    assert report["bce_kl"] == pytest.approx(load_ckpt(best)["history"][-1]["val_loss"], rel=1e-4)
    code, out, err = run_cli(["--resume", best, "--predict", "True", "--data_root", tiny_mnist, "--no_cuda", "True"])
    assert code == 0, err
    assert np.load("results/straight/val_mu.npy").shape == (report["n"], 10)
