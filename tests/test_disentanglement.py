"""The disentanglement metrics (evaluation/disentanglement.py) on codes whose answers are known: the true
factors as the code (MIG, DCI-D ~ 1), a random code (~ 0), a rotated mixture of two factors, a duplicated
factor."""
import numpy as np
import pytest

from evaluation.disentanglement import Settings, dci, disentanglement_scores, factorvae_score, mig, sample_factors, sap

SIZES = (3, 6, 10, 8)  # at most 20 values: a perfect code's MIG can reach 1 with 20 bins
FAST = Settings(mig_samples=4000, scale_samples=2000, train_votes=300, eval_votes=200, train_samples=2000,
                test_samples=1000, forest_trees=20)


NOISE = np.random.default_rng(6)


def _unit(f):
    """Each factor's index mapped onto [0, 1]: a fixed function of the factors, as an encoder is."""
    return f / (np.array(SIZES) - 1.0)


def identity(f):
    return _unit(f)


def rotated(f):
    u = _unit(f)
    return np.stack([(u[:, 0] + u[:, 1]) / np.sqrt(2), (u[:, 0] - u[:, 1]) / np.sqrt(2), u[:, 2], u[:, 3]], 1)


def duplicated(f):
    u = identity(f)
    return np.concatenate([u[:, :1], u], 1)


def noise(f):
    return NOISE.standard_normal((len(f), 4))


def scores(represent):
    rng = np.random.default_rng(0)
    f = sample_factors(SIZES, 4000, rng)
    ft, fe = sample_factors(SIZES, 2000, rng), sample_factors(SIZES, 1000, rng)
    return (mig(represent(f), f), dci(represent(ft), ft, represent(fe), fe, FAST), sap(represent(ft), ft,
                                                                                    represent(fe), fe, FAST))


def test_the_true_factors_score_one():
    m, d, s = scores(identity)
    assert m["mig"] > 0.95 and min(m["per_factor"]) > 0.9
    assert d["dci_disentanglement"] > 0.9 and d["dci_completeness"] > 0.9 and d["dci_informativeness"] > 0.98
    # a linear SVM on one dimension cuts it at best into ordered pieces by one-vs-rest planes: even the
    # true factor falls short of 1 for many values (as in disentanglement_lib, whose classifier this is)
    assert s["sap"] > 0.2 and np.argmax(s["sap_matrix"], axis=0).tolist() == [0, 1, 2, 3]
    assert factorvae_score(identity, SIZES, FAST)["factorvae_score"] == 1.0


def test_a_random_code_scores_zero():
    m, d, s = scores(noise)
    assert m["mig"] < 0.05
    assert d["dci_disentanglement"] < 0.15 and d["dci_informativeness"] < 0.5
    assert s["sap"] < 0.05
    assert factorvae_score(noise, SIZES, FAST)["factorvae_score"] < 0.6  # chance is 1/4, small samples


def test_a_rotated_mixture_loses_the_mixed_factors():
    m, d, _ = scores(rotated)
    per = m["per_factor"]
    assert per[0] < 0.3 and per[1] < 0.3 and per[2] > 0.9 and per[3] > 0.9  # MI split over two dimensions
    assert m["mig"] == pytest.approx(np.mean(per)) and 0.4 < m["mig"] < 0.65
    assert d["dci_informativeness"] > 0.9  # all still there, only mixed
    assert d["dci_disentanglement"] < scores(identity)[1]["dci_disentanglement"] - 0.2


def test_a_duplicated_factor_has_no_gap():
    m, d, s = scores(duplicated)
    per = m["per_factor"]
    assert per[0] < 0.05 and min(per[1:]) > 0.9  # two dimensions know factor 0 equally well
    assert d["dci_disentanglement"] > 0.9  # each dimension still serves one factor
    assert d["dci_completeness"] < 0.9  # but factor 0 is spread over two of them
    assert s["sap"] < scores(identity)[2]["sap"]


def test_the_report_has_every_metric_and_its_settings():
    names = ("shape", "scale", "orientation", "pos_x")
    out = disentanglement_scores(identity, SIZES, names, FAST)
    for key in ("mig", "mig_without_shape", "factorvae_score", "dci_disentanglement", "dci_completeness",
                "dci_informativeness", "sap"):
        assert 0.0 <= out[key] <= 1.0, key
    assert out["mig_without_shape"] == pytest.approx(np.mean([out["mig_per_factor"][n] for n in names[1:]]))
    assert np.array(out["mi_matrix"]).shape == (4, 4) and out["settings"]["bins"] == 20
    assert out["settings"]["code"] == "posterior mean"
    assert disentanglement_scores(identity, SIZES, names, FAST)["mig"] == out["mig"]  # seeded


def _dsprites_run(name, *extra):
    return ["--dataset_type", "dsprites", "--factor_images", "700", "--model_type", "fc", "--latent_space_size",
            "4", "--epochs", "1", "--batch-size", "100", "--lognumber", name, "--no_cuda", "True",
            "--tensorboard_images", "False", "--data_root", "data", *extra]


def test_evaluate_disentanglement_writes_the_four_metrics(workdir, monkeypatch):
    import json

    from evaluation import modes
    from helpers import run_cli

    assert run_cli(_dsprites_run("d"))[0] == 0
    # few images: the default sample counts take a minute, which is what they are for, not what this tests
    tiny = Settings(mig_samples=1000, scale_samples=500, vote_batch=16, train_votes=40, eval_votes=40,
                    train_samples=500, test_samples=300, forest_trees=5)
    monkeypatch.setattr(modes, "Settings", lambda seed: Settings(**{**tiny.__dict__, "seed": seed}))
    code, out, err = run_cli(_dsprites_run("d", "--evaluate", "--disentanglement", "--resume",
                                           "weights/d_checkpoint.pth.tar"))
    assert code == 0, err
    report = json.load(open("weights/d_eval.json"))["disentanglement"]
    for key in ("mig", "mig_without_shape", "factorvae_score", "dci_disentanglement", "dci_completeness",
                "dci_informativeness", "sap"):
        assert 0.0 <= report[key] <= 1.0, key
        assert f"{report[key]:.3f}" in out
    assert report["factor_names"] == ["shape", "scale", "orientation", "pos_x", "pos_y"]
    assert np.array(report["mi_matrix"]).shape == (4, 5)
    assert report["settings"]["code"] == "posterior mean" and report["settings"]["seed"] == 42
    # --predict on a factor data set: the heat map beside the (labelled) traversals
    code, _, err = run_cli(_dsprites_run("d", "--predict", "--resume", "weights/d_checkpoint.pth.tar"))
    assert code == 0, err
    from PIL import Image

    for name in ("mi_heatmap", "traversals"):
        assert min(Image.open(f"results/d/{name}.png").size) > 200


def test_disentanglement_without_factors_is_one_line(tiny_mnist, workdir):
    from helpers import assert_cli_error, run_cli, tiny_args

    assert run_cli(tiny_args(tiny_mnist))[0] == 0
    code, _, err = run_cli(tiny_args(tiny_mnist, "--evaluate", "--disentanglement", "--resume",
                                     "weights/r_checkpoint.pth.tar"))
    assert_cli_error(code, err, "--disentanglement needs images with known factors", "mnist has none")
    code, _, err = run_cli(tiny_args(tiny_mnist, "--disentanglement"))
    assert_cli_error(code, err, "--disentanglement needs --evaluate")


def test_heatmap_labels_each_latent_with_the_factor_it_carries(tmp_path):
    import torch

    from datasets import Split
    from evaluation.latent_pictures import write_factor_heatmap

    class Known(torch.nn.Module):
        """An 'encoder' whose code is (pos_x, noise, scale): z0 carries pos_x, z2 scale, z1 nothing."""

        conditional = False

        def posterior(self, x, y=None):
            f = x.flatten(1)[:, :3]
            return f, torch.zeros_like(f) - 2

        def eval(self):
            return self

    g = np.random.default_rng(0)
    factors = sample_factors((3, 6, 10), 2000, g)
    x = torch.tensor(np.stack([factors[:, 2] / 9.0, g.random(2000), factors[:, 1] / 5.0], 1), dtype=torch.float32)
    data = Split(x=x.reshape(-1, 1, 1, 3), y=torch.zeros(2000, dtype=torch.long), factors=torch.tensor(factors),
                 factor_names=["shape", "scale", "pos_x"])
    labels = write_factor_heatmap(Known(), data, torch.device("cpu"), str(tmp_path / "h.png"))
    assert labels[0].startswith("pos_x") and labels[2].startswith("scale") and labels[1] == "-"
    assert (tmp_path / "h.png").stat().st_size > 1000


def test_the_study_writes_its_table_and_reuses_a_finished_run(tmp_path):
    import json

    from benchmarks import disentanglement as study
    from helpers import run_module_cli

    argv = ["--epochs", "1", "--factor_images", "700", "--seeds", "3", "--only", "betatc", "--tiny_metrics",
            "--work_dir", str(tmp_path / "w"), "--out", str(tmp_path / "d"), "--data_root", str(tmp_path)]
    code, out, err = run_module_cli(study, argv)
    assert code == 0, err
    report = json.load(open(tmp_path / "d.json"))
    run = report["runs"]["betatc"][0]
    assert run["seed"] == 3 and run["steps"] == 8 and 0 <= run["mig"] <= 1  # 480 images / 64 a step
    assert "| beta-TCVAE (beta 6) |" in open(tmp_path / "d.md").read()
    code, out, _ = run_module_cli(study, argv)  # the finished run is read back, not trained again
    assert code == 0 and "Epoch" not in out and "done in" not in out
    code, _, err = run_module_cli(study, [*argv[:6], "--only", "nope"])
    assert code == 2 and "unknown row 'nope'" in err
