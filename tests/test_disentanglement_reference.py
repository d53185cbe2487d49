"""The disentanglement metrics of evaluation/disentanglement.py against references written here, independent
of that module, from the papers' and disentanglement_lib's definitions (google-research/disentanglement_lib,
evaluation/metrics/mig.py, sap_score.py, dci.py, factor_vae.py, utils.py and the unsupervised study's
metric_configs/*.gin): on fixed codes of a toy factor grid (the true factors, a rotated pair, a duplicated
factor, a dimension of standard deviation 0.1, random codes) every score agrees to 1e-9, so a changed bin
count, estimator, pruning threshold or normalisation fails here. The tree has MIG, the FactorVAE score, DCI
and SAP (no BetaVAE score). Where the estimator is random (DCI's forests) both sides use the same
estimator with the same seed: the tree's choice of random forests over disentanglement_lib's boosted trees is
documented in docs/disentanglement.md and pinned here."""
import warnings

import numpy as np
import pytest
import scipy.stats
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import mutual_info_score
from sklearn.svm import LinearSVC

from evaluation.disentanglement import Settings, dci, disentanglement_scores, factorvae_score, mig, sap

SIZES = (3, 6, 10, 8)  # a toy grid: small enough for seconds, values per factor below the 20 bins
TOL = 1e-9
# disentanglement_lib's fixed choices (metric_configs/*.gin): the reference hard-codes them, the tree must agree
DLIB_BINS = 20  # discretizer.num_bins
DLIB_PRUNE_STD = 0.05  # prune_dims.threshold, on the standard deviation
DLIB_VOTE_BATCH = 64  # factor_vae_score.batch_size
DLIB_SVM_C = 0.01  # sap_score: LinearSVC(C=0.01, class_weight="balanced")


# ---- codes: fixed functions of the factors, as an encoder is -------------------------------------------------

def _unit(f: np.ndarray) -> np.ndarray:
    return f / (np.array(SIZES) - 1.0)


def _with_std(k: int, std: float):
    """The true factors with factor k's dimension rescaled to standard deviation ``std`` over the grid."""
    n = SIZES[k]
    grid_std = np.sqrt((n + 1) / (12.0 * (n - 1)))  # of n evenly spaced values in [0, 1]

    def represent(f):
        u = _unit(f)
        u[:, k] *= std / grid_std
        return u
    return represent


def _rotated(f):
    u = _unit(f)
    return np.stack([(u[:, 0] + u[:, 1]) / np.sqrt(2), (u[:, 0] - u[:, 1]) / np.sqrt(2), u[:, 2], u[:, 3]], 1)


def _duplicated(f):
    u = _unit(f)
    return np.concatenate([u[:, :1], u], 1)


_TABLE = np.random.default_rng(7).standard_normal((*SIZES, 5))


def _random(f):
    """A random code per grid cell (fixed): knows the factors only by chance."""
    return _TABLE[tuple(f.T)]


CODES = {"true factors": _unit, "rotated pair": _rotated, "duplicated factor": _duplicated,
         "std 0.1": _with_std(0, 0.1), "random": _random}


def _factors(n: int, seed: int) -> np.ndarray:
    g = np.random.default_rng(seed)
    return np.stack([g.integers(0, s, n) for s in SIZES], 1)


TRAIN, TEST = _factors(2000, 1), _factors(1000, 2)  # sample counts passed explicitly: seconds, not minutes


# ---- references ----------------------------------------------------------------------------------------------

def ref_mig(codes: np.ndarray, factors: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Chen et al.'s MIG as disentanglement_lib computes it: each code dimension cut by np.digitize against
    np.histogram's first 20 edges, I(factor; bin) by sklearn's mutual_info_score (nats), the gap of the
    two largest per factor over H(factor) (the factor's mutual_info_score with itself), averaged."""
    binned = [np.digitize(c, np.histogram(c, DLIB_BINS)[1][:-1]) for c in codes.T]
    mi = np.array([[mutual_info_score(v, b) for v in factors.T] for b in binned])
    entropy = np.array([mutual_info_score(v, v) for v in factors.T])
    best = np.sort(mi, axis=0)
    return float(np.mean((best[-1] - best[-2]) / entropy)), mi, entropy


def ref_sap(train_c, train_f, test_c, test_f, dual="auto") -> tuple[float, np.ndarray]:
    """Kumar et al.'s SAP with discrete factors (disentanglement_lib's continuous_factors=False): the test
    accuracy of a balanced LinearSVC (C 0.01) on one code dimension, the gap of the two best, averaged.
    ``dual=True``: liblinear's dual solver, scikit-learn's default when disentanglement_lib was written."""
    acc = np.zeros((train_c.shape[1], train_f.shape[1]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for i in range(acc.shape[0]):
            for j in range(acc.shape[1]):
                svm = LinearSVC(C=DLIB_SVM_C, class_weight="balanced", dual=dual, random_state=0)
                svm.fit(train_c[:, [i]], train_f[:, j])
                acc[i, j] = np.mean(svm.predict(test_c[:, [i]]) == test_f[:, j])
    top = np.sort(acc, axis=0)
    return float(np.mean(top[-1] - top[-2])), acc


def ref_dci(train_c, train_f, test_c, test_f, trees: int, seed: int) -> dict:
    """Eastwood & Williams' D, C, I with disentanglement_lib's formulas (1e-11 added before the entropies,
    D weighted by each code dimension's share of importance, C by each factor's, I the mean test accuracy)
    on the importances of a random forest per factor (every split over all dimensions)."""
    n_codes, n_factors = train_c.shape[1], train_f.shape[1]
    r = np.zeros((n_codes, n_factors))
    acc = []
    for j in range(n_factors):
        model = RandomForestClassifier(n_estimators=trees, max_features=None, random_state=seed)
        model.fit(train_c, train_f[:, j])
        r[:, j] = np.abs(model.feature_importances_)
        acc.append(np.mean(model.predict(test_c) == test_f[:, j]))
    d_code = 1 - scipy.stats.entropy(r.T + 1e-11, base=n_factors)
    c_factor = 1 - scipy.stats.entropy(r + 1e-11, base=n_codes)
    w = r if r.sum() > 0 else np.ones_like(r)
    return {"d": float(np.sum(d_code * w.sum(1) / w.sum())), "c": float(np.sum(c_factor * w.sum(0) / w.sum())),
            "i": float(np.mean(acc)), "importance": r}


class Recorded:
    """``represent`` that keeps every (factors, codes) it was asked for: the FactorVAE reference rescores the
    very batches the tree drew (its first call is the variance sample, then one call per vote)."""

    def __init__(self, represent):
        self.represent, self.calls = represent, []

    def __call__(self, f):
        codes = self.represent(f)
        self.calls.append((f.copy(), codes.copy()))
        return codes


def ref_factorvae(calls, train_votes: int, eval_votes: int) -> dict:
    """Kim & Mnih's score as disentanglement_lib computes it: global variances (ddof 1) of the codes,
    dimensions of standard deviation below 0.05 pruned, each vote the active dimension of least variance
    (ddof 1) within its batch over its global variance, for the factor held fixed in that batch; a
    majority-vote classifier from the training votes, its accuracy on the evaluation votes."""
    (_, global_codes), batches = calls[0], calls[1:]
    assert len(batches) == train_votes + eval_votes, "one represent call per vote after the variance sample"
    variance = np.var(global_codes, axis=0, ddof=1)
    active = np.sqrt(variance) >= DLIB_PRUNE_STD
    if not active.any():
        return {"eval": 0.0, "train": 0.0, "active": 0}

    def tally(part):
        votes = np.zeros((len(SIZES), int(active.sum())), dtype=np.int64)  # factors x active dims
        for f, codes in part:
            assert len(f) == DLIB_VOTE_BATCH
            fixed = np.flatnonzero(f.min(0) == f.max(0))
            assert len(fixed) == 1, "exactly one factor held fixed per vote"
            local = np.var(codes, axis=0, ddof=1)
            votes[fixed[0], np.argmin(local[active] / variance[active])] += 1
        return votes

    train, evaluation = tally(batches[:train_votes]), tally(batches[train_votes:])
    guess, cols = np.argmax(train, axis=0), np.arange(train.shape[1])
    return {"eval": float(evaluation[guess, cols].sum() / evaluation.sum()),
            "train": float(train[guess, cols].sum() / train.sum()), "active": int(active.sum())}


# ---- the tree against the references -------------------------------------------------------------------------

@pytest.mark.parametrize("name", CODES)
def test_mig_matches_the_reference(name):
    codes = CODES[name](TRAIN)
    ours = mig(codes, TRAIN)  # bins left at the default: it must be disentanglement_lib's 20
    score, mi, entropy = ref_mig(codes, TRAIN)
    np.testing.assert_allclose(ours["mi"], mi, rtol=0, atol=TOL)
    np.testing.assert_allclose(ours["entropy"], entropy, rtol=0, atol=TOL)
    assert ours["mig"] == pytest.approx(score, abs=TOL)


@pytest.mark.parametrize("name", CODES)
def test_sap_matches_the_reference(name):
    f = CODES[name]
    ours = sap(f(TRAIN), TRAIN, f(TEST), TEST)
    score, acc = ref_sap(f(TRAIN), TRAIN, f(TEST), TEST)
    np.testing.assert_allclose(ours["sap_matrix"], acc, rtol=0, atol=TOL)
    assert ours["sap"] == pytest.approx(score, abs=TOL)


@pytest.mark.parametrize("name", CODES)
def test_dci_matches_the_reference(name):
    f, settings = CODES[name], Settings(forest_trees=10, seed=3)
    ours = dci(f(TRAIN), TRAIN, f(TEST), TEST, settings)
    ref = ref_dci(f(TRAIN), TRAIN, f(TEST), TEST, trees=10, seed=3)
    np.testing.assert_allclose(ours["dci_importance"], ref["importance"], rtol=0, atol=TOL)
    assert ours["dci_disentanglement"] == pytest.approx(ref["d"], abs=TOL)
    assert ours["dci_completeness"] == pytest.approx(ref["c"], abs=TOL)
    assert ours["dci_informativeness"] == pytest.approx(ref["i"], abs=TOL)


def test_sap_is_the_same_with_disentanglement_libs_solver():
    """scikit-learn now picks LinearSVC's primal solver for one feature (dual="auto"); disentanglement_lib
    ran the dual one. On these codes the accuracies, and so the SAP, are the same."""
    for f in CODES.values():
        ours = sap(f(TRAIN), TRAIN, f(TEST), TEST)
        np.testing.assert_allclose(ours["sap_matrix"], ref_sap(f(TRAIN), TRAIN, f(TEST), TEST, dual=True)[1],
                                   rtol=0, atol=TOL)


FACTORVAE = Settings(scale_samples=2000, train_votes=200, eval_votes=100, seed=5)  # vote_batch left at 64


def _factorvae(represent):
    recorded = Recorded(represent)
    ours = factorvae_score(recorded, SIZES, FACTORVAE)
    return ours, ref_factorvae(recorded.calls, FACTORVAE.train_votes, FACTORVAE.eval_votes)


@pytest.mark.parametrize("name", CODES)
def test_factorvae_score_matches_the_reference(name):
    ours, ref = _factorvae(CODES[name])
    assert ours["factorvae_score"] == pytest.approx(ref["eval"], abs=TOL)
    assert ours["factorvae_train_accuracy"] == pytest.approx(ref["train"], abs=TOL)
    assert ours["active_dims"] == ref["active"]


def test_factorvae_keeps_a_dimension_of_std_above_0_05_and_prunes_one_below():
    """disentanglement_lib prunes on the standard deviation (< 0.05), not the variance: a factor's
    dimension scaled to std 0.1 or 0.06 (variance 0.01, 0.0036) still votes, and the score stays 1; at
    std 0.04 the dimension is dropped and its factor's votes go astray."""
    for std in (0.1, 0.06):
        ours, ref = _factorvae(_with_std(0, std))
        assert ours["active_dims"] == ref["active"] == 4, std
        assert ours["factorvae_score"] == ref["eval"] == 1.0, std
    ours, ref = _factorvae(_with_std(0, 0.04))
    assert ours["active_dims"] == ref["active"] == 3
    assert ours["factorvae_score"] == pytest.approx(ref["eval"], abs=TOL) and ours["factorvae_score"] < 0.9


def test_the_report_is_the_references_on_the_samples_it_drew():
    """--evaluate --disentanglement's entry point with its default settings (bins, C, trees' split rule,
    pruning; only the sample counts made small): every score is the references' on the very samples it
    drew (told apart by their sizes). The code: the true factors with factor 0 at std 0.1, and one
    random dimension, whose MI depends on the bin edges."""
    settings = Settings(mig_samples=1800, scale_samples=1200, train_votes=150, eval_votes=80, train_samples=1500,
                        test_samples=700, forest_trees=10)
    with_std = _with_std(0, 0.1)
    recorded = Recorded(lambda f: np.concatenate([with_std(f), _random(f)[:, :1]], 1))
    out = disentanglement_scores(recorded, SIZES, ("a", "b", "c", "d"), settings)
    sized = {len(f): (f, c) for f, c in recorded.calls if len(f) != DLIB_VOTE_BATCH}
    (f_mig, c_mig), (f_tr, c_tr), (f_te, c_te) = (sized[n] for n in (1800, 1500, 700))
    score, mi, _ = ref_mig(c_mig, f_mig)
    assert out["mig"] == pytest.approx(score, abs=TOL)
    np.testing.assert_allclose(out["mi_matrix"], mi, rtol=0, atol=TOL)
    d = ref_dci(c_tr, f_tr, c_te, f_te, trees=10, seed=settings.seed)
    assert (out["dci_disentanglement"], out["dci_completeness"], out["dci_informativeness"]) == pytest.approx(
        (d["d"], d["c"], d["i"]), abs=TOL)
    assert out["sap"] == pytest.approx(ref_sap(c_tr, f_tr, c_te, f_te)[0], abs=TOL)
    start = next(i for i, (f, _) in enumerate(recorded.calls) if len(f) == 1200)
    fv = ref_factorvae(recorded.calls[start:], 150, 80)
    assert out["factorvae_score"] == pytest.approx(fv["eval"], abs=TOL) and fv["active"] == out["active_dims"] == 5


def test_the_references_give_the_known_answers():
    """The references themselves on codes whose answers are known (so a wrong reference cannot pass
    silently): the true factors score MIG near 1 (each value in a bin of its own; short of 1 by the chance
    MI of independent factors in 2,000 samples), D = C = 1 up to the forests' stray splits, FactorVAE 1; a
    duplicated factor loses that factor's MIG gap; random codes score SAP near 0."""
    assert ref_mig(_unit(TRAIN), TRAIN)[0] > 0.98
    mi_factor0 = np.sort(ref_mig(_duplicated(TRAIN), TRAIN)[1][:, 0])
    assert mi_factor0[-1] == pytest.approx(mi_factor0[-2], abs=1e-12)
    d = ref_dci(_unit(TRAIN), TRAIN, _unit(TEST), TEST, trees=10, seed=0)
    assert d["d"] > 0.99 and d["c"] > 0.99 and d["i"] == 1.0
    assert _factorvae(_unit)[1]["eval"] == 1.0
    assert ref_sap(_random(TRAIN), TRAIN, _random(TEST), TEST)[0] < 0.05


def test_the_default_settings_are_disentanglement_libs():
    """--evaluate --disentanglement's defaults: disentanglement_lib's bins, threshold, batch, C and sample
    counts (metric_configs/*.gin), except the FactorVAE votes (docs/disentanglement.md gives their cost)."""
    s = Settings()
    assert (s.bins, s.prune_std, s.vote_batch, s.svm_c) == (DLIB_BINS, DLIB_PRUNE_STD, DLIB_VOTE_BATCH, DLIB_SVM_C)
    assert (s.mig_samples, s.scale_samples, s.train_samples, s.test_samples) == (10_000, 10_000, 10_000, 5_000)
