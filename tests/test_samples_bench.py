"""benchmarks/samples.py: one short configuration end to end, on a few real Fashion-MNIST images."""
import json

from helpers import run_module_cli


def samples_cli(argv):
    from benchmarks import samples

    return run_module_cli(samples, argv)


def test_one_config_is_scored_and_cached(fmnist_small, workdir):
    argv = ["--only", "2018,best_cvae", "--epochs", "1", "--seeds", "42", "--fid", "300", "--data_root", fmnist_small,
            "--device", "cpu", "--work_dir", "runs", "--out", "out/s"]
    code, out, err = samples_cli(argv)
    assert code == 0, err
    report = json.load(open("out/s.json"))
    base, cvae = report["rows"]
    assert base["config"] == "2018" and base["seeds"] == [42] and report["fid"] == 300
    for key in ("fid_prior", "fid_gmm", "fid_recon"):
        assert base[key]["mean"] > report["real_training_images_fid"] >= 0
    assert base["gmm_vs_prior"]["mean"] == base["fid_gmm"]["mean"] / base["fid_prior"]["mean"]
    assert base["class_sample_accuracy"] is None and 0 <= cvae["class_sample_accuracy"]["mean"] <= 1
    assert "| 2018 | `(defaults)` | 1 |" in open("out/s.md").read()
    code, out, err = samples_cli(argv)
    assert code == 0 and out.count("reusing") == 2, err
