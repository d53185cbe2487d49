import gzip
import os
import shutil
import subprocess
import sys
import urllib.error
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

import datasets
from core.errors import VaeLabError
from dataio import sources
from datasets import augment_batch, ensure_raw_files, kfold_indices, load_split, train_val_split
from helpers import ROOT
from tools.idx_files import write_idx


def test_mnist_idx_files_load_through_torchvision(tiny_mnist):
    tr = load_split("mnist", tiny_mnist, train=True)
    te = load_split("mnist", tiny_mnist, train=False)
    assert tr.x.shape == (500, 1, 28, 28) and te.x.shape == (100, 1, 28, 28)
    assert tr.x.dtype == torch.uint8  # as stored: a quarter of float32's memory
    x = datasets.as_float(tr.x)  # per batch: k / 255, what torchvision's ToTensor gives
    assert x.dtype == torch.float32 and torch.equal(x * 255, tr.x.float()) and x.max() <= 1.0
    assert tr.y.tolist()[:12] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    train, val = train_val_split("mnist", tiny_mnist, fold=0, num_folds=5, seed=42)
    assert len(train) == 400 and len(val) == 100
    assert torch.bincount(val.y).tolist() == [10] * 10  # stratified


def test_split_reproduces_the_2018_indices(fmnist_root):
    y = load_split("fmnist", fmnist_root, train=True).y
    tr, va = kfold_indices(y, fold=0, num_folds=5, seed=42)
    assert va[:10].tolist() == [6, 8, 15, 22, 23, 25, 28, 31, 33, 34]
    assert len(tr) == 48000 and len(va) == 12000 and not set(tr) & set(va)


def test_the_split_is_cached_and_the_cache_never_trusted_blindly(tmp_path):
    y = np.repeat(np.arange(10), 50)[np.random.default_rng(1).permutation(500)]
    straight = [kfold_indices(y, fold, 5, 7) for fold in range(5)]
    for fold in range(5):  # computed and cached, then read: scikit-learn's indices both times
        for _ in range(2):
            tr, va = kfold_indices(y, fold, 5, 7, str(tmp_path))
            assert np.array_equal(tr, straight[fold][0]) and np.array_equal(va, straight[fold][1])
    (cache,) = (tmp_path / ".vae_lab_cache").glob("folds_*.npy")
    assert kfold_indices(y, 0, 5, 8, str(tmp_path))[1].tolist() != straight[0][1].tolist()  # another seed, its own
    cache.write_bytes(b"garbage")  # a damaged cache is recomputed
    assert np.array_equal(kfold_indices(y, 2, 5, 7, str(tmp_path))[1], straight[2][1])
    np.save(cache, np.full(500, 9, dtype=np.int16))  # folds out of range: recomputed
    assert np.array_equal(kfold_indices(y, 2, 5, 7, str(tmp_path))[1], straight[2][1])


def test_a_cached_split_starts_without_scikit_learn(tiny_mnist):
    code = ("import sys; from datasets import train_val_split; train_val_split('mnist', sys.argv[1], 0, 5, 42); "
            "print('sklearn' in sys.modules)")
    runs = [subprocess.run([sys.executable, "-c", code, tiny_mnist], capture_output=True, text=True, check=True,
                           cwd=ROOT).stdout.split()[-1] for _ in range(2)]
    assert runs[-1] == "False"


def _fake_debian(tmp_path) -> str:
    """A fake Debian folder with gzipped IDX files (20 training and 10 test images)."""
    deb = tmp_path / "deb"
    deb.mkdir()
    rng = np.random.default_rng(0)
    for name, arr in (("train-images-idx3-ubyte", rng.integers(0, 255, (20, 28, 28))),
                      ("train-labels-idx1-ubyte", np.arange(20) % 10),
                      ("t10k-images-idx3-ubyte", rng.integers(0, 255, (10, 28, 28))),
                      ("t10k-labels-idx1-ubyte", np.arange(10) % 10)):
        write_idx(str(tmp_path / name), arr)
        with open(tmp_path / name, "rb") as src, gzip.open(deb / (name + ".gz"), "wb") as dst:
            shutil.copyfileobj(src, dst)
    return str(deb)


def test_debian_copy_is_used_offline(tmp_path):
    deb = _fake_debian(tmp_path)  # the data root starts empty
    root = tmp_path / "data"
    ensure_raw_files("fmnist", str(root), debian_dir=deb)
    assert sorted(os.listdir(root / "FashionMNIST" / "raw")) == sorted(datasets.IDX_FILES)
    assert len(load_split("fmnist", str(root), train=False)) == 10


def test_runs_unpacking_into_one_root_at_once_do_not_collide(tmp_path):
    # Two sweeps started together both unpack Debian's files into the same --data_root: each
    # writes a temporary file of its own, so neither renames the other's away mid-copy.
    deb = _fake_debian(tmp_path)
    root = str(tmp_path / "data")
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: sources._copy_debian_fmnist(root, deb), range(8)))
    assert results == [True] * 8
    assert sorted(os.listdir(os.path.join(root, "FashionMNIST", "raw"))) == sorted(datasets.IDX_FILES)
    assert len(load_split("fmnist", root, train=True)) == 20


def test_no_data_and_no_network_says_what_to_do(tmp_path, monkeypatch):
    def offline(self, *a, **k):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(datasets.DATASETS["mnist"], "download", offline)
    with pytest.raises(VaeLabError, match="downloading it failed"):
        ensure_raw_files("mnist", str(tmp_path / "empty"))


def test_corrupt_idx_is_one_clear_error(tmp_path, tiny_mnist):
    root = tmp_path / "bad"
    shutil.copytree(tiny_mnist, root)
    path = root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(VaeLabError, match="corrupt"):
        load_split("mnist", str(root), train=True)
    path.write_bytes(b"\x12\x34\x56\x78" + data[4:])  # wrong magic
    with pytest.raises(VaeLabError, match="corrupt"):
        load_split("mnist", str(root), train=True)


def test_augmentations_on_whole_batches():
    x = torch.rand(64, 1, 28, 28)
    g = torch.Generator().manual_seed(0)
    out = augment_batch(x, g)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    # no rotation and p=1: exactly a horizontal flip
    flipped = augment_batch(x, torch.Generator().manual_seed(0), flip_p=1.0, max_degrees=0.0)
    assert torch.allclose(flipped, torch.flip(x, dims=[3]), atol=1e-5)
    same = augment_batch(x, torch.Generator().manual_seed(0), flip_p=0.0, max_degrees=0.0)
    assert torch.allclose(same, x, atol=1e-5)
    # the same generator state replays the same augmentations (exact resume)
    assert torch.equal(augment_batch(x, torch.Generator().manual_seed(0)), out)
