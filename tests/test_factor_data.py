"""The factor data sets (dataio/dsprites.py): the grid and its order, a deterministic binary render whose
pictures follow their factors, the fixed train / test draw with the factors kept, DeepMind's file read
when present, and one line for a factor that does not exist."""
import os

import numpy as np
import pytest
import torch

from core.errors import VaeLabError
from dataio import dsprites
from datasets import load_split, train_val_split
from helpers import assert_cli_error, run_cli


def test_the_grid_is_dsprites_and_in_deepmind_order():
    assert dsprites.factor_sizes("dsprites") == (3, 6, 40, 32, 32)
    assert dsprites.grid_size("dsprites") == 737_280
    assert dsprites.grid_size("dsprites_colour") == 6 * 737_280
    np.testing.assert_allclose(dsprites.SCALES, [0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    assert dsprites.ORIENTATIONS[-1] < 2 * np.pi and dsprites.ORIENTATIONS[1] == pytest.approx(2 * np.pi / 40)
    # the last factor (pos_y) varies fastest, as in DeepMind's latents_classes
    assert dsprites.factor_indices("dsprites", np.array([1]))[0].tolist() == [0, 0, 0, 0, 1]
    assert dsprites.factor_indices("dsprites", np.array([32]))[0].tolist() == [0, 0, 0, 1, 0]
    index = np.random.default_rng(0).integers(0, 737_280, 500)
    assert np.array_equal(dsprites.grid_index("dsprites", dsprites.factor_indices("dsprites", index)), index)


def _image(shape=0, scale=5, angle=0, x=16, y=16, name="dsprites"):
    return dsprites.render(name, dsprites.grid_index(name, np.array([[shape, scale, angle, x, y]])))[0, 0]


def test_the_render_is_binary_deterministic_and_follows_the_factors():
    index = np.arange(0, 737_280, 7919)
    a, b = dsprites.render("dsprites", index), dsprites.render("dsprites", index)
    assert a.shape == (len(index), 1, 64, 64) and a.dtype == torch.uint8
    assert torch.equal(a, b) and set(a.unique().tolist()) <= {0, 255}
    assert (a.flatten(1).amax(1) == 255).all()  # every image shows its shape
    for shape in range(3):  # area grows with the scale, about as its square
        areas = [int((_image(shape, s) > 0).sum()) for s in range(6)]
        assert areas == sorted(areas) and areas[-1] / areas[0] == pytest.approx(4, rel=0.2)
    # the centre of mass moves right with pos_x and down with pos_y, evenly
    cols = [float(torch.nonzero(_image(x=x))[:, 1].float().mean()) for x in (0, 15, 30)]
    rows = [float(torch.nonzero(_image(y=y))[:, 0].float().mean()) for y in (0, 15, 30)]
    assert cols[0] < cols[1] < cols[2] and rows[0] < rows[1] < rows[2]
    assert cols[2] - cols[1] == pytest.approx(cols[1] - cols[0], abs=1)  # 16.45 px, snapped to whole pixels
    # three different shapes of one size; a square turned by 90 degrees is the same square
    assert len({_image(s).numpy().tobytes() for s in range(3)}) == 3
    assert torch.equal(_image(0, angle=0), _image(0, angle=10))
    assert not torch.equal(_image(2, angle=0), _image(2, angle=10))  # a heart turned is not


def test_splits_are_fixed_disjoint_and_keep_their_factors(tmp_path):
    root = str(tmp_path)
    test = load_split("dsprites", root, False, factor_images=700)
    train, val = train_val_split("dsprites", root, 0, 5, 42, factor_images=700, factor="pos_x")
    train2, val2 = train_val_split("dsprites", root, 0, 5, 7, factor_images=700, factor="pos_x")
    assert len(test) == 100 and len(train) + len(val) == 600
    index = lambda s: set(dsprites.grid_index("dsprites", s.factors.numpy()).tolist())  # noqa: E731
    assert not index(test) & (index(train) | index(val))
    assert index(train) | index(val) == index(train2) | index(val2)  # another seed: the same images
    assert index(train) != index(train2)  # in other folds
    assert train.factor_names == ["shape", "scale", "orientation", "pos_x", "pos_y"]
    assert torch.equal(train.y, train.factors[:, 3]) and len(train.classes) == 32
    assert test.classes == ["square", "ellipse", "heart"] and torch.equal(test.y, test.factors[:, 0])
    # each image is the render of its own factors
    assert torch.equal(train.x[:20], dsprites.render("dsprites", dsprites.grid_index("dsprites",
                                                                                     train.factors[:20].numpy())))
    with pytest.raises(VaeLabError, match="no such factor"):
        load_split("dsprites", root, True, factor="colour", factor_images=700)


def test_colour_dsprites_has_a_colour_factor(tmp_path):
    data = load_split("dsprites_colour", str(tmp_path), True, factor="colour", factor_images=300)
    assert data.x.shape[1:] == (3, 64, 64) and data.factor_names[0] == "colour"
    assert data.classes == list(dsprites.COLOURS)
    for x, c in zip(data.x[:30], data.y[:30]):
        on = x.flatten(1).amax(1)  # the shape's pixels are its colour, the rest black
        assert tuple(on.tolist()) == list(dsprites.COLOURS.values())[int(c)]


def test_deepmind_file_is_read_instead_when_present(tmp_path, monkeypatch):
    # a grid of 12 images stands in for their 737,280, so the file stays small
    small = {"shape": np.arange(3), "scale": dsprites.SCALES[:1], "orientation": dsprites.ORIENTATIONS[:1],
             "pos_x": dsprites.POSITIONS[:2], "pos_y": dsprites.POSITIONS[:2]}
    monkeypatch.setitem(dsprites.FACTOR_SETS, "dsprites", small)
    imgs = np.zeros((12, 64, 64), dtype=np.uint8)
    for i in range(12):
        imgs[i, i, :] = 1  # image i: row i on
    np.savez_compressed(tmp_path / dsprites.DEEPMIND_FILE, imgs=imgs)
    data = load_split("dsprites", str(tmp_path), True, test_fraction=0.25)
    index = dsprites.grid_index("dsprites", data.factors.numpy())
    assert len(data) == 9 and "DeepMind" in data.notes[0]
    for x, i in zip(data.x, index):
        assert x[0, i].tolist() == [255] * 64 and int(x.sum()) == 64 * 255
    np.savez_compressed(tmp_path / dsprites.DEEPMIND_FILE, imgs=imgs[:5])
    with pytest.raises(VaeLabError, match="not dSprites'"):
        load_split("dsprites", str(tmp_path), True)


@pytest.mark.parametrize("flags, needles", [
    (["--dataset_type", "dsprites", "--factor", "size"], ["--factor size", "shape, scale"]),
    (["--factor", "shape"], ["--factor", "factor data set"]),
])
def test_bad_factor_flags_are_one_line(flags, needles, workdir):
    assert_cli_error(*run_cli(flags)[::2], *needles)


def test_compare_embeddings_scores_knn_on_a_chosen_factor(workdir):
    import json

    import compare_embeddings
    from helpers import run_module_cli

    base = ["--dataset_type", "dsprites", "--factor_images", "3000", "--methods", "pca", "--samples_per_class",
            "10,20", "--n_neighbours", "1,3", "--test_samples_per_class", "10", "--draws", "1", "--out", "cmp"]
    code, _, err = run_module_cli(compare_embeddings, [*base, "--factor", "pos_x"])
    assert code == 0, err
    results = json.load(open("cmp/results.json"))
    assert results["protocol"]["factor"] == "pos_x" and results["methods"]["pca"]["test_acc_full_k5"] > 1 / 32
    code, _, err = run_module_cli(compare_embeddings, [*base, "--factor", "colour"])
    assert_cli_error(code, err, "--factor colour", prog="compare_embeddings.py")


def test_a_large_request_renders_the_grid_once_into_the_cache(tmp_path, monkeypatch):
    small = {"shape": np.arange(3), "scale": dsprites.SCALES[:2], "orientation": dsprites.ORIENTATIONS[:3],
             "pos_x": dsprites.POSITIONS[::8], "pos_y": dsprites.POSITIONS[::8]}  # 288 images
    monkeypatch.setitem(dsprites.FACTOR_SETS, "dsprites", small)
    monkeypatch.setattr(dsprites, "READ_CHUNK", 7)  # several chunks per read
    root = str(tmp_path)
    few = np.arange(0, 288, 10)  # under a quarter of the grid: rendered, no cache
    x, source = dsprites.images_of("dsprites", root, few)
    assert torch.equal(x, dsprites.render("dsprites", few)) and not os.path.exists(dsprites.cache_path(root))
    many = np.arange(288)[::-1]
    x, source = dsprites.images_of("dsprites", root, many)
    assert os.path.isfile(dsprites.cache_path(root)) and "cached" in source
    assert torch.equal(x, dsprites.render("dsprites", many))  # the cache holds the render, bit for bit
    assert not [f for f in os.listdir(os.path.dirname(dsprites.cache_path(root))) if f.endswith(".tmp")]
    x, source = dsprites.images_of("dsprites", root, few)  # now read from it
    assert "cached" in source and torch.equal(x, dsprites.render("dsprites", few))
    with open(dsprites.cache_path(root), "wb") as f:
        f.write(b"damaged")
    with pytest.raises(VaeLabError, match="delete it"):
        dsprites.images_of("dsprites", root, few)
