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
    assert 0 < val["bits_per_dim"] < 16  # the ELBO at a sampled code: an under-trained model may pass 8 bits
    assert 0 < val["iwae_bits_per_dim"] < 8 + 1  # a distribution over 256 levels: near or under 8 bits
    # resuming it with another likelihood is refused
    code, _, err = run_cli(tiny_args(tiny_mnist, "--resume", "weights/r_checkpoint.pth.tar", "--model_type", "fc",
                                     "--image_loss_type", "bce", epochs=4))
    assert_cli_error(code, err, "has a logistic likelihood", "--image_loss_type bce")


def test_a_bernoulli_model_is_as_before(tiny_mnist):
    model = build_model(ModelConfig(model_type="fc_conv"))
    assert model.log_scale is None and "log_scale" not in model.state_dict() and model.likelihood == "bernoulli"


# ---------------------------------------------------------------- the pixel mixture (dmol)


def _all_levels() -> torch.Tensor:
    """Every 8-bit value of a grey pixel: (256, 1, 1, 1)."""
    return torch.arange(256, dtype=torch.float32).div(255).view(256, 1, 1, 1)


@pytest.mark.parametrize("components", [1, 3])
def test_the_pixel_mixture_is_a_distribution_over_the_256_levels(components):
    from losses.pixel_layout import params_per_component

    torch.manual_seed(0)
    params = torch.randn(1, components * params_per_component(1), 1, 1) * 2
    nll = pixel_nll("dmol", params.expand(256, -1, -1, -1), _all_levels())
    assert nll.shape == (256, 1, 1, 1)
    torch.testing.assert_close(nll.neg().exp().sum(), torch.tensor(1.0), rtol=0, atol=2e-3)


def test_one_component_is_the_discretised_logistic_with_a_location_and_scale_per_pixel():
    torch.manual_seed(1)
    loc, log_s = torch.rand(2, 1, 4, 4) * 1.4 - 0.2, torch.randn(2, 1, 4, 4) - 2  # locations also past 0 and 1
    x = torch.randint(0, 256, (2, 1, 4, 4)) / 255
    params = torch.cat([torch.zeros(2, 1, 4, 4), loc, log_s], dim=1)  # K = 1: logit, location, log-scale
    # the bin's mass by its closed form, in float64: the CDF at its edges, the edge bins taking the tails
    mu, s, xd, half = loc.double(), log_s.double().exp(), x.double(), 0.5 / 255
    upper = torch.where(xd > 1 - half, torch.ones_like(xd), torch.sigmoid((xd + half - mu) / s))
    lower = torch.where(xd < half, torch.zeros_like(xd), torch.sigmoid((xd - half - mu) / s))
    mass = upper - lower
    kept = mass > 1e-6  # deep in a tail this underflows; the likelihood then takes the density (rtol 1e-3)
    assert kept.float().mean() > 0.8
    torch.testing.assert_close(pixel_nll("dmol", params, x).double()[kept], -mass.log()[kept], rtol=1e-3, atol=1e-4)


def test_colour_channels_are_coupled_and_the_joint_sums_to_one():
    """P(r, g, b) = P(r) P(g | r) P(b | r, g): summing out b, then g, then r gives 1 (checked on a
    pixel whose mixture has one component, over a grid of r and g, exactly over b)."""
    from losses.pixel_layout import params_per_component
    from models.pixels import mean_image

    torch.manual_seed(2)
    params = torch.randn(1, 2 * params_per_component(3), 1, 1)
    r, g = torch.tensor(0.3), torch.tensor(0.6)
    b = torch.arange(256, dtype=torch.float32).div(255)
    x = torch.stack([r.expand(256), g.expand(256), b], 1).view(256, 3, 1, 1)
    joint_rg = pixel_nll("dmol", params.expand(256, -1, -1, -1), x).neg().exp().sum()  # P(r, g)
    assert 0 < joint_rg < 1
    # the coupling matters: another red moves green's and blue's locations
    x2 = x.clone()
    x2[:, 0] = 0.9
    assert not torch.allclose(pixel_nll("dmol", params.expand(256, -1, -1, -1), x),
                              pixel_nll("dmol", params.expand(256, -1, -1, -1), x2))
    img = mean_image("dmol", params, 3)
    assert img.shape == (1, 3, 1, 1) and ((0 <= img) & (img <= 1)).all()


def test_a_mixture_run_trains_evaluates_in_bits_and_resumes(tiny_mnist, workdir):
    flags = ("--model_type", "resconv", "--image_loss_type", "dmol", "--mixture_components", "2")
    code, out, err = run_cli(tiny_args(tiny_mnist, *flags, epochs=2))
    assert code == 0, err
    hist = load_ckpt("weights/r_checkpoint.pth.tar")["history"]
    assert hist[1]["train_loss"] < hist[0]["train_loss"]
    code, out, err = run_cli(["--evaluate", "--resume", "weights/r_best.pth.tar", "--iw_samples", "2",
                              "--data_root", tiny_mnist])
    assert code == 0, err
    val = json.load(open("weights/r_eval.json"))["val"]
    assert val["likelihood"] == "dmol" and 0 < val["bits_per_dim"] < 8 and 0 < val["iwae_bits_per_dim"] < 8
    assert 0 < val["ssim"] <= 1 and val["bce"] > 0
    code, out, err = run_cli(["--predict", "--resume", "weights/r_best.pth.tar", "--data_root", tiny_mnist])
    assert code == 0, err
    code, _, err = run_cli(tiny_args(tiny_mnist, "--resume", "weights/r_checkpoint.pth.tar", "--mixture_components",
                                     "3", epochs=3))
    assert_cli_error(code, err, "--mixture_components 2")
    code, _, err = run_cli(tiny_args(tiny_mnist, "--image_loss_type", "dmol", name="x"))  # fc_conv: one logit
    assert_cli_error(code, err, "--image_loss_type dmol", "fc_conv")


def _sigmoid_mixture_nll(raw: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log P(x) per image, in float64, of grey images under the mixture as it read a decoder's output before
    issue 36: locations sigmoid(output), scales exp(output) floored at exp(-7); the edge bins take the tails."""
    raw, x, half = raw.double(), x.double(), 0.5 / 255
    k = raw.shape[1] // 3
    log_pi, mu, s = raw[:, :k].log_softmax(1), raw[:, k:2 * k].sigmoid(), raw[:, 2 * k:].clamp_min(-7).exp()
    upper = torch.where(x > 1 - half, torch.ones_like(mu), torch.sigmoid((x + half - mu) / s))
    lower = torch.where(x < half, torch.zeros_like(mu), torch.sigmoid((x - half - mu) / s))
    return -torch.logsumexp(log_pi + (upper - lower).log(), dim=1).flatten(1).sum(1)


def test_a_dmol_checkpoint_stored_before_issue_36_decodes_and_scores_with_its_sigmoid_mapping(tiny_mnist, workdir,
                                                                                              monkeypatch):
    import models.pixelvae
    from runtime.checkpoints import load_model

    flags = ("--model_type", "pixelvae", "--image_loss_type", "dmol", "--pixel_layers", "1", "--pixel_channels", "8",
             "--mixture_components", "2")
    code, _, err = run_cli(tiny_args(tiny_mnist, *flags))
    assert code == 0, err
    ckpt = load_ckpt("weights/r_checkpoint.pth.tar")
    assert ckpt["model_config"]["mixture_location"] == "unbounded"  # what a checkpoint of this version says
    del ckpt["model_config"]["mixture_location"]  # ... and what one written before issue 36 did not
    torch.save(ckpt, "weights/legacy.pth.tar")
    legacy, new = load_model("weights/legacy.pth.tar")[0].eval(), load_model("weights/r_checkpoint.pth.tar")[0].eval()
    assert (legacy.mixture_location, new.mixture_location) == ("sigmoid", "unbounded")

    x = torch.randint(0, 256, (4, 1, 28, 28), generator=torch.Generator().manual_seed(0)) / 255
    with torch.no_grad():
        mu = new.posterior(x)[0]
        raw = new.decode_given(mu, None, x)  # the same weights: the decoder's own output, read as it is
        want = _sigmoid_mixture_nll(raw, x)
        got = pixel_nll("dmol", legacy(x).logits, x).flatten(1).sum(1).double()
        torch.testing.assert_close(got, want, rtol=1e-5, atol=0)  # scored as it was trained
        assert ((pixel_nll("dmol", new(x).logits, x).flatten(1).sum(1) - got).abs() > 10).all()  # the mapping matters
        k = raw.shape[1] // 3  # its mean image: the components' sigmoid locations, weighted
        mean = (raw[:, :k].softmax(1) * raw[:, k:2 * k].sigmoid()).sum(1, keepdim=True)
        torch.testing.assert_close(legacy.image_of(legacy(x).logits), mean)

    # its pictures are drawn from the sigmoid locations: the drawing loop is handed, at each pixel, the mapped
    # output of the decoder for the pixels drawn before it
    handed = []
    draw = models.pixelvae.sample_pixels
    monkeypatch.setattr(models.pixelvae, "sample_pixels", lambda *a: handed.append(a[1]) or draw(*a))
    pictures = legacy.decode(mu[:2])
    with torch.no_grad():
        raw = new.decode_given(mu[:2], None, pictures)
    handed = torch.stack(handed, -1).view(2, -1, 28, 28)
    torch.testing.assert_close(handed[:, k:2 * k], raw[:, k:2 * k].sigmoid())
    torch.testing.assert_close(handed[:, 2 * k:], raw[:, 2 * k:].clamp_min(-7))
