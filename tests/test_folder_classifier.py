"""The FID's classifier for a labelled image folder (issue 36, item 4): trained on the folder's own
classes at the run's image shape (colour included), scored on its held-out images, cached per folder
and shape; the built-in sets keep their net and their caches; a folder without classes is one line."""
import os

import pytest
import torch

from core.errors import VaeLabError
from datasets import load_split
from evaluation import sample_quality as sq
from tools.image_folders import write_image_folder

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def colour_folder(tmp_path_factory):
    """Three classes of 16x16 colour images (a band at a class's height, a class's hue), 70 each."""
    return write_image_folder(str(tmp_path_factory.mktemp("data") / "shapes"), n=210, classes=3, size=(16, 16),
                              channels=3)


@pytest.fixture(scope="module")
def trained(colour_folder, tmp_path_factory):
    """The folder's classifier trained by load_or_train_classifier's defaults: (model, accuracy, weights, log)."""
    weights = str(tmp_path_factory.mktemp("weights"))
    lines: list[str] = []
    model, acc = sq.load_or_train_classifier("folder", colour_folder, weights, CPU, log=lines.append)
    return model, acc, weights, lines


def test_a_labelled_colour_folder_gets_a_classifier_of_its_classes(trained, colour_folder):
    model, acc, weights, lines = trained
    test = load_split("folder", colour_folder, train=False)
    assert test.x.shape[1:] == (3, 16, 16) and len(test) == 30  # the folder's held-out seventh
    assert acc == sq.classifier_accuracy(model, test.x, test.y, CPU) and acc >= 0.9
    assert model(torch.rand(4, 3, 16, 16)).shape == (4, 3)  # the folder's shape in, its 3 classes out
    [cache] = os.listdir(weights)
    assert cache.startswith("folder_shapes_") and cache.endswith("_fid_classifier.pth.tar")
    assert "3 classes" in lines[0] and colour_folder in lines[0] and f"{acc:.4f}" in lines[-1]


def test_its_distance_ranks_image_sets(trained, colour_folder):
    model = trained[0]
    train, test = load_split("folder", colour_folder, train=True), load_split("folder", colour_folder, train=False)
    real = sq.feature_stats(model, test.x, CPU)
    same = sq.frechet_distance(*sq.feature_stats(model, train.x, CPU), *real)
    one_class = sq.frechet_distance(*sq.feature_stats(model, train.x[train.y == 0], CPU), *real)
    noise = sq.frechet_distance(*sq.feature_stats(model, torch.rand(100, 3, 16, 16), CPU), *real)
    # the folder's own images score near it; one of its classes, or noise, far
    assert same < min(one_class, noise) / 4, (same, one_class, noise)


def test_the_cache_is_reused_and_another_shape_gets_its_own(trained, colour_folder, monkeypatch):
    model, acc, weights, _ = trained
    lines: list[str] = []
    monkeypatch.setattr(sq, "train_classifier", lambda *a, **k: pytest.fail("trained again over a good cache"))
    again, acc2 = sq.load_or_train_classifier("folder", colour_folder, weights, CPU, log=lines.append)
    assert acc2 == acc and "test accuracy" in lines[0]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    monkeypatch.undo()
    grey, _ = sq.load_or_train_classifier("folder", colour_folder, weights, CPU, log=lambda s: None, epochs=2,
                                          data={"image_size": 8, "channels": 1})
    assert grey.conv1.in_channels == 1 and grey(torch.rand(2, 1, 8, 8)).shape == (2, 3)
    assert len(os.listdir(weights)) == 2  # the colour cache untouched beside it


def test_the_built_in_sets_keep_their_net():
    # caches written before folders had classifiers load as they did: the same layers and the same name
    shapes = {k: tuple(v.shape) for k, v in sq.Classifier().state_dict().items()}
    assert shapes["conv1.weight"] == (32, 1, 5, 5) and shapes["fc1.weight"] == (128, 64 * 7 * 7)
    assert shapes["fc2.weight"] == (10, 128) and sq.architecture() == sq.ARCHITECTURE


@pytest.mark.parametrize("layout, words", [("flat", "has none"), ("one class", "has one class")])
def test_a_folder_without_classes_is_one_line(tmp_path, layout, words):
    root = str(tmp_path / "images")
    write_image_folder(root, n=20, classes=1, layout="flat" if layout == "flat" else "classes", channels=3)
    with pytest.raises(VaeLabError) as err:
        sq.load_or_train_classifier("folder", root, str(tmp_path / "w"), CPU, log=lambda s: None)
    msg = str(err.value)
    assert "\n" not in msg and "class sub-folders" in msg and words in msg and root in msg
    assert not os.path.exists(tmp_path / "w")  # nothing trained, nothing written
