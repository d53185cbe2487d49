"""benchmarks/colour.py and benchmarks/colour_sets.py (issue 36): the three families on a labelled colour
folder at equal training time, scored beside the codecs with the folder-trained classifier; and the Twemoji
class folders built from the npm archive's own categories."""
import io
import json
import os
import subprocess
import tarfile

import numpy as np
import pytest
import torch

from evaluation import sample_quality as sq
from helpers import run_module_cli
from tools.image_folders import write_image_folder


def test_three_families_are_scored_at_equal_time_beside_the_codecs(workdir):
    from benchmarks import colour

    root = write_image_folder(str(workdir / "shapes"), n=210, classes=3, size=(16, 16), channels=3)
    argv = ["--collection", "shapes", "--data_root", root, "--image_size", "16", "--budget_s", "0.01",
            "--iw_samples", "2", "--iw_images", "10", "--fid_samples", "100", "--device", "cpu",
            "--work_dir", "runs", "--out", "out/c"]
    code, out, err = run_module_cli(colour, argv)
    assert code == 0, err
    saved = json.load(open("out/c.json"))
    rows = {r["config"]: r for r in saved["rows"]}
    assert list(rows) == ["best", "density", "deep"] and set(saved["probe_seconds"]) == set(rows)
    for r in rows.values():
        assert r["epochs"] == 1 and r["seeds"] == [42]  # a budget below one epoch still trains one
        codecs = r["codecs"]
        assert 0 < codecs["xz_bits_per_dim"] and 0 < codecs["webp_bits_per_dim"] < 8
        assert 0.5 < r["test_bpd"]["mean"] < 20 and r["iwae_subset_bpd"]["mean"] > 0
        assert -1 <= r["ssim_code"]["mean"] <= 1 and r["fid"]["mean"] >= 0 and 0 <= r["class_tv"]["mean"] <= 1
        assert 1 / 3 - 1e-6 <= r["sample_top_prob"]["mean"] <= 1 and r["sample_100_seconds"]["mean"] > 0
        assert len(r["val_bpd_curve"]) == 1
    # the training images sit closer to the test images than a family's samples after one epoch
    assert rows["deep"]["fid_train_floor"]["mean"] < rows["deep"]["fid"]["mean"]
    table = open("out/c.md").read()
    assert "| deep | 42 |" in table and f"xz {rows['deep']['codecs']['xz_bits_per_dim']:.4f}" in table


def test_class_probabilities_are_distributions_that_give_the_predicted_class(tmp_path):
    classifier = sq.Classifier((3, 16, 16), 4)
    x = torch.rand(7, 3, 16, 16)
    p = sq.class_probabilities(classifier, x, torch.device("cpu"), batch_size=3)
    assert p.shape == (7, 4) and torch.allclose(p.sum(1), torch.ones(7)) and (p >= 0).all()
    assert torch.equal(p.argmax(1), sq._predict(classifier, x, torch.device("cpu"), 1000))


def _npm_archive(path: str, emoji: list[dict], images: list[str]) -> str:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in [("package/emoji.json", json.dumps(emoji).encode()),
                           *((f"package/img/twitter/64/{i}", b"png bytes of " + i.encode()) for i in images)]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_twemoji_lands_in_its_categories_folders(tmp_path):
    from benchmarks import colour_sets

    emoji = [{"image": "1f600.png", "category": "Smileys & Emotion"},
             {"image": "1f44b.png", "category": "People & Body",
              "skin_variations": {"1F3FB": {"image": "1f44b-1f3fb.png"}}},
             {"image": "1f1eb-1f1f7.png", "category": "Flags"}]  # listed, but the archive has no image of it
    archive = _npm_archive(str(tmp_path / "t.tgz"), emoji, ["1f600.png", "1f44b.png", "1f44b-1f3fb.png", "x.png"])
    code, out, err = run_module_cli(colour_sets, ["twemoji", str(tmp_path / "cat"), archive])
    assert code == 0, err
    assert sorted(os.listdir(tmp_path / "cat")) == ["people_body", "smileys_emotion"]
    assert sorted(os.listdir(tmp_path / "cat" / "people_body")) == ["1f44b-1f3fb.png", "1f44b.png"]
    assert open(tmp_path / "cat" / "smileys_emotion" / "1f600.png", "rb").read() == b"png bytes of 1f600.png"
    assert "3 images in 2 classes" in out
    # a folder that holds something already is refused, and so is a file that is not the archive
    code, _, err = run_module_cli(colour_sets, ["twemoji", str(tmp_path / "cat"), archive])
    assert code == 2 and "not empty" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "bad.tgz").write_bytes(b"not a tarball")
    code, _, err = run_module_cli(colour_sets, ["twemoji", str(tmp_path / "new"), str(tmp_path / "bad.tgz")])
    assert code == 2 and "cannot read" in err and not os.path.exists(tmp_path / "new")


def test_a_photograph_is_cut_into_non_overlapping_tiles():
    from PIL import Image

    from benchmarks.colour_sets import SHORT_SIDE, TILE, tiles

    a = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)  # 4:3, short side 300
    cut = tiles(Image.fromarray(a))
    wide = round(400 * SHORT_SIDE / 300)  # 683
    assert len(cut) == (SHORT_SIDE // TILE) * (wide // TILE) and all(t.shape == (TILE, TILE, 3) for t in cut)
    # neighbours are the scaled photograph's adjacent windows: the first row's second tile starts where the
    # first ends
    scaled = np.asarray(Image.fromarray(a).resize((wide, SHORT_SIDE), Image.Resampling.LANCZOS))
    assert np.array_equal(cut[1], scaled[:TILE, TILE:2 * TILE])


def test_wallpapers_need_debians_two_packages(tmp_path):
    from benchmarks import colour_sets

    tree = tmp_path / "pkg"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text("Package: not-wallpapers\nVersion: 1\nArchitecture: all\n"
                                             "Maintainer: t <t@t>\nDescription: t\n")
    deb = str(tmp_path / "not-wallpapers.deb")
    if subprocess.run(["dpkg-deb", "--build", str(tree), deb], capture_output=True).returncode != 0:
        pytest.skip("dpkg-deb cannot build a package here")
    code, _, err = run_module_cli(colour_sets, ["wallpapers", str(tmp_path / "w"), deb])
    assert code == 2 and "is not in the given packages" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_module_cli(colour_sets, ["wallpapers", str(tmp_path / "w"), str(tmp_path / "none.deb")])
    assert code == 2 and "cannot unpack" in err
