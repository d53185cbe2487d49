"""--model_type pixelvae: a decoder that sees the pixels before each one, and only those; drawing
pixel by pixel (with caching) gives what the decoder's teacher-forced output says; runs end to end."""
import json

import numpy as np
import pytest
import torch

from helpers import load_ckpt, run_cli, tiny_args
from models import ModelConfig, build_model
from models.pixels import sample_pixels
from models.pixelvae import NOISE_SEED


def tiny_pixelvae(channels=1, size=16, **kw):
    torch.manual_seed(0)
    return build_model(ModelConfig(model_type="pixelvae", image_channels=channels, image_size=size, **kw)).eval()


@pytest.mark.parametrize("channels, likelihood, layers", [(1, "dmol", 2), (3, "dmol", 0), (1, "bernoulli", 1)])
def test_each_pixel_depends_on_the_pixels_before_it_and_no_other(channels, likelihood, layers):
    model = tiny_pixelvae(channels, likelihood=likelihood, pixel_layers=layers)
    h = w = 16
    rows, cols = model.stack.receptive_field
    assert rows == cols == 4 + layers
    order = torch.arange(h * w).view(h, w)
    for r, c in [(0, 0), (0, 9), (7, 0), (9, 8), (15, 15)]:
        x = torch.rand(1, channels, h, w, requires_grad=True)
        model.decode_given(torch.randn(1, 10), None, x)[0, :, r, c].sum().backward()
        seen = x.grad[0].abs().sum(0) > 0  # all channels of a pixel together
        dr, dc = r - torch.arange(h)[:, None], torch.arange(w)[None, :] - c
        # before it in raster order, within the rows above and the pixels to the left it should see
        allowed = (order < r * w + c) & (dr <= rows) & ((dr > 0) & (dc.abs() <= 3 + layers) | (-dc <= cols))
        assert not (seen & ~allowed).any(), (r, c)
        if c > 0:
            assert seen[r, c - 1], (r, c)  # its left neighbour
        if r > 0:
            assert seen[r - 1, c] and seen[r - 1, min(c + 1, w - 1)], (r, c)  # above it, and above right
    assert x.grad.shape == x.shape


@pytest.mark.parametrize("channels, likelihood", [(1, "dmol"), (3, "dmol"), (1, "logistic"), (1, "bernoulli")])
def test_cached_drawing_agrees_with_drawing_from_the_teacher_forced_output(channels, likelihood):
    model = tiny_pixelvae(channels, likelihood=likelihood, pixel_layers=1, mixture_components=3)
    z = torch.randn(3, 10)
    with torch.no_grad():
        drawn = model.decode(z)
        # every pixel, drawn from the full pass over the drawn image with the same noise: the same image
        full = model.decode_given(z, None, drawn)
        noise = torch.rand(3, full.shape[1] + channels, 16, 16, generator=torch.Generator().manual_seed(NOISE_SEED))
        again = torch.stack([torch.stack([sample_pixels(likelihood, full[:, :, i, j], model.log_scale,
                                                        noise[:, :, i, j], channels) for j in range(16)], -1)
                             for i in range(16)], -2)
    # each pixel redrawn on its own from the full pass: the same pixel, up to float rounding (the cached
    # path convolves crops, whose kernels may round differently); a discrete pixel whose draw sits on a
    # bin's edge (or a near-tie of components) may land elsewhere, which no pixel after it inherits here
    if likelihood == "bernoulli":
        torch.testing.assert_close(again, drawn, rtol=0, atol=1e-5)
    else:
        assert (again != drawn).float().mean() < 0.01
    assert drawn.shape == (3, channels, 16, 16)
    if likelihood != "bernoulli":  # discrete likelihoods draw 8-bit pixels
        assert torch.equal(drawn, torch.round(drawn * 255) / 255) and drawn.std() > 0
    assert torch.equal(model.decode(z), drawn)  # one code, one image


def test_the_likelihood_sums_over_pixels_it_sees_through_forward_and_the_iwae_terms():
    model = tiny_pixelvae(likelihood="dmol")
    x = torch.round(torch.rand(4, 1, 16, 16) * 255) / 255
    res = model(x)
    out, mu, logvar = res.logits, res.mu, res.logvar
    torch.testing.assert_close(out, model.decode_given(mu, None, x))  # eval mode: the posterior mean
    eps = torch.randn(5, 4, 10)
    ratios, outs = model.importance_terms(x, mu, logvar, eps)
    assert ratios.shape == (5, 4, 1) and outs.shape == (5, 4, *out.shape[1:])
    z = mu + torch.exp(0.5 * logvar) * eps[2]
    torch.testing.assert_close(outs[2], model.decode_given(z, None, x))
    with pytest.raises(TypeError, match="decode_given"):
        model.decode_logits(mu)


def test_a_run_trains_evaluates_predicts_and_resumes_exactly(tiny_mnist, workdir):
    flags = ("--model_type", "pixelvae", "--image_loss_type", "dmol", "--pixel_layers", "1", "--pixel_channels", "8",
             "--mixture_components", "2")
    code, out, err = run_cli(tiny_args(tiny_mnist, *flags, "--tensorboard_images", "True", epochs=2))
    assert code == 0, err
    h = load_ckpt("weights/r_checkpoint.pth.tar")["history"]
    assert h[1]["train_loss"] < h[0]["train_loss"]
    assert run_cli(tiny_args(tiny_mnist, *flags, epochs=1, name="p"))[0] == 0
    assert run_cli(tiny_args(tiny_mnist, "--resume", "weights/p_checkpoint.pth.tar", epochs=2, name="p"))[0] == 0
    straight, resumed = load_ckpt("weights/r_checkpoint.pth.tar"), load_ckpt("weights/p_checkpoint.pth.tar")
    assert resumed["model_config"]["pixel_channels"] == 8
    assert all(torch.equal(resumed["state_dict"][k], v) for k, v in straight["state_dict"].items())
    # nothing but the checkpoint: evaluate (with the IWAE bound and the codecs) and draw the pictures
    code, out, err = run_cli(["--resume", "weights/r_best.pth.tar", "--evaluate", "--iw_samples", "2", "--fid", "40",
                              "--gmm_components", "3"])
    assert code == 0, err
    val = json.load(open("weights/r_eval.json"))["val"]
    assert val["family"].startswith("pixelvae") and 0 < val["iwae_bits_per_dim"] <= val["bits_per_dim"] + 0.01
    assert "xz_bits_per_dim" in val and val["fid_gmm"] >= 0 and "true pixels before it" in out
    code, out, err = run_cli(["--resume", "weights/r_best.pth.tar", "--predict", "--sampler", "gmm",
                              "--gmm_components", "3"])
    assert code == 0, err
    from PIL import Image

    grid = Image.open("results/r/samples_gmm.png")
    assert grid.size[0] > 28 and len(np.unique(np.asarray(grid))) > 2  # drawn images, not a blank grid


def test_a_conditional_model_draws_each_class():
    model = tiny_pixelvae(likelihood="dmol", pixel_layers=0, conditional=True)
    z, y = torch.zeros(2, 10), torch.tensor([0, 1])
    with torch.no_grad():
        drawn = model.decode(z, y)
        assert not torch.equal(model.code_map(z, y)[0], model.code_map(z, y)[1])  # the class reaches the decoder
        again = model.decode(z, y)
    assert torch.equal(drawn, again) and drawn.shape == (2, 1, 16, 16)
