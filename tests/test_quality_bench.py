"""benchmarks/quality.py: one short configuration end to end, on a few real Fashion-MNIST images."""
import json
import os
import sys

from helpers import ROOT, run_module_cli

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))


def quality_cli(argv):
    import quality

    return run_module_cli(quality, argv)


def test_two_configs_one_epoch_are_scored_and_cached(fmnist_small, workdir):
    argv = ["--only", "2018,best_cvae", "--epochs", "1", "--seeds", "42", "--knn_per_class", "20",
            "--iw_samples", "4", "--data_root", fmnist_small, "--device", "cpu", "--work_dir", "runs",
            "--out", "out/q"]
    code, out, err = quality_cli(argv)
    assert code == 0, err
    report = json.load(open("out/q.json"))
    assert report["epochs_override"] == 1 and report["iw_samples"] == 4
    base, cvae = report["rows"]
    assert base["config"] == "2018" and base["flags"] == "(defaults)" and base["epochs"] == 1
    assert 100 < base["val_bce_kl"]["mean"] < 600 and 0.2 < base["knn_acc"]["mean"] <= 1
    # the IWAE bound on -log p(x) is below the ELBO-style loss (here with the posterior mean decoded
    # the comparison is loose, so only its scale is checked)
    assert 100 < base["iwae_nll"]["mean"] < 700
    assert cvae["knn_acc"] is None  # a CVAE's encoder needs the label: no KNN without test labels
    md = open("out/q.md").read()
    assert "| best_cvae | `--preset best --conditional True` |" in md and "| n/a |" in md
    code, out, err = quality_cli(argv)
    assert code == 0 and out.count("reusing") == 2, err


def test_unknown_config_is_one_line(workdir):
    code, _, err = quality_cli(["--only", "nope", "--work_dir", "runs", "--out", "out/q"])
    assert code == 2 and "unknown configuration" in err and len(err.strip().splitlines()) == 1, err
