"""The benchmark scripts run end to end (tiny settings; speed itself is never asserted here)."""
import json
import os

from helpers import ROOT


def test_run_py_writes_its_report(fmnist_small, tmp_path):
    from benchmarks import run

    out = tmp_path / "results.md"
    args = run.get_args_parser().parse_args([
        "--models", "fc_conv", "--batch-sizes", "128", "--devices", "cpu", "--seconds", "0.05", "--repeats", "1",
        "--no-variants", "--no-full-run", "--no-malloc-ab", "--data_root", fmnist_small, "--out", str(out)])
    res = run.main(args)
    row = res["devices"]["cpu"]["grid"][0]
    for kind in ("train", "eval"):
        for method in ("train.py", "bare", "2018"):
            assert row[f"{kind}_{method}"] > 0
    text = out.read_text()
    assert "| fc_conv | 128 |" in text and "**bare** = model + optimizer" in text
    assert (tmp_path / "results.json").exists()


def test_conv_speed_times_every_path_and_marks_the_chosen_one(fmnist_small, tmp_path):
    from benchmarks import conv_speed

    out = tmp_path / "conv_speed.md"
    args = conv_speed.get_args_parser().parse_args([
        "--models", "resconv", "--shapes", "28x1", "32x3", "--families", "fc_conv", "--seconds", "0.01", "--repeats",
        "1", "--no-startup", "--no-full-run", "--end-to-end", "0", "--data_root", fmnist_small, "--out", str(out)])
    res = conv_speed.main(args)
    resconv, colour, fc_conv = res["grid"]
    assert resconv["steps"] >= 3 and colour["channels"] == 3
    for path in conv_speed.PATHS:
        assert resconv[f"{path}|train.py"] > 0 and resconv[f"{path}|bare"] > 0 and fc_conv[f"{path}|bare"] > 0
    assert fc_conv["chosen"] == "float32" and "channels-last" in resconv["chosen"]
    text = out.read_text()
    assert "| resconv | 32x32x3 | 64 |" in text and text.count(" * |") == 3  # one chosen path a row
    assert conv_speed.main(conv_speed.get_args_parser().parse_args(
        ["--from_json", str(tmp_path / "conv_speed.json"), "--out", str(tmp_path / "again.md")]))
    assert (tmp_path / "again.md").read_text() == text


def test_train_speed_and_the_full_run(fmnist_small, tmp_path):
    from benchmarks import baselines, train_speed

    out = tmp_path / "train_speed.md"
    res = train_speed.main(train_speed.get_args_parser().parse_args(
        ["--epochs", "1", "--data_root", fmnist_small, "--out", str(out)]))
    assert res["ratio"] > 0 and "2018: per-sample DataLoader" in out.read_text()
    full = baselines.full_run(["--epochs", "1", "--batch-size", "256", "--tensorboard", "False",
                               "--tensorboard_images", "False"], fmnist_small, str(tmp_path))
    assert full["epochs"] == 1 and full["wall_s"] > full["training_s"] > 0
    assert 100 < full["peak_rss_mb"] < 20000 and full["val_bce_kl"] > 0 and 0 < full["val_ssim"] < 1


BENCHMARKS = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "benchmarks"))
                    if f.endswith(".py") and f not in ("__init__.py", "scaffold.py", "baselines.py"))


def test_every_benchmark_is_a_module_of_the_package_and_uses_only_the_products_public_names():
    """No benchmark puts a folder on sys.path; none reaches a private name (``_x``) of the product."""
    import ast
    import importlib

    product = {m for m in os.listdir(ROOT) if os.path.isfile(os.path.join(ROOT, m, "__init__.py"))} | {
        f[:-3] for f in os.listdir(ROOT) if f.endswith(".py")}
    for name in [*BENCHMARKS, "scaffold", "baselines"]:
        tree = ast.parse(open(os.path.join(ROOT, "benchmarks", f"{name}.py")).read())
        modules = set()  # names bound to the product's modules
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules |= {a.asname or a.name.split(".")[0] for a in node.names if a.name.split(".")[0] in product}
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in product:
                assert not [a.name for a in node.names if a.name.startswith("_")], (name, node.module)
                modules |= {a.asname or a.name for a in node.names}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                assert not (node.value.id == "sys" and node.attr == "path"), f"{name} edits sys.path"
                private = node.attr.startswith("_") and not node.attr.startswith("__")
                assert not (node.value.id in modules and private), f"{name}: {node.value.id}.{node.attr}"
        module = importlib.import_module(f"benchmarks.{name}")
        if name in BENCHMARKS:
            assert f"python3 -m benchmarks.{name}" in module.get_args_parser().format_help()


def test_a_benchmark_starts_as_a_module_from_another_folder(tmp_path):
    from benchmarks.scaffold import run_module

    done = run_module("iwae_subset", ["--help"], cwd=tmp_path, timeout=120)
    assert done.returncode == 0 and "usage: python3 -m benchmarks.iwae_subset" in done.stdout, done.stderr


def test_seeds_are_summarised_and_the_report_says_where_it_ran(tmp_path):
    from benchmarks.scaffold import cell, command_line, machine, summarise, write_report

    runs = {"a": [{"seed": 1, "x": 1.0, "y": None}, {"seed": 2, "x": 3.0, "y": 5.0}], "b": []}
    rows = summarise(runs, ["x", "y", "z"], lambda name, results: {"config": name, "n": len(results)})
    assert rows == [{"config": "a", "n": 2, "seeds": [1, 2], "x": {"mean": 2.0, "std": 2 ** 0.5, "values": [1.0, 3.0]},
                     "y": {"mean": 5.0, "std": 0.0, "values": [5.0]}, "z": None}]
    assert cell(rows[0]["x"], ".2f") == "2.00 ± 1.41" and cell(rows[0]["y"], ".1f") == "5.0"
    assert cell(None, ".1f") == "n/a"
    assert command_line("quality") == "python3 -m benchmarks.quality"  # not started as that benchmark: no flags
    md = write_report(str(tmp_path / "sub" / "r.md"), "| a |", {"rows": rows, "cores": "kept"}, "python3 -m x")
    saved = json.loads((tmp_path / "sub" / "r.json").read_text())
    assert md.endswith("r.md") and open(md).read() == "| a |\n"
    assert saved["command"] == "python3 -m x" and saved["cpu"] == machine()["cpu"] and saved["cores"] == "kept"
    write_report(str(tmp_path / "r2"), "text\n", {})
    assert (tmp_path / "r2.md").read_text() == "text\n"
    assert "command" not in json.loads((tmp_path / "r2.json").read_text())


def test_decode_py_compares_the_loader_with_a_plain_loop(tmp_path):
    from benchmarks import decode

    args = decode.get_args_parser().parse_args(["--small", "6", "--big", "0", "--many", "5",
                                                "--files", str(tmp_path / "files"), "--out", str(tmp_path / "d")])
    rows = decode.main(args)
    assert [r["loader"] for r in rows] == ["plain PIL loop", "vae-lab 1 thread", "vae-lab", "vae-lab"]
    assert rows[0]["shape"] == [6, 64, 64, 3]  # the plain loop's (N, H, W, C)
    assert rows[2]["shape"] == [6, 3, 64, 64] and rows[3]["shape"] == [5, 1, 8, 8]
    text = (tmp_path / "d.md").read_text()
    assert "| 6 178x218 JPEGs (CelebA's size) -> 64x64 | vae-lab |" in text and "| 1.0x |" in text


def test_concurrent_runs_times_each_setting_and_reads_the_threads_from_the_runs(fmnist_small, tmp_path):
    import json

    from benchmarks import concurrent_runs

    out = tmp_path / "concurrent.md"
    args = concurrent_runs.get_args_parser().parse_args(["--epochs", "1", "--runs", "1,2", "--data_root",
                                                         fmnist_small, "--out", str(out)])
    res = concurrent_runs.main(args)
    assert [r["runs"] for r in res["all cores"]] == [r["runs"] for r in res["share"]] == [1, 2]
    together = res["share"][1]
    assert len(together["first_lines"]) == 2 and len(together["epoch_s"]) == 2 and together["images_per_s"] > 0
    assert all("threads" in line or "thread," in line for line in together["first_lines"])
    text = out.read_text()
    assert "| share | 2 |" in text and "2,400 training images an epoch" in text
    assert json.loads((tmp_path / "concurrent.json").read_text())["info"]["epochs per run"] == 1
