"""--prior vamp: the VampPrior's density, its KL, the bounds and samples that use it, and runs."""
import json
import math
import os

import pytest
import torch

from evaluation.likelihood import iwae_nll
from helpers import assert_cli_error, load_ckpt, make_objective, run_cli, tiny_args
from losses.iwae import iw_terms
from models import ModelConfig, build_model
from models.priors import mixture_log_prob


def tiny_vamp(latent: int = 2, components: int = 3, model_type: str = "fc"):
    torch.manual_seed(0)
    return build_model(ModelConfig(model_type=model_type, latent_space_size=latent, image_size=4, prior="vamp",
                                   vamp_components=components))


def test_the_log_density_is_the_brute_force_mixture():
    model = tiny_vamp().eval()
    means, logvars = model.pseudo_posterior()
    assert means.shape == logvars.shape == (3, 2)
    z = torch.randn(5, 2, dtype=torch.float64)
    # brute force: average the K component densities themselves (not their logs), in float64
    density = torch.zeros(5, dtype=torch.float64)
    for m, lv in zip(means.double(), logvars.double()):
        var = lv.exp()
        density += torch.exp(-0.5 * ((z - m) ** 2 / var).sum(1)) / torch.sqrt((2 * math.pi * var).prod())
    expected = torch.log(density / 3)
    assert torch.allclose(model.log_prior(z.float()).double(), expected, atol=1e-5)
    assert torch.allclose(mixture_log_prob(z, means.double(), logvars.double()), expected, atol=1e-10)


def test_the_components_are_the_encoders_posteriors_at_the_pseudo_inputs():
    model = tiny_vamp().eval()
    means, logvars = model.pseudo_posterior()
    mu, logvar = model.posterior(torch.sigmoid(model.pseudo_inputs))
    assert torch.equal(means, mu) and torch.equal(logvars, logvar)
    assert model.pseudo_inputs.requires_grad and "pseudo_inputs" in model.state_dict()


def test_pseudo_inputs_leave_batch_norm_statistics_alone():
    torch.manual_seed(0)
    model = build_model(ModelConfig(model_type="resconv", image_size=8, prior="vamp", vamp_components=4)).train()
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    model.pseudo_posterior()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert model.training and all(m.training for m in model.modules())
    model(torch.rand(4, 1, 8, 8), with_kl=True)  # the data's batch still moves them
    assert not all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_the_kl_is_a_one_sample_estimate_whose_mean_is_the_kl():
    """E_q[log q(z|x) - log p(z)] = KL(q || p): many draws at one image match a grid integral."""
    model = tiny_vamp(latent=1, components=2).eval()
    x = torch.rand(1, 1, 4, 4)
    mu, logvar = model.posterior(x)
    eps = torch.randn(200_000, 1, generator=torch.Generator().manual_seed(0))
    estimate = model.kl_terms(mu.expand(len(eps), 1), logvar.expand(len(eps), 1), eps).mean()
    z = torch.linspace(-12, 12, 48001, dtype=torch.float64)[:, None]
    log_q = -0.5 * ((z - mu.double()) ** 2 / logvar.double().exp() + logvar.double() + math.log(2 * math.pi))
    q = log_q.exp()[:, 0]
    integral = (q * (log_q[:, 0] - model.log_prior(z.float()).double())).sum() * (z[1, 0] - z[0, 0])
    assert abs(estimate.item() - integral.item()) < 0.01 + 0.01 * abs(integral.item())


def test_iwae_is_an_upper_bound_that_tightens_to_the_exact_likelihood():
    """With one latent dimension -log p(x) = -log int p(x|z) p(z) dz is a grid integral."""
    model = tiny_vamp(latent=1, components=3).eval()
    x = torch.rand(3, 1, 4, 4)
    z = torch.linspace(-15, 15, 30001)[:, None]
    with torch.no_grad():
        logits = model.decode_logits(z)
        log_px_z = -torch.nn.functional.binary_cross_entropy_with_logits(
            logits[:, None].expand(-1, 3, -1, -1, -1), x.expand(len(z), -1, -1, -1, -1), reduction="none"
        ).flatten(2).sum(-1).double()  # (grid, images)
        log_joint = log_px_z + model.log_prior(z).double()[:, None]
        exact = -(torch.logsumexp(log_joint, 0) + math.log(z[1, 0] - z[0, 0]))
        g = torch.Generator().manual_seed(0)
        k1, k1000 = iwae_nll(model, x, 1, generator=g).double(), iwae_nll(model, x, 5000, generator=g).double()
    assert (k1000 >= exact - 0.02).all(), (k1000, exact)
    assert (k1000 - exact).abs().max() < 0.3, (k1000, exact)
    assert (k1 >= k1000 - 1).all()


def test_one_sample_iwae_training_is_the_elbo_with_its_sampled_kl():
    """K = 1: the IWAE loss is -log w of one code, which is BCE + (log q - log p) at that code:
    the same value and gradients as the ELBO the VampPrior trains on, for the same noise."""
    model, x = tiny_vamp().train(), torch.rand(8, 1, 4, 4)
    results = []
    for objective in ("iwae", "elbo"):
        model.zero_grad()
        torch.manual_seed(3)
        if objective == "iwae":
            loss = iw_terms(model, x, None, 1)[0]["loss"]
        else:
            out = model(x, with_kl=True)
            loss = make_objective().loss(out.logits, x, out.mu, out.logvar, out.kl.sum(1).mean())["loss"]
        loss.backward()
        results.append((loss.detach(), torch.cat([p.grad.flatten() for p in model.parameters()])))
    (l_iw, g_iw), (l_elbo, g_elbo) = results
    assert torch.allclose(l_iw, l_elbo, atol=1e-4)
    assert torch.allclose(g_iw, g_elbo, atol=1e-4, rtol=1e-3)


def test_prior_samples_come_from_the_mixture():
    model = tiny_vamp(components=2).eval()
    means, logvars = model.pseudo_posterior()
    z = model.sample_prior(40_000, torch.Generator().manual_seed(0))
    assert torch.allclose(z.mean(0), means.mean(0), atol=0.03)
    second = (logvars.exp() + means ** 2).mean(0)
    assert torch.allclose((z ** 2).mean(0), second, atol=0.05)


def test_a_run_trains_evaluates_and_resumes_exactly(tiny_mnist, workdir):
    flags = ("--model_type", "resconv", "--prior", "vamp", "--vamp_components", "8")
    code, out, err = run_cli(tiny_args(tiny_mnist, *flags, "--tensorboard_images", "True", epochs=2))
    assert code == 0, err
    straight = load_ckpt("weights/r_checkpoint.pth.tar")
    assert straight["model_config"]["prior"] == "vamp"
    assert straight["state_dict"]["pseudo_inputs"].shape == (8, 1, 28, 28)
    h = straight["history"]
    assert h[1]["train_loss"] < h[0]["train_loss"]
    assert run_cli(tiny_args(tiny_mnist, *flags, epochs=1, name="p"))[0] == 0
    assert run_cli(tiny_args(tiny_mnist, *flags, "--resume", "weights/p_checkpoint.pth.tar", epochs=2,
                             name="p"))[0] == 0
    resumed = load_ckpt("weights/p_checkpoint.pth.tar")
    assert all(torch.equal(resumed["state_dict"][k], v) for k, v in straight["state_dict"].items())
    # evaluation: the family named, a KL estimate (deterministic), the IWAE bound under the mixture
    code, out, err = run_cli(tiny_args(tiny_mnist, *flags, "--resume", "weights/r_best.pth.tar", "--evaluate",
                                       "--iw_samples", "3"))
    assert code == 0, err
    assert "VampPrior of 8 pseudo-inputs" in out
    report = json.load(open("weights/r_eval.json"))
    assert report["val"]["family"] == "resconv, VampPrior of 8 pseudo-inputs"
    assert report["val"]["iwae_nll"] > 0 and report["val"]["kl"] > 0
    # --predict draws its samples from the mixture
    code, out, err = run_cli(tiny_args(tiny_mnist, *flags, "--resume", "weights/r_best.pth.tar", "--predict"))
    assert code == 0, err
    assert os.path.getsize("results/r/samples.png") > 0
    # the prior is part of the model: a checkpoint is not loaded under another one
    code, _, err = run_cli(tiny_args(tiny_mnist, "--model_type", "resconv", "--prior", "gaussian", "--resume",
                                     "weights/r_best.pth.tar", "--evaluate"))
    assert_cli_error(code, err, "--prior vamp")


@pytest.mark.parametrize("extra, needle", [
    (["--conditional", "True"], "--prior vamp does not combine with --conditional True"),
    (["--model_type", "unet"], "--model_type unet supports neither"),
    (["--free_bits", "0.5"], "--prior vamp does not combine with --free_bits"),
])
def test_what_the_vampprior_does_not_combine_with_is_one_line(extra, needle, workdir):
    code, _, err = run_cli(["--prior", "vamp", *extra])
    assert_cli_error(code, err, needle)
