"""KMNIST, CIFAR-10, SVHN and CelebA through torchvision, from small files the tests write."""
import urllib.error

import numpy as np
import pytest
import torch

import datasets
from core.errors import VaeLabError
from dataio import folders
from datasets import load_split, train_val_split
from helpers import run_cli
from tools.idx_files import write_dataset
from tools.torchvision_files import CIFAR_CLASSES, write_celeba, write_cifar10, write_svhn


@pytest.fixture
def trusted(monkeypatch):
    """Generated files cannot match torchvision's md5 sums: trust them."""
    import torchvision.datasets.cifar

    for name in ("cifar10", "svhn", "celeba"):
        monkeypatch.setattr(datasets.DATASETS[name], "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)  # batches.meta


def test_kmnist_reads_like_mnist(tmp_path):
    rng = np.random.default_rng(0)
    root = write_dataset(str(tmp_path), "KMNIST", rng.integers(0, 255, (50, 28, 28)), np.arange(50) % 10,
                         rng.integers(0, 255, (20, 28, 28)), np.arange(20) % 10)
    train = load_split("kmnist", root, True)
    assert train.x.shape == (50, 1, 28, 28) and train.classes[:2] == ["o", "ki"]


def test_cifar10_is_colour_32_with_its_classes(tmp_path, trusted):
    root = write_cifar10(str(tmp_path))
    train, test = load_split("cifar10", root, True), load_split("cifar10", root, False)
    assert train.x.shape == (60, 3, 32, 32) and len(test) == 12 and train.classes == CIFAR_CLASSES
    assert load_split("cifar10", root, True, image_size=16, channels=1).x.shape == (60, 1, 16, 16)


def test_svhn_labels_are_digits(tmp_path, trusted):
    root = write_svhn(str(tmp_path))
    train = load_split("svhn", root, True)
    assert train.x.shape == (40, 3, 32, 32) and set(train.y.tolist()) == {0, 1, 2}  # 10 read as 0


def test_celeba_is_cropped_and_cached(tmp_path, trusted, monkeypatch):
    root = write_celeba(str(tmp_path))
    with pytest.raises(VaeLabError, match="not square; pass --image_size"):
        load_split("celeba", root, True)
    train = load_split("celeba", root, True, image_size=16)
    test = load_split("celeba", root, False, image_size=16)
    assert train.x.shape == (24, 3, 16, 16) and len(test) == 6 and train.classes is None  # train + valid
    monkeypatch.setattr(folders, "_decode", lambda *a: pytest.fail("decoded again"))
    assert torch.equal(load_split("celeba", root, True, image_size=16).x, train.x)  # both splits stay cached
    assert torch.equal(load_split("celeba", root, False, image_size=16).x, test.x)


@pytest.mark.parametrize("name, needle", [("cifar10", "cifar-10-batches-py/"), ("svhn", "train_32x32.mat"),
                                          ("celeba", "img_align_celeba/"), ("kmnist", "KMNIST")])
def test_offline_names_the_files_and_the_folder(tmp_path, monkeypatch, name, needle):
    def offline(self, *a, **k):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(datasets.DATASETS[name], "download", offline)
    with pytest.raises(VaeLabError, match=f"{name} is not under .* downloading it failed") as e:
        load_split(name, str(tmp_path / "empty"), True)
    assert needle in str(e.value)


def test_train_on_cifar10_at_another_size(tmp_path, trusted, workdir):
    root = write_cifar10(str(tmp_path), per_batch=20)
    argv = ["--dataset_type", "cifar10", "--data_root", root, "--model_type", "resconv", "--image_size", "16",
            "--epochs", "1", "--batch-size", "16", "--lognumber", "c", "--no_cuda", "True", "--num_folds", "4"]
    code, out, err = run_cli(argv)
    assert code == 0, err
    assert "cifar10: 75 train / 25 val images" in out
    tr, va = train_val_split("cifar10", root, 0, 4, 42, image_size=16)
    assert tr.x.shape[1:] == (3, 16, 16)
