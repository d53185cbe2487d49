"""The speed work keeps the numbers: malloc tuning, --amp, --compile."""
import os
import platform
import shutil
import sys

import numpy as np
import pytest
import torch

from core.errors import VaeLabError
from helpers import run_cli
from runtime import accelerators


def one_step(root, *extra, name="s"):
    # 400 training images in one minibatch: a single optimisation step
    return ["--dataset_type", "mnist", "--data_root", root, "--epochs", "1", "--batch-size", "400",
            "--lognumber", name, "--no_cuda", "True", "--tensorboard", "False", "--tensorboard_images", "False",
            *extra]


@pytest.mark.skipif(not (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"),
                    reason="mallopt is glibc's")
def test_malloc_tuning_applies_on_glibc():
    assert accelerators.tune_malloc()


def test_amp_trains_one_step_on_cpu(tiny_mnist, workdir):
    assert run_cli(one_step(tiny_mnist, name="plain"))[0] == 0
    code, out, err = run_cli(one_step(tiny_mnist, "--amp", name="amp"))
    assert code == 0, err
    plain = torch.load("weights/plain_checkpoint.pth.tar", weights_only=True)
    amp = torch.load("weights/amp_checkpoint.pth.tar", weights_only=True)
    h = amp["history"][0]
    assert np.isfinite(h["train_loss"]) and np.isfinite(h["val_loss"])
    # bf16 forward: close to the float32 step, not equal to it
    assert h["train_img_loss"] == pytest.approx(plain["history"][0]["train_img_loss"], rel=0.02)
    for k, v in amp["state_dict"].items():
        assert v.dtype == torch.float32
        torch.testing.assert_close(v, plain["state_dict"][k], atol=2e-3, rtol=0)


@pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None, reason="no C++ compiler for inductor")
def test_compile_trains_one_step_on_cpu(tiny_mnist, workdir):
    # With a KL warm-up the only step has KL weight 0: the compiled loss must see it too
    # (it once kept weight 1, so the step and the logged train_kl_weight were wrong).
    warmup = ["--kl_warmup_epochs", "2"]
    assert run_cli(one_step(tiny_mnist, *warmup, name="eager"))[0] == 0
    code, out, err = run_cli(one_step(tiny_mnist, "--compile", *warmup, name="compiled"))
    assert code == 0, err
    eager = torch.load("weights/eager_checkpoint.pth.tar", weights_only=True)
    comp = torch.load("weights/compiled_checkpoint.pth.tar", weights_only=True)
    assert comp["history"][0]["train_kl_weight"] == eager["history"][0]["train_kl_weight"] == 0.0
    assert list(comp["state_dict"]) == list(eager["state_dict"])  # no _orig_mod. / module. prefixes
    # fused kernels round differently: same step to float precision
    for k, v in comp["state_dict"].items():
        torch.testing.assert_close(v, eager["state_dict"][k], atol=1e-5, rtol=0)
    assert comp["history"][0]["val_loss"] == pytest.approx(eager["history"][0]["val_loss"], rel=1e-5)


def test_compile_without_a_compiler_is_one_line(tiny_mnist, workdir, monkeypatch):
    monkeypatch.setenv("CXX", "no-such-c++")
    code, out, err = run_cli(one_step(tiny_mnist, "--compile"))
    assert code == 2 and err.count("\n") == 1 and "C++ compiler" in err, err
    assert not os.path.exists("weights/s_checkpoint.pth.tar")


def test_amp_on_a_gpu_without_bfloat16_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Tesla V100")
    with pytest.raises(VaeLabError, match="Tesla V100 does not support"):
        accelerators.check_amp(torch.device("cuda"))
