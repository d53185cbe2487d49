"""Runs side by side share the CPU: each computes with its share of the cores, counted again every epoch,
and says so in its first line; --threads N (or OMP_NUM_THREADS) fixes the count (runtime/threads.py)."""
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from helpers import ROOT, assert_cli_error, load_ckpt, run_cli, tiny_args
from runtime import threads

# A vae-lab process computing beside the test's: it registers as train.py does, then waits.
HOLDER = textwrap.dedent(f"""
    import sys, time
    sys.path.insert(0, {ROOT!r})
    from runtime.threads import CpuThreads
    with CpuThreads():
        print("registered", flush=True)
        time.sleep(300)
""")


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """A registry of live runs of the test's own (the machine's real one may hold other runs), on 4 cores.
    Returns a function that starts a holder process there."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the holders' registry: tempfile.gettempdir()
    monkeypatch.setattr(threads, "LIVE_DIR", os.path.join(str(tmp_path), f"vae-lab-runs-{os.getuid()}"))
    monkeypatch.setattr(threads, "CORES", 4)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    holders = []

    def start() -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, text=True)
        holders.append(p)
        assert p.stdout.readline().strip() == "registered"
        return p

    yield start
    for p in holders:
        p.kill()
        p.wait()
    torch.set_num_threads(before)


def test_runs_side_by_side_share_the_cores_and_take_them_back(machine):
    before = torch.get_num_threads()
    with threads.CpuThreads() as t:
        assert (t.threads, torch.get_num_threads()) == (4, 4)
        assert t.describe() == "4 threads, a share of 4 cores among 1 vae-lab run"
        first = machine()
        assert t.rebalance() and (t.threads, torch.get_num_threads()) == (2, 2)
        assert t.describe() == "2 threads, a share of 4 cores among 2 vae-lab runs"
        second = machine()
        assert t.rebalance() and t.threads == 1  # 4 cores, 3 runs: one thread each, never zero
        assert not t.rebalance()  # nothing changed
        first.send_signal(signal.SIGKILL)  # a run killed outright leaves its file, not its lock
        first.wait()
        assert t.rebalance() and t.threads == 2 and t.runs == 2
        assert len(os.listdir(threads.LIVE_DIR)) == 2  # the dead run's file is gone
        second.terminate()
        second.wait()
        assert t.rebalance() and t.threads == 4
    assert torch.get_num_threads() == before
    assert os.listdir(threads.LIVE_DIR) == []  # its own file too


def test_threads_flag_and_omp_num_threads_fix_the_count(machine, monkeypatch):
    machine()
    with threads.CpuThreads(3) as t:
        assert not t.rebalance() and torch.get_num_threads() == 3 and t.describe() == "3 threads, --threads"
        assert threads.live_runs() == 1  # a fixed count does not register: the holder alone is counted
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with threads.CpuThreads() as t:
        assert torch.get_num_threads() == 1 and t.describe() == "1 thread, OMP_NUM_THREADS"


def test_train_says_its_threads_in_its_first_line(tiny_mnist, workdir, machine, monkeypatch):
    monkeypatch.setattr(threads, "CORES", 2)
    code, out, err = run_cli(tiny_args(tiny_mnist, epochs=2, name="alone"))
    assert code == 0, err
    assert "cpu (float32; 2 threads, a share of 2 cores among 1 vae-lab run)" in out.splitlines()[0]
    machine()  # another run computes beside it
    code, out, err = run_cli(tiny_args(tiny_mnist, epochs=2, name="beside"))
    assert code == 0, err
    assert "cpu (float32; 1 thread, a share of 2 cores among 2 vae-lab runs)" in out.splitlines()[0]
    code, out, err = run_cli(tiny_args(tiny_mnist, "--threads", "2", epochs=2, name="fixed"))
    assert code == 0, err
    assert "cpu (float32; 2 threads, --threads)" in out.splitlines()[0]
    # how many threads is this invocation's, not the run's: its config file and its resume do not carry it
    assert "threads" not in open("weights/fixed_config.yaml").read()
    code, out, err = run_cli(["--resume", "weights/fixed_checkpoint.pth.tar", "--epochs", "4", "--data_root",
                              tiny_mnist])
    assert code == 0, err
    assert "cpu (float32; 1 thread, a share of 2 cores among 2 vae-lab runs)" in out
    assert load_ckpt("weights/fixed_checkpoint.pth.tar")["epoch"] == 4


@pytest.mark.parametrize("value", ["0", "-1", "100000"])
def test_threads_out_of_range_is_one_line(value, workdir):
    code, _, err = run_cli(["--threads", value])
    assert_cli_error(code, err, f"--threads must be in [1, 1024], got {value}")
