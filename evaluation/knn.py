"""The 2018 KNN protocol on embeddings, as plain functions on arrays (no torch, no files).

(a) ``cv_grid``: for each samples-per-class, one stratified sample of the training
    embeddings; 5-fold stratified cross-validated accuracy for each k.
(b) ``sampled_test_accuracy``: KNN fit on ``per_class`` random training points per class, scored on
    the whole test set; mean and std over several random draws.
(c) ``full_test_accuracy``: KNN fit on every training point, scored on the test set.

Samples are drawn from the labels and the seed only, so every method given the same labels
and seed is scored on the same images: differences between methods are not sampling noise.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from sklearn.model_selection import StratifiedKFold
from sklearn.neighbors import NearestNeighbors

CV_FOLDS = 5


def stratified_sample(y: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``per_class`` items of every class of ``y``, drawn without replacement."""
    y = np.asarray(y)
    picks = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        if per_class > len(members):
            raise ValueError(f"class {c} has {len(members)} items, fewer than the {per_class} asked for")
        picks.append(rng.choice(members, per_class, replace=False))
    return np.sort(np.concatenate(picks))


def knn_predict(train_x: np.ndarray, train_y: np.ndarray, query_x: np.ndarray,
                ks: Iterable[int]) -> dict[int, np.ndarray]:
    """Majority vote of the k nearest training points (Euclidean), for every k in ``ks``.

    One neighbour search with the largest k serves all of them. Votes are uniform and ties
    go to the smallest label, as in scikit-learn's KNeighborsClassifier (the tests check
    that both agree).
    """
    ks = sorted(set(int(k) for k in ks))
    if not ks or ks[0] < 1:
        raise ValueError(f"k must be positive, got {ks}")
    if ks[-1] > len(train_x):
        raise ValueError(f"k = {ks[-1]} is more than the {len(train_x)} training points")
    classes, y_idx = np.unique(np.asarray(train_y), return_inverse=True)
    nn = NearestNeighbors(n_neighbors=ks[-1]).fit(train_x)
    neigh = nn.kneighbors(query_x, return_distance=False)  # (n_query, k_max), nearest first
    # Add the neighbours' votes one rank at a time: memory stays (n_query, n_classes) for any k.
    counts = np.zeros((len(query_x), len(classes)), dtype=np.int32)
    rows = np.arange(len(query_x))
    preds = {}
    for j in range(ks[-1]):
        counts[rows, y_idx[neigh[:, j]]] += 1
        if j + 1 in ks:
            preds[j + 1] = classes[counts.argmax(axis=1)]  # argmax: ties go to the smallest label
    return preds


def knn_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                 ks: Iterable[int]) -> dict[int, float]:
    """Test accuracy of KNN for every k in ``ks``."""
    test_y = np.asarray(test_y)
    return {k: float(np.mean(pred == test_y))
            for k, pred in knn_predict(train_x, train_y, test_x, ks).items()}


def _summary(values: Sequence[float]) -> dict:
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "values": [float(v) for v in values]}


def cv_grid(x: np.ndarray, y: np.ndarray, samples_per_class: Iterable[int], n_neighbours: Iterable[int],
            seed: int = 42, folds: int = CV_FOLDS) -> list[dict]:
    """(a) Stratified-CV KNN accuracy for every samples-per-class x k.

    Returns one row per cell: ``samples_per_class``, ``k``, ``mean`` and ``std`` over the
    folds, and the per-fold ``values``.
    """
    y = np.asarray(y)
    ks = sorted(set(n_neighbours))
    rows = []
    for n in samples_per_class:
        idx = stratified_sample(y, n, np.random.default_rng([seed, n]))
        xs, ys = x[idx], y[idx]
        skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        per_k: dict[int, list[float]] = {k: [] for k in ks}
        for tr, va in skf.split(xs, ys):
            for k, acc in knn_accuracy(xs[tr], ys[tr], xs[va], ys[va], ks).items():
                per_k[k].append(acc)
        rows += [{"samples_per_class": int(n), "k": int(k), **_summary(per_k[k])} for k in ks]
    return rows


def sampled_test_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
               per_class: int, ks: Iterable[int], draws: int, seed: int = 42) -> dict[int, dict]:
    """(b) Test accuracy of KNN fit on ``per_class`` random training points per class.

    Returns ``{k: {"mean", "std", "values"}}`` over ``draws`` independent draws.
    """
    ks = sorted(set(ks))
    per_k: dict[int, list[float]] = {k: [] for k in ks}
    rng = np.random.default_rng([seed, per_class, draws])
    for _ in range(draws):
        idx = stratified_sample(train_y, per_class, rng)
        for k, acc in knn_accuracy(train_x[idx], np.asarray(train_y)[idx], test_x, test_y, ks).items():
            per_k[k].append(acc)
    return {k: _summary(v) for k, v in per_k.items()}


def full_test_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
              ks: Iterable[int]) -> dict[int, float]:
    """(c) Test accuracy of KNN fit on every training point."""
    return knn_accuracy(train_x, train_y, test_x, test_y, ks)


def check_protocol(train_y: np.ndarray, samples_per_class: Sequence[int], n_neighbours: Sequence[int],
                   test_per_class: int, test_ks: Sequence[int], folds: int = CV_FOLDS) -> None:
    """Raise ValueError, naming the flag, if the sizes cannot be run on these labels."""
    counts = np.bincount(np.unique(np.asarray(train_y), return_inverse=True)[1])
    smallest, n_classes = int(counts.min()), len(counts)
    for flag, n in [("--samples_per_class", max(samples_per_class)), ("--test_samples_per_class", test_per_class)]:
        if n > smallest:
            raise ValueError(f"{flag} {n} is more than the smallest class of the training set allows "
                             f"({smallest} images)")
    if min(samples_per_class) < folds:
        raise ValueError(f"--samples_per_class must be at least {folds} for {folds}-fold cross-validation, "
                         f"got {min(samples_per_class)}")
    # The smallest training part of a CV split: n - ceil(n / folds) points.
    n = min(samples_per_class) * n_classes
    fit_size = n - -(-n // folds)
    if max(n_neighbours) > fit_size:
        raise ValueError(f"--n_neighbours {max(n_neighbours)} is more than the {fit_size} points a CV fold "
                         f"fits on with --samples_per_class {min(samples_per_class)}")
    if max(test_ks) > test_per_class * n_classes:
        raise ValueError(f"k = {max(test_ks)} is more than the {test_per_class * n_classes} points of "
                         f"--test_samples_per_class {test_per_class}")
