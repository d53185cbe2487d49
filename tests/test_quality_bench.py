"""benchmarks/quality.py: one short configuration end to end, on a few real Fashion-MNIST images."""
import json

from helpers import run_module_cli


def quality_cli(argv):
    from benchmarks import quality

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


def test_iwae_subset_compares_the_first_images_with_the_whole_fold(tiny_mnist, workdir):
    from benchmarks import iwae_subset
    from helpers import run_cli, tiny_args

    assert run_cli(tiny_args(tiny_mnist, "--model_type", "fc", "--prior", "vamp", "--vamp_components", "4"))[0] == 0
    code, out, err = run_module_cli(iwae_subset, ["weights/r_best.pth.tar", "weights/r_best.pth.tar", "--images",
                                                  "10", "--k", "3", "--data_root", tiny_mnist, "--out", "out/s"])
    assert code == 0, err
    rows = json.load(open("out/s.json"))["rows"]
    assert len(rows) == 2 and rows[0]["images"] == 10 and rows[0]["fold_images"] > 10
    assert rows[0]["subset"] == rows[1]["subset"]  # seeded: the same noise every time
    assert abs(rows[0]["offset"] - (rows[0]["subset"] - rows[0]["fold"])) < 1e-9
    # a "subset" of the whole fold is the fold: the same images, the same noise
    code, out, err = run_module_cli(iwae_subset, ["weights/r_best.pth.tar", "--images", "100000", "--k", "3",
                                                  "--data_root", tiny_mnist, "--out", "out/all"])
    assert code == 0, err
    row = json.load(open("out/all.json"))["rows"][0]
    assert abs(row["offset"]) < 1e-4 and "VampPrior of 4 pseudo-inputs" in open("out/all.md").read()


def test_rows_are_compared_with_the_first_seed_by_seed():
    from benchmarks import quality

    def run(seed, bce_kl, iwae):
        return {"seed": seed, "params": 10, "epochs": 1, "train_seconds": 1.0, "val_bce_kl": bce_kl, "val_bce": 0.0,
                "val_kl": 0.0, "iwae_nll": iwae, "val_ssim": 0.5, "knn_acc": None}

    # seed 2 moves both rows by 10 nats; seed 3 is the second row's only
    rows = quality.summary({"best": [run(1, 230.0, 236.0), run(2, 240.0, 246.0)],
                              "best_vamp": [run(1, 229.0, 235.5), run(2, 238.0, 245.5), run(3, 0.0, None)]})
    assert rows[0]["val_bce_kl_vs_first"] is None and rows[0]["iwae_nll_vs_first"] is None
    assert rows[1]["val_bce_kl_vs_first"]["values"] == [-1.0, -2.0]
    assert rows[1]["iwae_nll_vs_first"]["values"] == [-0.5, -0.5] and rows[1]["iwae_nll_vs_first"]["std"] == 0
    assert rows[1]["iwae_nll"]["std"] > 7  # unpaired, the seeds' spread hides the difference
