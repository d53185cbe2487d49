"""--dataset_type folder: your own images, in class sub-folders or not, grey or colour, any size."""
import json
import math
import os

import numpy as np
import pytest
import torch
from PIL import Image

import dataio.placement
import datasets
from core.errors import VaeLabError
from dataio import folders
from datasets import load_split, reshape_images, train_val_split
from helpers import assert_cli_error, load_ckpt, run_cli
from models import ModelConfig, build_model, shape_problem
from tools.image_folders import write_image_folder


def folder_args(root: str, *extra: str, epochs: int = 1) -> list[str]:
    return ["--dataset_type", "folder", "--data_root", root, "--epochs", str(epochs), "--batch-size", "16",
            "--print-freq", "100", "--lognumber", "f", "--no_cuda", "True", "--num_folds", "4", *extra]


def test_class_folders_give_labels_and_a_stratified_seeded_holdout(tmp_path):
    root = write_image_folder(str(tmp_path / "d"), n=70, classes=3)
    train, test = load_split("folder", root, True), load_split("folder", root, False)
    assert train.classes == test.classes == ["c0", "c1", "c2"]
    assert len(test) == 10 and len(train) == 60  # 1/7 held out
    assert train.x.shape[1:] == (1, 16, 16) and train.x.dtype == torch.uint8  # as stored; as_float per batch
    assert np.bincount(test.y.numpy()).tolist() in ([4, 3, 3], [3, 4, 3], [3, 3, 4])  # stratified
    # the same hold-out every time, and disjoint from the training images
    assert torch.equal(load_split("folder", root, False).x, test.x)
    flat = lambda s: {tuple(r) for r in s.x.flatten(1).tolist()}  # noqa: E731
    assert not flat(train) & flat(test)
    tr, va = train_val_split("folder", root, 0, 4, 42)
    assert len(tr) + len(va) == 60 and len(va) == 15


def test_train_and_test_sub_folders_are_the_splits(tmp_path):
    root = write_image_folder(str(tmp_path / "d"), n=50, layout="splits", channels=3, size=(12, 12))
    train, test = load_split("folder", root, True), load_split("folder", root, False)
    assert len(train) == 40 and len(test) == 10 and train.x.shape[1:] == (3, 12, 12)
    assert train.classes == ["c0", "c1", "c2"]


def test_a_flat_folder_has_no_labels(tmp_path):
    root = write_image_folder(str(tmp_path / "d"), n=30, layout="flat", ext="jpg")
    train = load_split("folder", root, True)
    assert train.classes is None and set(train.y.tolist()) == {0}


def test_decoded_images_are_cached_and_a_changed_or_damaged_cache_is_not_trusted(tmp_path, monkeypatch, capsys):
    root = write_image_folder(str(tmp_path / "d"), n=21)
    first = load_split("folder", root, True)
    real_decode, decoded = folders._decode, []
    monkeypatch.setattr(folders, "_decode", lambda *a: decoded.append(a) or real_decode(*a))
    assert torch.equal(load_split("folder", root, True).x, first.x) and not decoded  # from the cache
    # a file rewritten (new size and mtime): decoded again, and the old cache is removed
    Image.fromarray(np.full((16, 16), 255, np.uint8)).save(os.path.join(root, "c0", "im0000.png"))
    again = load_split("folder", root, True)
    assert len(decoded) == 21 and not torch.equal(again.x, first.x)
    assert len(os.listdir(os.path.join(root, datasets.CACHE_DIR))) == 1
    # a damaged cache: one note on stderr, rebuilt
    cache = os.path.join(root, datasets.CACHE_DIR, os.listdir(os.path.join(root, datasets.CACHE_DIR))[0])
    with open(cache, "r+b") as f:
        f.truncate(100)
    decoded.clear()
    assert torch.equal(load_split("folder", root, True).x, again.x) and len(decoded) == 21
    assert "unreadable" in capsys.readouterr().err


def test_sizes_and_channels_convert(tmp_path):
    root = write_image_folder(str(tmp_path / "d"), n=14, size=(20, 30), channels=3)  # not square
    with pytest.raises(VaeLabError, match="not square; pass --image_size"):
        load_split("folder", root, True)
    grey = load_split("folder", root, True, image_size=16, channels=1)
    assert grey.x.shape[1:] == (1, 16, 16)
    colour = load_split("folder", root, True, image_size=8, channels=3)
    assert colour.x.shape[1:] == (3, 8, 8)
    x = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    assert reshape_images(x, 32, 3).shape == (2, 3, 32, 32)
    assert reshape_images(x, None, None) is x  # nothing asked, nothing done: the 2018 data stay exact


def test_bad_folders_get_one_line(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VaeLabError, match="no image files"):
        load_split("folder", str(empty), True)
    mixed = write_image_folder(str(tmp_path / "mixed"), n=6)
    write_image_folder(str(tmp_path / "mixed"), n=3, size=(20, 20), seed=1)  # overwrites 3 with another size
    with pytest.raises(VaeLabError, match="2 different sizes.*--image_size"):
        load_split("folder", mixed, True)
    broken = write_image_folder(str(tmp_path / "broken"), n=12)
    for name in ("im0003.png", "im0006.png"):
        path = os.path.join(broken, "c0", name)
        data = open(path, "rb").read()
        open(path, "wb").write(data[: len(data) // 2])  # truncated
    # damaged files are skipped, named on stderr (a run goes on without them; tests/test_image_files.py)
    assert len(load_split("folder", broken, True)) + len(load_split("folder", broken, False)) == 10
    assert "skipped 2 of 12 image files" in capsys.readouterr().err
    with pytest.raises(VaeLabError, match="is not a folder"):
        load_split("folder", str(tmp_path / "nowhere"), True)


@pytest.mark.parametrize("size, channels", [(28, 1), (32, 3), (64, 1), (16, 3)])
def test_resconv_hvae_and_fc_build_for_any_shape(size, channels):
    for model_type in ("resconv", "hvae", "fc"):
        model = build_model(ModelConfig(model_type=model_type, image_size=size, image_channels=channels))
        out = model(torch.rand(2, channels, size, size))
        logits, mu = out.logits, out.mu
        assert logits.shape == (2, channels, size, size) and mu.shape == (2, 10)
    assert "fc, resconv, hvae" in shape_problem("fc_conv", channels, size) if (size, channels) != (28, 1) else True


def test_resconv_at_28_is_unchanged():
    # the --preset best checkpoints of earlier versions must still load: same names and shapes
    model = build_model(ModelConfig(model_type="resconv"))
    assert sum(p.numel() for p in model.parameters()) == 1686437  # as before sizes other than 28 were built
    assert model.state_dict()["enc_body.5.weight"].shape == (512, 32 * 49)
    assert shape_problem("resconv", 1, 30) and shape_problem("resconv", 1, 28) is None


def test_train_resume_evaluate_predict_on_a_colour_folder(tmp_path, workdir):
    root = write_image_folder(str(tmp_path / "d"), n=96, size=(16, 16), channels=3)
    logistic = ("--image_loss_type", "logistic")
    code, out, err = run_cli(folder_args(root, "--model_type", "resconv", "--conditional", "True", *logistic, epochs=3))
    assert code == 0, err
    ckpt = load_ckpt("weights/f_checkpoint.pth.tar")
    assert ckpt["model_config"]["image_channels"] == 3 and ckpt["model_config"]["num_classes"] == 3
    losses = [h["train_loss"] for h in ckpt["history"]]
    assert losses[-1] < losses[0]
    # resume, evaluate and predict with no shape flags: the checkpoint has them
    code, _, err = run_cli(folder_args(root, "--model_type", "resconv", "--conditional", "True", *logistic,
                                       "--resume", "weights/f_checkpoint.pth.tar", epochs=4))
    assert code == 0, err
    assert load_ckpt("weights/f_checkpoint.pth.tar")["epoch"] == 4
    code, out, err = run_cli(folder_args(root, "--model_type", "resconv", "--conditional", "True", "--resume",
                                         "weights/f_best.pth.tar", "--evaluate", "True", "--iw_samples", "3",
                                         "--predict", "True"))
    assert code == 0, err
    results = json.load(open("weights/f_eval.json"))
    assert results["test"]["n"] == 14 and results["val"]["iwae_nll"] > 0
    # the code length is the ELBO at a sampled code (an under-trained model may need more than 8 bits), not the
    # posterior mean's NLL+KL
    test = results["test"]
    assert 0 < test["bits_per_dim"] < 16 and test["iwae_nll"] > 0
    assert test["bits_per_dim"] != pytest.approx(test["nll_kl"] / (3 * 16 * 16 * math.log(2)), rel=1e-6)
    assert Image.open("results/f/class_samples.png").mode == "RGB"
    # the shape flags of another size are refused against the checkpoint
    code, _, err = run_cli(folder_args(root, "--model_type", "resconv", "--conditional", "True", "--resume",
                                       "weights/f_best.pth.tar", "--evaluate", "True", "--image_size", "32"))
    assert_cli_error(code, err, "--image_size 16 but the flags say 32", "leave --image_size out")


@pytest.mark.parametrize("argv, needles", [
    (["--model_type", "fc_conv"], ("fc_conv is a 2018 model of 28x28 grey images", "fc, resconv, hvae")),
    (["--model_type", "resconv", "--image_size", "30"], ("cannot be built for 30x30",)),
    (["--model_type", "fc", "--conditional", "True"], ("--conditional True needs", "no class sub-folders")),
    (["--model_type", "resconv", "--image_size", "6"], ("cannot be built for 6x6",)),
])
def test_folder_runs_that_cannot_work_get_one_line(tmp_path, workdir, argv, needles):
    root = write_image_folder(str(tmp_path / "d"), n=28, size=(16, 16), channels=3, layout="flat")
    code, _, err = run_cli(folder_args(root, *argv))
    assert_cli_error(code, err, *needles)


def test_compare_embeddings_on_a_folder(tmp_path, workdir):
    import compare_embeddings
    from helpers import run_module_cli

    root = write_image_folder(str(tmp_path / "d"), n=140, size=(16, 16), channels=3, layout="splits")
    code, _, err = run_cli(folder_args(root, "--model_type", "fc", "--latent_space_size", "4"))
    assert code == 0, err
    argv = ["--dataset_type", "folder", "--data_root", root, "--resume", "weights/f_best.pth.tar",
            "--methods", "pca,vae", "--samples_per_class", "5,10", "--n_neighbours", "1,3",
            "--test_samples_per_class", "10", "--draws", "2", "--out", "cmp", "--device", "cpu"]
    code, out, err = run_module_cli(compare_embeddings, argv)
    assert code == 0, err
    results = json.load(open("cmp/results.json"))
    assert results["protocol"]["n_train"] == 112 and results["protocol"]["n_components"] == 4
    assert set(results["methods"]) == {"pca", "vae"} and results["methods"]["vae"]["dimensions"] == 4
    assert results["methods"]["pca"]["test_acc_full_k5"] > 0.9  # three bands at three heights: chance is 1/3
    assert os.path.getsize("cmp/embeddings_2d.png") > 0
    flat = write_image_folder(str(tmp_path / "flat"), n=20, size=(16, 16), channels=3, layout="flat")
    code, _, err = run_module_cli(compare_embeddings, ["--dataset_type", "folder", "--data_root", flat,
                                                       "--methods", "pca", "--out", "cmp2"])
    assert code == 2 and "no class sub-folders" in err and err.count("\n") == 1, err


def test_amp_trains_on_a_colour_folder(tmp_path, workdir):
    root = write_image_folder(str(tmp_path / "d"), n=42, size=(16, 16), channels=3)
    code, _, err = run_cli(folder_args(root, "--model_type", "resconv", "--amp", "True", epochs=2))
    assert code == 0, err
    assert all(math.isfinite(h["val_loss"]) for h in load_ckpt("weights/f_checkpoint.pth.tar")["history"])


def test_images_kept_as_uint8_train_bit_identically_to_float32(tiny_mnist, tmp_path, monkeypatch):
    """Data too large for a float32 copy stay uint8 and are converted per batch: same numbers."""
    from helpers import tiny_args

    weights = {}
    for placement, free in (("float32 in memory", None), ("uint8 in memory", 1000)):
        run_dir = tmp_path / placement.split()[0]
        run_dir.mkdir()
        monkeypatch.chdir(run_dir)
        monkeypatch.setattr(dataio.placement, "_free_bytes", lambda device, free=free: free)
        code, out, err = run_cli(tiny_args(tiny_mnist, "--do_augs", "True", "--conditional", "True", epochs=2))
        assert code == 0, err
        assert f"val images, {placement}" in out.splitlines()[0]
        weights[placement] = load_ckpt("weights/r_checkpoint.pth.tar")["state_dict"]
    a, b = weights.values()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_where_images_are_kept(monkeypatch):
    x = torch.zeros(10, 1, 4, 4, dtype=torch.uint8)
    monkeypatch.setattr(dataio.placement, "_free_bytes", lambda device: 10**9)
    kept, words = datasets.place_images(x, torch.device("cpu"))
    assert kept.dtype == torch.float32 and words.startswith("float32 in memory")
    monkeypatch.setattr(dataio.placement, "_free_bytes", lambda device: 100)
    kept, words = datasets.place_images(x, torch.device("cpu"))
    assert kept is x and "uint8 in memory" in words


