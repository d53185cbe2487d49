"""compare_embeddings.py: outputs, the 2018 numbers, bad input; embeddings.py's contracts."""
import contextlib
import csv
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import compare_embeddings
import embeddings
import utils
from helpers import REFERENCE_CKPT, ROOT
from models import ModelConfig, build_model

needs_reference = pytest.mark.skipif(not os.path.isfile(REFERENCE_CKPT),
                                     reason=f"the 2018 checkpoint is absent ({REFERENCE_CKPT})")


def run(argv):
    """compare_embeddings.py's command line in-process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = utils.run_cli(compare_embeddings.main, compare_embeddings.get_args_parser(), argv)
    return code, out.getvalue(), err.getvalue()


def assert_one_line_error(code, err, *words):
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], lines[0]


def save_ours(path, dataset_type="fmnist", latent=10, model_type="fc_conv"):
    """A checkpoint as train.py writes it (the keys compare_embeddings reads)."""
    cfg = ModelConfig(model_type=model_type, latent_space_size=latent)
    torch.save({"epoch": 1, "state_dict": build_model(cfg).state_dict(), "optimizer": {}, "best_loss": 1.0,
                "model_config": cfg.to_dict(), "args": {"dataset_type": dataset_type},
                "history": [{"seconds": 2.5}]}, path)
    return str(path)


# ---------------------------------------------------------------- embeddings.py


class Spy:
    """Records what it is fitted on and what it transforms."""

    def __init__(self):
        self.fitted, self.transformed = [], []

    def fit_transform(self, x):
        self.fitted.append(x)
        return x[:, :3] * 2

    def transform(self, x):
        self.transformed.append(x)
        return x[:, :3] * 2


def test_embed_fits_on_training_images_only_and_times_both():
    x_train, x_test = np.random.rand(50, 8), np.random.rand(20, 8)
    spy, logged = Spy(), []
    e = embeddings.embed("spy", spy, x_train, x_test, logged.append)
    assert len(spy.fitted) == 1 and spy.fitted[0] is x_train
    assert len(spy.transformed) == 1 and spy.transformed[0] is x_test
    assert e.train.shape == (50, 3) and e.test.shape == (20, 3) and e.train.dtype == np.float32
    assert e.fit_seconds >= 0 and e.transform_seconds >= 0
    assert any("fitted in" in m for m in logged) and any("transformed in" in m for m in logged)


def test_vae_embedding_is_the_posterior_mean():
    model = build_model(ModelConfig(latent_space_size=4))
    x = np.random.default_rng(0).random((30, 784), dtype=np.float32)
    enc = embeddings.VaeEncoder(model, torch.device("cpu"))
    z = enc.transform(x)
    model.train()  # must not matter: the mean, never a sample
    np.testing.assert_array_equal(enc.transform(x), z)
    with torch.no_grad():
        mu = model.encode(torch.from_numpy(x).view(-1, 1, 28, 28))[0].numpy()
    np.testing.assert_allclose(z, mu, rtol=1e-5, atol=1e-6)


def test_load_vae_reads_type_and_size_from_our_checkpoint(tmp_path):
    path = save_ours(tmp_path / "ours.pth.tar", latent=6, model_type="fc")
    model, cfg, info = embeddings.load_vae(path, "fmnist")
    assert (cfg.model_type, cfg.latent_space_size, model.latent_size) == ("fc", 6, 6)
    assert info["train_seconds"] == 2.5 and info["legacy_2018"] is False


@needs_reference
def test_load_vae_defaults_the_2018_checkpoint():
    model, cfg, info = embeddings.load_vae(REFERENCE_CKPT, "fmnist")
    assert (cfg.model_type, cfg.latent_space_size) == ("fc_conv", 10)
    assert info["legacy_2018"] and info["epoch"] == 30 and info["train_seconds"] is None


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("argv, words", [
    (["--methods", "pca,tsne"], ["unknown method 'tsne'"]),
    (["--methods", ""], ["--methods"]),
    (["--methods", "pca,pca"], ["repeats"]),
    (["--samples_per_class", ""], ["--samples_per_class"]),
    (["--samples_per_class", "50,,100"], ["--samples_per_class"]),
    (["--samples_per_class", "50,abc"], ["'abc'"]),
    (["--n_neighbours", "0,5"], ["--n_neighbours"]),
    (["--n_neighbours", "5,5"], ["repeats"]),
    (["--draws", "0"], ["--draws"]),
    (["--resume", "no/such.pth.tar"], ["does not exist"]),
])
def test_bad_flags_are_one_line_and_exit_2(argv, words, workdir):
    assert_one_line_error(*run(argv)[::2], *words)


def test_checkpoint_of_another_dataset_or_latent_size_is_refused(tmp_path, workdir):
    mnist = save_ours(tmp_path / "mnist.pth.tar", dataset_type="mnist")
    assert_one_line_error(*run(["--resume", mnist])[::2], "trained on mnist", "--dataset_type fmnist")
    fmnist = save_ours(tmp_path / "fmnist.pth.tar")
    assert_one_line_error(*run(["--resume", fmnist, "--n_components", "5"])[::2],
                          "latent size 10", "--n_components is 5")
    assert not os.path.exists("results")  # refused before any output or data


@needs_reference
def test_2018_checkpoint_is_fmnist_only(workdir):
    assert_one_line_error(*run(["--resume", REFERENCE_CKPT, "--dataset_type", "mnist"])[::2], "trained on fmnist")


def test_more_samples_per_class_than_a_class_has(tiny_mnist, workdir):
    # tiny_mnist has 50 training images per class
    code, _, err = run(["--data_root", tiny_mnist, "--dataset_type", "mnist", "--methods", "pca",
                        "--samples_per_class", "10,51"])
    assert_one_line_error(code, err, "--samples_per_class 51", "(50 images)")
    code, _, err = run(["--data_root", tiny_mnist, "--dataset_type", "mnist", "--methods", "pca",
                        "--samples_per_class", "10", "--test_samples_per_class", "500"])
    assert_one_line_error(code, err, "--test_samples_per_class 500")


@pytest.mark.parametrize("extra, words", [
    (["--methods", "pca", "--n_components", "784"], ["--n_components 784 must be below the 784 pixels"]),
    (["--methods", "umap", "--umap_pca", "10"], ["--umap_pca 10 must be between"]),
])
def test_impossible_dimensions(tiny_mnist, workdir, extra, words):
    code, _, err = run(["--data_root", tiny_mnist, "--dataset_type", "mnist", "--samples_per_class", "10",
                        "--test_samples_per_class", "10", *extra])
    assert_one_line_error(code, err, *words)


def test_the_real_entry_point_fails_in_one_line(workdir):
    p = subprocess.run([sys.executable, os.path.join(ROOT, "compare_embeddings.py"), "--methods", "pca,foo"],
                       capture_output=True, text=True, timeout=120)
    assert_one_line_error(p.returncode, p.stderr, "unknown method 'foo'")


# ---------------------------------------------------------------- outputs


@needs_reference
def test_outputs_exist_and_parse(fmnist_small, workdir):
    import matplotlib.image

    code, out, err = run(["--resume", REFERENCE_CKPT, "--data_root", fmnist_small, "--methods", "pca,umap,vae",
                          "--samples_per_class", "10,50", "--n_neighbours", "1,5,10", "--test_samples_per_class",
                          "100", "--draws", "3", "--umap_pca", "30"])
    assert code == 0, err
    folder = "results/compare_fmnist_fc_conv_l10_rebalance_no_norm_best"  # --out's default
    for stage in ("[pca] fitted", "[umap] transformed", "[knn] vae: CV grid"):
        assert stage in out, stage
    res = json.load(open(f"{folder}/results.json"))
    assert list(res["methods"]) == ["pca", "umap", "vae"]
    for name, m in res["methods"].items():
        for key in ("test_acc_100_k5", "test_acc_100_k10"):
            assert len(m[key]["values"]) == 3
            assert m[key]["mean"] == pytest.approx(np.mean(m[key]["values"]))
            assert m[key]["std"] == pytest.approx(np.std(m[key]["values"]))
        assert 0.5 < m["test_acc_100_k10"]["mean"] < 0.95, name  # real images: far above chance
        assert 0.5 < m["test_acc_full_k10"] < 0.95 and m["fit_seconds"] >= 0 and m["dimensions"] == 10
    assert res["methods"]["umap"]["umap_pca"] == 30 and res["methods"]["vae"]["vae"]["legacy_2018"]
    assert len(res["cv"]) == 3 * 2 * 3 and {len(r["values"]) for r in res["cv"]} == {5}
    p = res["protocol"]
    assert (p["n_train"], p["n_test"], p["test_ks"], p["total_seconds"] > 0) == (3000, 1000, [5, 10], True)

    rows = list(csv.DictReader(open(f"{folder}/results.csv")))
    assert len(rows) == 3 * 2 * 3 + 3 * 4
    vae_k10 = [r for r in rows if (r["method"], r["protocol"], r["k"]) == ("vae", "test_sampled", "10")]
    assert float(vae_k10[0]["mean"]) == pytest.approx(res["methods"]["vae"]["test_acc_100_k10"]["mean"], abs=1e-4)

    table = open(f"{folder}/table.md").read()
    assert table in out  # printed as well
    for line in ("| PCA (10-d) |", "| UMAP (10-d) |", "| VAE (10-d) |", "| 50 |"):
        assert line in table
    assert f"{res['methods']['vae']['test_acc_100_k10']['mean']:.3f} ±" in table

    for png in ("knn_accuracy.png", "embeddings_2d.png"):
        img = matplotlib.image.imread(f"{folder}/{png}")
        assert img.ndim == 3 and img.shape[1] > img.shape[0] > 200, png  # panels side by side


@needs_reference
def test_2018_checkpoint_reproduces_the_2018_table(fmnist_root, workdir):
    code, out, err = run(["--resume", REFERENCE_CKPT, "--data_root", fmnist_root, "--methods", "pca,vae",
                          "--samples_per_class", "50", "--n_neighbours", "5", "--out", "cmp"])
    assert code == 0, err
    m = json.load(open("cmp/results.json"))["methods"]
    vae, pca = m["vae"]["test_acc_500_k10"], m["pca"]["test_acc_500_k5"]
    # 2018: VAE 0.8016, PCA 0.7693 (one draw); the reference README: 0.798 and 0.766 (5 draws)
    assert 0.79 <= vae["mean"] <= 0.81 and vae["std"] <= 0.01, vae
    assert 0.76 <= pca["mean"] <= 0.78 and pca["std"] <= 0.01, pca
    assert vae["mean"] > pca["mean"]
