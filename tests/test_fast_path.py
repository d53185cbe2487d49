"""--amp auto and --channels_last auto: the path each model trains in, that train.py takes it, and that its
numbers stay within the tolerances of float32 (runtime/accelerators.choose_path; docs/speed.md)."""
import pytest
import torch

from config.flags import parse_settings
from config.resolve import build_config
from helpers import assert_cli_error, load_ckpt, run_cli, tiny_args
from models import build_model
from models.base import ModelConfig
from runtime import accelerators

CPU = torch.device("cpu")


def path_for(model_type: str, native: bool, monkeypatch, device: torch.device = CPU, **flags) -> accelerators.FastPath:
    monkeypatch.setattr(accelerators, "native_bf16", lambda d: native)
    return accelerators.choose_path(device, build_config({"model_type": model_type, **flags}))


@pytest.mark.parametrize("model_type", ["resconv", "hvae", "fcn", "unet", "conv1xn", "pixelvae"])
def test_conv_models_take_channels_last_and_bf16_where_the_device_has_bf16_units(model_type, monkeypatch):
    assert path_for(model_type, True, monkeypatch) == accelerators.FastPath(channels_last=True, amp=True)
    # no bfloat16 units: never the slow emulated bfloat16, still the faster layout
    assert path_for(model_type, False, monkeypatch) == accelerators.FastPath(channels_last=True, amp=False)


@pytest.mark.parametrize("model_type", ["fc_conv", "fc"])
def test_the_2018_models_keep_float32_and_their_layout(model_type, monkeypatch):
    assert path_for(model_type, True, monkeypatch) == accelerators.FastPath(False, False)


def test_what_is_given_wins_and_the_iwae_bound_stays_float32(monkeypatch):
    assert path_for("resconv", True, monkeypatch, amp="off", channels_last="off") == accelerators.FastPath()
    assert path_for("fc_conv", False, monkeypatch, amp="on", channels_last="on") == accelerators.FastPath(True, True)
    assert path_for("resconv", True, monkeypatch, iw_train=2) == accelerators.FastPath(True, False)
    assert path_for("resconv", False, monkeypatch, device=torch.device("mps")) == accelerators.FastPath()


def test_only_cuda_and_cpus_with_bf16_units_compute_in_bf16_natively():
    assert not accelerators.native_bf16(torch.device("mps"))


def test_a_cpu_limited_below_avx512_has_no_bf16_units(monkeypatch):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert not accelerators.native_bf16(CPU)


def test_amp_values_old_checkpoints_stored_still_read():
    settings = parse_settings({"amp": False, "channels_last": "True"}, "a checkpoint")
    assert settings == {"amp": "off", "channels_last": "on"}
    assert parse_settings({"amp": "Auto"}, "a file") == {"amp": "auto"}


def test_a_bad_amp_value_is_one_line(workdir):
    code, _, err = run_cli(["--amp", "sometimes"])
    assert_cli_error(code, err, "--amp", "sometimes")


# the first line: "cpu (<the path>; <threads>)"
@pytest.mark.parametrize("native, header", [(True, "cpu (channels-last, bfloat16 autocast;"),
                                            (False, "cpu (channels-last;")])
def test_train_py_trains_in_the_chosen_path(native, header, tiny_mnist, workdir, monkeypatch):
    monkeypatch.setattr(accelerators, "native_bf16", lambda d: native)
    used = []
    real = accelerators.autocast
    monkeypatch.setattr(accelerators, "autocast", lambda device, enabled: used.append(enabled) or real(device, enabled))
    code, out, err = run_cli(tiny_args(tiny_mnist, "--model_type", "resconv", "--tensorboard", "False"))
    assert code == 0, err
    assert header in out.splitlines()[0]
    assert used and set(used) == {native}  # every step
    ckpt = load_ckpt("weights/r_checkpoint.pth.tar")
    assert all(v.dtype == torch.float32 for v in ckpt["state_dict"].values() if v.is_floating_point())


def test_the_2018_model_header_says_float32(tiny_mnist, workdir, monkeypatch):
    monkeypatch.setattr(accelerators, "native_bf16", lambda d: True)
    code, out, err = run_cli(tiny_args(tiny_mnist, "--tensorboard", "False"))
    assert code == 0, err
    assert "cpu (float32;" in out.splitlines()[0]


def test_chosen_path_lands_near_float32(tiny_mnist, workdir):
    """Two epochs of resconv: channels-last alone is float32 arithmetic in another order (equal to
    rounding); with bfloat16 autocast the losses stay within 2% of float32's."""
    runs = {}
    for name, flags in (("f32", ["--amp", "off", "--channels_last", "off"]),
                        ("cl", ["--amp", "off", "--channels_last", "on"]),
                        ("bf16", ["--amp", "on", "--channels_last", "on"])):
        code, _, err = run_cli(tiny_args(tiny_mnist, "--model_type", "resconv", "--tensorboard", "False", *flags,
                                         epochs=2, name=name))
        assert code == 0, err
        runs[name] = load_ckpt(f"weights/{name}_checkpoint.pth.tar")["history"]
    for key in ("train_loss", "val_loss", "val_kl_loss"):
        assert runs["cl"][-1][key] == pytest.approx(runs["f32"][-1][key], rel=1e-3), key
        assert runs["bf16"][-1][key] == pytest.approx(runs["f32"][-1][key], rel=0.02), key
    assert runs["bf16"][-1]["val_loss"] < runs["bf16"][0]["train_loss"]  # it learns


@pytest.mark.parametrize("model_type, prior", [("hvae", "gaussian"), ("resconv", "vamp")])
def test_kl_terms_stay_float32_under_autocast(model_type, prior):
    torch.manual_seed(0)
    model = build_model(ModelConfig(model_type=model_type, prior=prior, vamp_components=5))
    model.use_memory_format(torch.channels_last)
    x, eps = torch.rand(8, 1, 28, 28), torch.randn(8, model.noise_size)
    kl32 = model(x, eps, with_kl=True).kl
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, eps, with_kl=True)
        logits, kl = out.logits, out.kl
    assert logits.dtype == torch.bfloat16 and kl.dtype == torch.float32
    torch.testing.assert_close(kl, kl32, rtol=0.05, atol=0.05)  # from bfloat16 posteriors, computed in float32


@pytest.mark.parametrize("extra", [["--model_type", "hvae"], ["--prior", "vamp", "--vamp_components", "5"]])
def test_hvae_and_the_vampprior_train_with_amp(extra, tiny_mnist, workdir):
    code, _, err = run_cli(tiny_args(tiny_mnist, *extra, "--amp", "on", "--tensorboard", "False"))
    assert code == 0, err
    assert all(v == v for v in load_ckpt("weights/r_checkpoint.pth.tar")["history"][0].values()
               if isinstance(v, float))
