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

from collections.abc import Container, Iterable, Sequence

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


def class_sizes(train_y: np.ndarray) -> tuple[int, int]:
    """(images in the smallest class, number of classes) of the training labels."""
    counts = np.bincount(np.unique(np.asarray(train_y), return_inverse=True)[1])
    return int(counts.min()), len(counts)


def cv_fit_size(per_class: int, n_classes: int, folds: int = CV_FOLDS) -> int:
    """The points the smallest training part of a CV split holds: n - ceil(n / folds) of n = per_class x classes."""
    n = per_class * n_classes
    return n - -(-n // folds)


def fit_sizes(train_y: np.ndarray, samples_per_class: Sequence[int], n_neighbours: Sequence[int],
              test_per_class: int, given: Container[str], folds: int = CV_FOLDS
              ) -> tuple[list[int], list[int], int, list[str]]:
    """The protocol's sizes cut to what these labels allow, for those not in ``given`` (the flags' dests a
    user set: those stay as they are, for check_protocol to refuse): the CV grid's samples per class that a
    class holds, the k that its folds hold, at most the smallest class for the test draws. Returns the sizes
    and what was changed, as flag phrases; a default grid with no size that fits raises ValueError."""
    smallest, n_classes = class_sizes(train_y)
    sizes, ks, notes = list(samples_per_class), list(n_neighbours), []
    if "samples_per_class" not in given:
        fits = [n for n in sizes if folds <= n <= smallest]
        if not fits:
            raise ValueError(f"the smallest class of the training set has {smallest} images: none of the default "
                             f"--samples_per_class {','.join(map(str, sizes))} fits (at least {folds} for "
                             f"{folds}-fold cross-validation, at most {smallest}); pass --samples_per_class")
        if fits != sizes:
            notes.append(f"--samples_per_class {','.join(map(str, fits))} (dropped "
                         f"{','.join(str(n) for n in sizes if n not in fits)})")
        sizes = fits
    if "n_neighbours" not in given:
        fits = [k for k in ks if k <= cv_fit_size(min(sizes), n_classes, folds)]
        if fits and fits != ks:
            notes.append(f"--n_neighbours {','.join(map(str, fits))} (dropped "
                         f"{','.join(str(k) for k in ks if k not in fits)})")
            ks = fits
    if "test_samples_per_class" not in given and test_per_class > smallest:
        notes.append(f"--test_samples_per_class {smallest} (not {test_per_class})")
        test_per_class = smallest
    return sizes, ks, test_per_class, notes


def check_protocol(train_y: np.ndarray, samples_per_class: Sequence[int], n_neighbours: Sequence[int],
                   test_per_class: int, test_ks: Sequence[int], folds: int = CV_FOLDS) -> None:
    """Raise ValueError, naming the flag, if the sizes cannot be run on these labels."""
    smallest, n_classes = class_sizes(train_y)
    for flag, n in [("--samples_per_class", max(samples_per_class)), ("--test_samples_per_class", test_per_class)]:
        if n > smallest:
            raise ValueError(f"{flag} {n} is more than the smallest class of the training set allows "
                             f"({smallest} images)")
    if min(samples_per_class) < folds:
        raise ValueError(f"--samples_per_class must be at least {folds} for {folds}-fold cross-validation, "
                         f"got {min(samples_per_class)}")
    fit_size = cv_fit_size(min(samples_per_class), n_classes, folds)
    if max(n_neighbours) > fit_size:
        raise ValueError(f"--n_neighbours {max(n_neighbours)} is more than the {fit_size} points a CV fold "
                         f"fits on with --samples_per_class {min(samples_per_class)}")
    if max(test_ks) > test_per_class * n_classes:
        raise ValueError(f"k = {max(test_ks)} is more than the {test_per_class * n_classes} points of "
                         f"--test_samples_per_class {test_per_class}")
