"""evaluation/knn.py: the 2018 KNN protocol on synthetic arrays (no data set needed)."""
import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier

from evaluation import knn


def blobs(n_per_class, n_classes=10, dim=10, spread=0.3, seed=0):
    """Well-separated Gaussian blobs: class c centred at 10 * e_c (distance ~14 apart, sd 0.3)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), n_per_class)
    centres = np.eye(n_classes, dim) * 10.0
    return (centres[y] + rng.normal(0, spread, (len(y), dim))).astype(np.float32), y


def test_vote_matches_scikit_learn_for_every_k():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(400, 5)), rng.integers(0, 4, 400)
    q = rng.normal(size=(300, 5))
    preds = knn.knn_predict(x, y, q, [1, 2, 4, 7, 20])
    for k, pred in preds.items():
        expected = KNeighborsClassifier(n_neighbors=k).fit(x, y).predict(q)
        np.testing.assert_array_equal(pred, expected, err_msg=f"k={k}")


def test_labels_need_not_be_0_to_n():
    x, y = blobs(30, n_classes=3)
    names = np.array(["boot", "coat", "dress"])[y]
    pred = knn.knn_predict(x, names, x, [3])[3]
    assert (pred == names).all()


def test_stratified_sample_draws_exactly_n_per_class_without_repeats():
    y = np.repeat(np.arange(4), [10, 20, 30, 40])
    idx = knn.stratified_sample(y, 7, np.random.default_rng(0))
    assert len(set(idx)) == len(idx) == 28
    assert np.bincount(y[idx]).tolist() == [7, 7, 7, 7]
    with pytest.raises(ValueError, match="class 0 has 10"):
        knn.stratified_sample(y, 11, np.random.default_rng(0))


def test_separated_blobs_score_about_one():
    x, y = blobs(120)
    xt, yt = blobs(50, seed=1)
    rows = knn.cv_grid(x, y, [10, 50], [1, 5, 10], seed=0)
    assert [(r["samples_per_class"], r["k"]) for r in rows] == [(10, 1), (10, 5), (10, 10), (50, 1), (50, 5), (50, 10)]
    assert all(len(r["values"]) == knn.CV_FOLDS for r in rows)
    assert min(r["mean"] for r in rows) > 0.99
    sampled = knn.sampled_test_accuracy(x, y, xt, yt, 20, [5, 10], draws=3, seed=0)
    assert sampled[5]["mean"] > 0.99 and sampled[10]["mean"] > 0.99
    assert knn.full_test_accuracy(x, y, xt, yt, [10])[10] > 0.99


def test_shuffled_labels_score_about_chance():
    x, y = blobs(200)
    xt, yt = blobs(100, seed=1)
    rng = np.random.default_rng(2)
    y_shuffled, yt_shuffled = rng.permutation(y), rng.permutation(yt)
    rows = knn.cv_grid(x, y_shuffled, [100], [5, 25], seed=0)
    sampled = knn.sampled_test_accuracy(x, y_shuffled, xt, yt_shuffled, 100, [10], draws=3, seed=0)
    full = knn.full_test_accuracy(x, y_shuffled, xt, yt_shuffled, [10])
    # chance is 0.1; the sd of an accuracy over 200-1000 points is about 0.01-0.02
    for acc in [r["mean"] for r in rows] + [sampled[10]["mean"], full[10]]:
        assert 0.04 < acc < 0.17, acc


def test_same_seed_same_numbers_and_draws_vary():
    x, y = blobs(60, spread=4.0)  # overlapping, so draws differ
    xt, yt = blobs(30, spread=4.0, seed=1)
    a = knn.sampled_test_accuracy(x, y, xt, yt, 10, [5], draws=4, seed=3)
    b = knn.sampled_test_accuracy(x, y, xt, yt, 10, [5], draws=4, seed=3)
    assert a == b
    assert a[5]["std"] > 0 and len(set(a[5]["values"])) > 1
    assert a[5]["mean"] == pytest.approx(np.mean(a[5]["values"]))
    assert knn.cv_grid(x, y, [20], [3], seed=3) == knn.cv_grid(x, y, [20], [3], seed=3)


@pytest.mark.parametrize("spc, ks, test_n, match", [
    ([50, 61], [5], 10, "--samples_per_class 61 is more than the smallest class"),
    ([50], [5], 61, "--test_samples_per_class 61"),
    ([4, 10], [1], 10, "at least 5"),
    ([5], [41], 10, "--n_neighbours 41 is more than the 40 points"),
])
def test_protocol_checks_name_the_flag(spc, ks, test_n, match):
    y = np.repeat(np.arange(10), 60)
    with pytest.raises(ValueError, match=match):
        knn.check_protocol(y, spc, ks, test_n, [5, 10])
    knn.check_protocol(y, [5, 60], [40], 60, [5, 10])  # the limits themselves are fine
