"""What the speed benchmarks measure, shared by run.py (issue 4), train_speed.py (issue 2), conv_speed.py.

Three ways to feed the same model the same number of Fashion-MNIST images:

* ``train.py``: train.py's own code path (``train_one_epoch`` / ``validate``: StepLogger,
  the SSIM metric, console lines, TensorBoard scalars into a temporary folder);
* ``bare``: the practical limit for eager PyTorch: the model, an optimizer and index
  slices of a device tensor, nothing else;
* ``2018``: a per-sample ``torch.utils.data.DataLoader`` over torchvision's FashionMNIST
  with PIL ``ToTensor`` (shuffle=True, no workers), batches copied to the device.

Training computes the VAE loss (BCE + KL) and takes an Adam step; evaluation computes
what ``validate`` reports: BCE, KL and SSIM of every image, decoding the posterior mean.
Plus the full ``python3 train.py`` as a subprocess (wall clock, peak RSS, its metrics).
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from statistics import median

import torch

import engine
from benchmarks.scaffold import ROOT, child_env
from config.run_config import RunConfig, model_config
from datasets import Split, as_float, ensure_raw_files, kfold_indices, load_split
from evaluation.metrics import batch_metrics
from losses import build_objective
from models import build_model
from models.base import float32
from runtime import accelerators
from runtime.optim import make_optimizer
from runtime.tensorboard import RunWriter

METHODS = ("train.py", "bare", "2018")
# The 2018 best checkpoint on the same validation fold (docs/reproduce_2018.md, its reference figures).
REFERENCE_VAL = {"bce_kl": 244.19, "ssim": 0.6717}


@dataclass
class Data:
    """The 2018 split of Fashion-MNIST: tensors on the device, and their indices for the 2018 loader."""

    root: str
    train_x: torch.Tensor
    val_x: torch.Tensor
    train_idx: list[int]
    val_idx: list[int]


def load_data(root: str, device: torch.device, seed: int = 42) -> Data:
    ensure_raw_files("fmnist", root)
    full = load_split("fmnist", root, train=True)
    tr, va = kfold_indices(full.y, 0, 5, seed, root)
    # float32 as the bare loops index it; train.py keeps uint8 and converts each batch (engine.train_one_epoch)
    x = as_float(full.x)
    return Data(root, x[torch.from_numpy(tr)].to(device), x[torch.from_numpy(va)].to(device),
                tr.tolist(), va.tolist())


def build(model_type: str, device: torch.device, seed: int = 0):
    """(model, optimizer, loss) as train.py builds them for the 2018 best command with ``--model_type``."""
    torch.manual_seed(seed)
    cfg = RunConfig(model_type=model_type)
    model = build_model(model_config(cfg)).to(device)
    return model, make_optimizer(cfg.optimizer, model.parameters(), cfg.lr), build_objective(cfg, model)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------- the three ways, training


@contextlib.contextmanager
def scratch_writer(enabled: bool):
    """train.py's TensorBoard writer (runtime.tensorboard.RunWriter) into a temporary folder (or None)."""
    if not enabled:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="vae_lab_tb_") as logdir:
        writer = RunWriter(logdir)
        try:
            yield writer
        finally:
            writer.close()


def train_trainpy(model, optimizer, loss_fn, x: torch.Tensor, args, epoch: int = 0, net=None, writer=None
                  ) -> None:
    """One train.py epoch over ``x``: console lines to nowhere, scalars to ``writer`` (a
    :func:`scratch_writer`, as train.py writes them), ``net`` the compiled model if any."""
    generator = torch.Generator().manual_seed(epoch)
    with contextlib.redirect_stdout(io.StringIO()):
        engine.train_one_epoch(model if net is None else net, loss_fn, optimizer, Split(x, torch.zeros(len(x))), args,
                               epoch, generator, writer, amp=args.amp == "on")


def train_bare(model, optimizer, loss_fn, x: torch.Tensor, batch_size: int, seed: int = 0, amp: bool = False) -> None:
    """Index slices of a device tensor, forward (in bfloat16 autocast with ``amp``), loss, backward, step:
    nothing else. A model without a closed-form KL (hvae, the VampPrior) returns its KL terms."""
    model.train()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed)).to(x.device)
    for i in range(0, len(x), batch_size):
        xb = x[perm[i:i + batch_size]]
        with accelerators.autocast(xb.device, amp):
            out = model(xb, with_kl=not model.analytic_kl)
        logits, mu, logvar = float32(out.logits, out.mu, out.logvar)
        kl = None if out.kl is None else out.kl.float().sum(1).mean()
        loss = loss_fn.loss(logits, xb, mu, logvar, kl)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def loader_2018(data: Data, indices: list[int], batch_size: int, shuffle: bool):
    """The 2018 input pipeline: per-sample PIL images through ToTensor, collated by a DataLoader."""
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    ds = datasets.FashionMNIST(data.root, train=True, transform=transforms.ToTensor())
    return DataLoader(Subset(ds, indices), batch_size=batch_size, shuffle=shuffle)


def train_2018(model, optimizer, loss_fn, loader, device: torch.device, n_batches: int) -> None:
    model.train()
    for i, (xb, _) in enumerate(loader):
        if i == n_batches:
            break
        xb = xb.to(device)
        out = model(xb)
        loss = loss_fn.loss(out.logits, xb, out.mu, out.logvar)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


# ---------------------------------------------------------------- the three ways, evaluation


def _eval_batch(model, xb: torch.Tensor, sums: torch.Tensor) -> None:
    m = batch_metrics(model, xb, None, ("bce", "kl", "ssim"))  # what validate and --evaluate measure
    sums += torch.stack([m["bce"], m["kl"], m["ssim"]]) * xb.shape[0]


@torch.no_grad()
def eval_bare(model, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    model.eval()
    sums = torch.zeros(3, device=x.device)
    for i in range(0, len(x), batch_size):
        _eval_batch(model, x[i:i + batch_size], sums)
    return sums / len(x)


@torch.no_grad()
def eval_2018(model, loader, device: torch.device, n_batches: int) -> torch.Tensor:
    model.eval()
    sums, n = torch.zeros(3, device=device), 0
    for i, (xb, _) in enumerate(loader):
        if i == n_batches:
            break
        _eval_batch(model, xb.to(device), sums)
        n += len(xb)
    return sums / max(n, 1)


def eval_trainpy(model, loss_fn, x: torch.Tensor, args, writer=None) -> dict:
    return engine.validate(model, loss_fn, Split(x, torch.zeros(len(x))), args, 0, writer)


# ---------------------------------------------------------------- timing


def timed(fn, device: torch.device) -> float:
    """Seconds ``fn()`` takes, the device's queue drained before and after."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def batches_for(seconds: float, step_seconds: float, lo: int = 5, hi: int = 94) -> int:
    """How many minibatches fit in ``seconds`` at ``step_seconds`` each, within [lo, hi]."""
    return max(lo, min(hi, int(seconds / max(step_seconds, 1e-6))))


# ---------------------------------------------------------------- the whole CLI as a subprocess


# Runs a script as __main__ (the repository on its PYTHONPATH: child_env) and, at exit, reports its own peak
# RSS. VmHWM restarts at exec; the rusage of a child (wait4) does not: it would count the benchmark process's pages that
# the child shared between fork and exec, ~400 MB here.
_PEAK_RSS_WRAPPER = """
import atexit, runpy, sys
def _peak():
    try:
        with open('/proc/self/status') as f:
            kb = next(line.split()[1] for line in f if line.startswith('VmHWM:'))
        sys.stderr.write('\\nPEAK_RSS_KB ' + kb + '\\n')
    except (OSError, StopIteration):
        pass
atexit.register(_peak)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
"""


def full_run(argv: list[str], data_root: str, workdir: str | None = None) -> dict:
    """``python3 train.py ARGV`` as a fresh process: wall clock including start-up, its peak RSS,
    its own training time and the last epoch's validation metrics from the checkpoint."""
    workdir = workdir or tempfile.mkdtemp(prefix="vae_lab_bench_")
    cmd = [sys.executable, "-c", _PEAK_RSS_WRAPPER, os.path.join(ROOT, "train.py"),
           "--data_root", os.path.abspath(data_root), "--lognumber", "bench", "--overwrite", *argv]
    out_path, err_path = os.path.join(workdir, "stdout.txt"), os.path.join(workdir, "stderr.txt")
    with open(out_path, "w") as out_f, open(err_path, "w") as err_f:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=workdir, stdout=out_f, stderr=err_f, env=child_env())
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    out, err = open(out_path).read(), open(err_path).read()
    if proc.returncode != 0:
        raise RuntimeError(f"train.py failed ({proc.returncode}): {err.strip()[-500:]}")
    ckpt = torch.load(os.path.join(workdir, "weights", "bench_checkpoint.pth.tar"), map_location="cpu",
                      weights_only=True)
    last = ckpt["history"][-1]
    done = re.search(r"done in ([0-9.]+) s", out)
    peak = re.search(r"PEAK_RSS_KB (\d+)", err)  # else wait4's figure, an upper bound
    peak_kb = float(peak.group(1)) if peak else float(usage.ru_maxrss)
    return {"command": " ".join(["python3 train.py", *argv]), "wall_s": wall,
            "training_s": float(done.group(1)) if done else math.nan,
            "epoch_s": [h["seconds"] for h in ckpt["history"]], "epochs": len(ckpt["history"]),
            "val_bce_kl": last["val_img_loss"] + last["val_kl_loss"], "val_ssim": last["val_ssim"],
            "best_val_loss": ckpt["best_loss"], "peak_rss_mb": peak_kb / 1024,
            "workdir": workdir}


# ---------------------------------------------------------------- malloc tuning on and off

_BARE_CHILD = """
import json, resource, sys, time
import torch
from benchmarks import baselines as B
from runtime import accelerators
if sys.argv[1] == "on":
    accelerators.tune_malloc()
batch, n = 512, int(sys.argv[3])
data = B.load_data(sys.argv[2], torch.device("cpu"))
run = B.build("fc_conv", torch.device("cpu"))
x = data.train_x[:n * batch]
B.train_bare(*run, x[:5 * batch], batch)
f0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
B.train_bare(*run, x, batch)
t1, f1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
print(json.dumps({"step_ms": (t1 - t0) / n * 1e3, "faults_per_step": (f1 - f0) / n}))
"""


def bare_malloc_ab(data_root: str, batches: int = 60, rounds: int = 3) -> dict:
    """The bare fc_conv loop (batch 512, CPU) in fresh processes with and without
    :func:`runtime.accelerators.tune_malloc`, alternating: ms per step and minor page faults per step."""
    out: dict[str, list[dict]] = {"on": [], "off": []}
    for _ in range(rounds):
        for mode in ("on", "off"):
            proc = subprocess.run([sys.executable, "-c", _BARE_CHILD, mode, os.path.abspath(data_root), str(batches)],
                                  capture_output=True, text=True, check=True, env=child_env())
            out[mode].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return {mode: {"step_ms": median([r["step_ms"] for r in rs]),
                   "faults_per_step": median([r["faults_per_step"] for r in rs]),
                   "step_ms_all": [r["step_ms"] for r in rs]} for mode, rs in out.items()}
