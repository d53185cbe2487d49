"""Issue 33: several runs at once on one machine. The default run (``python3 train.py``: fc_conv, batch
512, Fashion-MNIST) for a few epochs, one alone, two at once and four at once, each as its own process
started at the same moment, under two thread settings:

* ``all cores``: each process computes with PyTorch's default, as many threads as the machine has cores
  (what train.py did before; here ``--threads <cores>``);
* ``share``: train.py's default now, the cores divided among the vae-lab runs (runtime/threads.py).

Total training images per second (all runs' epochs x their training images over the wall clock from the first
start to the last exit, start-up included) and that wall clock against the same runs one after the other
(N x one run alone, same setting): at most 1.0 means starting them together costs nothing.

    flock /tmp/vae-lab-cpu.lock python3 -m benchmarks.concurrent_runs   # needs the machine to itself
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from statistics import median

import torch

from benchmarks.scaffold import ROOT, command_line, load_average, table, write_report
from config.flag_types import positive_int
from config.parsers import OneLineParser, run_cli
from core.environment import cpu_name


def get_args_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python3 -m benchmarks.concurrent_runs", description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=positive_int, default=3, help="epochs of each run")
    p.add_argument("--runs", default="1,2,4", help="how many runs at once, comma-separated")
    p.add_argument("--timeout", type=positive_int, default=600, help="seconds before a group of runs is stopped")
    p.add_argument("--data_root", default=os.path.join(ROOT, "data"), help="Fashion-MNIST folder")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "concurrent_runs.md"), help="Markdown report")
    return p


def settings(cores: int) -> dict[str, list[str]]:
    """The thread settings compared, as train.py flags."""
    return {"all cores": ["--threads", str(cores)], "share": []}


def run_together(n: int, flags: list[str], epochs: int, data_root: str, timeout: int) -> dict:
    """``n`` default runs started at once, each in its own folder: wall clock to the last exit, each run's
    epoch seconds (from its checkpoint) and its first line."""
    work = tempfile.mkdtemp(prefix="vae_lab_concurrent_")
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # it would fix the count of both settings
    procs = {}
    t0 = time.perf_counter()
    for i in range(n):
        folder = os.path.join(work, f"run{i}")
        os.makedirs(folder)
        with open(os.path.join(folder, "out.txt"), "w") as out:
            proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), "--data_root", data_root,
                                     "--epochs", str(epochs), *flags], cwd=folder, env=env, stdout=out,
                                    stderr=subprocess.STDOUT)
        procs[proc.pid] = (proc, folder)
    ends, codes = [], []
    deadline = t0 + timeout
    while len(ends) < n:  # reap each process as it exits, so each end time is its own
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            if time.perf_counter() > deadline:
                for proc, _ in procs.values():
                    proc.kill()
                raise RuntimeError(f"{n} runs at once did not finish in {timeout} s ({work})")
            time.sleep(0.05)
            continue
        if pid in procs:
            ends.append(time.perf_counter() - t0)
            codes.append(os.waitstatus_to_exitcode(status))
            procs[pid][0].returncode = codes[-1]
    wall = max(ends)
    epoch_s, first_lines, images = [], [], 0
    for proc, folder in procs.values():
        text = open(os.path.join(folder, "out.txt")).read()
        if proc.returncode != 0:
            raise RuntimeError(f"train.py failed ({proc.returncode}) in {folder}: {text.strip()[-500:]}")
        first_lines.append(next(line for line in text.splitlines() if " VAE, " in line))
        images += epochs * int(re.search(r"(\d+) train / ", first_lines[-1]).group(1))
        ckpt = torch.load(os.path.join(folder, "weights", "fmnist_fc_conv_l10_rebalance_no_norm_checkpoint.pth.tar"),
                          map_location="cpu", weights_only=True)
        epoch_s += [h["seconds"] for h in ckpt["history"]]
    shutil.rmtree(work)
    return {"runs": n, "wall_s": wall, "ends_s": sorted(ends), "images_per_s": images / wall,
            "epoch_s": epoch_s, "first_lines": first_lines}


def main(args: argparse.Namespace) -> dict:
    counts = [int(c) for c in args.runs.split(",")]
    cores = torch.get_num_threads()
    data_root = os.path.abspath(args.data_root)
    info = {"cpu": cpu_name(), "cores": os.cpu_count(), "torch default threads": cores, "torch": torch.__version__,
            "load average at start (1/5/15 min)": load_average(), "epochs per run": args.epochs,
            "command": command_line("concurrent_runs")}
    t_start = time.perf_counter()
    run_together(1, [], 1, data_root, args.timeout)  # warm-up, not reported: caches, the page cache
    results: dict[str, list[dict]] = {}
    for name, flags in settings(cores).items():
        results[name] = []
        for n in counts:
            r = run_together(n, flags, args.epochs, data_root, args.timeout)
            results[name].append(r)
            print(f"{name}: {n} at once: {r['wall_s']:.1f} s, {r['images_per_s']:,.0f} images/s; "
                  f"{r['first_lines'][0].split('cpu (')[-1].split(');')[0]}", flush=True)
    info["load average at end (1/5/15 min)"] = load_average()
    info["seconds in all"] = round(time.perf_counter() - t_start, 1)
    rows = []
    for name, rs in results.items():
        alone = next((r["wall_s"] for r in rs if r["runs"] == 1), None)
        for r in rs:
            vs = r["wall_s"] / (r["runs"] * alone) if alone else float("nan")
            threads = r["first_lines"][0].split("cpu (")[-1].split(");")[0].split("; ", 1)[-1]
            rows.append([name, r["runs"], threads, f"{r['wall_s']:.1f}", f"{r['images_per_s']:,.0f}",
                         f"{median(r['epoch_s']):.2f} / {max(r['epoch_s']):.2f}", f"{vs:.2f}"])
            r["vs_one_after_another"] = vs
    n_train = int(re.search(r"(\d+) train / ", rs[0]["first_lines"][0]).group(1))
    md = "\n".join([
        "# Several default runs at once (issue 33)", "",
        f"`{info['command']}`: {info['cpu']}, {info['cores']} CPUs, PyTorch's default {cores} threads, torch "
        f"{info['torch']}; load average {info['load average at start (1/5/15 min)']} at the start, "
        f"{info['load average at end (1/5/15 min)']} at the end; {info['seconds in all']:.0f} s in all.", "",
        f"Each run: `python3 train.py --epochs {args.epochs}` (the 2018 default run, real Fashion-MNIST, "
        f"{n_train:,} training images an epoch), its own process and folder, all started at once. "
        "images/s: all runs' training images over the wall clock from the first start to the last exit "
        "(start-up, data loading and validation included). vs one after another: that wall clock over N x "
        "one run alone with the same setting (at most 1.00: starting them together costs nothing).", "",
        table(["threads setting", "runs at once", "threads per run (its first line)", "wall s", "images/s",
               "epoch s median / max", "vs one after another"], rows), ""])
    write_report(args.out, md, {"info": info, "results": results})
    print(md)
    return results


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
