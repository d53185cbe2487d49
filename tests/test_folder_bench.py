"""benchmarks/folder_vs_fmnist.py end to end on a few real Fashion-MNIST images."""
import json
import os

import torch

from helpers import run_module_cli


def test_fmnist_as_pngs_trains_like_fmnist(fmnist_small, workdir):
    from benchmarks import folder_vs_fmnist
    from datasets import load_split

    argv = ["--epochs", "1", "--seeds", "42", "--data_root", fmnist_small, "--png_root", "png", "--knn_per_class", "20",
            "--device", "cpu", "--work_dir", "runs", "--out", "out/f", "--flags", "--model_type fc --batch-size 256"]
    code, out, err = run_module_cli(folder_vs_fmnist, argv)
    assert code == 0, err
    # the PNGs are the same images with the same labels, in class folders that sort in class order
    idx, png = load_split("fmnist", fmnist_small, False), load_split("folder", "png", False)
    assert sorted(os.listdir("png/test"))[:2] == ["0_T-shirt_top", "1_Trouser"]
    order = torch.argsort(idx.y, stable=True)  # the folder lists class by class, files in index order
    assert torch.equal(png.x, idx.x[order]) and torch.equal(png.y, idx.y[order])
    report = json.load(open("out/f.json"))
    fm, fo = report["rows"]
    assert (fm["dataset"], fo["dataset"]) == ("fmnist", "folder") and report["export"]["written"] == 4000
    for row in (fm, fo):
        assert 0 < row["val_bce_kl"]["mean"] < 600 and 0 < row["knn_acc"]["mean"] <= 1
    assert report["load_seconds"]["png_cached"] < report["load_seconds"]["png_decode"]
    text = open("out/f.md").read()
    assert "time per epoch, folder / fmnist" in text and "the fmnist spread" in text
    code, out, err = run_module_cli(folder_vs_fmnist, argv)  # PNGs kept, runs reused
    assert code == 0 and out.count("reusing") == 2 and json.load(open("out/f.json"))["export"]["written"] == 0, err
