"""The refactor proof (tests/tools/compare_runs.py --base): the same code at both sides is the same run, a
change to the run is reported, and the base side trains once and is reused. (compare() itself, same seed
against another seed: tests/test_train.py.)"""
from __future__ import annotations

import os
import subprocess

import pytest

from helpers import ROOT


@pytest.fixture
def head_tree(tmp_path):
    """A detached worktree of HEAD made by the tool under tmp_path, unregistered again afterwards."""
    from tools.compare_runs import ProofError, base_tree

    try:
        made = base_tree("HEAD", str(tmp_path / "work"))
    except ProofError as e:
        pytest.skip(f"no git checkout to make a worktree of: {e}")
    yield made
    subprocess.run(["git", "worktree", "remove", "--force", made[1]], cwd=ROOT, capture_output=True)


def test_the_proof_finds_the_same_run_the_same_and_a_changed_run_changed(fmnist_root, head_tree, tmp_path,
                                                                         monkeypatch, capsys):
    import tools.compare_runs as cr

    sha, tree = head_tree
    work, small = str(tmp_path / "work"), {"train_images": 200, "test_images": 50}
    # HEAD against HEAD (not this checkout, whose uncommitted edits are not the tool's business)
    assert cr.prove("HEAD", ["default"], work, current=tree, **small) == 0
    assert "default   the same: weights, optimizer, history and TensorBoard scalars" in capsys.readouterr().out
    base_ckpt = os.path.join(work, f"runs_{sha[:12]}", "default", "weights",
                             "fmnist_fc_conv_l10_rebalance_no_norm_checkpoint.pth.tar")
    made = os.stat(base_ckpt).st_mtime_ns

    real = cr.train

    def changed(tree, folder, flags, *rest, **kw):  # a "refactor" that changes the run: another seed
        if os.path.basename(os.path.dirname(folder)) == "current":
            flags = [*flags, "--seed", "1"]
        return real(tree, folder, flags, *rest, **kw)

    monkeypatch.setattr(cr, "train", changed)
    assert cr.prove("HEAD", ["default"], work, current=tree, **small) == 1
    line = capsys.readouterr().out.splitlines()[1]
    assert line.startswith("default   DIFFERS: ") and "checkpoint: state_dict differs" in line, line
    assert "TensorBoard train_loss differs" in line and "(base cached, current" in line, line
    assert os.stat(base_ckpt).st_mtime_ns == made  # the base run was reused, not trained again

    assert cr.prove("HEAD", ["default"], work, rerun_base=True, current=tree, **small) == 1
    assert os.stat(base_ckpt).st_mtime_ns != made
