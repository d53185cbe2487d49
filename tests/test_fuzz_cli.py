"""Fuzzed command line: random flag combinations, valid and invalid, never a traceback.

Every drawn command line must either do its job on tiny data (train its epoch and save
the checkpoint, or evaluate / predict) and exit 0, or exit 2 with one line on stderr. Any
other exception escapes run_cli and fails the test with hypothesis's minimal example.

The default run is derandomized (the same cases every time, so CI is stable); explore
more with e.g. ``VAE_LAB_FUZZ_EXAMPLES=500 pytest -s tests/test_fuzz_cli.py``, which also
draws fresh random cases.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import urllib.error
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import load_ckpt, run_cli
from tools.idx_files import write_dataset

EXAMPLES = int(os.environ.get("VAE_LAB_FUZZ_EXAMPLES", "50"))
EXPLORE = "VAE_LAB_FUZZ_EXAMPLES" in os.environ


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Tiny data (6 images per class), a good checkpoint, and broken files to pass around."""
    base = tmp_path_factory.mktemp("fuzz")
    rng = np.random.default_rng(0)

    def images(n):
        return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), (np.arange(n) % 10).astype(np.uint8)

    good = str(base / "data")
    for folder in ("MNIST", "FashionMNIST"):
        write_dataset(good, folder, *images(60), *images(20))
    broken = str(base / "broken")
    shutil.copytree(good, broken)
    path = os.path.join(broken, "MNIST", "raw", "train-images-idx3-ubyte")
    with open(path, "r+b") as f:
        f.truncate(1000)

    ckpt_dir = base / "ckpts"
    code, _, err = run_cli(["--data_root", good, "--dataset_type", "mnist", "--epochs", "1", "--batch-size", "64",
                            "--lognumber", "seed", "--weights_dir", str(ckpt_dir), "--tensorboard", "False",
                            "--tensorboard_images", "False", "--no_cuda", "True"])
    assert code == 0, err
    ckpt = str(ckpt_dir / "seed_checkpoint.pth.tar")
    data = open(ckpt, "rb").read()
    (ckpt_dir / "truncated.pth.tar").write_bytes(data[: len(data) // 3])
    (ckpt_dir / "garbage.pth.tar").write_bytes(b"not a checkpoint at all\n" * 10)
    a_file = base / "a_file"
    a_file.write_text("x")
    return {"base": base, "data": good, "broken": broken, "ckpt": ckpt, "ckpt_dir": str(ckpt_dir),
            "a_file": str(a_file)}


def flag_values(env: dict) -> dict[str, tuple[st.SearchStrategy, st.SearchStrategy]]:
    """flag -> (valid values, invalid values), as the strings a shell would pass."""
    def of(*values):
        return st.sampled_from([str(v) for v in values])

    names = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"), min_size=1,
                    max_size=12)
    dirs = st.one_of(of("w", "out/sub", "ü dir"), names)
    bools, bad_bools = of("True", "false", "yes", "0", "On"), of("Flase", "2", "", "nope")
    weights = of("1e-3", "1", "0.5", "1e3", "1e38")
    bad_numbers = of("0", "-1", "nan", "inf", "-inf", "1e400", "x", "")
    return {
        "--batch-size": (of(1, 7, 16, 64, 10**6), of(0, -3, "x", "1.5", "", 10**30)),
        "--seed": (of(0, 1, 42, 2**32 - 1), of(-1, 2**32, "x", 10**30)),
        "--do_augs": (bools, bad_bools),
        "--model_type": (of("fc", "fc_conv", "fcn"), of("transformer", "FC", "")),
        "--latent_space_size": (of(1, 2, 10, 64), of(0, -1, 4097, 10**30, "z")),
        "--model_multiplier": (of(1, 2), of(0, 65, 10**30, "m")),
        "--split_filter": (of(0, 1, 2, 3, 7), of(-1, "a")),
        "--dataset_type": (of("mnist", "fmnist"), of("cifar", "MNIST")),
        "--data_root": (st.just(env["data"]), of(env["broken"], env["a_file"], "nowhere", "")),
        "--fold": (of(0, 1, 3), of(5, 10**30, -1)),
        "--num_folds": (of(2, 3, 5, 6), of(1, 7, 10**30, 0)),
        "--image_loss_type": (of("bce", "mse", "ssim"), of("l1", "")),
        "--img_loss_weight": (weights, bad_numbers),
        "--kl_loss_weight": (weights, bad_numbers),
        "--do_running_mean": (bools, bad_bools),
        "--ssim_window_size": (of(1, 3, 5, 27), of(0, 4, 29, -5, 10**30)),
        "--optimizer": (of("adam", "rmsprop", "sgd"), of("lbfgs", "")),
        "--lr": (of("1e-5", "1e-3", "0.1", "1e10"), bad_numbers),
        "--m1": (of(1, 2, 50, 10**30), of(0, -2, "x")),
        "--m2": (of(1, 2, 50, 10**30), of(0, "x")),
        "--grad_clip": (of(0, "0.1", "1e30"), of(-1, "nan", "inf", "x")),
        "--print-freq": (of(1, 3, 10**30), of(0, -1)),
        "--lognumber": (st.one_of(of("run", "a b", "é"), names), of("", ".", "..", "a/b", "x" * 300)),
        "--tensorboard": (bools, bad_bools),
        "--tensorboard_images": (bools, bad_bools),
        "--weights_dir": (dirs, of(env["a_file"], "")),
        "--tb_dir": (dirs, of(env["a_file"] + "/tb")),
        "--results_dir": (dirs, of(env["a_file"])),
        "--resume": (of(env["ckpt"]), of(os.path.join(env["ckpt_dir"], "truncated.pth.tar"),
                                          os.path.join(env["ckpt_dir"], "garbage.pth.tar"),
                                          env["ckpt_dir"], "missing.pth.tar")),
        "--evaluate": (of("True", "no"), of("maybe")),
        "--predict": (of("True", "False"), of("sure")),
        "--predict_train": (of("True", "False"), of("x")),
        "--device": (of("auto", "cpu"), of("cuda", "mps", "tpu")),
        "--no_cuda": (of("True", "false"), of("x")),
        "--threads": (of(1, 2), of(0, -1, 10**30, "x", "")),
        "--start-epoch": (of(0), of(1, -1, "x")),
    }


@st.composite
def command_lines(draw, env: dict) -> list[str]:
    table = flag_values(env)
    argv = ["--data_root", env["data"], "--dataset_type", "mnist", "--batch-size", "64"]
    flags = draw(st.lists(st.sampled_from(sorted(table)), min_size=1, max_size=7, unique=True))
    for flag in flags:
        valid, invalid = table[flag]
        value = draw(valid if draw(st.sampled_from([True] * 6 + [False])) else invalid)
        if flag in ("--evaluate", "--predict", "--predict_train", "--no_cuda") and draw(st.booleans()):
            argv.append(flag)  # these also work bare
        else:
            argv += [flag, value]
    epochs = "2" if "--resume" in flags else "1"  # the good checkpoint holds epoch 1
    argv += ["--epochs", draw(st.sampled_from([epochs] * 8 + ["0", "x"]))]
    if draw(st.integers(0, 9)) == 0:  # a broken token: unknown flag, stray word, or a missing value
        argv.append(draw(st.sampled_from(["--nope", "stray", "--lr"])))
    return argv


def value_of(argv: list[str], flag: str, default: str) -> str:
    return argv[len(argv) - 1 - argv[::-1].index(flag) + 1] if flag in argv else default


def check_success(argv: list[str], out: str) -> str:
    """What a run that exited 0 did; asserts it really did it."""
    if "wrote predictions to" in out or "BCE+KL" in out:
        return "evaluated or predicted"
    weights = value_of(argv, "--weights_dir", "weights")
    import train
    from config.resolve import build_config, given_settings
    from runtime.checkpoints import load_checkpoint

    # default names follow the data, the model, the latent size and the prior; a resumed run keeps its checkpoint's
    args = train.get_args_parser().parse_args(argv)
    name = build_config(given_settings(args), load_checkpoint(args.resume) if args.resume else None).lognumber
    ckpt = load_ckpt(os.path.join(weights, f"{name}_checkpoint.pth.tar"))
    assert ckpt["epoch"] == int(value_of(argv, "--epochs", "30")), argv
    assert ckpt["history"] and all(np.isfinite(v) for v in ckpt["history"][-1].values()), argv
    return "trained"


def test_fuzzed_command_lines_train_or_exit_2_with_one_line(env, monkeypatch, capsys):
    import datasets
    from dataio import sources

    def offline(*a, **k):
        raise urllib.error.URLError("offline")

    for cls in datasets.DATASETS.values():  # a missing dataset must not reach the network
        monkeypatch.setattr(cls, "download", offline)
    monkeypatch.setattr(sources, "_copy_debian_fmnist", lambda *a, **k: False)
    monkeypatch.chdir(env["base"])
    outcomes: Counter = Counter()

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=not EXPLORE,
              suppress_health_check=list(HealthCheck))
    @given(argv=command_lines(env))
    def check(argv):
        cwd = tempfile.mkdtemp(dir=env["base"])
        os.chdir(cwd)
        try:
            code, out, err = run_cli(argv)
            assert "Traceback" not in err, (argv, err)
            if code == 0:
                outcomes[check_success(argv, out)] += 1
            else:
                lines = [line for line in err.splitlines() if line.strip()]
                assert code == 2 and len(lines) == 1 and lines[0].startswith("train.py: error: "), \
                    (argv, code, err)
                outcomes["exit 2"] += 1
        finally:
            os.chdir(env["base"])
            shutil.rmtree(cwd, ignore_errors=True)
            torch.set_num_threads(1)

    check()
    total = sum(outcomes.values())
    with capsys.disabled():
        print(f"\nfuzzed {total} command lines: " + ", ".join(f"{n} {k}" for k, n in sorted(outcomes.items())))
    assert total >= EXAMPLES * 0.9, outcomes
    # both sides were exercised: it is not a test of only bad (or only good) input
    assert outcomes["trained"] >= total // 10 and outcomes["exit 2"] >= total // 10, outcomes
