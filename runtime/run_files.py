"""A run's name is its identity: the files it owns (checkpoints, config, eval JSON, fitted mixtures,
TensorBoard folder), the refusal to start a new run under a name that is taken, and the lock that keeps a
second live process off a run."""
from __future__ import annotations

import fcntl
import os
from typing import IO

from config.run_config import RunConfig
from core.errors import VaeLabError
from fileio.dirs import ensure_writable_dir


def checkpoint_paths(weights_dir: str, lognumber: str) -> tuple[str, str]:
    """A run's last and best checkpoint files (the 2018 names)."""
    return (os.path.join(weights_dir, f"{lognumber}_checkpoint.pth.tar"),
            os.path.join(weights_dir, f"{lognumber}_best.pth.tar"))


def config_path(weights_dir: str, lognumber: str) -> str:
    """The run's config file (config/files.py writes it)."""
    return os.path.join(weights_dir, f"{lognumber}_config.yaml")


def mixture_path(checkpoint: str) -> str:
    """The GMM sampler fitted on a checkpoint (evaluation/samplers.py): ``weights/x_best.pth.tar`` ->
    ``weights/x_best_gmm.pth.tar``."""
    stem = checkpoint[:-len(".pth.tar")] if checkpoint.endswith(".pth.tar") else checkpoint
    return f"{stem}_gmm.pth.tar"


def derived_files(weights_dir: str, lognumber: str) -> list[str]:
    """The files made from a run's checkpoints (eval JSON, fitted mixtures): stale once they are replaced."""
    return [os.path.join(weights_dir, f"{lognumber}_eval.json"),
            *(mixture_path(p) for p in checkpoint_paths(weights_dir, lognumber))]


def check_outputs(cfg: RunConfig) -> None:
    """Prove the run's output folders are writable before any time is spent on data."""
    ensure_writable_dir(cfg.weights_dir, "checkpoint")
    if cfg.tensorboard or cfg.tensorboard_images:
        ensure_writable_dir(os.path.join(cfg.tb_dir, cfg.lognumber), "TensorBoard")


def resumes_own_run(resume: str, saved_name: str | None, weights_dir: str, lognumber: str) -> bool:
    """True when the checkpoint ``resume`` (which names its run ``saved_name``) continues the run
    ``lognumber`` of ``weights_dir``: one of its own checkpoint files, or a checkpoint of that name in
    that folder (a copy of an earlier epoch, say). A checkpoint of that name elsewhere starts a new
    run here, under the same checks as any other."""
    if not resume:
        return False
    own = {os.path.realpath(p) for p in checkpoint_paths(weights_dir, lognumber)}
    same_folder = os.path.realpath(os.path.dirname(os.path.abspath(resume))) == os.path.realpath(weights_dir)
    return os.path.realpath(resume) in own or (same_folder and saved_name == lognumber)


def check_name_free(weights_dir: str, lognumber: str, describe) -> None:
    """Refuse a new run under ``lognumber`` when a run of that name has a checkpoint: one line saying
    what is there (``describe(path)``: model, epoch, best loss) and the three ways on."""
    for path in checkpoint_paths(weights_dir, lognumber):
        if os.path.exists(path):
            raise VaeLabError(f"a run named {lognumber!r} exists ({path}: {describe(path)}); continue it with "
                              f"--resume {path}, start another with --lognumber NEW_NAME, or replace it with "
                              f"--overwrite")


def remove_derived(weights_dir: str, lognumber: str) -> list[str]:
    """Delete the files made from a run's earlier checkpoints (``--overwrite``, once the new run has saved
    its first); returns those deleted."""
    gone = [path for path in derived_files(weights_dir, lognumber) if os.path.exists(path)]
    for path in gone:
        os.remove(path)
    return gone


class RunLock:
    """An exclusive lock on a run (``weights/<run>.lock``) for as long as this process trains it.

    ``flock`` locks belong to the open file: the kernel drops them when the process ends, however it
    ends (a kill -9 included), so a dead run never leaves its name locked; the file itself stays, empty
    of meaning, and is reused."""

    def __init__(self, weights_dir: str, lognumber: str):
        self.path = os.path.join(weights_dir, f"{lognumber}.lock")
        self.lognumber = lognumber
        self.file: IO[str] | None = None

    def acquire(self) -> None:
        f = open(self.path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            pid = f.read().strip()
            f.close()
            raise VaeLabError(f"the run {self.lognumber!r} is being trained by another process"
                              f"{f' (pid {pid})' if pid else ''}; wait for it, or pick another --lognumber"
                              ) from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        self.file = f

    def release(self) -> None:
        if self.file is not None:
            self.file.close()  # closing drops the flock
            self.file = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
