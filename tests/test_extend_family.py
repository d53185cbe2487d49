"""A model family is one file: a family defined outside the tree (tests/extensions/tiny_family.py), once
registered, is a --model_type with its own flag in --help, trains, resumes, evaluates and predicts, and its
checkpoint rebuilds its model with no flags; nothing else in the project names it. And a checkpoint of the
base commit before families declared themselves (one flat model_config of every family's fields) still
rebuilds the same model."""
from __future__ import annotations

import glob
import json
import os

import pytest
import torch
import yaml
from extensions import tiny_family

from helpers import ROOT, assert_cli_error, load_ckpt, run_cli, tiny_args
from models import MODELS, config_from_dict, rebuild_model, register


@pytest.fixture
def tiny():
    """The tiny family registered for one test, then taken out again (the other tests see the tree's own)."""
    register(tiny_family.FAMILY)
    yield tiny_family.FAMILY
    del MODELS["tiny"]


def test_the_tree_never_names_the_tiny_family():
    product = [p for p in glob.glob(os.path.join(ROOT, "**", "*.py"), recursive=True)
               if not os.path.relpath(p, ROOT).startswith(("tests", ".venv"))]
    assert product and not [p for p in product if "tiny_hidden" in open(p, encoding="utf-8").read()]


def test_a_registered_family_is_a_model_type_with_its_own_flag(tiny, workdir):
    code, out, _ = run_cli(["--help"])
    text = " ".join(out.split())  # --help wraps its lines
    assert code == 0 and "--tiny_hidden TINY_HIDDEN tiny: hidden units" in text and "tiny: one hidden layer" in text
    code, _, err = run_cli(tiny_args("data", "--model_type", "tiny", "--tiny_hidden", "0"))
    assert_cli_error(code, err, "--tiny_hidden", "[1, 1024]")
    # it takes any image shape, and declares no faster path than float32
    assert tiny.any_shape and not (tiny.channels_last_faster or tiny.bf16_faster)


def test_a_registered_family_trains_resumes_evaluates_and_predicts(tiny, tiny_mnist, workdir):
    argv = tiny_args(tiny_mnist, "--model_type", "tiny", "--tiny_hidden", "8", epochs=1, name="t")
    assert run_cli(argv)[0] == 0
    ckpt = load_ckpt("weights/t_checkpoint.pth.tar")
    assert ckpt["model_config"]["tiny_hidden"] == 8 and ckpt["args"]["tiny_hidden"] == 8
    config = yaml.safe_load(open("weights/t_config.yaml"))
    assert config["model"]["model_type"] == "tiny" and config["model"]["tiny_hidden"] == 8

    # resumed with no model flags: the checkpoint's family and setting; a contradicting setting is refused
    code, _, err = run_cli(tiny_args(tiny_mnist, "--resume", "weights/t_checkpoint.pth.tar", "--tiny_hidden", "9",
                                     epochs=2, name="t"))
    assert_cli_error(code, err, "--tiny_hidden 8")
    code, _, err = run_cli(tiny_args(tiny_mnist, "--resume", "weights/t_checkpoint.pth.tar", epochs=2, name="t"))
    assert code == 0, err
    resumed = load_ckpt("weights/t_checkpoint.pth.tar")
    assert resumed["epoch"] == 2 and len(resumed["history"]) == 2
    assert resumed["model_config"] == ckpt["model_config"]

    code, _, err = run_cli(["--evaluate", "--resume", "weights/t_best.pth.tar", "--no_cuda", "True"])
    assert code == 0, err
    scores = json.load(open("weights/t_eval.json"))
    assert "tiny" in json.dumps(scores)
    code, _, err = run_cli(["--predict", "--resume", "weights/t_best.pth.tar", "--no_cuda", "True"])
    assert code == 0, err
    assert glob.glob("results/t/*.png")

    # the checkpoint alone rebuilds the model: its family, its setting, its weights
    model = rebuild_model(resumed["model_config"])
    assert isinstance(model, tiny_family.TinyVAE) and model.enc.out_features == 8
    model.load_state_dict(resumed["state_dict"])


# The model_config of an hvae checkpoint written by b874c3c, the commit before families declared themselves:
# every family's fields in one flat dict.
FLAT_B874C3C = {"model_type": "hvae", "latent_space_size": 6, "model_multiplier": 1, "split_filter": 2,
                "image_channels": 1, "image_size": 16, "input_mean": 0.25, "input_std": 0.5, "conditional": False,
                "num_classes": 10, "unet_skips": "all", "conv_n": 3, "likelihood": "logistic", "prior": "vamp",
                "vamp_components": 7, "hvae_channels": 3, "mixture_components": 5, "pixel_layers": 3,
                "pixel_channels": 32}


def test_a_flat_model_config_of_the_base_commit_rebuilds_the_same_model():
    cfg = config_from_dict(FLAT_B874C3C)
    assert type(cfg) is MODELS["hvae"].config and cfg.hvae_channels == 3 and not hasattr(cfg, "pixel_layers")
    torch.manual_seed(0)
    model = rebuild_model(FLAT_B874C3C)
    assert (model.input_mean, model.prior, model.likelihood) == (0.25, "vamp", "logistic")
    assert model.image_shape == (1, 16, 16)
    # what b874c3c's build_model(ModelConfig(**FLAT_B874C3C)) made after torch.manual_seed(0), measured there:
    # its parameter count, state dict entries and the sum of its initial weights (same draws, same order)
    params = list(model.parameters())
    assert (sum(p.numel() for p in params), len(model.state_dict())) == (622506, 82)
    assert float(sum(p.detach().double().sum() for p in params)) == pytest.approx(268.93169978236233, abs=1e-9)
    with pytest.raises(ValueError, match="unknown keys"):
        config_from_dict({**FLAT_B874C3C, "transformer_layers": 2})
    with pytest.raises(ValueError, match="unknown model type"):
        config_from_dict({**FLAT_B874C3C, "model_type": "transformer"})
