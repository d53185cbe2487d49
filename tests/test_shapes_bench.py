"""benchmarks/shapes.py: two rows end to end, each in a process of its own."""
import json

from helpers import run_module_cli


def test_two_rows_are_trained_and_scored(fmnist_small, workdir):
    from benchmarks import shapes

    argv = ["--epochs", "1", "--data_root", fmnist_small, "--device", "cpu", "--only", "fc_32x1,fc_28x3",
            "--work_dir", "runs", "--out", "out/s"]
    code, out, err = run_module_cli(shapes, argv)
    assert code == 0, err
    rows = {r["row"]: r for r in json.load(open("out/s.json"))["rows"]}
    assert set(rows) == {"fc_32x1", "fc_28x3"}
    assert rows["fc_28x3"]["channels"] == 3 and rows["fc_32x1"]["image_size"] == 32
    for r in rows.values():
        assert 0 < r["val_bits_per_dim"] < 9 and 0 < r["val_ssim"] < 1 and r["peak_rss_mib"] > 100
    # 32x32 grey has 1024 pixels, 28x28 colour 2352: the MLP's first layer grows with them
    assert rows["fc_28x3"]["params"] > rows["fc_32x1"]["params"]
    assert "| fc | 28 | 3 |" in open("out/s.md").read()
