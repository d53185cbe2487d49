"""Disentanglement metrics of a code against the known factors of its images: MIG, the FactorVAE score,
DCI and SAP, each as its paper defines it, with the choices on which implementations disagree fixed
here and written into the eval JSON (:class:`Settings`).

Choices (disentanglement_lib, Locatello et al. 2019, is followed where it fixes one; where we differ,
it says so):
- the code is the posterior mean (never a sample), for every metric;
- factors are discrete (the grid indices), sampled uniformly and independently from the grid;
- MIG (Chen et al. 2018): each code dimension binned into ``bins`` = 20 equal-width bins between its
  minimum and maximum (as disentanglement_lib), mutual information of the bins with each factor by
  scikit-learn's ``mutual_info_score`` (nats), the gap between the two best dimensions divided by the
  factor's entropy, averaged over factors. On dSprites reported twice: over all factors
  (disentanglement_lib keeps the shape) and without the shape (Chen et al.'s code). A factor of more
  values than bins (32 positions) cannot reach 1 even for a perfect code (log 20 / log 32 = 0.86);
- FactorVAE score (Kim & Mnih 2018): each dimension's global variance (ddof 1) over ``scale_samples``
  images; dimensions whose standard deviation is below ``prune_std`` = 0.05 pruned (collapsed ones:
  disentanglement_lib's ``prune_dims.threshold``, on the standard deviation, not the variance); a vote
  fixes one factor at a random value in ``vote_batch`` = 64 images (disentanglement_lib's batch) and names
  the active dimension of least variance within the batch (ddof 1) over its global variance; a
  majority-vote classifier learnt on ``train_votes`` votes is scored on ``eval_votes`` others;
- DCI (Eastwood & Williams 2018): importances from scikit-learn random forests (one classifier per
  factor, ``forest_trees`` trees, each split over all dimensions, impurity importances) where
  disentanglement_lib uses gradient-boosted trees (one tree per class and stage: slow for 32 positions
  on a CPU); D: 1 - entropy (base F) of each dimension's importance over the factors, weighted by the
  dimension's share of importance; C: 1 - entropy (base D) of each factor's importance over the
  dimensions, weighted by the factor's share; 1e-11 added to every importance before the entropies;
  I: the forests' test accuracy, averaged over factors (all as disentanglement_lib's dci.py);
- SAP (Kumar et al. 2018): for each factor and dimension, the test accuracy of a linear SVM on that
  dimension alone (LinearSVC, C = 0.01, balanced classes: disentanglement_lib's); the gap between the
  two best dimensions, averaged over factors. A linear classifier of one dimension separates few of a
  factor's many values, so even a perfect code scores well below 1 (0.25 on tests/test_disentanglement.py);
- sample counts: disentanglement_lib's (MIG 10,000; DCI and SAP 10,000 training and 5,000 test
  images; FactorVAE 10,000 images for the variances) except the FactorVAE votes (500 / 300 where it has
  10,000 / 5,000: each vote encodes 64 images; docs/disentanglement.md gives the measured cost);
- every sample and model is seeded by ``seed``.

MIG and the gap statistics are hand-written (a few lines of numpy: no maintained library has them);
mutual information, the forests and the SVMs are scikit-learn's, the entropies scipy's.
tests/test_disentanglement_reference.py checks every score against an independent reference of
disentanglement_lib's definitions.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

# represent(factors (n, F) of grid indices) -> codes (n, D): the images of those factors, encoded
Represent = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Settings:
    """Sample counts and models of the metrics (written into the eval JSON beside the scores)."""

    bins: int = 20  # MIG: equal-width bins per code dimension
    mig_samples: int = 10_000  # MIG: images
    scale_samples: int = 10_000  # FactorVAE score: images for the global variances
    vote_batch: int = 64  # FactorVAE score: images per vote (L)
    train_votes: int = 500  # FactorVAE score: votes that fit the majority-vote classifier (dlib: 10,000)
    eval_votes: int = 300  # FactorVAE score: votes it is scored on (dlib: 5,000)
    prune_std: float = 0.05  # FactorVAE score: dimensions of smaller std (raw posterior means) are dropped
    train_samples: int = 10_000  # DCI and SAP: training images
    test_samples: int = 5_000  # DCI and SAP: test images
    forest_trees: int = 30  # DCI: trees per random forest
    svm_c: float = 0.01  # SAP: LinearSVC's C
    seed: int = 0

    def to_dict(self) -> dict:
        return {"code": "posterior mean", **asdict(self), "dci_model": "RandomForestClassifier (impurity importances)",
                "sap_model": "LinearSVC per dimension (balanced)", "mi": "sklearn mutual_info_score, nats"}


def sample_factors(sizes: Sequence[int], n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` factor combinations drawn uniformly from the grid: (n, F) indices."""
    return np.stack([rng.integers(0, s, n) for s in sizes], axis=1)


def _binned(codes: np.ndarray, bins: int) -> np.ndarray:
    """Each column of ``codes`` as bin indices of ``bins`` equal-width bins over its own range."""
    out = np.zeros(codes.shape, dtype=np.int64)
    for j in range(codes.shape[1]):
        edges = np.histogram_bin_edges(codes[:, j], bins)
        out[:, j] = np.digitize(codes[:, j], edges[1:-1])
    return out


def mutual_information(codes: np.ndarray, factors: np.ndarray, bins: int = 20) -> np.ndarray:
    """I(z_j; v_k) in nats, (D, F), with each code dimension binned (see the module's docstring)."""
    from sklearn.metrics import mutual_info_score

    binned = _binned(codes, bins)
    return np.array([[mutual_info_score(factors[:, k], binned[:, j]) for k in range(factors.shape[1])]
                     for j in range(codes.shape[1])])


def factor_entropies(factors: np.ndarray) -> np.ndarray:
    """H(v_k) in nats of each factor's empirical distribution, (F,)."""
    from sklearn.metrics import mutual_info_score

    return np.array([mutual_info_score(factors[:, k], factors[:, k]) for k in range(factors.shape[1])])


def _gaps(scores: np.ndarray) -> np.ndarray:
    """Per column of ``scores`` (D, F): the best value minus the second best (0 with one row)."""
    top = np.sort(scores, axis=0)[::-1]
    return top[0] - top[1] if len(top) > 1 else top[0] * 0


def mig(codes: np.ndarray, factors: np.ndarray, bins: int = 20) -> dict:
    """MIG per factor and its mean (Chen et al. 2018, eq. 6); also the MI matrix (D, F) it came from."""
    mi = mutual_information(codes, factors, bins)
    entropy = factor_entropies(factors)
    per_factor = np.where(entropy > 0, _gaps(mi) / np.maximum(entropy, 1e-12), 0.0)
    return {"mig": float(per_factor.mean()), "per_factor": per_factor.tolist(), "mi": mi.tolist(),
            "entropy": entropy.tolist()}


def factorvae_score(represent: Represent, sizes: Sequence[int], settings: Settings = Settings()) -> dict:
    """Kim & Mnih's score: the held-out accuracy of the majority-vote classifier (see the docstring)."""
    rng = np.random.default_rng(settings.seed)
    variance = represent(sample_factors(sizes, settings.scale_samples, rng)).var(axis=0, ddof=1)
    # a collapsed dimension barely moves: pruned by its standard deviation (disentanglement_lib's
    # threshold is on the std; on the variance it dropped dimensions of std 0.05 to 0.22 with their votes)
    active = np.sqrt(variance) >= settings.prune_std
    if not active.any():
        return {"factorvae_score": 0.0, "factorvae_train_accuracy": 0.0, "active_dims": 0}

    def votes(n: int) -> np.ndarray:
        out = np.zeros((len(variance), len(sizes)), dtype=np.int64)
        for _ in range(n):
            k = int(rng.integers(len(sizes)))
            f = sample_factors(sizes, settings.vote_batch, rng)
            f[:, k] = rng.integers(sizes[k])
            ratio = represent(f).var(axis=0, ddof=1)[active] / variance[active]  # active: variance > 0
            dim = int(np.flatnonzero(active)[np.argmin(ratio)])
            out[dim, k] += 1
        return out

    train, test = votes(settings.train_votes), votes(settings.eval_votes)
    guess = train.argmax(axis=1)  # each dimension votes for its most frequent factor
    return {"factorvae_score": float(test[np.arange(len(guess)), guess].sum() / test.sum()),
            "factorvae_train_accuracy": float(train.max(axis=1).sum() / train.sum()),
            "active_dims": int(active.sum())}


def dci(train_codes: np.ndarray, train_factors: np.ndarray, test_codes: np.ndarray, test_factors: np.ndarray,
        settings: Settings = Settings()) -> dict:
    """Eastwood & Williams' disentanglement, completeness and informativeness (see the docstring)."""
    from scipy.stats import entropy
    from sklearn.ensemble import RandomForestClassifier

    n_dims, n_factors = train_codes.shape[1], train_factors.shape[1]
    importance, accuracy = np.zeros((n_dims, n_factors)), []
    for k in range(n_factors):
        # every split may use every dimension: with sqrt(D) of them drawn per split (sklearn's default) a
        # split must often use a dimension that knows nothing of the factor, which blurs D and C
        forest = RandomForestClassifier(settings.forest_trees, max_features=None, random_state=settings.seed,
                                        n_jobs=1)
        forest.fit(train_codes, train_factors[:, k])
        importance[:, k] = np.abs(forest.feature_importances_)
        accuracy.append(float(forest.score(test_codes, test_factors[:, k])))
    # disentanglement_lib's dci.py: 1e-11 keeps a row or column of zeros finite (it counts as uniform)
    per_dim = 1 - entropy(importance.T + 1e-11, base=n_factors) if n_factors > 1 else np.ones(n_dims)
    per_factor = 1 - entropy(importance + 1e-11, base=n_dims) if n_dims > 1 else np.ones(n_factors)
    share = importance if importance.sum() > 0 else np.ones_like(importance)
    share = share / share.sum()
    return {"dci_disentanglement": float((share.sum(axis=1) * per_dim).sum()),
            "dci_completeness": float((share.sum(axis=0) * per_factor).sum()),
            "dci_informativeness": float(np.mean(accuracy)), "dci_importance": importance.tolist()}


def sap(train_codes: np.ndarray, train_factors: np.ndarray, test_codes: np.ndarray, test_factors: np.ndarray,
        settings: Settings = Settings()) -> dict:
    """Kumar et al.'s SAP score with discrete factors (see the docstring)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    scores = np.zeros((train_codes.shape[1], train_factors.shape[1]))
    for j in range(train_codes.shape[1]):
        for k in range(train_factors.shape[1]):
            svm = LinearSVC(C=settings.svm_c, class_weight="balanced", random_state=settings.seed)
            with warnings.catch_warnings():  # a dimension that carries nothing of k does not converge: score low
                warnings.simplefilter("ignore", ConvergenceWarning)
                svm.fit(train_codes[:, j:j + 1], train_factors[:, k])
            scores[j, k] = svm.score(test_codes[:, j:j + 1], test_factors[:, k])
    return {"sap": float(_gaps(scores).mean()), "sap_matrix": scores.tolist()}


def disentanglement_scores(represent: Represent, sizes: Sequence[int], names: Sequence[str],
                           settings: Settings = Settings()) -> dict:
    """All four metrics of ``represent`` on a factor grid of ``sizes`` (factors ``names``), for the eval
    JSON: the headline numbers, the per-factor MIG, the MI matrix the heat map draws, and the settings."""
    rng = np.random.default_rng(settings.seed + 1)  # the factor-vote stream (seed) is FactorVAE's own
    f_mig = sample_factors(sizes, settings.mig_samples, rng)
    m = mig(represent(f_mig), f_mig, settings.bins)
    f_train, f_test = (sample_factors(sizes, n, rng) for n in (settings.train_samples, settings.test_samples))
    c_train, c_test = represent(f_train), represent(f_test)
    out = {"mig": m["mig"], "mig_per_factor": dict(zip(names, m["per_factor"])), "mi_matrix": m["mi"],
           "factor_entropy": dict(zip(names, m["entropy"])), "factor_names": list(names)}
    if "shape" in names:  # Chen et al.'s dSprites MIG leaves the shape out; disentanglement_lib keeps it
        out["mig_without_shape"] = float(np.mean([v for n, v in zip(names, m["per_factor"]) if n != "shape"]))
    out.update(factorvae_score(represent, sizes, settings))
    d = dci(c_train, f_train, c_test, f_test, settings)
    s = sap(c_train, f_train, c_test, f_test, settings)
    out.update(d, sap=s["sap"], sap_matrix=s["sap_matrix"], settings=settings.to_dict())
    return out
