"""pixelvae draws what it was trained to score: drawing pixel by pixel with the true pixels forced
in (teacher forcing through the sampling loop) gives, at every pixel, the decoder output of the
training pass (``decode_given``) on the same images; and a colour pixel drawn from a mixture has
the joint distribution of R, G and B that the likelihood scores (one component for all three
channels, green and blue coupled to the drawn red and green). Issue 36, item 2: these rule out the
sampling path as the cause of pixelvae's speckled colour pictures (see docs for the cause found)."""
import math

import pytest
import torch

import models.pixelvae
from losses import pixel_nll
from models import ModelConfig, build_model
from models.pixels import sample_pixels

MIXTURE = "dmol"  # the likelihood's name (--image_loss_type dmol)


@pytest.mark.parametrize("channels, size, layers, likelihood",
                         [(3, 32, 1, MIXTURE), (3, 16, 3, MIXTURE), (3, 16, 0, MIXTURE), (1, 16, 2, MIXTURE),
                          (3, 16, 1, "logistic")])
def test_drawing_with_the_true_pixels_forced_gives_the_training_pass_output(monkeypatch, channels, size, layers,
                                                                             likelihood):
    torch.manual_seed(0)
    model = build_model(ModelConfig(model_type="pixelvae", image_channels=channels, image_size=size,
                                    likelihood=likelihood, pixel_layers=layers, mixture_components=4,
                                    latent_space_size=8)).eval()
    x = torch.round(torch.rand(2, channels, size, size) * 255) / 255
    z = torch.randn(2, 8)
    seen = []

    def forced(lik, params, log_scale, u, c):  # the sampler, in raster order: record its input, return the truth
        r, col = divmod(len(seen), size)
        seen.append(params.clone())
        return x[:, :, r, col]

    monkeypatch.setattr(models.pixelvae, "sample_pixels", forced)
    with torch.no_grad():
        drawn = model.decode(z)
        trained = model.decode_given(z, None, x)
    assert len(seen) == size * size and torch.equal(drawn, x)
    sampled = torch.stack(seen, -1).view(trained.shape)  # (B, P, H, W) in raster order
    # the crops of the cached loop and the whole-image convolutions round differently: float precision only
    torch.testing.assert_close(sampled, trained, rtol=1e-5, atol=1e-5)
    assert trained.abs().max() > 0.1  # a real output, not zeros on both sides


def test_a_colour_pixel_is_drawn_from_the_distribution_the_likelihood_scores():
    k, n = 3, 400_000
    # PixelCNN++'s layout of one pixel: K mixture logits, K x 3 locations, K x 3 log-scales, K x 3 couplings
    params = torch.cat([torch.tensor([0.3, -0.2, 0.1]),  # mixture logits
                        torch.tensor([0.5, 0.4, 0.6, 0.575, 0.45, 0.525, 0.425, 0.6, 0.5]),  # locations
                        torch.full((3 * k,), -4.5),  # scales of ~3 levels
                        torch.tensor([0.5, -0.5, 0.3, -0.4, 0.4, -0.2, 0.3, 0.5, -0.5])])  # couplings ~0.2-0.5
    u = torch.rand(n, len(params) + 3, generator=torch.Generator().manual_seed(2))
    draws = sample_pixels(MIXTURE, params.expand(n, -1), None, u, 3).double()
    # every pixel of the 8-bit grid in a box round the draws, scored by the likelihood: the exact moments
    # of (R, G, B) (the box is only where to look: the mass it holds is checked)
    lo, hi = (draws.amin(0) * 255).round() - 8, (draws.amax(0) * 255).round() + 8
    grid = torch.cartesian_prod(*(torch.arange(a, b + 1) / 255 for a, b in zip(lo.tolist(), hi.tolist())))
    p = torch.cat([torch.exp(-pixel_nll(MIXTURE, params[None, :, None, None].expand(len(c), -1, 1, 1),
                                        c[..., None, None])).view(-1) for c in grid.split(1 << 20)]).double()
    assert p.sum() > 1 - 1e-4, len(grid)
    grid = grid.double()
    mean = p @ grid
    cov = (grid * p[:, None]).T @ grid - torch.outer(mean, mean)
    corr = cov / torch.outer(cov.diagonal(), cov.diagonal()).sqrt()
    assert corr[0, 1].abs() > 0.2 and corr[1, 2].abs() > 0.2  # the channels are coupled: a test that can fail
    se = (cov.diagonal() / n).sqrt()  # standard errors of the means
    assert ((draws.mean(0) - mean).abs() < 6 * se).all()
    torch.testing.assert_close(torch.corrcoef(draws.T), corr, rtol=0, atol=0.01)
    torch.testing.assert_close(draws.std(0), cov.diagonal().sqrt(), rtol=0.01, atol=0)


@pytest.mark.parametrize("level", [255, 0])
def test_training_on_white_or_black_pixels_makes_the_decoder_sure_of_them(level):
    # the flat white (or black) backgrounds of artwork: a decoder that sees white all around a pixel should learn to
    # say white. Start where a trained decoder is (location 242 levels, or 13 for black; scale 13 levels), follow
    # the gradient of the pixel's likelihood. With the location a sigmoid (before issue 36) the red channel's scale
    # grew instead (to ~100 levels, as in a Twemoji model at the white pixels) and P(255) tended to 1/2, so a third
    # of the pixels drawn on white came out dark (speckles); an unbounded location moves past the edge.
    x = torch.full((1, 3, 1, 1), level / 255)
    start = 242 / 255 if level == 255 else 13 / 255
    params = torch.tensor([0.0, start, start, start, -3.0, -3.0, -3.0, 0.0, 0.0, 0.0]).view(1, 10, 1, 1)
    params.requires_grad_()
    opt = torch.optim.Adam([params], lr=0.05)
    for _ in range(1000):
        loss = pixel_nll(MIXTURE, params, x).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    # 0.6: above the trap (1/2 per channel for red, 1/8 for black)
    with torch.no_grad():
        assert math.exp(-float(pixel_nll(MIXTURE, params, x).sum())) > 0.6


@pytest.mark.parametrize("level", [255, 0, 128, 30])
def test_a_pixel_the_decoder_is_sure_of_costs_almost_nothing(level):
    # flat fields of exact colours (emoji, icons) are what lossless codecs code in almost no bits; a decoder that has
    # seen the pixels around one must be able to say so too: PixelCNN++ (unbounded locations, a scale floor of a ninth
    # of a level) can put over 0.97 on one level of every channel. One component, the scale at its floor, no coupling,
    # the best of 60,001 raw locations from -30 to 30: the most this output can say of the level (before issue 36,
    # with a sigmoid location and a floor of a quarter level: 0.791 per channel inside, 0.896 at 0 and 255).
    raw = torch.linspace(-30, 30, 60_001)
    params = torch.zeros(len(raw), 10, 1, 1)
    params[:, 1:4] = raw[:, None, None, None]  # the three locations
    params[:, 4:7] = -30.0  # the log-scales, at their floor
    x = torch.full((len(raw), 3, 1, 1), level / 255)
    assert float(torch.exp(-pixel_nll(MIXTURE, params, x).view(len(raw), -1).sum(1)).max()) > 0.95
