"""evaluation/sample_quality.py: the Fréchet distance against closed forms, feature statistics,
the cached classifier (trained once, then loaded; bad caches refused, never overwritten), and
the score on the tiny synthetic dataset."""
import os
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

from core.errors import VaeLabError
from datasets import as_float, load_split
from evaluation import sample_quality as sq

CPU = torch.device("cpu")
TINY_EPOCHS = 8  # 500 images, 2 minibatches an epoch: 16 steps separate the 10 squares


def spd(rng: np.random.Generator, d: int) -> np.ndarray:
    """A random symmetric positive-definite d x d matrix."""
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def psd_sqrt(s: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric PSD matrix, by eigen-decomposition."""
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_by_eigh(mu1, s1, mu2, s2) -> float:
    """Independent of sqrtm: Tr((S1 S2)^1/2) = Tr((S1^1/2 S2 S1^1/2)^1/2), a symmetric PSD root."""
    r = psd_sqrt(s1)
    tr = np.sqrt(np.clip(np.linalg.eigvalsh(r @ s2 @ r), 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr)


# ---------------------------------------------------------------- the Fréchet distance


def test_frechet_distance_of_diagonal_gaussians_is_the_closed_form():
    rng = np.random.default_rng(0)
    m1, m2 = rng.normal(size=16), rng.normal(size=16)
    v1, v2 = rng.uniform(0.1, 3, 16), rng.uniform(0.1, 3, 16)  # variances
    expected = ((m1 - m2) ** 2).sum() + (v1 + v2 - 2 * np.sqrt(v1 * v2)).sum()
    assert sq.frechet_distance(m1, np.diag(v1), m2, np.diag(v2)) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_in_one_dimension_is_the_squared_wasserstein_distance():
    # N(m1, s1^2) vs N(m2, s2^2): (m1 - m2)^2 + (s1 - s2)^2
    assert sq.frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([-2.0]), np.array([[0.25]])) \
        == pytest.approx(9 + 1.5 ** 2, rel=1e-12)


def test_frechet_distance_of_equal_gaussians_is_zero():
    rng = np.random.default_rng(1)
    mu, s = rng.normal(size=32), spd(rng, 32)
    assert abs(sq.frechet_distance(mu, s, mu, s)) < 1e-9 * np.trace(s)


def test_frechet_distance_of_commuting_covariances():
    # S1 = Q diag(a) Q^T, S2 = Q diag(b) Q^T: (S1 S2)^1/2 = Q diag(sqrt(ab)) Q^T
    rng = np.random.default_rng(2)
    q, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    a, b = rng.uniform(0.2, 4, 10), rng.uniform(0.2, 4, 10)
    mu1, mu2 = rng.normal(size=10), rng.normal(size=10)
    expected = ((mu1 - mu2) ** 2).sum() + (a + b - 2 * np.sqrt(a * b)).sum()
    got = sq.frechet_distance(mu1, (q * a) @ q.T, mu2, (q * b) @ q.T)
    assert got == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_frechet_distance_of_full_covariances_matches_an_eigen_decomposition(seed):
    rng = np.random.default_rng(seed)
    mu1, mu2, s1, s2 = rng.normal(size=24), rng.normal(size=24), spd(rng, 24), spd(rng, 24)
    got = sq.frechet_distance(mu1, s1, mu2, s2)
    assert got == pytest.approx(frechet_by_eigh(mu1, s1, mu2, s2), rel=1e-9)
    assert got == pytest.approx(sq.frechet_distance(mu2, s2, mu1, s1), rel=1e-9)  # symmetric


def test_frechet_distance_of_singular_covariances_is_finite_and_close():
    # fewer samples than features (and dead features) make both covariances singular
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(6, 20)), rng.normal(size=(6, 20)) + 0.5
    x[:, :3] = y[:, :3] = 0.0
    args = (x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the retry keeps sqrtm's warning inside
        got = sq.frechet_distance(*args)
    assert got == pytest.approx(frechet_by_eigh(*args), rel=1e-3)
    zeros = np.zeros((4, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sq.frechet_distance(np.ones(4), zeros, np.zeros(4), zeros) == pytest.approx(4.0, abs=1e-4)


def test_frechet_distance_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="shapes"):
        sq.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


# ---------------------------------------------------------------- feature statistics


class IdentityFeatures(nn.Module):
    """A stand-in classifier whose features are the pixels themselves."""

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def test_feature_stats_recover_a_known_gaussian():
    rng = np.random.default_rng(7)
    mu, cov = rng.normal(size=4), spd(rng, 4)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(20000, 4, generator=g, dtype=torch.float64)
    x = (torch.from_numpy(mu) + z @ torch.from_numpy(np.linalg.cholesky(cov)).T).float().view(-1, 1, 2, 2)
    m, c = sq.feature_stats(IdentityFeatures(), x, CPU)
    assert m.dtype == c.dtype == np.float64 and m.shape == (4,) and c.shape == (4, 4)
    np.testing.assert_allclose(m, mu, atol=0.05)
    np.testing.assert_allclose(c, cov, atol=0.06)
    # exactly the sample mean and unbiased covariance, whatever the batch size
    m7, c7 = sq.feature_stats(IdentityFeatures(), x, CPU, batch_size=333)
    flat = x.flatten(1).double().numpy()
    np.testing.assert_allclose(m7, flat.mean(0), rtol=1e-12)
    np.testing.assert_allclose(c7, np.cov(flat, rowvar=False), rtol=1e-12)
    np.testing.assert_allclose(c7, c, rtol=1e-12)


def test_feature_stats_need_two_images():
    with pytest.raises(ValueError, match="at least 2"):
        sq.feature_stats(IdentityFeatures(), torch.zeros(1, 1, 2, 2), CPU)


# ---------------------------------------------------------------- the cached classifier


@pytest.fixture(scope="module")
def tiny_cached(tiny_mnist, tmp_path_factory):
    """A classifier trained on tiny_mnist by load_or_train_classifier: (model, accuracy, path, log lines)."""
    weights = str(tmp_path_factory.mktemp("weights"))
    lines: list[str] = []
    model, acc = sq.load_or_train_classifier("mnist", tiny_mnist, weights, CPU, log=lines.append,
                                             epochs=TINY_EPOCHS)
    return model, acc, sq.cache_path("mnist", weights), lines


def test_the_classifier_separates_the_tiny_classes(tiny_cached, tiny_mnist):
    model, acc, _, _ = tiny_cached
    test = load_split("mnist", tiny_mnist, train=False)
    assert acc >= 0.95  # one bright square per class; chance is 0.1
    assert sq.classifier_accuracy(model, test.x, test.y, CPU) == acc
    assert not model.training
    with torch.no_grad():
        x = as_float(test.x)  # the classifier itself takes [0, 1] floats; its helpers convert uint8
        assert model.features(x).shape == (100, sq.FEATURE_DIM) and model(x).shape == (100, 10)
    # a conditional VAE's class samples: right labels score high, wrong ones low
    assert sq.classifier_accuracy(model, test.x, (test.y + 1) % 10, CPU) <= 0.05


def test_load_or_train_trains_once_then_loads(tiny_cached, tiny_mnist, monkeypatch):
    model, acc, path, lines = tiny_cached
    assert len(lines) == 2 and lines[0].startswith("FID classifier: training one on the 500 mnist training images")
    assert lines[1].startswith("FID classifier: trained on 500 mnist images")
    assert path in lines[1] and lines[1].endswith(f"test accuracy {acc:.4f}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert set(state) == set(sq.CACHE_KEYS)
    assert (state["dataset_type"], state["epochs"], state["seed"], state["test_accuracy"]) == \
        ("mnist", TINY_EPOCHS, sq.DEFAULT_SEED, acc)

    def no_training(*a, **k):
        raise AssertionError("trained again instead of loading the cache")

    monkeypatch.setattr(sq, "train_classifier", no_training)
    again: list[str] = []
    loaded, acc2 = sq.load_or_train_classifier("mnist", tiny_mnist, os.path.dirname(path), CPU,
                                               log=again.append, epochs=TINY_EPOCHS)
    assert acc2 == acc and again == [f"FID classifier: {path}, test accuracy {acc:.4f}"]
    assert not loaded.training
    test = load_split("mnist", tiny_mnist, train=False)
    with torch.no_grad():
        assert torch.equal(loaded.features(as_float(test.x)), model.features(as_float(test.x)))


def test_training_is_deterministic_and_leaves_the_global_rng_alone(tiny_cached, tiny_mnist):
    model, acc, _, _ = tiny_cached
    train, test = load_split("mnist", tiny_mnist, train=True), load_split("mnist", tiny_mnist, train=False)
    before = torch.get_rng_state()
    again, acc2 = sq.train_classifier(train, test, CPU, seed=sq.DEFAULT_SEED, epochs=TINY_EPOCHS)
    assert torch.equal(torch.get_rng_state(), before)
    assert acc2 == acc
    for (k, v), (k2, v2) in zip(model.state_dict().items(), again.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k


class NotAWeight:
    """Something weights_only loading must refuse to build."""


def _resave(path: str, change) -> None:
    state = torch.load(path, map_location="cpu", weights_only=True)
    change(state)
    torch.save(state, path)


SPOILS = {
    "not a torch file": (lambda p: open(p, "wb").write(b"not a checkpoint"), "corrupt"),
    "truncated": (lambda p: open(p, "r+b").truncate(os.path.getsize(p) // 2), "corrupt"),
    "code objects": (lambda p: torch.save({"x": NotAWeight()}, p), "could run code"),
    "missing key": (lambda p: _resave(p, lambda s: s.pop("test_accuracy")), "lacks the keys"),
    "other shape": (lambda p: _resave(p, lambda s: s["state_dict"].update({"fc1.weight": torch.zeros(64, 3136)})),
                    "does not fit"),
    "other layer": (lambda p: _resave(p, lambda s: s["state_dict"].pop("bn2.running_mean")), "does not fit"),
    "other architecture": (lambda p: _resave(p, lambda s: s.update(architecture="inception")), "architecture"),
    "other format": (lambda p: _resave(p, lambda s: s.update(format_version=99)), "format version"),
    "other epochs": (lambda p: _resave(p, lambda s: s.update(epochs=TINY_EPOCHS + 1)), f"for {TINY_EPOCHS + 1} epochs"),
}


@pytest.mark.parametrize("spoil", SPOILS)
def test_a_bad_cache_is_refused_and_kept(spoil, tiny_cached, tmp_path, monkeypatch):
    _, _, good, _ = tiny_cached
    path = sq.cache_path("mnist", str(tmp_path))
    with open(good, "rb") as s, open(path, "wb") as d:
        d.write(s.read())
    damage, words = SPOILS[spoil]
    damage(path)
    before = open(path, "rb").read()
    monkeypatch.setattr(sq, "train_classifier", lambda *a, **k: pytest.fail("trained over a bad cache"))
    with pytest.raises(VaeLabError) as err:
        sq.load_or_train_classifier("mnist", "/nonexistent", str(tmp_path), CPU, log=lambda s: None,
                                    epochs=TINY_EPOCHS)
    msg = str(err.value)
    assert "\n" not in msg and repr(path) in msg and words in msg and "delete it" in msg, msg
    assert open(path, "rb").read() == before


def test_a_cache_of_another_dataset_is_refused(tiny_cached, tmp_path):
    _, _, good, _ = tiny_cached
    path = sq.cache_path("fmnist", str(tmp_path))
    with open(good, "rb") as s, open(path, "wb") as d:
        d.write(s.read())
    with pytest.raises(VaeLabError, match=r"was trained on 'mnist', not 'fmnist'; delete it"):
        sq.load_or_train_classifier("fmnist", "/nonexistent", str(tmp_path), CPU, log=lambda s: None,
                                    epochs=TINY_EPOCHS)


def test_an_unknown_dataset_is_one_line(tmp_path):
    with pytest.raises(VaeLabError, match="unknown dataset 'cifar'"):
        sq.load_or_train_classifier("cifar", str(tmp_path), str(tmp_path), CPU)


# ---------------------------------------------------------------- the score


def test_the_score_ranks_image_sets(tiny_cached, tiny_mnist):
    model = tiny_cached[0]
    train, test = load_split("mnist", tiny_mnist, train=True), load_split("mnist", tiny_mnist, train=False)
    real = sq.feature_stats(model, test.x, CPU)

    def score(images: torch.Tensor) -> float:
        return sq.frechet_distance(*sq.feature_stats(model, images, CPU), *real)

    assert abs(score(test.x)) < 1e-6 * np.trace(real[1])
    same_kind = score(train.x)  # other images from the same distribution
    one_class = score(train.x[train.y == 3])  # a collapsed generator
    noise = score(torch.rand(500, 1, 28, 28, generator=torch.Generator().manual_seed(0)))
    blurred = score(torch.nn.functional.avg_pool2d(as_float(train.x), 5, stride=1, padding=2))
    assert 0 <= same_kind < min(one_class, noise, blurred), (same_kind, one_class, noise, blurred)
