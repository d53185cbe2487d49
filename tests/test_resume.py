"""Exact resume: a run stopped after any epoch and resumed is the uninterrupted run."""
import shutil

import pytest
import torch

from helpers import read_events, run_cli

EPOCHS = 3


def args(root, name, epochs, *extra):
    # Milestones 1 and 2 put a resume before, between and after both LR drops; augmentations
    # and running-mean rebalancing make the RNG and loss state part of what must be restored.
    return ["--data_root", root, "--dataset_type", "mnist", "--epochs", str(epochs), "--batch-size", "128",
            "--print-freq", "2", "--lognumber", name, "--no_cuda", "True", "--m1", "1", "--m2", "2",
            "--do_augs", "True", "--do_running_mean", "True", *extra]


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def run_ok(argv):
    code, out, err = run_cli(argv)
    assert code == 0, err
    return out


@pytest.mark.parametrize("reader", ["accumulator", "dataserver"])
def test_killed_after_any_epoch_and_resumed_is_the_same_run(tiny_mnist, workdir, reader):
    run_ok(args(tiny_mnist, "straight", EPOCHS))
    straight = load("weights/straight_checkpoint.pth.tar")
    straight_tb = read_events("tb_logs/straight", reader)

    for k in range(1, EPOCHS):
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

        resumed = load(ckpt)
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
