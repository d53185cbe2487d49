import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage
from skimage.metrics import structural_similarity

from helpers import make_objective
from losses import bce_loss, kl_divergence, mse_loss, ssim, ssim_loss, ssim_map
from losses.ssim import C1, C2


def test_kl_matches_torch_distributions():
    torch.manual_seed(0)
    mu, logvar = torch.randn(8, 5), torch.randn(8, 5)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    expected = torch.distributions.kl_divergence(q, p).sum(1).mean()
    assert torch.allclose(kl_divergence(mu, logvar), expected, atol=1e-5)
    assert kl_divergence(torch.zeros(3, 4), torch.zeros(3, 4)).item() == 0.0


def test_bce_closed_form_and_reduction():
    torch.manual_seed(0)
    logits, x = torch.randn(4, 1, 28, 28), torch.rand(4, 1, 28, 28)
    p = torch.sigmoid(logits)
    expected = -(x * torch.log(p) + (1 - x) * torch.log(1 - p)).sum() / 4
    assert torch.allclose(bce_loss(logits, x), expected, rtol=1e-5)
    # zero logits: every pixel costs log 2, summed over 784 pixels per image
    half = bce_loss(torch.zeros(2, 1, 28, 28), torch.full((2, 1, 28, 28), 0.5)).item()
    assert half == pytest.approx(784 * math.log(2), rel=1e-6)


def test_mse_closed_form():
    logits = torch.zeros(2, 1, 28, 28)  # sigmoid = 0.5
    assert mse_loss(logits, torch.ones(2, 1, 28, 28)).item() == pytest.approx(784 * 0.25)


def _ssim_map_numpy(a, b, window, sigma=1.5):
    """Independent reference: scipy correlate with an explicit Gaussian, zero padding."""
    c = np.arange(window) - (window - 1) / 2
    g = np.exp(-c ** 2 / (2 * sigma ** 2))
    k = np.outer(g, g) / np.outer(g, g).sum()
    f = lambda im: ndimage.correlate(im, k, mode="constant", cval=0.0)  # noqa: E731
    mu_a, mu_b = f(a), f(b)
    va, vb, cov = f(a * a) - mu_a ** 2, f(b * b) - mu_b ** 2, f(a * b) - mu_a * mu_b
    return ((2 * mu_a * mu_b + C1) * (2 * cov + C2)) / ((mu_a ** 2 + mu_b ** 2 + C1) * (va + vb + C2))


@pytest.mark.parametrize("window", [3, 5, 7, 11])
def test_ssim_map_matches_zero_padded_reference(window):
    rng = np.random.default_rng(window)
    a = rng.random((28, 28))
    b = np.clip(a + 0.2 * rng.standard_normal((28, 28)), 0, 1)
    ours = ssim_map(torch.tensor(a)[None, None], torch.tensor(b)[None, None], window)[0, 0].numpy()
    np.testing.assert_allclose(ours, _ssim_map_numpy(a, b, window), atol=1e-10)


def test_ssim_matches_scikit_image_on_the_interior():
    # scikit-image's Gaussian SSIM uses an 11-tap window for sigma 1.5 and reflects at the
    # border; away from the border (5 pixels) both definitions agree exactly.
    rng = np.random.default_rng(0)
    a = rng.random((28, 28))
    b = np.clip(a + 0.3 * rng.standard_normal((28, 28)), 0, 1)
    _, sk = structural_similarity(a, b, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                  use_sample_covariance=False, full=True)
    ours = ssim_map(torch.tensor(a)[None, None], torch.tensor(b)[None, None], 11)[0, 0].numpy()
    np.testing.assert_allclose(ours[5:-5, 5:-5], sk[5:-5, 5:-5], atol=1e-8)


def test_ssim_identity_chunking_and_loss_scale():
    x = torch.rand(300, 1, 28, 28)
    assert torch.allclose(ssim(x, x), torch.ones(300), atol=1e-6)
    y = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    assert torch.allclose(ssim(x, y, chunk=7), ssim_map(x, y).flatten(1).mean(1), atol=1e-6)
    logits = torch.logit(y.clamp(1e-4, 1 - 1e-4))
    expected = 784 * (1 - ssim(torch.sigmoid(logits), x)).mean()
    assert ssim_loss(logits, x).item() == pytest.approx(expected.item(), rel=1e-4)


def test_vae_loss_weights():
    torch.manual_seed(0)
    logits, x = torch.randn(4, 1, 28, 28), torch.rand(4, 1, 28, 28)
    mu, logvar = torch.randn(4, 3), torch.randn(4, 3)
    t = make_objective(img_loss_weight=2.0, kl_loss_weight=0.5).loss(logits, x, mu, logvar)
    assert torch.allclose(t["loss"], 2 * bce_loss(logits, x) + 0.5 * kl_divergence(mu, logvar))


def test_running_mean_rebalancing():
    torch.manual_seed(0)
    fn = make_objective(do_running_mean=True).loss
    logits, x = torch.randn(4, 1, 28, 28), torch.rand(4, 1, 28, 28)
    mu, logvar = torch.randn(4, 3), torch.randn(4, 3)
    first = fn(logits, x, mu, logvar)
    assert first["loss"].item() == pytest.approx(2.0)  # each term divided by itself
    img1, kl1 = first["img_loss"].item(), first["kl_loss"].item()
    second = fn(logits * 2, x, mu * 2, logvar)
    img_rm = 0.9 * img1 + 0.1 * second["img_loss"].item()
    kl_rm = 0.9 * kl1 + 0.1 * second["kl_loss"].item()
    expected = second["img_loss"].item() / img_rm + second["kl_loss"].item() / kl_rm
    assert second["loss"].item() == pytest.approx(expected, rel=1e-5)
    state = fn.__self__.state_dict()  # the checkpoint's loss_state
    assert set(state) == {"img_rm", "kl_rm"}
    fresh = make_objective(do_running_mean=True)
    fresh.load_state_dict(state)
    assert fresh.loss(logits, x, mu, logvar)["loss"].item() == pytest.approx(fn(logits, x, mu, logvar)["loss"].item())


def test_ssim_loss_trains():
    # gradient descent on the SSIM loss alone moves a noisy image towards its target
    torch.manual_seed(0)
    x = torch.rand(2, 1, 28, 28)
    logits = torch.zeros(2, 1, 28, 28, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=0.1)
    start = ssim_loss(logits, x).item()
    for _ in range(50):
        opt.zero_grad()
        ssim_loss(logits, x).backward()
        opt.step()
    assert ssim_loss(logits, x).item() < 0.5 * start
    assert F.mse_loss(torch.sigmoid(logits), x).item() < 0.05
