"""benchmarks/density.py: the density preset end to end on a few real Fashion-MNIST images, its
figures beside the codecs, and the table rewritten from its JSON."""
import json

import pytest

from helpers import run_module_cli


def density_cli(argv):
    from benchmarks import density

    return run_module_cli(density, argv)


def test_the_density_preset_is_scored_beside_the_codecs(fmnist_small, workdir):
    argv = ["--only", "density", "--epochs", "1", "--seeds", "42", "--knn_per_class", "20", "--iw_samples", "3",
            "--iw_images", "40", "--fid_samples", "0", "--data_root", fmnist_small, "--device", "cpu",
            "--work_dir", "runs", "--out", "out/d"]
    code, out, err = density_cli(argv)
    assert code == 0, err
    row = json.load(open("out/d.json"))["rows"][0]
    assert row["config"] == "density" and row["seeds"] == [42] and row["epochs"] == 1
    codecs = row["codecs"]
    assert 0 < codecs["xz_bits_per_dim"] < codecs["webp_bits_per_dim"] < codecs["png_bits_per_dim"] < 8
    bpd, iwae = row["test_bpd"]["mean"], row["iwae_subset_bpd"]["mean"]
    assert 1 < bpd < 8 and 1 < iwae
    # the offset is what moves the subset's bound to the whole set's estimate
    assert abs(row["iwae_test_bpd_est"]["mean"] - (iwae + row["subset_offset_bpd"]["mean"])) < 1e-9
    assert 0 <= row["active_units"]["mean"] <= 10 and 0 < row["knn_acc"]["mean"] <= 1 and row["fid"] is None
    assert row["sample_100_seconds"]["mean"] > 0
    before = open("out/d.md").read()
    assert "| density | 42 |" in before and f"xz {codecs['xz_bits_per_dim']:.4f}" in before
    code, out, err = density_cli(["--from_json", "--out", "out/d"])
    assert code == 0, err
    assert open("out/d.md").read().replace(" (table rewritten by `--from_json`)", "").split("; torch")[1] == \
        before.split("; torch")[1]
    # a rerun of some configurations (--only) keeps the saved rows of the others, each saying what measured it;
    # rows scored with other settings are dropped
    from benchmarks import density

    saved = json.load(open("out/d.json"))
    other = {**saved["rows"][0], "config": "dmol", "command": "python3 -m benchmarks.density --only dmol",
             "cpu": "another CPU"}
    saved["rows"].append(other)
    with open("out/d.json", "w") as f:
        json.dump(saved, f)
    args = density.get_args_parser().parse_args(argv)
    kept = density.kept_rows(args, {"density"})
    assert [r["config"] for r in kept] == ["dmol"] and kept[0]["cpu"] == "another CPU"
    table = density.markdown([*kept, saved["rows"][0]], args, 1.0)
    assert "- **dmol**: `python3 -m benchmarks.density --only dmol` (another CPU)" in table
    args.iw_samples = 5
    assert density.kept_rows(args, {"density"}) == []


def test_rescore_scores_a_kept_checkpoint_again_without_training(fmnist_small, workdir, monkeypatch):
    import train

    argv = ["--only", "density", "--epochs", "1", "--seeds", "42", "--knn_per_class", "20", "--iw_samples", "2",
            "--iw_images", "20", "--fid_samples", "0", "--data_root", fmnist_small, "--device", "cpu",
            "--work_dir", "runs", "--out", "out/d"]
    assert density_cli(argv)[0] == 0
    first = json.load(open("runs/density_s42.json"))
    first["settings"]["code"] = "older"  # as if the scoring code changed since it trained
    first["test_bpd"] = -1.0
    with open("runs/density_s42.json", "w") as f:
        json.dump(first, f)
    monkeypatch.setattr(train, "main", lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained again")))
    code, out, err = density_cli([*argv, "--rescore"])
    assert code == 0, err
    assert "scoring" in out and "again" in out
    again = json.load(open("runs/density_s42.json"))
    assert again["trained_by_code"] == "older" and again["train_seconds"] == first["train_seconds"]
    assert again["test_bpd"] > 1 and again["settings"]["code"] != "older"
    # other training flags are not the kept checkpoint's: without it they would train (refused here)
    with pytest.raises(AssertionError, match="trained again"):
        density_cli([*argv[:3], "2", *argv[4:], "--rescore"])
