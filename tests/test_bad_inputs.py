"""Untrusted, corrupt and malformed files, and full disks: one clear line, nothing lost."""
import ast
import errno
import glob
import os
import shutil

import numpy as np
import pytest
import torch

from helpers import ROOT, assert_cli_error, load_ckpt, run_cli, snapshot, temp_files, tiny_args
from tools.idx_files import write_idx

# ------------------------------------------------------------------ untrusted checkpoints


class Payload:
    """Unpickling this creates a file: the stand-in for any code a checkpoint could run."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_checkpoint_with_code_is_refused_and_the_code_never_runs(tiny_mnist, one_good_epoch, tmp_path):
    good = load_ckpt("weights/r_checkpoint.pth.tar")
    marker = tmp_path / "pwned"
    # A real torch zip checkpoint, the weights intact, one value replaced by the payload.
    torch.save({**good, "best_loss": Payload(str(marker))}, "weights/evil.pth.tar")
    # Control: an unsafe load does run it, so the refusal below is what keeps it from running.
    torch.load("weights/evil.pth.tar", weights_only=False)
    assert marker.exists()
    marker.unlink()

    for mode in ([], ["--evaluate"], ["--predict"]):
        code, _, err = run_cli(tiny_args(tiny_mnist, "--resume", "weights/evil.pth.tar", *mode, epochs=2))
        assert_cli_error(code, err, "refusing to load", "could run code")
        assert not marker.exists()
    assert snapshot(*one_good_epoch) == one_good_epoch


def test_every_torch_load_in_the_code_uses_weights_only_true():
    calls = []
    for path in glob.glob(os.path.join(ROOT, "**", "*.py"), recursive=True):
        rel = os.path.relpath(path, ROOT)
        if rel.startswith(("tests", "benchmarks", ".venv")):
            continue
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "load" \
                    and getattr(node.func.value, "id", None) == "torch":
                kw = {k.arg: k.value for k in node.keywords}
                calls.append(rel)
                assert isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True, \
                    f"{rel}:{node.lineno}: torch.load without weights_only=True"
    assert os.path.join("runtime", "checkpoints.py") in calls


# ------------------------------------------------------------------ corrupt inputs


def corrupt_idx(raw, kind):
    images = os.path.join(raw, "train-images-idx3-ubyte")
    data = open(images, "rb").read()
    if kind == "truncated":
        open(images, "wb").write(data[: len(data) // 2])
    elif kind == "wrong magic":
        open(images, "wb").write(b"\x12\x34\x56\x78" + data[4:])
    elif kind == "empty file":
        open(images, "wb").close()
    elif kind == "32x32 images":
        write_idx(images, np.zeros((500, 32, 32), dtype=np.uint8))
    elif kind == "fewer labels":
        write_idx(os.path.join(raw, "train-labels-idx1-ubyte"), np.arange(400) % 10)
    elif kind == "no images":
        write_idx(images, np.zeros((0, 28, 28), dtype=np.uint8))
        write_idx(os.path.join(raw, "train-labels-idx1-ubyte"), np.zeros(0))
    elif kind == "old processed cache with code":  # torchvision loads processed/*.pt before raw files
        os.makedirs(os.path.join(raw, "..", "processed"))
        for f in ("training.pt", "test.pt"):
            torch.save({"x": Payload(os.path.join(raw, "pwned"))}, os.path.join(raw, "..", "processed", f))
    elif kind == "too few for the folds":
        write_idx(images, np.zeros((20, 28, 28), dtype=np.uint8))
        write_idx(os.path.join(raw, "train-labels-idx1-ubyte"), np.arange(20) % 10)


@pytest.mark.parametrize("kind", ["truncated", "wrong magic", "empty file", "32x32 images", "fewer labels",
                                  "no images", "old processed cache with code", "too few for the folds"])
def test_corrupt_idx_files_are_one_clear_line(tiny_mnist, workdir, kind):
    root = str(workdir / "data")
    shutil.copytree(tiny_mnist, root)
    corrupt_idx(os.path.join(root, "MNIST", "raw"), kind)
    code, _, err = run_cli(tiny_args(root))
    assert_cli_error(code, err, "MNIST" if kind != "too few for the folds" else "--num_folds")
    assert not os.path.exists("weights/r_checkpoint.pth.tar")
    assert not os.path.exists(os.path.join(root, "MNIST", "raw", "pwned"))


@pytest.mark.parametrize("cut", [0, 1, 100, 0.5, -200, -1])
def test_truncated_checkpoint_is_one_clear_line(tiny_mnist, one_good_epoch, cut):
    data = one_good_epoch["weights/r_checkpoint.pth.tar"]
    n = int(len(data) * cut) if isinstance(cut, float) else cut % len(data)
    open("weights/cut.pth.tar", "wb").write(data[:n])
    code, _, err = run_cli(tiny_args(tiny_mnist, "--resume", "weights/cut.pth.tar", epochs=2))
    assert_cli_error(code, err, "weights/cut.pth.tar")
    assert snapshot(*one_good_epoch) == one_good_epoch


def _mutations():
    def drop(key):
        return lambda c: c.pop(key)

    def setter(path, value):
        def f(c):
            d = c
            for k in path[:-1]:
                d = d[k]
            d[path[-1]] = value
        return f

    return {
        "no epoch": drop("epoch"),
        "no optimizer": drop("optimizer"),
        "no scheduler": drop("scheduler"),
        "epoch is text": setter(["epoch"], "ten"),
        "negative epoch": setter(["epoch"], -3),
        "state_dict is a list": setter(["state_dict"], [1, 2]),
        "a weight is a number": setter(["state_dict", "fc1.weight"], 3),
        "NaN weights": setter(["state_dict", "fc1.weight"], torch.full((400, 1, 28, 28), float("nan"))),
        "optimizer is a number": setter(["optimizer"], 3),
        "param_groups broken": setter(["optimizer", "param_groups"], [{"lr": 1}]),
        "best_loss is text": setter(["best_loss"], "low"),
        "32x32 model": setter(["model_config", "image_size"], 32),
        "huge model": setter(["model_config", "model_multiplier"], 10**9),
        "unknown model": setter(["model_config", "model_type"], "transformer"),
        "model_config is a list": setter(["model_config"], []),
        "scheduler overrides its optimizer": setter(["scheduler", "optimizer"], {}),
        "scheduler gamma is text": setter(["scheduler", "gamma"], "x"),
        "python rng garbage": setter(["rng_state", "python"], (1, 2)),
        "torch rng wrong size": setter(["rng_state", "torch"], torch.zeros(3, dtype=torch.uint8)),
        "history is a number": setter(["history"], 5),
        "history entry without epoch": setter(["history"], [{"loss": 1.0}]),
        "loss_state is text": setter(["loss_state"], "x"),
        "args is a list": setter(["args"], []),
        "global_step negative": setter(["global_step"], -1),
        "not a dict": lambda c: None,
    }


MUTATIONS = _mutations()


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_malformed_checkpoint_is_one_clear_line(tiny_mnist, one_good_epoch, name):
    ckpt = load_ckpt("weights/r_checkpoint.pth.tar")
    MUTATIONS[name](ckpt)
    torch.save(ckpt if name != "not a dict" else [ckpt], "weights/bad.pth.tar")
    code, _, err = run_cli(tiny_args(tiny_mnist, "--resume", "weights/bad.pth.tar", epochs=2))
    assert_cli_error(code, err, "weights/bad.pth.tar")


def test_checkpoint_of_another_model_is_one_clear_line(tiny_mnist, workdir):
    assert run_cli(tiny_args(tiny_mnist, "--model_type", "fcn", name="f"))[0] == 0
    code, _, err = run_cli(tiny_args(tiny_mnist, "--resume", "weights/f_checkpoint.pth.tar", "--model_type",
                                     "fc_conv", epochs=2, name="f"))
    assert_cli_error(code, err, "--model_type fcn")
    # the 2018 format (four keys, no model config) from another architecture
    torch.save({"epoch": 1, "optimizer": {"state": {}, "param_groups": []}, "best_loss": 1.0,
                "state_dict": load_ckpt("weights/f_checkpoint.pth.tar")["state_dict"]}, "weights/f2018.pth.tar")
    code, _, err = run_cli(tiny_args(tiny_mnist, "--resume", "weights/f2018.pth.tar", epochs=2, name="g"))
    assert_cli_error(code, err, "does not fit")


# ------------------------------------------------------------------ full disk


class FullDisk:
    """A file whose device fills up after ``room`` more bytes: write() raises ENOSPC."""

    def __init__(self, f, room):
        self.f, self.room = f, room

    def write(self, b):
        b = memoryview(b).cast("B")
        if len(b) > self.room:
            self.f.write(b[: self.room])
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(b)
        return self.f.write(b)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


@pytest.mark.parametrize("fail_at", ["checkpoint write", "checkpoint fsync", "best copy"])
def test_full_disk_keeps_the_previous_files_and_says_so(tiny_mnist, workdir, monkeypatch, fail_at):
    # Files written, in order: the run's config, then per epoch checkpoint and best (val loss falls
    # every epoch here). Opening #4 is epoch 2's checkpoint, #5 its copy to best.
    real_fdopen, real_fsync, opened = os.fdopen, os.fsync, []

    def fdopen(fd, *a, **k):
        f = real_fdopen(fd, *a, **k)
        opened.append(1)
        if (fail_at == "checkpoint write" and len(opened) == 4) or (fail_at == "best copy" and len(opened) == 5):
            return FullDisk(f, 100_000)  # some bytes fit, then the disk is full
        return f

    def fsync(fd):
        if fail_at == "checkpoint fsync" and len(opened) == 4:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    epoch1 = {}

    def keep_epoch1(*a, **k):  # after epoch 1's files are written, remember them
        if len(opened) == 3 and not epoch1:
            epoch1.update(snapshot("weights/r_checkpoint.pth.tar", "weights/r_best.pth.tar"))
        return real_train_one_epoch(*a, **k)

    import train

    real_train_one_epoch = train.train_one_epoch
    monkeypatch.setattr(os, "fdopen", fdopen)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(train, "train_one_epoch", keep_epoch1)
    code, out, err = run_cli(tiny_args(tiny_mnist, epochs=3))
    assert_cli_error(code, err, "No space left on device", "intact")
    assert len(opened) == (5 if fail_at == "best copy" else 4)
    after = snapshot(*epoch1)
    if fail_at == "best copy":  # epoch 2's checkpoint made it, the best file is epoch 1's
        assert load_ckpt("weights/r_checkpoint.pth.tar")["epoch"] == 2
        assert after["weights/r_best.pth.tar"] == epoch1["weights/r_best.pth.tar"]
        assert "r_best.pth.tar" in err
    else:
        assert after == epoch1
        assert "r_checkpoint.pth.tar" in err
    assert temp_files() == []
    for obj, name, real in ((os, "fdopen", real_fdopen), (os, "fsync", real_fsync),
                            (train, "train_one_epoch", real_train_one_epoch)):
        monkeypatch.setattr(obj, name, real)  # room on the disk again
    code, _, err = run_cli(tiny_args(tiny_mnist, "--resume", "weights/r_checkpoint.pth.tar", epochs=3))
    assert code == 0, err  # and the run goes on once there is room again


def test_full_disk_for_tensorboard_is_one_clear_line(tmp_path):
    from core.errors import VaeLabError
    from runtime.tensorboard import RunWriter

    w = RunWriter(str(tmp_path))
    inner = w._writers["train"]._py_recordio_writer
    inner._writer = FullDisk(inner._writer, 0)
    with pytest.raises(VaeLabError, match="No space left on device"):
        for step in range(10_000):  # the file buffer fills, then write() reaches the disk
            w.add_scalar("train_loss", 1.0, step)
        w.flush()


def test_kill_between_checkpoint_and_best_copy_is_repaired_on_resume(tiny_mnist, workdir, monkeypatch):
    from runtime import training_state

    assert run_cli(tiny_args(tiny_mnist, epochs=2, name="straight"))[0] == 0
    real_copy, copies = training_state.copy_checkpoint, []

    def killed_at_second_copy(src, dst):
        copies.append(dst)
        if len(copies) == 2:
            raise KeyboardInterrupt  # epoch 2's checkpoint is written, its best copy is not
        real_copy(src, dst)

    monkeypatch.setattr(training_state, "copy_checkpoint", killed_at_second_copy)
    assert run_cli(tiny_args(tiny_mnist, epochs=2))[0] == 130
    assert load_ckpt("weights/r_best.pth.tar")["epoch"] == 1 and load_ckpt("weights/r_checkpoint.pth.tar")["epoch"] == 2
    monkeypatch.setattr(training_state, "copy_checkpoint", real_copy)
    import train

    real_validate = train.validate

    def epoch_3_is_worse(model, loss_fn, data, args, epoch, *a, **k):  # so best stays at epoch 2
        va = real_validate(model, loss_fn, data, args, epoch, *a, **k)
        return {**va, "loss": 1e9} if epoch == 2 else va

    monkeypatch.setattr(train, "validate", epoch_3_is_worse)
    assert run_cli(tiny_args(tiny_mnist, "--resume", "weights/r_checkpoint.pth.tar", epochs=3))[0] == 0
    assert run_cli(tiny_args(tiny_mnist, "--resume", "weights/straight_checkpoint.pth.tar", epochs=3,
                             name="straight"))[0] == 0
    best, straight = load_ckpt("weights/r_best.pth.tar"), load_ckpt("weights/straight_best.pth.tar")
    assert best["epoch"] == straight["epoch"] == 2  # as if the kill never happened
    assert all(torch.equal(v, straight["state_dict"][k]) for k, v in best["state_dict"].items())


@pytest.mark.parametrize("when", ["during a checkpoint write", "before training"])
def test_ctrl_c_says_which_epoch_is_saved_and_exits_130(tiny_mnist, one_good_epoch, monkeypatch, when):
    import train
    from runtime import checkpoints

    if when == "during a checkpoint write":
        def interrupted(state, f):
            f.write(b"half a checkpoint")
            raise KeyboardInterrupt

        monkeypatch.setattr(checkpoints, "_torch_save", interrupted)
    else:
        def interrupted(*a, **k):
            raise KeyboardInterrupt

        monkeypatch.setattr(train, "train_val_split", interrupted)
    code, _, err = run_cli(tiny_args(tiny_mnist, "--resume", "weights/r_checkpoint.pth.tar", epochs=2))
    assert code == 130 and "Traceback" not in err, err
    if when == "during a checkpoint write":  # epoch 2 was trained, but the file still holds epoch 1
        assert "weights/r_checkpoint.pth.tar holds epoch 1;" in err
    else:
        assert err.strip() == "train.py: interrupted"
    assert snapshot(*one_good_epoch) == one_good_epoch and temp_files() == []


def test_ctrl_c_still_leaves_the_process_group(tiny_mnist, workdir, monkeypatch):
    import train
    from runtime import distributed

    left = []
    monkeypatch.setattr(distributed, "cleanup", lambda: left.append(True))

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "train_one_epoch", interrupted)
    code, _, err = run_cli(tiny_args(tiny_mnist))
    assert code == 130 and "no epoch finished" in err, err
    assert left == [True]  # under torchrun the other ranks are not left waiting in a collective


def test_a_failed_eval_json_write_keeps_the_previous_file(tiny_mnist, one_good_epoch, monkeypatch):
    import json

    argv = tiny_args(tiny_mnist, "--resume", "weights/r_checkpoint.pth.tar", "--evaluate")
    assert run_cli(argv)[0] == 0
    before = snapshot("weights/r_eval.json")
    real_iterencode = json.JSONEncoder.iterencode

    def disk_fills_after_the_first_chunk(self, o, _one_shot=False):
        chunks = real_iterencode(self, o, _one_shot)
        yield next(iter(chunks))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(json.JSONEncoder, "iterencode", disk_fills_after_the_first_chunk)
    code, _, err = run_cli(argv)
    assert_cli_error(code, err, "No space left on device", "r_eval.json", "intact")
    assert snapshot("weights/r_eval.json") == before
    assert temp_files() == []
