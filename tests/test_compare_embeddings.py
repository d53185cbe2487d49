"""compare_embeddings.py: outputs, the 2018 numbers, bad input; embeddings.py's contracts."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import compare_embeddings
from evaluation import embeddings
from helpers import ROOT, assert_cli_error, run_module_cli
from models import ModelConfig, build_model
from tools.idx_files import write_dataset


def run(argv):
    """compare_embeddings.py's command line in-process: (exit code, stdout, stderr)."""
    return run_module_cli(compare_embeddings, argv)


def assert_one_line_error(code, err, *words):
    assert_cli_error(code, err, *words, prog="compare_embeddings.py")


@pytest.fixture(scope="module")
def mnist_ckpt(tiny_mnist, tmp_path_factory) -> str:
    """A checkpoint written by train.py: fc, latent 6, one epoch on (synthetic) MNIST."""
    from helpers import run_cli as run_train
    from helpers import tiny_args

    d = tmp_path_factory.mktemp("mnist_ckpt")
    code, _, err = run_train(tiny_args(tiny_mnist, "--model_type", "fc", "--latent_space_size", "6",
                                       "--weights_dir", str(d), "--tb_dir", str(d / "tb"), "--tensorboard", "False"))
    assert code == 0, err
    return str(d / "r_checkpoint.pth.tar")


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


@pytest.mark.filterwarnings("ignore:n_jobs value")  # umap-learn: a seed makes it single-threaded
def test_vae_umap_is_umap_fitted_on_the_training_means():
    """vae+umap: the VAE's encoder, then UMAP to the latent size fitted on the training images'
    means only; the same seed gives the same embedding (UMAP single-threaded by random_state)."""
    import umap

    model = build_model(ModelConfig(latent_space_size=4))
    enc = embeddings.VaeEncoder(model, torch.device("cpu"))
    rng = np.random.default_rng(0)
    x_train, x_test = rng.random((300, 784), dtype=np.float32), rng.random((40, 784), dtype=np.float32)
    method = embeddings.make_method("vae+umap", 4, seed=3, umap_pca=50, vae=enc)  # umap_pca: pixels only
    assert method[0] is enc and isinstance(method[-1], umap.UMAP) and len(method) == 2
    e = embeddings.embed("vae+umap", method, x_train, x_test, log=lambda _: None)
    assert e.train.shape == (300, 4) and e.test.shape == (40, 4)
    by_hand = umap.UMAP(n_components=4, random_state=3, transform_seed=3)
    np.testing.assert_array_equal(e.train, by_hand.fit_transform(enc.transform(x_train)))
    np.testing.assert_array_equal(e.test, by_hand.transform(enc.transform(x_test)))
    with pytest.raises(ValueError, match="needs a VaeEncoder"):
        embeddings.make_method("vae+umap", 4, seed=3)


def test_unknown_method_lists_every_method():
    with pytest.raises(ValueError, match="unknown method 'tsne'") as e:
        embeddings.make_method("tsne", 10, 0)
    assert all(repr(m) in str(e.value) for m in embeddings.METHODS)
    code, _, err = run(["--methods", "vae+pca"])
    assert_one_line_error(code, err, "unknown method 'vae+pca'", "choose from " + ",".join(embeddings.METHODS))
    assert ",".join(embeddings.METHODS) in compare_embeddings.get_args_parser().format_help()  # --methods' help


def test_load_vae_reads_type_and_size_from_our_checkpoint(mnist_ckpt):
    model, cfg, info = embeddings.load_vae(mnist_ckpt, "mnist")
    assert (cfg.model_type, cfg.latent_space_size, model.latent_size) == ("fc", 6, 6)
    # one epoch of 400 tiny images can take under 0.05 s, which rounds to 0.0
    assert info["train_seconds"] >= 0 and info["epoch"] == 1 and info["legacy_2018"] is False


def test_load_vae_defaults_the_2018_checkpoint(reference_ckpt):
    model, cfg, info = embeddings.load_vae(reference_ckpt, "fmnist")
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
    (["--seed", "-1"], ["--seed"]),
    (["--resume", "no/such.pth.tar"], ["does not exist"]),
    (["--methods", "pca,vae+umap", "--resume", "no/such.pth.tar"], ["does not exist", "leave vae+umap out"]),
])
def test_bad_flags_are_one_line_and_exit_2(argv, words, workdir):
    assert_one_line_error(*run(argv)[::2], *words)


def test_checkpoint_of_another_dataset_or_latent_size_is_refused(mnist_ckpt, workdir):
    assert_one_line_error(*run(["--resume", mnist_ckpt, "--dataset_type", "fmnist"])[::2], "trained on mnist",
                          "--dataset_type fmnist")
    assert_one_line_error(*run(["--resume", mnist_ckpt, "--dataset_type", "mnist", "--n_components", "5"])[::2],
                          "latent size 6", "--n_components is 5")
    assert not os.path.exists("results")  # refused before any output or data


def test_2018_checkpoint_is_fmnist_only(reference_ckpt, workdir):
    assert_one_line_error(*run(["--resume", reference_ckpt, "--dataset_type", "mnist"])[::2], "trained on fmnist")


def test_more_samples_per_class_than_a_class_has(tiny_mnist, workdir):
    # tiny_mnist has 50 training images per class
    code, _, err = run(["--data_root", tiny_mnist, "--dataset_type", "mnist", "--methods", "pca",
                        "--samples_per_class", "10,51"])
    assert_one_line_error(code, err, "--samples_per_class 51", "(50 images)")
    code, _, err = run(["--data_root", tiny_mnist, "--dataset_type", "mnist", "--methods", "pca",
                        "--samples_per_class", "10", "--test_samples_per_class", "500"])
    assert_one_line_error(code, err, "--test_samples_per_class 500")


def test_the_default_sizes_fit_a_small_folder(tmp_path, workdir):
    """Issue 33: the defaults (up to 3000 images per class, 500 for the test draws) on a folder of a few
    hundred images: those that fit are used and the dropped ones named in one line; sizes given are not cut."""
    from helpers import run_cli as run_train
    from tools.image_folders import write_image_folder

    root = write_image_folder(str(tmp_path / "imgs"), n=330, classes=3, layout="splits")  # 88 training images a class
    smallest = min(len(os.listdir(tmp_path / "imgs" / "train" / c)) for c in ("c0", "c1", "c2"))
    code, _, err = run_train(["--dataset_type", "folder", "--data_root", root, "--model_type", "fc", "--epochs", "1",
                              "--batch-size", "64", "--lognumber", "small", "--tensorboard", "False"])
    assert code == 0, err
    code, out, err = run(["--resume", "weights/small_best.pth.tar", "--methods", "pca,vae", "--out", "cmp"])
    assert code == 0, err
    cut = [line for line in out.splitlines() if "the smallest class has" in line]
    assert len(cut) == 1 and f"has {smallest} training images" in cut[0], out
    assert "--samples_per_class 50 (dropped 100,500,1000,3000)" in cut[0]
    assert f"--test_samples_per_class {smallest} (not 500)" in cut[0] and "--n_neighbours" not in cut[0]
    res = json.load(open("cmp/results.json"))
    p = res["protocol"]
    assert (p["samples_per_class"], p["n_neighbours"], p["test_samples_per_class"]) == ([50], [1, 5, 10, 25, 50],
                                                                                         smallest)
    assert {r["samples_per_class"] for r in res["cv"]} == {50} and len(res["cv"]) == 2 * 5
    assert len(res["methods"]["vae"][f"test_acc_{smallest}_k10"]["values"]) == 5
    # a size the user gives is theirs: one that does not fit is refused, not cut
    code, _, err = run(["--resume", "weights/small_best.pth.tar", "--samples_per_class", "50,100", "--out", "cmp2"])
    assert_one_line_error(code, err, "--samples_per_class 100", f"({smallest} images)")
    code, _, err = run(["--resume", "weights/small_best.pth.tar", "--test_samples_per_class", "100", "--out", "cmp2"])
    assert_one_line_error(code, err, "--test_samples_per_class 100")
    # no default size fits a class of 20 training images: refused in one line, naming the flag
    tiny = write_image_folder(str(tmp_path / "tiny"), n=75, classes=3, layout="splits")
    code, _, err = run(["--dataset_type", "folder", "--data_root", tiny, "--methods", "pca", "--out", "cmp3"])
    assert_one_line_error(code, err, "none of the default --samples_per_class", "pass --samples_per_class")


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


@pytest.fixture(scope="module")
def fmnist_1k(fmnist_root, tmp_path_factory):
    """1000 training and 500 test images of Fashion-MNIST. Small on purpose: below 4096 training
    points UMAP's transform calls a distance function from Python for every (test, train) pair.
    Most of this test's time is still numba compiling UMAP, about 15-30 s whatever the size."""
    from datasets import DATASETS

    tr, te = DATASETS["fmnist"](fmnist_root, train=True), DATASETS["fmnist"](fmnist_root, train=False)
    return write_dataset(str(tmp_path_factory.mktemp("fmnist_1k")), "FashionMNIST", tr.data[:1000].numpy(),
                         tr.targets[:1000].numpy(), te.data[:500].numpy(), te.targets[:500].numpy())


def test_outputs_exist_and_parse(fmnist_1k, reference_ckpt, workdir):
    import matplotlib.image

    code, out, err = run(["--resume", reference_ckpt, "--data_root", fmnist_1k, "--methods", "pca,umap,vae",
                          "--samples_per_class", "10,50", "--n_neighbours", "1,5,10", "--test_samples_per_class",
                          "50", "--draws", "3", "--umap_pca", "30"])
    assert code == 0, err
    folder = "results/compare_fmnist_fc_conv_l10_rebalance_no_norm_best"  # --out's default
    for stage in ("[pca] fitted", "[umap] transformed", "[knn] vae: CV grid"):
        assert stage in out, stage
    res = json.load(open(f"{folder}/results.json"))
    assert list(res["methods"]) == ["pca", "umap", "vae"]
    for name, m in res["methods"].items():
        for key in ("test_acc_50_k5", "test_acc_50_k10"):
            assert len(m[key]["values"]) == 3
            assert m[key]["mean"] == pytest.approx(np.mean(m[key]["values"]))
            assert m[key]["std"] == pytest.approx(np.std(m[key]["values"]))
        assert 0.5 < m["test_acc_50_k10"]["mean"] < 0.95, name  # real images: far above chance
        assert 0.5 < m["test_acc_full_k10"] < 0.95 and m["fit_seconds"] >= 0 and m["dimensions"] == 10
    assert res["methods"]["umap"]["umap_pca"] == 30 and res["methods"]["vae"]["vae"]["legacy_2018"]
    assert len(res["cv"]) == 3 * 2 * 3 and {len(r["values"]) for r in res["cv"]} == {5}
    p = res["protocol"]
    assert (p["n_train"], p["n_test"], p["test_ks"], p["total_seconds"] > 0) == (1000, 500, [5, 10], True)

    rows = list(csv.DictReader(open(f"{folder}/results.csv")))
    assert len(rows) == 3 * 2 * 3 + 3 * 4
    vae_k10 = [r for r in rows if (r["method"], r["protocol"], r["k"]) == ("vae", "test_sampled", "10")]
    assert float(vae_k10[0]["mean"]) == pytest.approx(res["methods"]["vae"]["test_acc_50_k10"]["mean"], abs=1e-4)

    table = open(f"{folder}/table.md").read()
    assert table in out  # printed as well
    for line in ("| PCA (10-d) |", "| UMAP (10-d) |", "| VAE (10-d) |", "| 50 |"):
        assert line in table
    assert f"{res['methods']['vae']['test_acc_50_k10']['mean']:.3f} ±" in table

    for png in ("knn_accuracy.png", "embeddings_2d.png"):
        img = matplotlib.image.imread(f"{folder}/{png}")
        assert img.ndim == 3 and img.shape[1] > img.shape[0] > 200, png  # panels side by side


def test_2018_checkpoint_reproduces_the_2018_table(fmnist_root, reference_ckpt, workdir):
    code, out, err = run(["--resume", reference_ckpt, "--data_root", fmnist_root, "--methods", "pca,vae",
                          "--samples_per_class", "50", "--n_neighbours", "5", "--out", "cmp"])
    assert code == 0, err
    m = json.load(open("cmp/results.json"))["methods"]
    vae, pca = m["vae"]["test_acc_500_k10"], m["pca"]["test_acc_500_k5"]
    # 2018: VAE 0.8016, PCA 0.7693 (one draw); the reference README: 0.798 and 0.766 (5 draws)
    assert 0.79 <= vae["mean"] <= 0.81 and vae["std"] <= 0.01, vae
    assert 0.76 <= pca["mean"] <= 0.78 and pca["std"] <= 0.01, pca
    assert vae["mean"] > pca["mean"]


def test_vae_umap_is_reported_like_the_others(tiny_mnist, mnist_ckpt, workdir):
    """The combined method end to end: the VAE's latent size (6), every table, file and figure."""
    import matplotlib.image

    code, out, err = run(["--resume", mnist_ckpt, "--dataset_type", "mnist", "--data_root", tiny_mnist,
                          "--methods", "pca,vae+umap", "--samples_per_class", "10,20", "--n_neighbours", "1,5",
                          "--test_samples_per_class", "10", "--draws", "2"])
    assert code == 0, err
    folder = "results/compare_r_checkpoint"  # named after the checkpoint: vae+umap uses the VAE
    for stage in ("[vae+umap] fitted", "[vae+umap] transformed", "[knn] vae+umap: CV grid"):
        assert stage in out, stage
    res = json.load(open(f"{folder}/results.json"))
    assert list(res["methods"]) == ["pca", "vae+umap"]
    m = res["methods"]["vae+umap"]
    assert m["dimensions"] == 6 == res["protocol"]["n_components"] and m["vae"]["latent_space_size"] == 6
    assert "umap_pca" not in m  # UMAP runs on the means, not on PCA of the pixels
    assert len(m["test_acc_10_k5"]["values"]) == 2 and 0 <= m["test_acc_full_k5"] <= 1
    assert m["fit_seconds"] > 0 and m["transform_seconds"] > 0
    assert {r["method"] for r in res["cv"]} == {"pca", "vae+umap"} and len(res["cv"]) == 2 * 2 * 2
    rows = list(csv.DictReader(open(f"{folder}/results.csv")))
    assert sum(r["method"] == "vae+umap" for r in rows) == 2 * 2 + 4
    table = open(f"{folder}/table.md").read()
    assert "| VAE + UMAP (6-d) |" in table and "| images per class | PCA | VAE + UMAP |" in table
    assert f"{m['test_acc_10_k10']['mean']:.3f} ± {m['test_acc_10_k10']['std']:.3f}" in table
    img = matplotlib.image.imread(f"{folder}/embeddings_2d.png")  # one panel per method
    assert img.shape[1] > img.shape[0]


def test_a_hierarchical_vae_embeds_its_top_code(tiny_mnist, tmp_path, workdir):
    from helpers import run_cli as run_train
    from helpers import tiny_args

    code, _, err = run_train(tiny_args(tiny_mnist, "--model_type", "hvae", "--latent_space_size", "4",
                                       "--tensorboard", "False"))
    assert code == 0, err
    code, out, err = run(["--resume", "weights/r_checkpoint.pth.tar", "--dataset_type", "mnist", "--data_root",
                          tiny_mnist, "--methods", "vae", "--samples_per_class", "10", "--n_neighbours", "1",
                          "--test_samples_per_class", "10", "--draws", "1", "--out", str(tmp_path / "cmp")])
    assert code == 0, err
    assert "embedding the posterior mean of the 4-d top code" in out
    res = json.load(open(tmp_path / "cmp" / "results.json"))
    assert res["methods"]["vae"]["dimensions"] == 4 and res["methods"]["vae"]["vae"]["family"].startswith("hvae")
