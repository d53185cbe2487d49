"""The conv models' training speed per memory layout and precision, train.py's loop beside the bare
eager loop; train.py's start-up, broken down; the default 2018 run beside a bare process of the same
arithmetic. Writes benchmarks/conv_speed.md (and .json beside it).

    python3 -m benchmarks.conv_speed                      # everything, ~15 min on 2 CPU cores
    python3 -m benchmarks.conv_speed --models resconv --shapes 28x1 --no-startup --no-full-run
    python3 -m benchmarks.conv_speed --isa avx2 --out benchmarks/conv_speed_avx2.md   # a CPU without
                                                          # AVX-512 (so without bfloat16 units), emulated

Paths: ``float32`` (NCHW, the path before issue 26), ``channels-last`` (NHWC weights and images),
``bf16`` (bfloat16 autocast of the forward, losses and optimiser in float32, NCHW) and ``bf16 +
channels-last``. What --amp auto and --channels_last auto choose (runtime/accelerators.choose_path) is
marked in the table. Images: Fashion-MNIST at 28x28 grey; at 32x32 and 64x64 colour, random images
of a fixed seed (the speed of a conv step does not depend on the pixels).
"""
from __future__ import annotations

import argparse
import glob
import itertools
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from statistics import median

import torch

from benchmarks import baselines as B
from benchmarks.scaffold import ROOT, child_env, command_line, load_average, train_config, write_report
from config.run_config import model_config
from core.environment import cpu_name
from dataio.folders import CACHE_DIR
from fileio.atomic import write_text
from losses import build_objective
from models import build_model
from runtime import accelerators
from runtime.optim import make_optimizer

PATHS = {"float32": accelerators.FastPath(False, False), "channels-last": accelerators.FastPath(True, False),
         "bf16": accelerators.FastPath(False, True), "bf16 + channels-last": accelerators.FastPath(True, True)}
PRESET = {"pixelvae": "density"}
COLD = "python3 train.py (its validation split not cached: scikit-learn imported)"
BATCH = {28: 128, 32: 64, 64: 32}  # --preset best's 128 at 28x28; smaller batches for the larger images
# --isa: what oneDNN (convolutions, matmuls) and ATen's own kernels may use, as on a CPU that has no more
ISA_ENV = {"avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 -m benchmarks.conv_speed", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--models", nargs="+", default=["resconv", "hvae"], help="--model_type values, every shape")
    p.add_argument("--shapes", nargs="+", default=["28x1", "32x3", "64x3"], help="SIZExCHANNELS")
    p.add_argument("--families", nargs="+", default=["fc_conv", "fc", "fcn", "unet", "conv1xn", "pixelvae"],
                   help="other --model_type values, timed at 28x28 grey in the bare loop only")
    p.add_argument("--paths", nargs="+", choices=list(PATHS), default=list(PATHS), metavar="PATH",
                   help=f"the paths to time, the first one the reference: {', '.join(PATHS)}")
    p.add_argument("--seconds", type=float, default=1.5, help="time of one measurement (its steps are fixed first)")
    p.add_argument("--repeats", type=int, default=3, help="measurements per path and method (median reported)")
    p.add_argument("--no-startup", dest="startup", action="store_false", help="skip the start-up measurements")
    p.add_argument("--no-full-run", dest="full_run", action="store_false",
                   help="skip the 30-epoch default run and its bare process")
    p.add_argument("--end-to-end", dest="end_to_end", type=int, default=2, metavar="EPOCHS",
                   help="time `train.py --preset best --epochs EPOCHS` in float32 and in the auto path; 0 skips it")
    p.add_argument("--isa", choices=sorted(ISA_ENV), default=None,
                   help="run everything in a child process limited to this instruction set")
    p.add_argument("--data_root", default=os.path.join(ROOT, "data"), help="Fashion-MNIST folder")
    p.add_argument("--from_json", default="", metavar="FILE", help="only write the report of an earlier run's JSON")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "conv_speed.md"), help="Markdown report")
    return p


# ---------------------------------------------------------------- the paths, step by step


def images(shape: tuple[int, int], n: int, data: B.Data | None) -> torch.Tensor:
    size, channels = shape
    if (size, channels) == (28, 1) and data is not None:
        return data.train_x[:n]
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8).float() / 255


def build(model_type: str, shape: tuple[int, int], path: accelerators.FastPath):
    """(model, optimizer, loss, run config) as train.py builds them for `--preset best --model_type`
    (pixelvae: `--preset density`, its likelihood and decoder)."""
    size, channels = shape
    cfg = train_config(["--preset", PRESET.get(model_type, "best"), "--model_type", model_type,
                        "--batch-size", str(BATCH[size]), "--amp", "on" if path.amp else "off",
                        "--channels_last", "on" if path.channels_last else "off"])
    torch.manual_seed(0)
    model = build_model(model_config(cfg, channels, size)).use_memory_format(path.memory_format)
    return model, make_optimizer(cfg.optimizer, model.parameters(), cfg.lr), build_objective(cfg, model), cfg


def measure_grid(model_type: str, shape: tuple[int, int], data: B.Data | None, seconds: float, repeats: int,
                 methods: tuple[str, ...] = ("train.py", "bare"), only: tuple[str, ...] = tuple(PATHS)) -> dict:
    """Training images/s of the paths ``only`` through ``methods``, measured round-robin (median of ``repeats``)."""
    batch = BATCH[shape[0]]
    paths = {p: PATHS[p] for p in only}
    runs = {(p, m): build(model_type, shape, path) for p, path in paths.items() for m in methods}
    probe_x = images(shape, 3 * batch, data)
    step = 0.0
    for (p, _), (model, opt, loss_fn, _) in runs.items():  # warm-up (lazy imports, allocator, oneDNN kernels)
        B.train_bare(model, opt, loss_fn, probe_x[:2 * batch], batch, amp=PATHS[p].amp)
        t0 = time.perf_counter()
        B.train_bare(model, opt, loss_fn, probe_x, batch, amp=PATHS[p].amp)
        if p == next(iter(paths)):  # the first path's step sets the measurement (a far slower one takes longer)
            step = (time.perf_counter() - t0) / 3
    n = B.batches_for(seconds, step, lo=3, hi=375)
    x = images(shape, n * batch, data)
    with B.scratch_writer(True) as writer:
        fns = {(p, "train.py"): _trainpy(runs[(p, "train.py")], x, writer) for p in paths if "train.py" in methods}
        fns |= {(p, "bare"): _bare(runs[(p, "bare")], x, batch, PATHS[p].amp) for p in paths if "bare" in methods}
        order = list(fns)
        times: dict = {k: [] for k in order}
        for r in range(repeats):
            for key in order[r % len(order):] + order[:r % len(order)]:  # no path always first
                t0 = time.perf_counter()
                fns[key](r)
                times[key].append(time.perf_counter() - t0)
    out = {"model": model_type, "size": shape[0], "channels": shape[1], "batch": batch, "steps": n}
    for (p, m), ts in times.items():
        out[f"{p}|{m}"] = len(x) / median(ts)
        out[f"{p}|{m}|spread"] = [len(x) / t for t in ts]
    return out


def _trainpy(run, x, writer):
    model, opt, loss_fn, cfg = run
    return lambda r: B.train_trainpy(model, opt, loss_fn, x, cfg, epoch=r, writer=writer)


def _bare(run, x, batch, amp):
    model, opt, loss_fn, _ = run
    return lambda r: B.train_bare(model, opt, loss_fn, x, batch, seed=r, amp=amp)


# ---------------------------------------------------------------- start-up


def _help_seconds(repeats: int = 3) -> float:
    """Wall time of ``python3 train.py --help``: the interpreter and train.py's imports."""
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--help"], check=True,
                       capture_output=True)
        ts.append(time.perf_counter() - t0)
    return median(ts)


def _slowest_imports(top: int = 6) -> list[tuple[str, float]]:
    """The top-level modules that ``python3 -X importtime train.py --help`` spends most on (cumulative s)."""
    err = subprocess.run([sys.executable, "-X", "importtime", os.path.join(ROOT, "train.py"), "--help"],
                         check=True, capture_output=True, text=True).stderr
    rows = []
    for line in err.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \| ( *)(\S+)", line)
        if m and len(m.group(2)) <= 1:  # a module train.py (or the interpreter) imports directly
            rows.append((m.group(3), int(m.group(1)) / 1e6))
    return sorted(rows, key=lambda r: -r[1])[:top]


def first_step(argv: list[str], data_root: str) -> dict:
    """``python3 train.py ARGV`` from process start: when its header line (data loaded, model built)
    and its first step's console line (``--print-freq 1``) arrive; the process is stopped then."""
    with tempfile.TemporaryDirectory(prefix="vae_lab_start_") as work:
        cmd = [sys.executable, "-u", os.path.join(ROOT, "train.py"), *argv, "--data_root", os.path.abspath(data_root),
               "--print-freq", "1", "--lognumber", "start", "--epochs", "1"]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        header = step = None
        for line in proc.stdout:
            if header is None and " VAE, " in line:
                header = time.perf_counter() - t0
            elif line.startswith("Epoch: [0][1/"):
                step = time.perf_counter() - t0
                break
        proc.kill()
        proc.wait()
    if header is None or step is None:
        raise RuntimeError(f"train.py {' '.join(argv)} printed no header or first step")
    return {"header_s": header, "first_step_s": step}


def _forget_split(data_root: str) -> None:
    """Delete the cached validation folds (dataio/split.py) so the next run computes them with scikit-learn."""
    for path in glob.glob(os.path.join(data_root, CACHE_DIR, "folds_*.npy")):
        os.remove(path)


def startup(data_root: str, repeats: int = 3) -> dict:
    help_s = _help_seconds(repeats)
    runs = {"python3 train.py": [], "python3 train.py --preset best": [], COLD: []}
    for _ in range(repeats):
        for name in runs:
            if name == COLD:
                _forget_split(data_root)
            runs[name].append(first_step(shlex.split(name.split(" (")[0])[2:], data_root))
    out = {"help_s": help_s, "imports": _slowest_imports(), "runs": {}}
    for name, rs in runs.items():
        header, step = median([r["header_s"] for r in rs]), median([r["first_step_s"] for r in rs])
        out["runs"][name] = {"imports_s": help_s, "setup_s": header - help_s, "step_s": step - header,
                             "first_step_s": step, "all": rs}
    return out


# ---------------------------------------------------------------- the default run, whole


_BARE_RUN = """
import sys, time
import torch
from benchmarks import baselines as B
from runtime import accelerators
accelerators.tune_malloc()
data = B.load_data(sys.argv[1], torch.device("cpu"))
model, opt, loss_fn = B.build("fc_conv", torch.device("cpu"))
for epoch in range(30):
    B.train_bare(model, opt, loss_fn, data.train_x, 512, seed=epoch)
    B.eval_bare(model, data.val_x, 512)
"""


def default_run(data_root: str, rounds: int = 2) -> dict:
    """The 30-epoch ``python3 train.py`` and a bare process of the same arithmetic (the 2018 split,
    fc_conv, Adam, batch 512; BCE, KL and SSIM of every validation image each epoch; nothing else),
    wall clock from process start, alternated ``rounds`` times."""
    out: dict = {"train.py": [], "bare": []}
    for _ in range(rounds):
        out["train.py"].append(B.full_run([], data_root)["wall_s"])
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", _BARE_RUN, os.path.abspath(data_root)], check=True, capture_output=True,
                       env=child_env())
        out["bare"].append(time.perf_counter() - t0)
    return {k: {"median_s": median(v), "all": v} for k, v in out.items()}


def end_to_end(data_root: str, epochs: int, rounds: int = 2) -> dict:
    """``python3 train.py --preset best --epochs N`` in float32 (NCHW) and in the path auto chooses, fresh
    processes alternated ``rounds`` times: wall clock from process start, training loop, epochs."""
    runs = {"float32": ["--amp", "off", "--channels_last", "off"], "auto": []}
    out: dict = {name: [] for name in runs}
    for _ in range(rounds):
        for name, flags in runs.items():
            r = B.full_run(["--preset", "best", "--epochs", str(epochs), "--tensorboard_images", "False", *flags],
                           data_root)
            out[name].append({k: r[k] for k in ("wall_s", "training_s", "epoch_s", "val_bce_kl", "val_ssim")})
    return {name: {"wall_s": median([r["wall_s"] for r in rs]), "training_s": median([r["training_s"] for r in rs]),
                   "all": rs} for name, rs in out.items()} | {"epochs": epochs}


# ---------------------------------------------------------------- report


def chosen(model_type: str) -> str:
    """The path --amp auto and --channels_last auto take for ``model_type`` on this CPU."""
    cfg = train_config(["--preset", PRESET.get(model_type, "best"), "--model_type", model_type])
    path = accelerators.choose_path(torch.device("cpu"), cfg)
    return next(name for name, p in PATHS.items() if p == path)


def report(res: dict) -> str:
    lines = [f"# Conv training speed per layout and precision: `{res['command']}`", "",
             f"Measured {res['date']}, {res['wall_s']:.0f} s in all; CPU: {res['cpu']}"
             f"{' (emulated: ' + res['isa'] + ')' if res['isa'] else ''}; {res['threads']} torch threads; "
             f"bfloat16 units (AVX512-BF16 / AMX) seen by PyTorch: {res['bf16_units']}; "
             f"torch {res.get('torch', 'n/a')}; "
             f"load average (1/5/15 min) at the start: {res['load_start']}, at the end: {res['load_end']}.", "",
             "Training images per second, median of the repeats, every path and method of a row measured "
             "round-robin in one process. **train.py** = train.py's loop (engine.train_one_epoch: the step "
             "logger, SSIM of as many images as make 32 of 28x28 grey a step, console lines, TensorBoard "
             "scalars); **bare** = the model, Adam "
             "and index slices of a tensor, nothing else. Speed-up = float32 time / the path's time (train.py's "
             "loop). Loop / bare = train.py's time / the bare loop's time on the same path. * = the path --amp "
             "auto and --channels_last auto choose here.", "",
             "| model | images | batch | path | train.py img/s | bare img/s | speed-up | loop / bare |",
             "|---|---|---|---|---|---|---|---|"]
    for r in res["grid"]:
        base = r["float32|train.py"] if "float32|train.py" in r else r["float32|bare"]
        for p in (p for p in PATHS if f"{p}|bare" in r):
            tp, bare = r.get(f"{p}|train.py"), r[f"{p}|bare"]
            mark = " *" if r["chosen"] == p else ""
            speed = (tp or bare) / base
            lines.append(f"| {r['model']} | {r['size']}x{r['size']}x{r['channels']} | {r['batch']} | {p}{mark} | "
                         f"{f'{tp:,.0f}' if tp else '-'} | {bare:,.0f} | {speed:.2f}x | "
                         f"{f'{bare / tp:.2f}x' if tp else '-'} |")
    if res.get("startup"):
        s = res["startup"]
        lines += ["", "## Start-up (fresh processes, median of 3)", "",
                  f"`python3 train.py --help` (the interpreter and train.py's imports): {s['help_s']:.2f} s. "
                  "Slowest imports (`python3 -X importtime train.py --help`, cumulative): "
                  + ", ".join(f"{name} {sec:.2f} s" for name, sec in s["imports"]) + ".", "",
                  "| command | imports | data, model, writer (to the header line) | first step | process start to "
                  "first step |", "|---|---|---|---|---|"]
        for name, r in s["runs"].items():
            lines.append(f"| `{name}` | {r['imports_s']:.2f} s | {r['setup_s']:.2f} s | {r['step_s']:.2f} s | "
                         f"{r['first_step_s']:.2f} s |")
    if res.get("end_to_end"):
        e = res["end_to_end"]
        lines += ["", f"## `--preset best` end to end ({e['epochs']} epochs, fresh processes)", "",
                  f"Wall clock from process start, median of {len(e['auto']['all'])} alternated runs: float32 (NCHW) "
                  f"{e['float32']['wall_s']:.1f} s, the path auto chooses here ({e['chosen']}) "
                  f"{e['auto']['wall_s']:.1f} s: **{e['auto']['wall_s'] / e['float32']['wall_s']:.2f}x**; training "
                  f"loop alone (train.py's `done in`) {e['float32']['training_s']:.1f} s and "
                  f"{e['auto']['training_s']:.1f} s: {e['auto']['training_s'] / e['float32']['training_s']:.2f}x. "
                  "Validation runs in float32 in both."]
    if res.get("default_run"):
        d = res["default_run"]
        ratio = d["train.py"]["median_s"] / d["bare"]["median_s"]
        lines += ["", "## The default run, whole", "",
                  f"`python3 train.py` (30 epochs) from process start: {d['train.py']['median_s']:.1f} s; a bare "
                  f"process of the same arithmetic: {d['bare']['median_s']:.1f} s; ratio {ratio:.2f}x (median of "
                  f"{len(d['bare']['all'])} alternated runs each: "
                  f"{', '.join(f'{v:.1f}' for v in d['train.py']['all'])} s and "
                  f"{', '.join(f'{v:.1f}' for v in d['bare']['all'])} s)."]
    return "\n".join(lines) + "\n"


def command() -> str:
    """The command for the report; in the --isa child, the parent's (its --isa put back)."""
    line = command_line("conv_speed")
    isa = os.environ.get("VAE_LAB_BENCH_ISA")
    return line.replace("benchmarks.conv_speed", f"benchmarks.conv_speed --isa {isa}", 1) if isa else line


def main(args: argparse.Namespace) -> dict:
    if args.from_json:  # the report again from a run's JSON (e.g. after its wording changed)
        with open(args.from_json) as f:
            res = json.load(f)
        write_text(args.out, report(res))
        return res
    if args.isa:  # the whole benchmark again in a child whose kernels are limited to args.isa
        argv = [a for a in sys.argv[1:] if a not in ("--isa", args.isa)]
        env = child_env(**ISA_ENV[args.isa], VAE_LAB_BENCH_ISA=args.isa)
        return subprocess.run([sys.executable, "-m", "benchmarks.conv_speed", *argv], env=env, check=True).returncode
    accelerators.tune_malloc()
    t0, load_start = time.perf_counter(), load_average()
    data = B.load_data(args.data_root, torch.device("cpu"))
    res = {"command": command(), "date": time.strftime("%Y-%m-%d %H:%M"),
           "cpu": cpu_name(), "isa": os.environ.get("VAE_LAB_BENCH_ISA", ""), "threads": torch.get_num_threads(),
           "bf16_units": accelerators.native_bf16(torch.device("cpu")), "torch": torch.__version__,
           "load_start": load_start, "grid": []}
    cells = list(itertools.product(args.models, args.shapes)) + [(m, "28x1") for m in args.families]
    for model_type, shape in cells:
        size, channels = (int(v) for v in shape.split("x"))
        methods = ("train.py", "bare") if model_type in args.models else ("bare",)
        row = measure_grid(model_type, (size, channels), data, args.seconds, args.repeats, methods, tuple(args.paths))
        row["chosen"] = chosen(model_type)
        res["grid"].append(row)
        print(json.dumps({k: (round(v) if isinstance(v, float) else v) for k, v in row.items() if "spread" not in k}),
              flush=True)
    if args.startup:
        res["startup"] = startup(args.data_root)
        print(json.dumps(res["startup"]["runs"]), flush=True)
    if args.end_to_end:
        res["end_to_end"] = end_to_end(args.data_root, args.end_to_end) | {"chosen": chosen("resconv")}
        print(json.dumps({k: v for k, v in res["end_to_end"].items() if k not in ("epochs", "chosen")}), flush=True)
    if args.full_run:
        res["default_run"] = default_run(args.data_root)
        print(json.dumps(res["default_run"]), flush=True)
    res["wall_s"], res["load_end"] = time.perf_counter() - t0, load_average()
    write_report(args.out, report(res), res)
    return res


if __name__ == "__main__":
    main(get_args_parser().parse_args())
