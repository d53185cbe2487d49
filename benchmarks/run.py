"""Training and evaluation images/second per model type and batch size, on the CPU and on CUDA
when present, each next to two baselines measured in the same run (see baselines.py):
the bare eager loop (the practical limit) and the 2018 per-sample DataLoader.

Also: --amp and --compile for the default configuration (compile time apart), and the full
30-epoch ``python3 train.py`` (wall clock with process start, peak RSS, its metrics).
Writes benchmarks/results.md (and results.json beside it).

    python3 -m benchmarks.run                      # everything, ~5 min on 2 CPU cores
    python3 -m benchmarks.run --models fc_conv --batch-sizes 512 --no-full-run   # quick
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from statistics import median

import torch

from benchmarks import baselines as B
from benchmarks.scaffold import ROOT, command_line, hardware, load_average, table, train_config, write_report
from runtime import accelerators


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 -m benchmarks.run", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--models", nargs="+", default=["fc_conv", "fc", "fcn"], help="--model_type values")
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[128, 512], help="minibatch sizes")
    p.add_argument("--devices", nargs="+", default=["cpu", "cuda"],
                   help="devices to measure; cuda is skipped when there is none")
    p.add_argument("--seconds", type=float, default=2.0,
                   help="time budget of one bare-loop measurement; every method then feeds as many images")
    p.add_argument("--repeats", type=int, default=3, help="measurements per method (median reported)")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: PyTorch's default)")
    p.add_argument("--no-variants", dest="variants", action="store_false",
                   help="skip --amp / --compile of the default configuration")
    p.add_argument("--no-full-run", dest="full_run", action="store_false",
                   help="skip the 30-epoch python3 train.py subprocess")
    p.add_argument("--no-malloc-ab", dest="malloc_ab", action="store_false",
                   help="skip the bare loop with and without malloc tuning (fresh processes)")
    p.add_argument("--data_root", default=os.path.join(ROOT, "data"), help="Fashion-MNIST folder")
    p.add_argument("--note", default="", help="a line about the conditions (e.g. 'shared machine, under load')")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results.md"), help="Markdown report")
    return p


def measure_pair(device, data: B.Data, model_type: str, batch: int, seconds: float, repeats: int) -> dict:
    """Train and eval images/s of the three methods, interleaved round by round."""
    with B.scratch_writer(True) as writer:  # opened once, as in train.py
        return _measure_pair(device, data, model_type, batch, seconds, repeats, writer)


def _measure_pair(device, data, model_type, batch, seconds, repeats, writer) -> dict:
    args = train_config(["--batch-size", str(batch)])
    runs = {m: B.build(model_type, device) for m in B.METHODS}
    # warm-up (lazy imports, SSIM matrices, allocator) and a step-time probe on the bare loop
    B.train_bare(*runs["bare"], data.train_x[:2 * batch], batch)
    probe = B.timed(lambda: B.train_bare(*runs["bare"], data.train_x[:3 * batch], batch), device) / 3
    n = B.batches_for(seconds, probe, hi=math.ceil(len(data.train_x) / batch))
    n_eval = min(n, math.ceil(len(data.val_x) / batch))
    x, xv = data.train_x[:n * batch], data.val_x[:n_eval * batch]
    loader = B.loader_2018(data, data.train_idx, batch, shuffle=True)
    val_loader = B.loader_2018(data, data.val_idx, batch, shuffle=False)
    B.train_trainpy(*runs["train.py"], x[:2 * batch], args, writer=writer)
    B.train_2018(*runs["2018"], loader, device, 2)

    train_fns = {
        "train.py": lambda r: B.train_trainpy(*runs["train.py"], x, args, epoch=r, writer=writer),
        "bare": lambda r: B.train_bare(*runs["bare"], x, batch, seed=r),
        "2018": lambda r: B.train_2018(*runs["2018"], loader, device, n),
    }
    eval_fns = {
        "train.py": lambda r: B.eval_trainpy(runs["train.py"][0], runs["train.py"][2], xv, args, writer),
        "bare": lambda r: B.eval_bare(runs["bare"][0], xv, batch),
        "2018": lambda r: B.eval_2018(runs["2018"][0], val_loader, device, n_eval),
    }
    times = {("train", m): [] for m in B.METHODS} | {("eval", m): [] for m in B.METHODS}
    for r in range(repeats):
        order = B.METHODS[r % 3:] + B.METHODS[:r % 3]  # rotate so no method always runs first
        for m in order:
            times[("train", m)].append(B.timed(lambda: train_fns[m](r), device))
        for m in order:
            times[("eval", m)].append(B.timed(lambda: eval_fns[m](r), device))
    out = {"model": model_type, "batch": batch, "train_images": len(x), "eval_images": len(xv)}
    for (kind, m), ts in times.items():
        images = len(x) if kind == "train" else len(xv)
        out[f"{kind}_{m}"] = images / median(ts)
        out[f"{kind}_{m}_spread"] = [images / t for t in ts]
    return out


def measure_variants(device, data: B.Data, seconds: float, repeats: int) -> list[dict]:
    """The default configuration through train.py's path: eager, --amp, --compile (compile time apart)."""
    with B.scratch_writer(True) as writer:
        return _measure_variants(device, data, seconds, repeats, writer)


def _measure_variants(device, data, seconds, repeats, writer) -> list[dict]:
    batch = 512
    rows = []
    for flags in ([], ["--amp", "on"], ["--compile"]):
        name = " ".join(flags) or "eager"
        try:
            if "--amp" in flags:
                accelerators.check_amp(device)
            if "--compile" in flags:
                accelerators.check_compile(device)
        except Exception as e:  # a VaeLabError: say why and go on
            rows.append({"variant": name, "skipped": str(e)})
            continue
        args = train_config(["--batch-size", str(batch), *flags])
        model, opt, loss_fn = B.build("fc_conv", device)
        net, train_loss = model, loss_fn
        if args.compile:
            net, train_loss = accelerators.compile_for_training(model, loss_fn)
        n = B.batches_for(seconds, 0.01 if device.type == "cpu" else 0.001, hi=len(data.train_x) // batch)
        x = data.train_x[:n * batch]  # whole minibatches only: one compiled shape
        first = B.timed(lambda: B.train_trainpy(model, opt, train_loss, x, args, net=net, writer=writer), device)
        ts = [B.timed(lambda: B.train_trainpy(model, opt, train_loss, x, args, epoch=r + 1, net=net,
                                              writer=writer), device) for r in range(repeats)]
        steady = median(ts)
        rows.append({"variant": name, "train_images_per_s": len(x) / steady,
                     "first_pass_s": first, "steady_pass_s": steady,
                     "compile_s": first - steady if args.compile else 0.0, "images": len(x)})
    return rows


def report(results: dict) -> str:
    hw, lines = results["hardware"], []
    lines.append(f"# vae-lab speed: `{results['command']}`\n")
    if results["note"]:
        lines.append(f"**Conditions: {results['note']}**\n")
    lines.append(f"Measured {results['date']}; {results['wall_s']:.0f} s in all. Load average at the end: "
                 f"{results.get('load_end', 'n/a')}.\n")
    lines.append(table(["", ""], [[k, v] for k, v in hw.items()]) + "\n")
    lines.append("Methods (same model, same images, one process, measured round-robin; median of "
                 f"{results['repeats']}): **train.py** = train.py's own loop (StepLogger, SSIM metric on 32 "
                 "images/step, console lines, TensorBoard scalars); **bare** = model + optimizer + index slices "
                 "of a device tensor, nothing else; **2018** = per-sample DataLoader over torchvision "
                 "FashionMNIST with PIL ToTensor, shuffle=True. Evaluation computes BCE, KL and SSIM of every "
                 "image in all three.\n")
    for dev, dres in results["devices"].items():
        lines.append(f"## {dev}\n")
        t = results["targets"].get(dev)
        if t:
            lines.append("### Targets (default configuration: fc_conv, batch 512)\n")
            lines.append(table(["what", "measured", "target", "met"], t) + "\n")
        rows = []
        for r in dres["grid"]:
            rows.append([r["model"], r["batch"], r["train_train.py"], r["train_bare"], r["train_2018"],
                         f"{r['train_bare'] / r['train_train.py']:.2f}x",
                         f"{r['train_train.py'] / r['train_2018']:.1f}x",
                         r["eval_train.py"], r["eval_bare"], r["eval_2018"],
                         f"{r['eval_bare'] / r['eval_train.py']:.2f}x", f"{r['eval_train.py'] / r['eval_2018']:.1f}x"])
        lines.append("### Images per second\n")
        lines.append(table(["model", "batch", "train: train.py", "bare", "2018", "bare/train.py time",
                            "train.py vs 2018", "eval: train.py", "bare", "2018", "bare/train.py time",
                            "train.py vs 2018"], rows) + "\n")
        lines.append("Spread (images/s of each repeat, train.py / bare / 2018, training): " + "; ".join(
            f"{r['model']} b{r['batch']}: " + " / ".join(
                "[" + ", ".join(f"{v:,.0f}" for v in r[f"train_{m}_spread"]) + "]" for m in B.METHODS)
            for r in dres["grid"]) + "\n")
        if dres.get("variants"):
            lines.append("### --amp and --compile (default configuration, train.py's loop)\n")
            vrows = []
            for v in dres["variants"]:
                if "skipped" in v:
                    vrows.append([v["variant"], "skipped: " + v["skipped"], "", "", ""])
                else:
                    vrows.append([v["variant"], v["train_images_per_s"], f"{v['first_pass_s']:.2f} s",
                                  f"{v['steady_pass_s']:.2f} s", f"{v['compile_s']:.1f} s" if v["compile_s"] else "-"])
            lines.append(table(["variant", "train images/s (steady)", "first pass", "steady pass",
                                "compile time (first - steady)"], vrows) + "\n")
        ab = dres.get("malloc_ab")
        if ab:
            lines.append("### malloc tuning (accelerators.tune_malloc, as train.py calls it), bare fc_conv loop, "
                         "batch 512\n")
            lines.append("Fresh processes, alternating, median of 3 (every other measurement above runs with it on).\n")
            lines.append(table(["glibc malloc", "ms per step", "minor page faults per step", "each run (ms/step)"], [
                [mode, f"{ab[mode]['step_ms']:.2f}", f"{ab[mode]['faults_per_step']:.0f}",
                 ", ".join(f"{v:.2f}" for v in ab[mode]["step_ms_all"])] for mode in ("on", "off")]) + "\n")
        fr = dres.get("full_run")
        if fr:
            lines.append("### The full `python3 train.py` (30 epochs, validation every epoch)\n")
            lines.append(table(["", ""], [
                ["command", f"`{fr['command']}`"],
                ["wall clock, process start included", f"{fr['wall_s']:.1f} s"],
                ["training loop (train.py's 'done in')", f"{fr['training_s']:.1f} s"],
                ["start-up and data (wall - loop)", f"{fr['wall_s'] - fr['training_s']:.1f} s"],
                ["epoch seconds (first, median, last)",
                 f"{fr['epoch_s'][0]:.2f} / {median(fr['epoch_s']):.2f} / {fr['epoch_s'][-1]:.2f}"],
                ["peak RSS", f"{fr['peak_rss_mb']:.0f} MiB"],
                ["validation BCE+KL, SSIM (epoch 30)", f"{fr['val_bce_kl']:.2f}, {fr['val_ssim']:.4f} "
                 f"(2018 checkpoint: {B.REFERENCE_VAL['bce_kl']}, {B.REFERENCE_VAL['ssim']})"],
            ]) + "\n")
    return "\n".join(lines)


def targets(dev: str, dres: dict) -> list[list]:
    out = []
    default = next((r for r in dres["grid"] if r["model"] == "fc_conv" and r["batch"] == 512), None)
    if default and dev == "cpu":
        ratio = default["train_bare"] / default["train_train.py"]
        speedup = default["train_train.py"] / default["train_2018"]
        out += [["training time vs the bare eager loop", f"{ratio:.2f}x", "<= 1.3x", "yes" if ratio <= 1.3 else "no"],
                ["training speed vs the 2018 DataLoader", f"{speedup:.1f}x", ">= 10x",
                 "yes" if speedup >= 10 else "no"]]
    fr = dres.get("full_run")
    if fr and dev == "cpu":
        out += [["30-epoch python3 train.py, wall clock with start", f"{fr['wall_s']:.1f} s", "<= 20 s",
                 "yes" if fr["wall_s"] <= 20 else "no"],
                ["its peak RSS", f"{fr['peak_rss_mb']:.0f} MiB", "report", "-"]]
    if fr and dev == "cuda":
        out += [["30-epoch python3 train.py, training loop (no process start)", f"{fr['training_s']:.2f} s",
                 "<= 3 s on an H100", "yes" if fr["training_s"] <= 3 else "no"]]
    return out


def main(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    accelerators.tune_malloc()  # as train.py does, so every method runs with the same allocator settings
    t0 = time.perf_counter()
    results = {"command": command_line("run"), "note": args.note,
               "date": time.strftime("%Y-%m-%d %H:%M"), "repeats": args.repeats,
               "hardware": hardware(), "devices": {}, "targets": {}}
    for name in args.devices:
        if name == "cuda" and not torch.cuda.is_available():
            print("cuda: no CUDA device, skipped", file=sys.stderr)
            continue
        device = torch.device(name)
        data = B.load_data(args.data_root, device)
        dres = {"grid": []}
        for model_type in args.models:
            for batch in args.batch_sizes:
                r = measure_pair(device, data, model_type, batch, args.seconds, args.repeats)
                print(f"{name} {model_type} b{batch}: train {r['train_train.py']:,.0f} / bare {r['train_bare']:,.0f} / "
                      f"2018 {r['train_2018']:,.0f} img/s; eval {r['eval_train.py']:,.0f} / {r['eval_bare']:,.0f} / "
                      f"{r['eval_2018']:,.0f}", flush=True)
                dres["grid"].append(r)
        if args.variants:
            dres["variants"] = measure_variants(device, data, args.seconds, args.repeats)
            print(f"{name} variants: {dres['variants']}", flush=True)
        if args.malloc_ab and name == "cpu":
            dres["malloc_ab"] = B.bare_malloc_ab(args.data_root)
            print(f"cpu malloc tuning: {dres['malloc_ab']}", flush=True)
        if args.full_run:
            dres["full_run"] = B.full_run(["--device", name], args.data_root)
            print(f"{name} full run: {dres['full_run']['wall_s']:.1f} s wall, "
                  f"{dres['full_run']['peak_rss_mb']:.0f} MiB", flush=True)
        results["devices"][name] = dres
        results["targets"][name] = targets(name, dres)
    results["wall_s"] = time.perf_counter() - t0
    results["load_end"] = load_average()
    write_report(args.out, report(results), results)
    return results


if __name__ == "__main__":
    main(get_args_parser().parse_args())
