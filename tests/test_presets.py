"""Presets and default run names: what --preset sets, what a config file and explicit flags
override, and the names a run gets when none is given."""
import os

import train
from config.resolve import build_config, given_settings
from config.run_config import PRESETS
from helpers import assert_cli_error, run_cli
from tools.image_folders import write_image_folder


def parse(*argv: str):
    return train.get_args_parser().parse_args(list(argv))


def test_preset_sets_defaults_and_explicit_flags_win():
    p = train.get_args_parser()
    best = p.parse_args(["--preset", "best"])
    for k, v in PRESETS["best"].items():
        assert getattr(best, k) == v
    mixed = p.parse_args(["--epochs", "3", "--preset", "best"])
    assert mixed.epochs == 3 and mixed.model_type == "resconv"
    assert p.parse_args([]).model_type == "fc_conv"  # the parser's own defaults are untouched
    assert p.get_default("epochs") == 30


def test_unknown_preset_is_one_line(workdir):
    code, out, err = run_cli(["--preset", "fastest"])
    assert_cli_error(code, err, "--preset", "fastest")


def test_default_run_names_follow_the_dataset(tmp_path, workdir):
    """A run on other data, or of another model, with a default --lognumber never writes over the
    Fashion-MNIST default run's files."""
    import train

    root = write_image_folder(str(tmp_path / "d"), n=28, size=(16, 16), layout="flat")
    for argv, name in ((["--dataset_type", "folder"], "folder_fc_conv_l10_rebalance_no_norm"),
                       (["--dataset_type", "cifar10", "--preset", "best"], "cifar10_resconv_l10_best"),
                       (["--dataset_type", "mnist", "--lognumber", "fmnist_mine"], "fmnist_mine"),  # given: kept
                       ([], "fmnist_fc_conv_l10_rebalance_no_norm"),
                       (["--preset", "best", "--model_type", "hvae", "--prior", "vamp"], "fmnist_hvae_l10_best_vamp"),
                       (["--model_type", "fc", "--latent_space_size", "2"], "fmnist_fc_l2_rebalance_no_norm")):
        assert build_config(given_settings(train.get_args_parser().parse_args(argv))).lognumber == name
    code, out, err = run_cli(["--dataset_type", "folder", "--data_root", root, "--model_type", "fc", "--epochs", "1",
                              "--batch-size", "8", "--num_folds", "3", "--no_cuda", "True"])
    assert code == 0, err
    assert os.listdir("weights") and all(f.startswith("folder_") for f in os.listdir("weights"))


def test_flags_beat_a_config_file_which_beats_the_preset(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("training:\n  preset: best\n  epochs: 5\nlr: 0.01\n")
    cfg = build_config(given_settings(parse("--config", str(path), "--lr", "0.002")))
    assert cfg.model_type == "resconv" and cfg.batch_size == 128  # the file's preset
    assert cfg.epochs == 5 and cfg.lr == 0.002  # the file, then the flag
    assert cfg.lognumber == "fmnist_resconv_l10_best"
