"""--model_type hvae: the two-level hierarchical VAE's shapes, KL per level, bounds and runs."""
import json

import pytest
import torch

from helpers import assert_cli_error, load_ckpt, make_objective, run_cli, tiny_args
from losses import Batch
from losses.iwae import iw_terms
from models import ModelConfig, build_model


def tiny_hvae(**kw):
    torch.manual_seed(0)
    model = build_model(ModelConfig(model_type="hvae", image_size=16, **kw))
    # away from the initialisation, where q(z1|x,z) = p(z1|z) and the lower KL is exactly 0
    with torch.no_grad():
        for p in (*model.prior_map.parameters(), *model.posterior_map.parameters()):
            p.normal_(0, 0.1)
    return model


def test_shapes_and_the_code_it_embeds():
    model = tiny_hvae(hvae_channels=3).train()
    x = torch.rand(5, 1, 16, 16)
    out = model(x, with_kl=True)
    assert out.logits.shape == x.shape and out.mu.shape == out.logvar.shape == out.z.shape == (5, 10)
    assert out.kl.shape == (5, 2)
    assert model.noise_size == 10 + 3 * 4 * 4  # 16 -> 4x4 lower map
    assert model.posterior(x)[0].shape == (5, 10)  # the top code: what embeddings use
    assert model.decode(model.sample_prior(3, torch.Generator().manual_seed(0))).shape == (3, 1, 16, 16)
    assert model.family == "hvae, N(0, I) prior; latent levels kl_top, kl_map"


def test_kl_per_level_is_non_negative_sums_to_the_total_and_matches_monte_carlo():
    model = tiny_hvae().train()
    x = torch.rand(6, 1, 16, 16)
    kls = model(x, with_kl=True).kl
    assert (kls >= 0).all() and kls[:, 1].mean() > 0.01
    terms, _ = make_objective().step(model, model, Batch(x, None, None), 1.0)  # the ELBO logs each level
    assert torch.allclose(terms["kl_loss"], terms["kl_top"] + terms["kl_map"])
    # the lower level's closed form against the mean of log q(z1) - log p(z1) over many z1 at the
    # top code's mean (eval mode: what forward decodes; the top code's noise is 0)
    model.eval()
    n = 20_000
    eps = torch.randn(n, model.noise_size, generator=torch.Generator().manual_seed(1))
    eps[:, :10] = 0
    with torch.no_grad():
        mu1, logvar1 = model.posterior(x[:1])
        ratios, _ = model.importance_terms(x[:1], mu1, logvar1, eps[:, None])
        kls1 = model(x[:1], with_kl=True).kl
        _, top_ratio = model.code_log_ratio(mu1, logvar1, eps[:1, :10])
    assert torch.allclose(ratios[:, 0, 0], top_ratio.expand(n))  # the top level's, for every z1
    lower_mc = -ratios[:, 0, 1].mean()
    assert abs(lower_mc - kls1[0, 1]) < 0.05 * kls1[0, 1] + 0.02, (lower_mc, kls1)


def test_iwae_with_one_sample_is_the_elbo_in_expectation_and_more_samples_bound_it_below():
    model = tiny_hvae().train()
    x = torch.rand(2, 1, 16, 16).repeat(4000, 1, 1, 1)
    torch.manual_seed(2)
    one = iw_terms(model, x, None, 1)[0]["loss"].item()
    elbo = make_objective().step(model, model, Batch(x, None, None), 1.0)[0]["loss"].item()
    assert abs(one - elbo) < 0.5, (one, elbo)
    torch.manual_seed(3)
    terms, _ = iw_terms(model, x[:8], None, 50)
    assert terms["loss"] < terms["elbo"]
    # the samples' KL, level by level, sums to the total (the run test: they reach the history)
    assert torch.allclose(terms["kl_top"] + terms["kl_map"], terms["kl_loss"])


def test_a_conditional_run_with_the_vampprior_refused_and_the_cvae_trained(tiny_mnist, workdir):
    code, _, err = run_cli(["--model_type", "hvae", "--prior", "vamp", "--conditional", "True"])
    assert_cli_error(code, err, "--prior vamp does not combine with --conditional True")
    code, out, err = run_cli(tiny_args(tiny_mnist, "--model_type", "hvae", "--conditional", "True"))
    assert code == 0, err
    assert load_ckpt("weights/r_checkpoint.pth.tar")["model_config"]["conditional"] is True


def test_a_run_logs_kl_per_level_evaluates_and_resumes_exactly(tiny_mnist, workdir):
    flags = ("--model_type", "hvae", "--prior", "vamp", "--vamp_components", "4", "--iw_train", "2")
    code, out, err = run_cli(tiny_args(tiny_mnist, "--model_type", "hvae", "--tensorboard_images", "True", epochs=2))
    assert code == 0, err
    from tools.tb_reader import read_run

    steps, epochs = read_run("tb_logs/r"), read_run("tb_logs/r/epoch")
    assert "train_kl_top" in steps and "train_kl_map" in steps
    assert len(epochs["eph_val_kl_map"]) == 2 and len(epochs["eph_tr_kl_top"]) == 2
    h = load_ckpt("weights/r_checkpoint.pth.tar")["history"]
    for row in h:
        assert row["val_kl_top"] >= 0 and row["val_kl_map"] >= 0
        assert abs(row["val_kl_top"] + row["val_kl_map"] - row["val_kl_loss"]) < 1e-3
        assert abs(row["train_kl_top"] + row["train_kl_map"] - row["train_kl_loss"]) < 1e-3
    assert h[1]["train_loss"] < h[0]["train_loss"]
    # the combination: hierarchical, VampPrior on the top code, IWAE training; resumed exactly
    assert run_cli(tiny_args(tiny_mnist, *flags, epochs=2, name="s"))[0] == 0
    straight = load_ckpt("weights/s_checkpoint.pth.tar")
    for row in straight["history"]:  # with --iw_train the KL per level is the samples' estimate
        assert abs(row["train_kl_top"] + row["train_kl_map"] - row["train_kl_loss"]) < 1e-3
    assert run_cli(tiny_args(tiny_mnist, *flags, epochs=1, name="p"))[0] == 0
    assert run_cli(tiny_args(tiny_mnist, *flags, "--resume", "weights/p_checkpoint.pth.tar", epochs=2,
                             name="p"))[0] == 0
    resumed = load_ckpt("weights/p_checkpoint.pth.tar")
    assert all(torch.equal(resumed["state_dict"][k], v) for k, v in straight["state_dict"].items())
    code, out, err = run_cli(tiny_args(tiny_mnist, "--model_type", "hvae", "--resume", "weights/r_best.pth.tar",
                                       "--evaluate", "--iw_samples", "2"))
    assert code == 0, err
    val = json.load(open("weights/r_eval.json"))["val"]
    assert val["family"].startswith("hvae") and val["kl_top"] >= 0 and val["kl_map"] >= 0
    assert abs(val["kl_top"] + val["kl_map"] - val["kl"]) < 1e-3 and val["iwae_nll"] > 0


@pytest.mark.parametrize("extra, needle", [(["--free_bits", "0.5"], "--free_bits"), (["--compile", "True"],
                                                                                      "--compile")])
def test_what_the_hierarchical_model_does_not_combine_with_is_one_line(extra, needle, workdir):
    code, _, err = run_cli(["--model_type", "hvae", *extra])
    assert_cli_error(code, err, f"--model_type hvae does not combine with {needle}")


def test_torchrun_trains_it_and_refuses_the_vampprior(tiny_mnist, workdir):
    from test_distributed import torchrun

    argv = ["--dataset_type", "mnist", "--data_root", tiny_mnist, "--batch-size", "130", "--no_cuda", "True",
            "--epochs", "1", "--model_type", "hvae", "--tensorboard_images", "False"]
    proc = torchrun(argv + ["--lognumber", "two"], workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = load_ckpt("weights/two_checkpoint.pth.tar")["history"][0]
    assert abs(row["train_kl_top"] + row["train_kl_map"] - row["train_kl_loss"]) < 1e-3
    proc = torchrun(argv + ["--prior", "vamp", "--lognumber", "vamp"], workdir)
    ours = [line for line in proc.stderr.splitlines() if line.startswith("train.py: error:")]
    assert proc.returncode != 0 and ours and all("--prior vamp does not combine with torchrun" in x for x in ours)
