"""The run's config: one typed object from flags, a preset, a YAML file and a checkpoint; the file
every run writes and `--config` reads; a checkpoint alone is enough to evaluate, predict and
compare; a run's name is its identity (no silent overwrite, one live process)."""
import dataclasses
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml

import compare_embeddings
from config.files import config_text, read_config
from config.resolve import build_config, given_settings
from config.run_config import INVOCATION, RunConfig, model_config, run_fields
from core.errors import VaeLabError
from helpers import ROOT, assert_cli_error, load_ckpt, run_cli, run_module_cli, tiny_args
from models import MODELS
from runtime.checkpoints import load_model
from runtime.run_files import RunLock
from tools.image_folders import write_image_folder


def parse(*argv: str):
    import train

    return train.get_args_parser().parse_args(list(argv))


def test_each_default_is_stated_once_and_the_model_config_derives_by_name():
    args = parse()
    assert {k: getattr(args, k) for k in run_fields()} == RunConfig().to_dict()
    cfg = build_config(given_settings(parse("--model_type", "hvae", "--hvae_channels", "3", "--latent_space_size",
                                            "7", "--image_loss_type", "logistic")))
    m = model_config(cfg, 3, 32, 5)
    assert (m.model_type, m.hvae_channels, m.latent_space_size, m.likelihood) == ("hvae", 3, 7, "logistic")
    assert (m.image_channels, m.image_size, m.num_classes) == (3, 32, 5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.epochs = 3


def test_a_written_config_reads_back_as_the_same_run(tmp_path):
    cfg = build_config(given_settings(parse("--preset", "hvae", "--image_size", "32", "--channels", "3",
                                            "--unet_skips", "7,14", "--test_fraction", "0.2", "--compile", "False")))
    path = tmp_path / "run_config.yaml"
    path.write_text(config_text(cfg, str(path)))
    text = path.read_text()
    assert text.startswith("# vae-lab run config") and "\nmodel:\n  model_type: hvae\n" in text
    assert not {k for k in yaml.safe_load(text).get("checkpoints", {})} & INVOCATION  # no --resume, --evaluate...
    again = RunConfig(**{**RunConfig().to_dict(), **read_config(str(path))})
    assert {k: v for k, v in again.to_dict().items() if k not in INVOCATION} == \
           {k: v for k, v in cfg.to_dict().items() if k not in INVOCATION}


@pytest.mark.parametrize("text, needles", [
    ("epochs: abc\n", ["epochs", "positive integer", "abc"]),
    ("training:\n  batch_size: 0\n", ["batch_size", "positive integer"]),
    ("model_type: transformer\n", ["model_type must be one of", "transformer"]),
    ("learning_rate: 0.1\n", ["unknown key 'learning_rate'"]),
    ("do_augs: maybe\n", ["do_augs", "True/False"]),
    ("lr: [1, 2]\n", ["lr must be a single value"]),
    ("epochs: 3\nepochs: 4\n", []),  # YAML keeps the last: not an error
    ("[1, 2]\n", ["must be a mapping"]),
    ("epochs: 3\n  lr: :\n", ["not valid YAML", "line"]),
    ("config: other.yaml\n", ["config is given on the command line"]),
    ("checkpoints:\n  resume: weights/r_best.pth.tar\n", ["resume is given on the command line"]),
])
def test_a_bad_config_file_is_one_line_naming_the_key(tmp_path, workdir, text, needles):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    code, _, err = run_cli(["--config", str(path), "--epochs", "1", "--data_root", str(tmp_path / "none")])
    if not needles:
        assert "bad.yaml" not in err
        return
    assert_cli_error(code, err, "bad.yaml", *needles)
    assert not os.path.exists("weights") or os.listdir("weights") == []


def test_a_missing_config_file_is_one_line(workdir):
    code, _, err = run_cli(["--config", "nope.yaml"])
    assert_cli_error(code, err, "nope.yaml", "does not exist")


def test_a_run_from_its_own_config_file_is_the_same_run(tiny_mnist, workdir):
    assert run_cli(tiny_args(tiny_mnist, "--lr", "0.003", epochs=2, name="a"))[0] == 0
    code, out, err = run_cli(["--config", "weights/a_config.yaml", "--lognumber", "b"])
    assert code == 0, err
    a, b = load_ckpt("weights/a_checkpoint.pth.tar"), load_ckpt("weights/b_checkpoint.pth.tar")
    assert a["epoch"] == b["epoch"] == 2 and b["args"]["lr"] == 0.003
    assert all(torch.equal(v, b["state_dict"][k]) for k, v in a["state_dict"].items())
    assert [h["val_loss"] for h in a["history"]] == [h["val_loss"] for h in b["history"]]


def test_a_taken_name_is_refused_and_says_what_is_there_and_the_ways_on(tiny_mnist, workdir):
    assert run_cli(tiny_args(tiny_mnist, epochs=2, name="r"))[0] == 0
    before = open("weights/r_best.pth.tar", "rb").read()
    code, _, err = run_cli(tiny_args(tiny_mnist, "--model_type", "fc", name="r"))
    assert_cli_error(code, err, "a run named 'r' exists", "fc_conv, epoch 2, best val loss",
                     "--resume weights/r_checkpoint.pth.tar", "--lognumber", "--overwrite")
    assert open("weights/r_best.pth.tar", "rb").read() == before
    # resuming the run itself goes on, with the settings it was trained with
    code, out, err = run_cli(["--resume", "weights/r_checkpoint.pth.tar", "--epochs", "4", "--data_root", tiny_mnist])
    assert code == 0, err
    assert load_ckpt("weights/r_checkpoint.pth.tar")["args"]["batch_size"] == 128
    assert load_ckpt("weights/r_checkpoint.pth.tar")["epoch"] == 4
    # a checkpoint of that name from another folder does not continue this folder's run
    os.makedirs("elsewhere")
    shutil.copy("weights/r_checkpoint.pth.tar", "elsewhere/r_checkpoint.pth.tar")
    code, _, err = run_cli(["--resume", "elsewhere/r_checkpoint.pth.tar", "--epochs", "5", "--data_root", tiny_mnist])
    assert_cli_error(code, err, "a run named 'r' exists")
    # --overwrite replaces it, and what was made of the old checkpoints goes with it; the run goes on two
    # epochs past the first save, where the old files are removed
    open("weights/r_eval.json", "w").write("{}")
    code, out, err = run_cli(tiny_args(tiny_mnist, "--model_type", "fc", "--overwrite", name="r", epochs=3))
    assert code == 0, err
    assert load_ckpt("weights/r_best.pth.tar")["model_config"]["model_type"] == "fc"
    assert [h["epoch"] for h in load_ckpt("weights/r_checkpoint.pth.tar")["history"]] == [1, 2, 3]
    assert not os.path.exists("weights/r_eval.json")


def test_overwrite_after_evaluate_trains_every_epoch(tiny_mnist, workdir):
    # issue 33: a run with an --evaluate file, overwritten, crashed after its first epoch
    assert run_cli(tiny_args(tiny_mnist, epochs=1, name="x"))[0] == 0
    code, _, err = run_cli(["--evaluate", "--resume", "weights/x_best.pth.tar", "--data_root", tiny_mnist])
    assert code == 0, err
    assert os.path.exists("weights/x_eval.json")
    code, out, err = run_cli(tiny_args(tiny_mnist, "--overwrite", epochs=3, name="x"))
    assert code == 0, err
    assert "--overwrite: removed weights/x_eval.json" in out
    ck = load_ckpt("weights/x_checkpoint.pth.tar")
    assert ck["epoch"] == 3 and [h["epoch"] for h in ck["history"]] == [1, 2, 3]
    assert not os.path.exists("weights/x_eval.json")


def test_a_second_live_process_on_a_run_is_refused_and_a_killed_one_leaves_no_lock(tiny_mnist, workdir):
    os.makedirs("weights")
    with RunLock("weights", "r"):
        code, _, err = run_cli(tiny_args(tiny_mnist, name="r"))
        assert_cli_error(code, err, "'r' is being trained by another process", f"pid {os.getpid()}")
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time; sys.path.insert(0, {ROOT!r})
        from runtime.run_files import RunLock
        lock = RunLock("weights", "r"); lock.acquire(); print("held", flush=True); time.sleep(60)""")],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(VaeLabError, match="another process"):
        RunLock("weights", "r").acquire()
    holder.kill()
    holder.wait()
    lock = RunLock("weights", "r")
    lock.acquire()  # the kernel dropped the dead process's lock
    lock.release()
    assert run_cli(tiny_args(tiny_mnist, name="r"))[0] == 0


@pytest.fixture(scope="module")
def hvae_folder_run(tmp_path_factory):
    """A --preset hvae run on a folder of colour images, trained in its own folder."""
    work = tmp_path_factory.mktemp("hvae_run")
    root = write_image_folder(str(work / "pictures"), n=84, classes=3, channels=3, size=(20, 20))
    cwd = os.getcwd()
    os.chdir(work)
    try:
        code, _, err = run_cli(["--preset", "hvae", "--dataset_type", "folder", "--data_root", root, "--image_size",
                                "16", "--epochs", "1", "--batch-size", "16", "--num_folds", "4", "--print-freq", "100",
                                "--tensorboard", "False", "--tensorboard_images", "False", "--no_cuda", "True"])
    finally:
        os.chdir(cwd)
    assert code == 0, err
    return str(work / "weights" / "folder_hvae_l10_best_best.pth.tar")


def test_the_checkpoint_alone_evaluates_predicts_and_compares(hvae_folder_run, workdir):
    code, out, err = run_cli(["--evaluate", "--resume", hvae_folder_run])
    assert code == 0, err
    assert os.path.isfile("weights/folder_hvae_l10_best_eval.json") and "model: hvae" in out
    code, out, err = run_cli(["--predict", "--resume", hvae_folder_run, "--device", "cpu"])
    assert code == 0, err
    assert os.path.isfile("results/folder_hvae_l10_best/reconstructions.png")
    code, out, err = run_module_cli(compare_embeddings, [
        "--resume", hvae_folder_run, "--methods", "pca,vae", "--samples_per_class", "5,10", "--n_neighbours",
        "1,3", "--test_samples_per_class", "4", "--draws", "2", "--out", "cmp"])
    assert code == 0, err
    assert os.path.isfile("cmp/results.json")
    # a flag that contradicts the checkpoint is refused; one it does not fix is allowed
    code, _, err = run_cli(["--evaluate", "--resume", hvae_folder_run, "--model_type", "resconv"])
    assert_cli_error(code, err, "--model_type hvae")
    code, _, err = run_cli(["--evaluate", "--resume", hvae_folder_run, "--batch-size", "7", "--weights_dir", "w2"])
    assert code == 0 and os.path.isfile("w2/folder_hvae_l10_best_eval.json"), err


def test_load_model_rebuilds_any_checkpoint_with_no_flags(hvae_folder_run, reference_ckpt):
    model, run = load_model(hvae_folder_run)
    assert (run.model_type, run.dataset_type, run.image_size, run.kl_warmup_epochs) == ("hvae", "folder", 16, 6)
    assert model.image_shape == (3, 16, 16) and model.level_names
    model, run = load_model(reference_ckpt)  # 2018: no config stored, the published one
    assert run == build_config({"resume": reference_ckpt}) and model.latent_size == 10
    assert model.image_shape == (1, 28, 28) and model.model_type == "fc_conv"


def test_a_checkpoints_stored_settings_are_checked_like_flags(tiny_mnist, workdir):
    assert run_cli(tiny_args(tiny_mnist, name="r"))[0] == 0
    ckpt = load_ckpt("weights/r_checkpoint.pth.tar")
    ckpt["args"]["batch_size"] = "lots"
    torch.save(ckpt, "weights/edited.pth.tar")
    code, _, err = run_cli(["--evaluate", "--resume", "weights/edited.pth.tar"])
    assert_cli_error(code, err, "settings stored in", "batch_size", "lots")


def test_model_config_fields_all_come_from_the_run_or_the_data():
    data = {"image_channels", "image_size", "num_classes", "input_mean", "input_std", "likelihood"}
    # and the pixel mixture's location mapping: this version's ("unbounded") for a new model, "sigmoid" only as a
    # checkpoint stored before issue 36's fix says (models.config_from_dict)
    version = {"mixture_location"}
    for family in MODELS.values():  # the shared fields and each family's own settings
        assert {f.name for f in dataclasses.fields(family.config)} - data - version <= set(run_fields()), family.name
    assert model_config(RunConfig(image_loss_type="dmol")).mixture_location == "unbounded"
