"""Pixel likelihoods for 8-bit images: the discretised logistic and the Gaussian with a learnt scale."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

from evaluation.likelihood import iwae_nll
from helpers import assert_cli_error, load_ckpt, run_cli, tiny_args
from losses.likelihoods import discretized_logistic_nll, gaussian_nll, pixel_nll
from models import ModelConfig, build_model


@pytest.mark.parametrize("log_scale", [-6.0, -3.0, -1.0, 1.0])
def test_discretised_logistic_is_a_distribution_over_the_256_levels(log_scale):
    torch.manual_seed(0)
    logits = torch.randn(5, 1, 1, 1) * 3  # locations from near 0 to near 1
    levels = torch.arange(256, dtype=torch.float32).div(255).view(1, 256, 1, 1)
    nll = discretized_logistic_nll(logits.expand(5, 256, 1, 1).reshape(5 * 256, 1, 1, 1),
                                   torch.tensor([log_scale]), levels.expand(5, 256, 1, 1).reshape(5 * 256, 1, 1, 1))
    total = nll.view(5, 256).neg().exp().sum(1)
    torch.testing.assert_close(total, torch.ones(5), rtol=0, atol=2e-3)
    if log_scale <= -6:  # a narrow logistic: the most likely level is the one nearest the location
        best = nll.view(5, 256).argmin(1)  # (a wide one puts most mass in the edge bins, its tails)
        assert ((best.float() / 255 - torch.sigmoid(logits.flatten())).abs() <= 1 / 255 + 1e-6).all()


def test_gaussian_and_bernoulli_match_their_closed_forms():
    logits, x = torch.randn(3, 2, 4, 4), torch.rand(3, 2, 4, 4)
    log_scale = torch.tensor([-2.0, -1.0])
    normal = torch.distributions.Normal(torch.sigmoid(logits), log_scale.exp().view(2, 1, 1))
    torch.testing.assert_close(gaussian_nll(logits, log_scale, x), -normal.log_prob(x))
    torch.testing.assert_close(pixel_nll("bernoulli", logits, x),
                               F.binary_cross_entropy_with_logits(logits, x, reduction="none"))
    with pytest.raises(ValueError, match="needs the model's log_scale"):
        pixel_nll("logistic", logits, x)


def test_iwae_with_one_sample_is_the_sampled_negative_elbo_of_the_likelihood():
    torch.manual_seed(0)
    model = build_model(ModelConfig(model_type="fc", likelihood="logistic", latent_space_size=4)).eval()
    x = torch.randint(0, 256, (6, 1, 28, 28)).float() / 255
    got = iwae_nll(model, x, 1, generator=torch.Generator().manual_seed(3))
    eps = torch.randn((6, 4), generator=torch.Generator().manual_seed(3))
    mu, logvar = model.posterior(x)
    z = mu + eps * (0.5 * logvar).exp()
    nll = pixel_nll("logistic", model.decode_logits(z), x, model.log_scale).flatten(1).sum(1)
    log_q = torch.distributions.Normal(mu, (0.5 * logvar).exp()).log_prob(z).sum(1)
    log_p = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(1)
    torch.testing.assert_close(got, (nll + log_q - log_p).detach(), rtol=1e-5, atol=1e-3)


def test_a_logistic_run_learns_its_scale_and_reports_bits_per_dim(tiny_mnist, workdir):
    code, _, err = run_cli(tiny_args(tiny_mnist, "--model_type", "fc", "--image_loss_type", "logistic", epochs=3))
    assert code == 0, err
    ckpt = load_ckpt("weights/r_checkpoint.pth.tar")
    assert ckpt["model_config"]["likelihood"] == "logistic"
    assert ckpt["state_dict"]["log_scale"].item() != pytest.approx(math.log(0.1))  # it trained
    losses = [h["train_loss"] for h in ckpt["history"]]
    assert losses[-1] < losses[0]
    code, out, err = run_cli(tiny_args(tiny_mnist, "--resume", "weights/r_best.pth.tar", "--evaluate", "True",
                                       "--iw_samples", "4", "--model_type", "fc"))
    assert code == 0, err
    val = json.load(open("weights/r_eval.json"))["val"]
    assert val["likelihood"] == "logistic" and "bits/dim" in out
    assert val["bits_per_dim"] == pytest.approx(val["nll_kl"] / (784 * math.log(2)))
    assert 0 < val["iwae_bits_per_dim"] < 8 + 1  # a distribution over 256 levels: near or under 8 bits
    # resuming it with another likelihood is refused
    code, _, err = run_cli(tiny_args(tiny_mnist, "--resume", "weights/r_checkpoint.pth.tar", "--model_type", "fc",
                                     "--image_loss_type", "bce", epochs=4))
    assert_cli_error(code, err, "has a logistic likelihood", "--image_loss_type bce")


def test_a_bernoulli_model_is_as_before(tiny_mnist):
    model = build_model(ModelConfig(model_type="fc_conv"))
    assert model.log_scale is None and "log_scale" not in model.state_dict() and model.likelihood == "bernoulli"
