"""The speed work keeps the numbers: start-up without torchvision or scikit-learn."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from helpers import ROOT, run_cli


def one_step(root, *extra, name="s"):
    # 400 training images in one minibatch: a single optimisation step
    return ["--dataset_type", "mnist", "--data_root", root, "--epochs", "1", "--batch-size", "400",
            "--lognumber", name, "--no_cuda", "True", "--tensorboard", "False", "--tensorboard_images", "False",
            *extra]


def test_idx_reader_equals_torchvision(tiny_mnist):
    from torchvision.datasets import MNIST

    from datasets import load_split

    for train in (True, False):
        ours, ref = load_split("mnist", tiny_mnist, train=train), MNIST(tiny_mnist, train=train)
        assert torch.equal(ours.x, ref.data.to(torch.float32).div_(255.0).unsqueeze(1))
        assert torch.equal(ours.y, ref.targets)


@pytest.mark.parametrize("trial", range(6))
def test_split_equals_scikit_learn(trial):
    from sklearn.model_selection import StratifiedKFold

    from datasets import kfold_indices

    rng = np.random.default_rng(trial)
    n, folds, seed = int(rng.integers(30, 2000)), int(rng.integers(2, 7)), int(rng.integers(0, 2 ** 32))
    y = rng.integers(0, int(rng.integers(2, 11)), n) * 3 + 1  # labels need not be 0..k-1
    ref = StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(n), y)
    for fold, (tr, va) in enumerate(ref):
        ours_tr, ours_va = kfold_indices(torch.from_numpy(y), fold, folds, seed)
        assert np.array_equal(ours_tr, tr) and np.array_equal(ours_va, va)


@pytest.mark.parametrize("b,c,nrow", [(32, 1, 16), (64, 1, 8), (5, 1, 8), (7, 3, 3)])
def test_image_grid_equals_make_grid(b, c, nrow):
    from torchvision.utils import make_grid

    from tblog import image_grid

    x = torch.rand(b, c, 28, 28)
    assert torch.equal(image_grid(x, nrow=nrow, padding=2), make_grid(x, nrow=nrow, padding=2))


def test_training_imports_neither_torchvision_nor_scikit_learn(tiny_mnist, tmp_path):
    code = ("import sys, train, utils\n"
            f"argv = {one_step(tiny_mnist, '--tensorboard', 'True', '--tensorboard_images', 'True')!r}\n"
            "assert utils.run_cli(train.main, train.get_args_parser(), argv) == 0\n"
            "print(sorted(m for m in ('torchvision', 'sklearn', 'scipy') if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "tb_logs" / "s").is_dir()
