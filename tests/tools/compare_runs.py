"""Are two training runs the same run? Weights, optimizer state, history (timings aside) and
TensorBoard scalars, bit for bit, e.g. a default run at two commits (a refactor must change none):

    python3 tests/tools/compare_runs.py RUN_A RUN_B fmnist_fc_conv_l10_rebalance_no_norm

compares two run folders (each holding weights/ and tb_logs/), prints what differs in the stored settings
(new flags appear there) and exits 1 on a difference. The whole proof in one command:

    python3 tests/tools/compare_runs.py --base b874c3c [--runs default,best,...] [--work /tmp/compare]

checks the base commit out as a detached ``git worktree`` under --work (the checkout this file lives in keeps
its branch and index), writes a small Fashion-MNIST (--train_images + --test_images of the official files),
trains each named run (RUNS) for 2 epochs on one thread with train.py of the base tree and of this checkout, each
in its own folder with its own copy of the data (so neither side reads a split cached by the other), compares
each pair and prints one line per run; exit 1 if any differs or fails. Base runs are cached under
--work/runs_<commit>/ (reused while their flags, commit and data are the same; --rerun-base retrains them), so
after more refactor commits only this checkout's side trains again.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the project
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the test helpers
from helpers import ROOT, read_events

# The runs issue 35 names, as train.py flags added to COMMON (the default model takes --iw_train as it is).
RUNS = {
    "default": [],
    "best": ["--preset", "best"],
    "hvae": ["--preset", "hvae"],
    "density": ["--preset", "density"],
    "betatc": ["--objective", "betatc"],
    "iw_train": ["--iw_train", "4"],
}
# Both sides train with these: one thread (the count changes float rounding), the CPU (a GPU need not be
# deterministic), and the data copied into each run's folder; TensorBoard scalars and images at their defaults.
COMMON = ["--epochs", "2", "--threads", "1", "--device", "cpu", "--dataset_type", "fmnist", "--data_root", "data",
          "--print-freq", "1000"]
DONE = "complete.json"  # written into a run folder once its train.py exited 0: what made it


def _equal(a, b) -> bool:
    if torch.is_tensor(a):
        return torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(map(_equal, a, b))
    return a == b


def compare(run_a: str, run_b: str, name: str) -> list[str]:
    """What differs between the run ``name`` in folder ``run_a`` and in ``run_b`` (empty: the same run)."""
    problems = []
    for kind in ("checkpoint", "best"):
        a, b = (torch.load(os.path.join(r, "weights", f"{name}_{kind}.pth.tar"), weights_only=True)
                for r in (run_a, run_b))
        shared = a["model_config"].keys() & b["model_config"].keys()  # a field added since: not compared
        timeless = [[{k: v for k, v in h.items() if k != "seconds"} for h in c["history"]] for c in (a, b)]
        for key, same in (("state_dict", _equal(a["state_dict"], b["state_dict"])),
                          ("optimizer", _equal(a["optimizer"], b["optimizer"])),
                          ("history", _equal(*timeless)),
                          ("model_config", _equal(*({k: c["model_config"][k] for k in shared} for c in (a, b)))),
                          *((k, _equal(a.get(k), b.get(k))) for k in ("epoch", "best_loss", "global_step",
                                                                     "scheduler", "loss_state"))):
            if not same:
                problems.append(f"{kind}: {key} differs")
        settings = sorted(k for k in set(a["args"]) | set(b["args"]) if a["args"].get(k) != b["args"].get(k))
        added = sorted(a["model_config"].keys() ^ b["model_config"].keys())
        print(f"{kind}: stored settings that differ (not compared): {settings}; model config fields in one only: "
              f"{added}")
    ea, eb = (read_events(os.path.join(r, "tb_logs", name)) for r in (run_a, run_b))
    problems += [f"TensorBoard {tag} differs" for tag in sorted(set(ea) | set(eb)) if ea.get(tag) != eb.get(tag)]
    return problems


# ---------------------------------------------------------------- the proof: runs at two commits


class ProofError(Exception):
    """Bad input or a broken setup: one line for the user."""


def _git(*args: str, cwd: str = ROOT) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ProofError(f"git {' '.join(args)}: {(proc.stderr.strip().splitlines() or ['failed'])[-1]}")
    return proc.stdout.strip()


def base_tree(commit: str, work: str) -> tuple[str, str]:
    """(full hash, folder) of a detached worktree of ``commit`` under ``work``, made once and reused."""
    try:
        sha = _git("rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}")
    except ProofError:
        raise ProofError(f"--base {commit!r} is not a commit of {ROOT}") from None
    tree = os.path.join(work, f"tree_{sha[:12]}")
    if os.path.isdir(tree):
        if _git("rev-parse", "HEAD", cwd=tree) != sha or _git("status", "--porcelain", cwd=tree):
            raise ProofError(f"{tree} is not a clean checkout of {sha[:12]}: remove it (git worktree remove --force)")
        return sha, tree
    os.makedirs(work, exist_ok=True)
    # --force: a worktree once registered there and deleted since is made again
    _git("worktree", "add", "--force", "--detach", tree, sha)
    return sha, tree


def write_subset(work: str, n_train: int, n_test: int) -> str:
    """A data root under ``work`` with the first ``n_train`` / ``n_test`` official Fashion-MNIST images (as
    tests/conftest.py's fmnist_small), written once: a folder appears only complete (renamed into place)."""
    from core.errors import VaeLabError
    from datasets import DATASETS, ensure_raw_files
    from tools.idx_files import write_dataset

    root = os.path.join(work, f"fmnist_{n_train}_{n_test}")
    if os.path.isdir(root):
        return root
    full = os.path.join(work, "fmnist_full")
    try:
        ensure_raw_files("fmnist", full)  # the project's copy: data/, else Debian's dataset-fashion-mnist
    except VaeLabError as e:
        raise ProofError(str(e)) from None
    tr, te = DATASETS["fmnist"](full, train=True), DATASETS["fmnist"](full, train=False)
    if n_train > len(tr) or n_test > len(te):
        raise ProofError(f"Fashion-MNIST has {len(tr)} training and {len(te)} test images")
    tmp = f"{root}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    write_dataset(tmp, "FashionMNIST", tr.data[:n_train].numpy(), tr.targets[:n_train].numpy(),
                  te.data[:n_test].numpy(), te.targets[:n_test].numpy())
    os.replace(tmp, root)
    return root


def train(tree: str, folder: str, flags: list[str], data: str, made_by: dict, reuse: bool) -> tuple[bool, float]:
    """Train with ``tree``'s train.py in ``folder`` (its cwd, so weights/ and tb_logs/ land there) on a copy of
    ``data``. With ``reuse``, a folder that a run with the same ``made_by`` completed is kept as it is.
    Returns (reused, seconds); raises ProofError with train.py's last stderr line when it fails."""
    from fileio.atomic import write_json  # the project's atomic writes

    done = os.path.join(folder, DONE)
    made_by = {**made_by, "argv": flags}
    if reuse and os.path.isfile(done):
        with open(done) as f:
            if json.load(f) == made_by:
                return True, 0.0
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(data, os.path.join(folder, "data"))
    # the tree's own modules only: no PYTHONPATH pointing at another checkout
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    start = time.perf_counter()
    with open(os.path.join(folder, "train.log"), "w") as log:
        proc = subprocess.run([sys.executable, os.path.join(tree, "train.py"), *flags], cwd=folder, env=env,
                              stdout=log, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise ProofError(f"train.py exited {proc.returncode} in {folder}: {last}")
    write_json(done, made_by)
    return False, seconds


def run_name(folder: str) -> str:
    """The name the run in ``folder`` took (its one weights/<name>_checkpoint.pth.tar)."""
    suffix = "_checkpoint.pth.tar"
    names = [f[:-len(suffix)] for f in os.listdir(os.path.join(folder, "weights")) if f.endswith(suffix)]
    if len(names) != 1:
        raise ProofError(f"{folder}/weights holds {len(names)} checkpoints, not one")
    return names[0]


def verdict(base_run: str, current_run: str) -> list[str]:
    """What differs between the two run folders (empty: the same run); compare()'s settings lines go to
    compare.txt in the current run's folder."""
    from fileio.atomic import write_text

    a, b = run_name(base_run), run_name(current_run)
    if a != b:
        return [f"the run is named {b!r}, at the base {a!r}"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        found = compare(base_run, current_run, a)
    write_text(os.path.join(current_run, "compare.txt"), out.getvalue() + "\n".join(found) + "\n")
    return found


def prove(base: str, runs: list[str], work: str, rerun_base: bool = False, jobs: int = 2,
          train_images: int = 2000, test_images: int = 500, current: str = ROOT) -> int:
    """Train ``runs`` at ``base`` and in the checkout ``current`` (this one by default), print one line per
    run; 0 when every pair is the same."""
    work = os.path.abspath(work)
    sha, tree = base_tree(base, work)
    data = write_subset(work, train_images, test_images)
    made_by = {"commit": sha, "data": os.path.basename(data)}
    sides = {name: (os.path.join(work, f"runs_{sha[:12]}", name), os.path.join(work, "current", name))
             for name in runs}
    print(f"base {sha[:12]} ({tree}), current {current}, data {data}, {jobs} at a time", flush=True)

    def side(name: str, which: int) -> tuple[bool, float] | str:
        flags = [*COMMON, *RUNS[name]]
        try:
            if which == 0:
                return train(tree, sides[name][0], flags, data, made_by, reuse=not rerun_base)
            return train(current, sides[name][1], flags, data, {"commit": "current", "data": made_by["data"]}, False)
        except ProofError as e:
            return str(e)

    start = time.perf_counter()
    with ThreadPoolExecutor(jobs) as pool:  # each run is its own process on one thread
        results = {(name, which): pool.submit(side, name, which) for name in runs for which in (0, 1)}
        results = {key: f.result() for key, f in results.items()}
    failed = 0
    for name in runs:
        base_res, cur_res = results[name, 0], results[name, 1]
        if isinstance(base_res, str) or isinstance(cur_res, str):
            line = "; ".join(f"{label} failed: {r}" for label, r in (("base", base_res), ("current", cur_res))
                             if isinstance(r, str))
        else:
            try:
                found = verdict(*sides[name])
            except (ProofError, OSError, KeyError, RuntimeError) as e:
                found = [f"cannot compare: {e}"]
            timing = (f"base {'cached' if base_res[0] else f'{base_res[1]:.0f} s'}, current {cur_res[1]:.0f} s")
            line = ("DIFFERS: " + "; ".join(found) if found else
                    "the same: weights, optimizer, history and TensorBoard scalars") + f" ({timing})"
        failed += not line.startswith("the same")
        print(f"{name:9s} {line}", flush=True)
    print(f"{len(runs) - failed} of {len(runs)} runs the same, {time.perf_counter() - start:.0f} s; "
          f"base runs cached in {os.path.join(work, f'runs_{sha[:12]}')}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    from config.parsers import OneLineParser  # errors in one line

    parser = OneLineParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("folders", nargs="*", metavar="RUN_A RUN_B NAME",
                        help="compare two run folders' run NAME (without --base)")
    parser.add_argument("--base", help="the commit to prove this checkout against: train RUNS at both")
    parser.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated, of {', '.join(RUNS)}")
    parser.add_argument("--work", default="/tmp/compare", help="the worktree, the data and the runs")
    parser.add_argument("--rerun-base", action="store_true", help="train the base runs again, cached or not")
    parser.add_argument("--jobs", type=int, default=2, help="runs trained at a time (one thread each)")
    parser.add_argument("--train_images", type=int, default=2000, help="Fashion-MNIST training images")
    parser.add_argument("--test_images", type=int, default=500, help="Fashion-MNIST test images")
    args = parser.parse_args(argv)
    if args.base is None:
        if len(args.folders) != 3:
            parser.error("give RUN_A RUN_B NAME, or --base COMMIT")
        found = compare(*args.folders)
        print("\n".join(found) or "the same run: weights, optimizer, history and TensorBoard scalars are identical")
        return 1 if found else 0
    if args.folders:
        parser.error("--base takes no run folders")
    runs = list(dict.fromkeys(r for r in args.runs.split(",") if r))
    unknown = sorted(set(runs) - set(RUNS))
    if unknown or not runs:
        parser.error(f"--runs: unknown {unknown}; choose from {', '.join(RUNS)}")
    if args.jobs < 1 or args.train_images < 10 or args.test_images < 1:
        parser.error("--jobs must be at least 1, --train_images 10 (five folds), --test_images 1")
    try:
        return prove(args.base, runs, args.work, args.rerun_base, args.jobs, args.train_images, args.test_images)
    except (ProofError, OSError) as e:
        print(f"compare_runs.py: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
