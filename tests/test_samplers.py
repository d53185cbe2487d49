"""Samplers and latent-space pictures: the GMM sampler, traversals, the latent map, --fid."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from core.errors import VaeLabError
from evaluation.latent_pictures import TRAVERSAL_STEPS, traversal_codes
from evaluation.samplers import GaussianMixtureSampler, load_mixture, model_fingerprint, save_mixture
from helpers import assert_cli_error, run_cli, tiny_args
from runtime.run_files import mixture_path


def two_blobs(n: int = 4000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.multivariate_normal([-3, 0], [[1.0, 0.6], [0.6, 1.0]], size=n // 4)
    b = rng.multivariate_normal([2, 1], [[0.3, 0.0], [0.0, 2.0]], size=3 * n // 4)
    return np.concatenate([a, b])


def test_gmm_samples_follow_the_fitted_mixture():
    gmm = GaussianMixtureSampler.fit(two_blobs(), 2, seed=0)
    assert gmm.weights.sum().item() == pytest.approx(1.0)
    assert sorted(gmm.weights.tolist()) == pytest.approx([0.25, 0.75], abs=0.02)  # it found the two blobs
    z = gmm.sample(200_000, torch.Generator().manual_seed(1)).double()
    mean, cov = gmm.moments()
    torch.testing.assert_close(z.mean(0), mean, atol=0.02, rtol=0)
    torch.testing.assert_close(torch.cov(z.T), cov, atol=0.05, rtol=0)
    # the component shapes too: the samples nearest each mean have its covariance
    near_a = z[(z - gmm.means[gmm.weights.argmin()]).norm(dim=1) < 1.0]
    assert len(near_a) > 1000
    # seeded: the same generator state gives the same codes
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(gmm.sample(10, g1), gmm.sample(10, g2))


def test_a_saved_mixture_loads_only_for_its_checkpoint(tmp_path):
    gmm = GaussianMixtureSampler.fit(two_blobs(), 2, seed=0)
    path = mixture_path(str(tmp_path / "r_best.pth.tar"))
    assert path.endswith("r_best_gmm.pth.tar")
    save_mixture(gmm, path, "abc", seed=0)
    assert set(torch.load(path, weights_only=True)) >= {"weights", "means", "covariances", "fingerprint"}
    back = load_mixture(path, "abc", 2, 2)
    assert torch.equal(back.covariances, gmm.covariances)
    with pytest.raises(VaeLabError, match="fitted for another checkpoint"):
        load_mixture(path, "another", 2, 2)
    with pytest.raises(VaeLabError, match="has 2 components but --gmm_components is 3"):
        load_mixture(path, "abc", 3, 2)
    with pytest.raises(VaeLabError, match="--gmm_components 6 is more than the 5"):
        GaussianMixtureSampler.fit(two_blobs()[:5], 6, seed=0)
    model = torch.nn.Linear(2, 2)
    assert model_fingerprint(model.state_dict()) == model_fingerprint(model.state_dict())
    with torch.no_grad():
        model.weight[0, 0] += 1e-6
    assert model_fingerprint(model.state_dict()) != model_fingerprint(torch.nn.Linear(2, 2).state_dict())


def test_a_traversal_changes_only_the_swept_dimension():
    base, centre, std = torch.randn(5), torch.zeros(5), torch.tensor([1.0, 2.0, 0.5, 1.0, 3.0])
    dims = [3, 0, 4]
    codes = traversal_codes(base, centre, std, dims)
    steps = torch.as_tensor(TRAVERSAL_STEPS, dtype=base.dtype)
    assert codes.shape == (len(dims) * len(steps), 5)
    for r, j in enumerate(dims):
        rows = codes[r * len(steps):(r + 1) * len(steps)]
        others = [k for k in range(5) if k != j]
        assert torch.equal(rows[:, others], base[others].repeat(len(steps), 1))
        torch.testing.assert_close(rows[:, j], centre[j] + steps * std[j])


def png_size(path: str) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size


def test_predict_writes_every_picture_with_its_grid_size(tiny_mnist, one_good_epoch):
    ckpt = "weights/r_best.pth.tar"
    code, out, err = run_cli(tiny_args(tiny_mnist, "--resume", ckpt, "--predict", "--sampler", "gmm",
                                       "--gmm_components", "5"))
    assert code == 0, err
    assert "saved weights/r_best_gmm.pth.tar" in out and os.path.isfile("weights/r_best_gmm.pth.tar")
    d = "results/r"
    assert png_size(f"{d}/samples.png") == png_size(f"{d}/samples_gmm.png") == (8 * 30 + 2, 8 * 30 + 2)
    assert png_size(f"{d}/reconstructions.png") == (16 * 30 + 2, 2 * 30 + 2)
    assert png_size(f"{d}/interpolations.png") == (10 * 30 + 2, 8 * 30 + 2)
    assert png_size(f"{d}/traversals.png") == (1080, int(100 * (0.45 * 10 + 1.0)))  # 10 latent rows
    assert png_size(f"{d}/latent_map.png") == (990, 468)
    # the GMM's samples are not the prior's
    assert open(f"{d}/samples.png", "rb").read() != open(f"{d}/samples_gmm.png", "rb").read()
    # a second predict reuses the saved mixture
    code, out, err = run_cli(tiny_args(tiny_mnist, "--resume", ckpt, "--predict", "--sampler", "gmm",
                                       "--gmm_components", "5"))
    assert code == 0 and "GMM sampler: weights/r_best_gmm.pth.tar" in out, err


def test_sampler_bad_input_is_one_line(tiny_mnist, one_good_epoch):
    ckpt = "weights/r_best.pth.tar"
    code, _, err = run_cli(tiny_args(tiny_mnist, "--fid", "10"))
    assert_cli_error(code, err, "--fid needs --evaluate")
    code, _, err = run_cli(tiny_args(tiny_mnist, "--resume", ckpt, "--predict", "--sampler", "gmm",
                                     "--gmm_components", "1000"))
    assert_cli_error(code, err, "--gmm_components 1000", "400 training images")
    # a mixture saved for another checkpoint is refused, not silently used
    save_mixture(GaussianMixtureSampler.fit(np.random.default_rng(0).normal(size=(100, 10)), 5, seed=0),
                 "weights/r_best_gmm.pth.tar", "the fingerprint of another checkpoint", seed=0)
    code, _, err = run_cli(tiny_args(tiny_mnist, "--resume", ckpt, "--predict", "--sampler", "gmm",
                                     "--gmm_components", "5"))
    assert_cli_error(code, err, "r_best_gmm.pth.tar", "another checkpoint", "delete it")


@pytest.mark.parametrize("conditional", [False, True])
def test_evaluate_fid_reports_prior_gmm_and_reconstructions(tiny_mnist, workdir, conditional):
    extra = ["--conditional", "True"] if conditional else []
    assert run_cli(tiny_args(tiny_mnist, *extra, epochs=2))[0] == 0
    code, out, err = run_cli(tiny_args(tiny_mnist, *extra, "--resume", "weights/r_best.pth.tar", "--evaluate",
                                       "--fid", "200", "--gmm_components", "5"))
    assert code == 0, err
    ev = json.load(open("weights/r_eval.json"))
    for split in ("val", "test"):
        r = ev[split]
        assert r["fid_samples"] == 200 and 0 < r["fid_classifier_test_accuracy"] <= 1
        assert all(np.isfinite(r[k]) and r[k] >= 0 for k in ("fid_prior", "fid_gmm", "fid_recon"))
        assert ("class_sample_accuracy" in r) == conditional
    assert "FID prior" in out and "FID GMM" in out and os.path.isfile("weights/mnist_fid_classifier.pth.tar")
