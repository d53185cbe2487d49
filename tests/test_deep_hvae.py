"""--model_type deep_hvae (--preset deep): the deep hierarchical VAE's shapes, its KL per resolution, its
bounds, and a run that trains, resumes, evaluates and predicts."""
import dataclasses
import json
import math

import pytest
import torch

from helpers import load_ckpt, make_objective, run_cli, tiny_args
from losses import Batch
from losses.iwae import iw_terms
from models import ModelConfig, build_model


def deep(image_size=16, channels=1, **kw):
    torch.manual_seed(0)
    return build_model(ModelConfig(model_type="deep_hvae", image_size=image_size, image_channels=channels, **kw))


@pytest.mark.parametrize("size, channels, levels", [(16, 1, ("kl_top", "kl_4", "kl_8")),
                                                     (32, 3, ("kl_top", "kl_8", "kl_16")),
                                                     (28, 1, ("kl_top", "kl_7", "kl_14"))])
def test_a_latent_map_at_every_resolution_below_the_images(size, channels, levels):
    model = deep(size, channels, deep_groups=2, deep_latent_channels=3).train()
    x = torch.rand(4, channels, size, size)
    out = model(x, with_kl=True)
    assert out.logits.shape == x.shape and out.mu.shape == out.z.shape == (4, 10)
    assert model.level_names == levels and out.kl.shape == (4, len(levels))
    assert model.noise_size == 10 + sum(2 * 3 * int(level[3:]) ** 2 for level in levels[1:])
    # every posterior a correction of its prior, zero at initialisation: the lower levels' KL starts at 0
    assert torch.equal(out.kl[:, 1:], torch.zeros(4, len(levels) - 1))
    assert model.decode(model.sample_prior(3, torch.Generator().manual_seed(0))).shape == (3, channels, size, size)


def _trained_away_from_initialisation(model):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def test_kl_per_level_is_non_negative_sums_to_the_total_and_the_iwae_bounds_the_elbo():
    model = _trained_away_from_initialisation(deep()).train()
    x = torch.rand(6, 1, 16, 16)
    kls = model(x, with_kl=True).kl
    assert (kls >= 0).all() and (kls[:, 1:].mean(0) > 0.01).all()
    terms, _ = make_objective().step(model, model, Batch(x, None, None), 1.0)
    assert torch.allclose(terms["kl_loss"], terms["kl_top"] + terms["kl_4"] + terms["kl_8"])
    # closed-form KL of the lower levels against log q - log p of the same draws (importance_terms), averaged
    model.eval()
    with torch.no_grad():
        mu, logvar = model.posterior(x[:1])
        eps = torch.randn(4000, 1, model.noise_size, generator=torch.Generator().manual_seed(1))
        eps[..., :10] = 0
        ratios, logits = model.importance_terms(x[:1], mu, logvar, eps)
    assert logits.shape == (4000, 1, 1, 16, 16) and ratios.shape == (4000, 1, 3)
    torch.manual_seed(3)
    iw = iw_terms(model.train(), x, None, 40)[0]
    assert iw["loss"] < iw["elbo"]


def test_a_run_trains_resumes_exactly_evaluates_and_predicts(tiny_mnist, workdir):
    flags = ("--preset", "deep", "--image_size", "16", "--lognumber")
    assert run_cli(tiny_args(tiny_mnist, *flags, "s", epochs=2))[0] == 0
    straight = load_ckpt("weights/s_checkpoint.pth.tar")
    h = straight["history"]
    assert h[1]["train_loss"] < h[0]["train_loss"]
    for row in h:
        levels = row["val_kl_top"] + row["val_kl_4"] + row["val_kl_8"]
        assert abs(levels - row["val_kl_loss"]) < 1e-3 * max(1.0, row["val_kl_loss"])
    assert run_cli(tiny_args(tiny_mnist, *flags, "p", epochs=1))[0] == 0
    assert run_cli(tiny_args(tiny_mnist, *flags, "p", "--resume", "weights/p_checkpoint.pth.tar", epochs=2))[0] == 0
    resumed = load_ckpt("weights/p_checkpoint.pth.tar")
    assert all(torch.equal(resumed["state_dict"][k], v) for k, v in straight["state_dict"].items())
    code, out, err = run_cli(["--resume", "weights/s_best.pth.tar", "--evaluate", "--iw_samples", "2",
                              "--data_root", tiny_mnist, "--no_cuda", "True"])
    assert code == 0, err
    val = json.load(open("weights/s_eval.json"))["val"]
    assert val["family"].startswith("deep_hvae") and val["bits_per_dim"] > 0 and val["iwae_nll"] > 0
    # benchmarks/elbo_paths.py puts the figure at the means beside the sampled one and the IWAE bound
    from benchmarks import elbo_paths
    from helpers import run_module_cli

    code, out, err = run_module_cli(elbo_paths, ["--checkpoints", "weights/s_best.pth.tar", "--data_root", tiny_mnist,
                                                 "--images", "30", "--iw_samples", "3", "--out", "paths"])
    assert code == 0, err
    [row] = json.load(open("paths.json"))["rows"]
    assert row["family"] == "deep_hvae" and row["images"] == 30 and row["iwae"] > 0
    assert row["mean_path"] != row["sampled"] != row["sampled_seed1"] and "| `" in open("paths.md").read()
    code, out, err = run_cli(["--resume", "weights/s_best.pth.tar", "--predict", "--data_root", tiny_mnist,
                              "--no_cuda", "True"])
    assert code == 0, err


def test_bits_per_dim_are_the_elbo_at_a_sampled_code_not_at_every_levels_mean():
    """--evaluate's code length is what bits-back coding achieves: the ELBO at a code drawn from q (one draw of
    seed 0, every level), which the IWAE bound tightens; decoding every level's mean (NLL+KL) is not a bound."""
    from datasets import Split
    from evaluation.likelihood import iwae_evaluate
    from evaluation.metrics import evaluate
    from losses import bits_per_dim

    model = _trained_away_from_initialisation(deep(likelihood="dmol")).eval()
    data = Split(torch.rand(40, 1, 16, 16).mul(255).round().div(255), torch.zeros(40, dtype=torch.int64))
    cpu = torch.device("cpu")
    r = evaluate(model, data, cpu, batch_size=7)
    assert r["bits_per_dim"] == pytest.approx(bits_per_dim(iwae_evaluate(model, data, cpu, 1, 500, seed=0), 256))
    assert evaluate(model, data, cpu, batch_size=40)["bits_per_dim"] == r["bits_per_dim"]  # one figure per split
    assert bits_per_dim(iwae_evaluate(model, data, cpu, 50, seed=1), 256) < r["bits_per_dim"]
    assert r["nll_kl"] != pytest.approx(r["bits_per_dim"] * 256 * math.log(2), rel=1e-4)


def test_the_decoder_doubles_by_resize_and_a_checkpoint_before_the_fix_keeps_its_transposed_convs():
    from models import config_from_dict

    new = deep(deep_upsample="resize")
    assert all(isinstance(up[0], torch.nn.Upsample) for up in new.ups)
    stored = dataclasses.asdict(ModelConfig(model_type="deep_hvae", image_size=16))
    assert stored.pop("deep_upsample") == "resize"  # what a checkpoint written before the fix holds
    old = build_model(config_from_dict(stored))
    assert all(isinstance(up[0], torch.nn.ConvTranspose2d) for up in old.ups)
    assert config_from_dict({**stored, "deep_upsample": "resize"}).deep_upsample == "resize"
    x = torch.rand(2, 1, 16, 16)
    assert new.eval()(x).logits.shape == old.eval()(x).logits.shape == x.shape
