"""torchrun: two gloo processes on the CPU train the same model as one process."""
import os
import subprocess
import sys

import pytest
import torch

from core.errors import VaeLabError
from helpers import ROOT, load_ckpt, run_cli
from runtime.distributed import World

# 400 training images in minibatches of 130: 3 x 130 + 10, so the shards are uneven (65 = 33 + 32)
# and the last minibatch is small; augmentations and running means exercise every shared RNG path.
ARGS = ["--dataset_type", "mnist", "--batch-size", "130", "--print-freq", "2", "--no_cuda", "True",
        "--do_augs", "True", "--do_running_mean", "True"]


def torchrun(argv, cwd, n=2):
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
                           os.path.join(ROOT, "train.py"), *argv], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7])
def test_shards_cover_a_minibatch_once(n):
    for size in (1, 7, 130, 512):
        if size < n:
            continue
        parts = [World(rank=r, size=n).shard(size) for r in range(n)]
        assert parts[0].start == 0 and parts[-1].stop == size
        assert all(a.stop == b.start for a, b in zip(parts, parts[1:]))
        lengths = [p.stop - p.start for p in parts]
        assert max(lengths) - min(lengths) <= 1


def test_more_processes_than_images_per_minibatch_is_refused():
    with pytest.raises(VaeLabError, match="3 processes need at least 3 images"):
        World(rank=0, size=3).check_batches(2, 400)
    with pytest.raises(VaeLabError, match=r"last minibatch \(2 images"):
        World(rank=0, size=3).check_batches(199, 400, 100)  # 400 = 2 x 199 + 2
    World(rank=0, size=3).check_batches(128, 400, 100)  # last minibatches of 16 and 100 images
    World().check_batches(1, 400)  # a single process takes any batch size


def test_two_gloo_processes_equal_one_and_resume_with_one(tiny_mnist, workdir):
    proc = torchrun(ARGS + ["--data_root", tiny_mnist, "--epochs", "1", "--lognumber", "two"], workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert run_cli(ARGS + ["--data_root", tiny_mnist, "--epochs", "1", "--lognumber", "one"])[0] == 0

    two, one = load_ckpt("weights/two_checkpoint.pth.tar"), load_ckpt("weights/one_checkpoint.pth.tar")
    # Both draw the whole minibatch's noise and augmentations from the same seeded RNGs, so
    # the only difference is float summation order (gradient all-reduce, half-batch matmuls).
    for k, v in one["state_dict"].items():
        torch.testing.assert_close(two["state_dict"][k], v, atol=1e-5, rtol=0)
    for k in ("train_loss", "train_img_loss", "train_kl_loss", "val_loss", "val_img_loss", "val_kl_loss",
              "val_ssim"):
        assert two["history"][0][k] == pytest.approx(one["history"][0][k], rel=1e-5), k
    assert torch.equal(two["rng_state"]["torch"], one["rng_state"]["torch"])
    assert torch.equal(two["rng_state"]["generator"], one["rng_state"]["generator"])

    # rank 0 alone wrote: one console line per epoch, one event file, no stray files
    assert proc.stdout.count(" * epoch 1/1") == 1 and proc.stdout.count("Epoch: [0][2/4]") == 1
    assert len([f for f in os.listdir("tb_logs/two") if "tfevents" in f]) == 1
    assert sorted(f for f in os.listdir("weights") if f.startswith("two")) == [
        "two.lock", "two_best.pth.tar", "two_checkpoint.pth.tar", "two_config.yaml"]

    # a checkpoint written by 2 processes resumes in 1 and follows the single-process run
    assert run_cli(ARGS + ["--data_root", tiny_mnist, "--epochs", "2", "--lognumber", "two",
                           "--resume", "weights/two_checkpoint.pth.tar"])[0] == 0
    assert run_cli(ARGS + ["--data_root", tiny_mnist, "--epochs", "2", "--lognumber", "one2"])[0] == 0
    resumed, straight = load_ckpt("weights/two_checkpoint.pth.tar"), load_ckpt("weights/one2_checkpoint.pth.tar")
    for k, v in straight["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][k], v, atol=1e-5, rtol=0)


def test_torchrun_with_too_many_processes_says_so_once(tiny_mnist, workdir):
    proc = torchrun(ARGS + ["--data_root", tiny_mnist, "--batch-size", "1", "--lognumber", "bad"], workdir)
    assert proc.returncode != 0
    ours = [line for line in proc.stderr.splitlines() if line.startswith("train.py: error:")]
    assert len(ours) == 1 and "2 processes need at least 2 images" in ours[0], proc.stderr[-2000:]
    assert not os.path.exists("weights/bad_checkpoint.pth.tar")


def test_two_gloo_processes_on_a_colour_folder_equal_one(tmp_path, workdir):
    from tools.image_folders import write_image_folder

    root = write_image_folder(str(tmp_path / "d"), n=120, size=(16, 16), channels=3)
    argv = ["--dataset_type", "folder", "--data_root", root, "--model_type", "fc", "--image_loss_type", "logistic",
            "--batch-size", "26", "--no_cuda", "True", "--epochs", "1", "--num_folds", "4", "--conditional", "True"]
    proc = torchrun(argv + ["--lognumber", "two"], workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert run_cli(argv + ["--lognumber", "one"])[0] == 0
    two, one = load_ckpt("weights/two_checkpoint.pth.tar"), load_ckpt("weights/one_checkpoint.pth.tar")
    for k, v in one["state_dict"].items():  # log_scale too: the likelihood's scale is all-reduced like any weight
        torch.testing.assert_close(two["state_dict"][k], v, atol=1e-5, rtol=0)
