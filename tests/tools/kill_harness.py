"""Kill a training run with SIGKILL again and again; after each kill, check nothing is lost.

One run on tiny synthetic MNIST (many ~50 ms epochs, so checkpoint writes are frequent) is
killed at a random moment, then resumed from its latest checkpoint, killed again, and so
on; a last resume runs to completion. Kills alternate between two kinds:

* ``random``: a random delay after the run has started training;
* ``write``:  the moment a checkpoint temp file appears, i.e. in the middle of a write.

After each kill: the latest checkpoint (and best file) load with ``load_checkpoint``, and
its epoch never goes back. A kill is *survived* when, in addition, the next run resumed
from that checkpoint and trained on (or, after the last kill, ran to completion, exit 0).
At the end: no temp files are left, the history has every epoch once, every TensorBoard
series has every step once (as both TensorBoard readers show it), and, with ``--compare``,
the weights, history, best file and TensorBoard values equal those of an uninterrupted run.

    python3 tests/tools/kill_harness.py --kills 20          # real `python train.py` processes
    python3 tests/tools/kill_harness.py --kills 5 --launcher fork   # forked: no 5 s import each

It prints one line per kill and ``survived N/N``; the exit code is 0 only if every check held.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [p for p in (ROOT, os.path.join(ROOT, "tests")) if p not in sys.path]

from core.errors import VaeLabError  # noqa: E402
from runtime.checkpoints import load_checkpoint  # noqa: E402
from tools.idx_files import write_tiny_mnist  # noqa: E402
from tools.tb_reader import read_logdir  # noqa: E402

NAME = "kill"
EPOCHS_FOREVER = 100000
TRAIN_BATCHES, VAL_BATCHES = 4, 1  # 400 training / 100 validation images, batches of 128


# ---------------------------------------------------------------- launching runs


def _child(argv: list[str], cwd: str, log: str) -> None:
    """A forked run of train.py (``--launcher fork``): output to ``log``, exit with its code."""
    os.chdir(cwd)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = sys.stderr = open(1, "w", buffering=1, closefd=False)
    import threading

    import torch
    import tqdm

    tqdm.tqdm.set_lock(threading.RLock())  # not a multiprocessing lock: SIGKILL would leak its semaphore

    import train
    from config.parsers import run_cli

    torch.set_num_threads(1)
    code = run_cli(train.main, train.get_args_parser(), argv)
    sys.stdout.flush()
    os._exit(code)


class Run:
    """One train.py process, either a fresh interpreter or forked from a preloaded server."""

    _ctx = None

    def __init__(self, launcher: str, argv: list[str], cwd: str, log: str):
        self.log = log
        if launcher == "exec":
            env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
            with open(log, "wb") as out:
                self.proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), *argv], cwd=cwd,
                                             stdout=out, stderr=subprocess.STDOUT, env=env)
            self.pid = self.proc.pid
        else:
            if Run._ctx is None:  # one server imports torch and train once; each run forks from it
                Run._ctx = multiprocessing.get_context("forkserver")
                Run._ctx.set_forkserver_preload(["torch", "train", "checkpoints", "datasets", "tblog"])
            self.proc = Run._ctx.Process(target=_child, args=(argv, cwd, log))
            self.proc.start()
            self.pid = self.proc.pid

    @staticmethod
    def shutdown() -> None:
        """Stop the fork server (and its resource tracker) so no helper process outlives us."""
        if Run._ctx is None:
            return
        from multiprocessing import forkserver, resource_tracker

        for helper in (forkserver._forkserver, resource_tracker._resource_tracker):
            stop = getattr(helper, "_stop", None)  # private, but the only way short of exiting
            if stop is not None:
                stop()
        Run._ctx = None

    def poll(self) -> int | None:
        if isinstance(self.proc, subprocess.Popen):
            return self.proc.poll()
        return None if self.proc.is_alive() else self.proc.exitcode

    def wait(self, timeout: float) -> int | None:
        if isinstance(self.proc, subprocess.Popen):
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return None
        self.proc.join(timeout)
        return self.proc.exitcode

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        self.wait(30)

    def output(self) -> str:
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""


# ---------------------------------------------------------------- the harness


@dataclass
class Kill:
    mode: str
    epoch: int | None = None  # of the checkpoint found after the kill
    best_epoch: int | None = None
    mid_write: bool = False  # a temp file was left: the kill landed inside a checkpoint write
    loads: bool = False
    resumed: bool = False  # the next run resumed this checkpoint and trained on
    problem: str = ""


@dataclass
class Report:
    kills: list[Kill] = field(default_factory=list)
    final_epoch: int = 0
    checks: dict[str, bool] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def survived(self) -> int:
        return sum(k.loads and k.resumed and not k.problem for k in self.kills)

    @property
    def ok(self) -> bool:
        return self.survived == len(self.kills) and all(self.checks.values()) and not self.problems


def train_args(data: str, name: str, epochs: int, resume: str = "") -> list[str]:
    # Milestones 5 and 10 and augmentations: the LR schedule and the RNG state must survive too. One thread
    # fixed: the default share of the cores follows other runs on the machine, and the float rounding with it.
    return ["--data_root", data, "--dataset_type", "mnist", "--epochs", str(epochs), "--batch-size", "128",
            "--print-freq", "100", "--lognumber", name, "--no_cuda", "True", "--m1", "5", "--m2", "10",
            "--do_augs", "True", "--threads", "1", *(["--resume", resume] if resume else [])]


def _wait_for(run: Run, needle: str, timeout: float) -> bool:
    """Until ``needle`` is in the run's output; False if it exits or time runs out first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if needle in run.output():
            return True
        if run.poll() is not None:
            return needle in run.output()
        time.sleep(0.01)
    return False


def _temp_files(weights: str) -> list[str]:
    return [f for f in os.listdir(weights) if f.endswith(".tmp")] if os.path.isdir(weights) else []


def _kill_at(run: Run, mode: str, weights: str, rng: random.Random, max_delay: float) -> None:
    if mode == "random":
        time.sleep(rng.uniform(0, max_delay))
    else:  # poll for a checkpoint temp file and kill the moment one shows up
        end = time.monotonic() + 10 * max_delay
        before = set(_temp_files(weights))  # leftovers of earlier kills, removed at the next write
        while time.monotonic() < end and not set(_temp_files(weights)) - before:
            time.sleep(0.0002)
    run.kill()


def run_harness(kills: int, launcher: str = "exec", workdir: str | None = None, seed: int = 0,
                max_delay: float = 1.0, compare: bool = True, log=print) -> Report:
    """Kill, check and resume ``kills`` times, then finish the run and check it; see the module doc."""
    try:
        return _run_harness(kills, launcher, workdir, seed, max_delay, compare, log)
    finally:
        Run.shutdown()


def _run_harness(kills: int, launcher: str, workdir: str | None, seed: int, max_delay: float, compare: bool,
                 log) -> Report:
    t0 = time.monotonic()
    rng = random.Random(seed)
    work = workdir or tempfile.mkdtemp(prefix="kill_harness_")
    data = write_tiny_mnist(os.path.join(work, "data"))
    weights = os.path.join(work, "weights")
    ckpt_path = os.path.join(weights, f"{NAME}_checkpoint.pth.tar")
    best_path = os.path.join(weights, f"{NAME}_best.pth.tar")
    report = Report()
    last_epoch = 0
    start_timeout = 120.0

    def launch(argv: list[str], i: int) -> Run:
        return Run(launcher, argv, work, os.path.join(work, f"run{i}.log"))

    run = launch(train_args(data, NAME, EPOCHS_FOREVER), 0)
    for i in range(kills):
        k = Kill(mode="random" if i % 2 == 0 else "write")
        report.kills.append(k)
        if i > 0:  # the run we are about to kill must have resumed the previous kill's checkpoint
            prev = report.kills[i - 1]
            prev.resumed = prev.epoch is None or _wait_for(run, f"at epoch {prev.epoch} (best", start_timeout)
        if not _wait_for(run, "epochs ", start_timeout):
            k.problem = f"run {i} did not start training: {run.output()[-500:]!r}"
            run.kill()
            break
        if i > 0 and not report.kills[i - 1].resumed:
            report.kills[i - 1].problem = "the next run did not resume its checkpoint"
        _kill_at(run, k.mode, weights, rng, max_delay)
        k.mid_write = bool(_temp_files(weights))
        if os.path.exists(ckpt_path):
            try:
                k.epoch = load_checkpoint(ckpt_path).epoch
                k.best_epoch = load_checkpoint(best_path).epoch if os.path.exists(best_path) else None
                k.loads = True
            except VaeLabError as e:
                k.problem = f"checkpoint does not load after the kill: {e}"
            if k.epoch is not None and k.epoch < last_epoch:
                k.problem = f"checkpoint went back from epoch {last_epoch} to {k.epoch}"
            last_epoch = max(last_epoch, k.epoch or 0)
        else:
            k.loads = last_epoch == 0  # killed before any epoch: nothing to load, nothing lost
            if not k.loads:
                k.problem = "the checkpoint disappeared"
        log(f"kill {i + 1:2d}/{kills} ({k.mode:6s}): checkpoint epoch {k.epoch}, best epoch {k.best_epoch}, "
            f"{'mid-write' if k.mid_write else 'between writes'}, loads: {k.loads}" +
            (f"  PROBLEM: {k.problem}" if k.problem else ""))
        resume = ckpt_path if os.path.exists(ckpt_path) else ""
        if i + 1 < kills:
            run = launch(train_args(data, NAME, EPOCHS_FOREVER, resume), i + 1)

    # the last resume runs to completion
    final_epochs = last_epoch + 2
    finisher = launch(train_args(data, NAME, final_epochs, ckpt_path if last_epoch else ""), kills + 1)
    code = finisher.wait(600)
    last = report.kills[-1] if report.kills else None
    if last is not None and not last.problem:
        last.resumed = code == 0 and (last.epoch is None or f"at epoch {last.epoch} (best" in finisher.output())
        if not last.resumed:
            last.problem = f"the final resume failed (exit {code}): {finisher.output()[-500:]!r}"
    report.checks["final run exits 0"] = code == 0
    if code != 0:
        report.problems.append(f"final run: exit {code}: {finisher.output()[-800:]}")
        report.seconds = time.monotonic() - t0
        return report
    report.final_epoch = final_epochs
    _final_checks(report, work, data, weights, launcher, compare, launch)
    report.seconds = time.monotonic() - t0
    if workdir is None and report.ok:
        shutil.rmtree(work, ignore_errors=True)
    elif not report.ok:
        log(f"work folder kept for inspection: {work}")
    return report


def _final_checks(report: Report, work: str, data: str, weights: str, launcher: str, compare: bool,
                  launch) -> None:
    import torch

    n = report.final_epoch
    ckpt = load_checkpoint(os.path.join(weights, f"{NAME}_checkpoint.pth.tar"))
    report.checks["no temp files left"] = not _temp_files(weights)
    report.checks["history has every epoch once"] = [h["epoch"] for h in ckpt.history] == list(range(1, n + 1))
    expected = {"train_loss": range(n * TRAIN_BATCHES), "val_loss": range(n * VAL_BATCHES),
                "eph_val_loss": range(1, n + 1), "panno": range(1, n + 1)}
    shown = {}
    for reader in ("accumulator", "dataserver"):
        shown[reader] = read_logdir(os.path.join(work, "tb_logs", NAME), reader)
        report.checks[f"TensorBoard ({reader}): every step once"] = all(
            [s for s, _ in shown[reader].get(tag, [])] == list(steps) for tag, steps in expected.items())
    if not compare:
        return
    code = launch(train_args(data, "straight", n), 999).wait(600)
    if code != 0:
        report.problems.append(f"uninterrupted run: exit {code}")
        return
    straight = load_checkpoint(os.path.join(weights, "straight_checkpoint.pth.tar"))
    report.checks["weights equal the uninterrupted run's (bit for bit)"] = all(
        torch.equal(v, straight.state_dict[k]) for k, v in ckpt.state_dict.items())

    def strip(h):
        return [{k: v for k, v in e.items() if k != "seconds"} for e in h]

    report.checks["history equals the uninterrupted run's"] = strip(ckpt.history) == strip(straight.history)
    best = load_checkpoint(os.path.join(weights, f"{NAME}_best.pth.tar"))
    straight_best = load_checkpoint(os.path.join(weights, "straight_best.pth.tar"))
    report.checks["best file equals the uninterrupted run's"] = best.epoch == straight_best.epoch and all(
        torch.equal(v, straight_best.state_dict[k]) for k, v in best.state_dict.items())
    straight_tb = read_logdir(os.path.join(work, "tb_logs", "straight"))
    report.checks["TensorBoard values equal the uninterrupted run's"] = all(
        shown["accumulator"].get(tag) == series for tag, series in straight_tb.items())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=20, help="how many SIGKILLs")
    p.add_argument("--launcher", choices=["exec", "fork"], default="exec",
                   help="exec: each run is `python train.py` (~5 s of imports); fork: runs fork from a "
                        "server that imported train.py once")
    p.add_argument("--seed", type=int, default=0, help="seeds the kill times")
    p.add_argument("--max-delay", type=float, default=1.0, help="random kills: at most this long after start")
    p.add_argument("--no-compare", action="store_true", help="skip the uninterrupted run to compare with")
    p.add_argument("--workdir", default=None, help="keep the runs here (default: a temp folder)")
    a = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    report = run_harness(a.kills, a.launcher, a.workdir, a.seed, a.max_delay, not a.no_compare)
    mid = sum(k.mid_write for k in report.kills)
    print(f"kills inside a checkpoint write (temp file left behind): {mid}/{len(report.kills)}")
    for name, ok in report.checks.items():
        print(f"  {'ok  ' if ok else 'FAIL'} {name}")
    for problem in report.problems:
        print(f"  FAIL {problem}")
    print(f"survived {report.survived}/{len(report.kills)} (final epoch {report.final_epoch}, "
          f"{report.seconds:.0f} s, launcher {a.launcher})")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
