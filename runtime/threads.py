"""How many CPU threads a run computes with: the one place that sets them (``torch.set_num_threads``).

PyTorch starts as many compute threads as the machine has cores in every process. Several runs side by
side then ask for several times the cores, and their OpenMP threads, which spin while they wait for
each other, take turns on the cores instead of computing: on 2 cores, four default runs took 3-81 s an
epoch instead of about 1 s (issue 33; benchmarks/concurrent_runs.md). So by default each run takes its
share of the cores: the cores divided by the vae-lab processes computing on this machine, at least one,
counted again at the start of every epoch (runs that start or finish change it). ``--threads N`` fixes
the count, as does ``OMP_NUM_THREADS`` (torchrun sets it to 1 for its processes).

The count changes float rounding (a sum split over two threads adds in another order), not what is
computed: runs that must agree bit for bit, a run and its resume included, fix it with ``--threads``.
"""
from __future__ import annotations

import fcntl
import os
import tempfile
import time
from typing import IO

import torch

# PyTorch's own choice for a process alone on the machine (its physical cores, or OMP_NUM_THREADS),
# read before any run changes it.
CORES = torch.get_num_threads()
# Where the computing processes register (one file each, locked for as long as the process lives).
LIVE_DIR = os.path.join(tempfile.gettempdir(), f"vae-lab-runs-{os.getuid()}")


def live_runs(own: str = "") -> int:
    """How many vae-lab processes compute on this machine now (``own``: this process's file, counted as one).

    A process holds an exclusive ``flock`` on its file; the kernel drops it when the process ends however it
    ends (kill -9 included), so a file that can be locked belongs to a dead process: it is removed and not
    counted. (Hand-written: no library counts live processes across programs; flock is what RunLock uses.)
    """
    try:
        names = os.listdir(LIVE_DIR)
    except FileNotFoundError:
        return 1
    count = 1 if own else 0
    for name in names:
        path = os.path.join(LIVE_DIR, name)
        if path == own or not name.endswith(".lock"):
            continue
        try:
            with open(path) as f:
                try:
                    fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except OSError:
                    count += 1  # held: a live process
                    continue
                os.remove(path)  # its process is gone; names are never reused, so no one else locks this file
        except OSError:
            continue  # removed by another process meanwhile
    return max(count, 1)


class CpuThreads:
    """This process's compute threads: ``requested`` (``--threads``) if given, else ``OMP_NUM_THREADS`` if set,
    else a share of the cores among the live vae-lab processes. Use as a context manager around the run: it
    registers the process, sets the threads, and on exit unregisters and restores the threads it found."""

    def __init__(self, requested: int | None = None):
        env = os.environ.get("OMP_NUM_THREADS", "").strip()
        self.fixed = requested or (int(env) if env.isdigit() and int(env) > 0 else None)
        self.source = "--threads" if requested else "OMP_NUM_THREADS" if self.fixed else "share"
        self.threads = self.fixed or CORES
        self.runs = 1
        self._file: IO[str] | None = None
        self._path = ""
        self._before = torch.get_num_threads()

    def __enter__(self) -> CpuThreads:
        self._before = torch.get_num_threads()
        if self.fixed is None:
            self._register()
        self.rebalance()
        return self

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            self._file.close()  # drops the lock
            self._file = None
            try:
                os.remove(self._path)
            except OSError:
                pass
        torch.set_num_threads(self._before)

    def _register(self) -> None:
        try:
            os.makedirs(LIVE_DIR, exist_ok=True)
            self._path = os.path.join(LIVE_DIR, f"{os.getpid()}-{time.time_ns()}.lock")
            # locked under another name, then renamed: a counter never sees it unlocked and takes it for dead
            f = open(self._path + ".new", "w")
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(self._path + ".new", self._path)
            self._file = f
        except OSError:  # an unwritable temp folder: this process counts alone, as PyTorch would
            self._path = ""

    def rebalance(self) -> bool:
        """Set the threads for what runs now (the share is counted again); returns whether they changed."""
        if self.fixed is None:
            self.runs = live_runs(self._path) if self._path else 1
            self.threads = max(1, CORES // self.runs)
        changed = torch.get_num_threads() != self.threads
        if changed:
            torch.set_num_threads(self.threads)
        return changed

    def describe(self) -> str:
        """For the run's first line: how many threads and why."""
        n = f"{self.threads} thread{'s' if self.threads != 1 else ''}"
        if self.source != "share":
            return f"{n}, {self.source}"
        return f"{n}, a share of {CORES} cores among {self.runs} vae-lab run{'s' if self.runs != 1 else ''}"
