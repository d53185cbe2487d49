"""Shared fixtures. Fashion-MNIST comes from data/ or Debian's dataset-fashion-mnist, the 2018
checkpoint from $VAE_LAB_2018_CHECKPOINT, weights/2018/ or CI's copy beside the clone; tests that
need one skip with a reason (and where to get it) when it is not there, except under
VAE_LAB_REQUIRE_DATA=1 (.ci/run sets it, having installed both), where a missing one fails."""
from __future__ import annotations

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch

from runtime.published_2018 import DEFAULT, ENV, NAME, checkpoint_2018, where_to_get
from tools.idx_files import write_dataset, write_tiny_mnist

torch.set_num_threads(min(2, torch.get_num_threads()))
# The runs the tests start compute with this count, not with train.py's default share of the cores among the
# runs on the machine (runtime/threads.py): runs that must agree bit for bit do whatever else runs beside them.
os.environ["OMP_NUM_THREADS"] = str(torch.get_num_threads())


def missing(reason: str) -> None:
    """Skip for want of data, or fail where the data must be there (CI)."""
    if os.environ.get("VAE_LAB_REQUIRE_DATA") == "1":
        pytest.fail(f"{reason} (VAE_LAB_REQUIRE_DATA=1: CI installs it)")
    pytest.skip(reason)


def _fmnist_source() -> str | None:
    """A folder that ensure_raw_files can use without network, or None."""
    from datasets import DEBIAN_FMNIST_DIR, IDX_FILES

    local = os.path.join(ROOT, "data", "FashionMNIST", "raw")
    if all(os.path.isfile(os.path.join(local, f)) for f in IDX_FILES):
        return os.path.join(ROOT, "data")
    if all(os.path.isfile(os.path.join(DEBIAN_FMNIST_DIR, f + ".gz")) for f in IDX_FILES):
        return "debian"
    return None


@pytest.fixture(scope="session")
def fmnist_root(tmp_path_factory) -> str:
    """A data root holding the full official Fashion-MNIST (60k + 10k)."""
    src = _fmnist_source()
    if src is None:
        missing("Fashion-MNIST is absent: install Debian's dataset-fashion-mnist (CI does)")
    if src != "debian":
        return src
    from datasets import ensure_raw_files

    root = str(tmp_path_factory.mktemp("fmnist_full"))
    ensure_raw_files("fmnist", root)
    return root


@pytest.fixture(scope="session")
def fmnist_small(fmnist_root, tmp_path_factory) -> str:
    """Real Fashion-MNIST images, few of them: 3000 train (2400/600 split) and 1000 test."""
    from datasets import DATASETS

    full_tr = DATASETS["fmnist"](fmnist_root, train=True)
    full_te = DATASETS["fmnist"](fmnist_root, train=False)
    root = str(tmp_path_factory.mktemp("fmnist_small"))
    return write_dataset(root, "FashionMNIST",
                         full_tr.data[:3000].numpy(), full_tr.targets[:3000].numpy(),
                         full_te.data[:1000].numpy(), full_te.targets[:1000].numpy())


@pytest.fixture(scope="session")
def tiny_mnist(tmp_path_factory) -> str:
    """Synthetic MNIST-format IDX files (digits are blobs), written by the test itself."""
    return write_tiny_mnist(str(tmp_path_factory.mktemp("mnist")))


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Run in a fresh folder so weights/, tb_logs/ and results/ land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


# CI keeps the 2018 checkpoint beside its clone (.ci/run); users get theirs with where_to_get()
CI_CHECKPOINT_2018 = os.path.normpath(os.path.join(ROOT, "..", "shared", "reference", NAME))


def find_checkpoint_2018() -> str:
    """$VAE_LAB_2018_CHECKPOINT when set, else weights/2018/ in the repository, else CI's copy if there."""
    path = checkpoint_2018()
    if os.environ.get(ENV) or os.path.isfile(path) or not os.path.isfile(CI_CHECKPOINT_2018):
        return path
    return CI_CHECKPOINT_2018


@pytest.fixture(scope="session")
def reference_ckpt() -> str:
    """The 2018 project's published checkpoint (runtime/published_2018.py)."""
    path = find_checkpoint_2018()
    if not os.path.isfile(path):
        missing(f"the 2018 checkpoint is absent ({path}); get it with: {where_to_get(DEFAULT)}, or set {ENV}")
    return path


@pytest.fixture
def one_good_epoch(tiny_mnist, workdir) -> dict[str, bytes]:
    """Run 'r' trained for one epoch on tiny_mnist: its checkpoint and best files, byte for byte."""
    from helpers import run_cli, snapshot, tiny_args

    code, _, err = run_cli(tiny_args(tiny_mnist))
    assert code == 0, err
    return snapshot("weights/r_checkpoint.pth.tar", "weights/r_best.pth.tar")
