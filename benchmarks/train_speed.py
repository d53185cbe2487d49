"""Issue 2's benchmark: the default configuration (fc_conv, batch 512, Fashion-MNIST) trained
through train.py's code path for a few epochs, next to the same model fed the 2018 way (a
per-sample DataLoader with PIL ToTensor, shuffle=True), epoch by epoch in the same process.

With --full-run it also times ``python3 train.py`` (30 epochs) as a subprocess: wall clock
with process start, peak RSS, and the validation BCE+KL and SSIM from its checkpoint.
Writes benchmarks/train_speed.md.

    python3 -m benchmarks.train_speed              # 3 epochs each, ~1 min on 2 CPU cores
    python3 -m benchmarks.train_speed --full-run   # plus the 30-epoch train.py, ~+40 s
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from benchmarks import baselines as B
from benchmarks.scaffold import ROOT, command_line, hardware, table, train_config, write_report
from runtime import accelerators

TARGET = 8.0  # issue 2: at least 8x the 2018 way on a 2-core CPU


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 -m benchmarks.train_speed", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--epochs", type=int, default=3, help="epochs of each way")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--full-run", action="store_true", help="also time the 30-epoch python3 train.py")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: PyTorch's default)")
    p.add_argument("--data_root", default=os.path.join(ROOT, "data"), help="Fashion-MNIST folder")
    p.add_argument("--note", default="", help="a line about the conditions (e.g. 'shared machine, under load')")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "train_speed.md"), help="Markdown report")
    return p


def main(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    accelerators.tune_malloc()  # as train.py does; both ways run with it
    device = torch.device(args.device)
    t_start = time.perf_counter()
    data = B.load_data(args.data_root, device)
    targs = train_config(["--batch-size", "512"])
    ours, old = B.build("fc_conv", device), B.build("fc_conv", device)
    loader = B.loader_2018(data, data.train_idx, 512, shuffle=True)
    n_batches = len(loader)
    times: dict[str, list[float]] = {"train.py": [], "2018": []}
    with B.scratch_writer(targs.tensorboard) as writer:
        # warm-up, not timed: lazy imports, SSIM matrices, the allocator, the loader's first batches
        B.train_trainpy(*ours, data.train_x[:1024], targs, epoch=99, writer=writer)
        B.train_2018(*old, loader, device, 2)
        for epoch in range(args.epochs):  # alternate, so load changes hit both ways alike
            times["train.py"].append(B.timed(
                lambda: B.train_trainpy(*ours, data.train_x, targs, epoch=epoch, writer=writer), device))
            times["2018"].append(B.timed(lambda: B.train_2018(*old, loader, device, n_batches), device))
            print(f"epoch {epoch + 1}: train.py {times['train.py'][-1]:.2f} s, 2018 {times['2018'][-1]:.2f} s",
                  flush=True)
    n = len(data.train_x) * args.epochs
    ips = {k: n / sum(v) for k, v in times.items()}
    ratio = ips["train.py"] / ips["2018"]
    full = B.full_run(["--device", args.device], args.data_root) if args.full_run else None
    res = {"command": command_line("train_speed"), "hardware": hardware(), "times": times, "ips": ips,
           "ratio": ratio, "full_run": full, "wall_s": time.perf_counter() - t_start}
    write_report(args.out, markdown(args, res), res)
    print(f"train.py {ips['train.py']:,.0f} img/s, 2018 way {ips['2018']:,.0f} img/s: {ratio:.1f}x "
          f"(target >= {TARGET:.0f}x); wrote {args.out}")
    return res


def markdown(args: argparse.Namespace, res: dict) -> str:
    ips, times = res["ips"], res["times"]
    lines = [f"# Training speed: `{res['command']}`\n"]
    if args.note:
        lines.append(f"**Conditions: {args.note}**\n")
    lines.append(f"Measured {time.strftime('%Y-%m-%d %H:%M')} on {args.device}; {res['wall_s']:.0f} s in all.\n")
    lines.append(table(["", ""], [[k, v] for k, v in res["hardware"].items()]) + "\n")
    lines.append(f"Default configuration (fc_conv, batch 512, 48,000 training images of the 2018 split), "
                 f"{args.epochs} epochs each, alternating epoch by epoch in one process:\n")
    lines.append(table(["way", "images/s", "seconds per epoch"], [
        ["train.py's loop (device-resident data, index slices)", ips["train.py"],
         ", ".join(f"{t:.2f}" for t in times["train.py"])],
        ["2018: per-sample DataLoader + PIL ToTensor, shuffle=True", ips["2018"],
         ", ".join(f"{t:.2f}" for t in times["2018"])],
        ["ratio", f"{res['ratio']:.1f}x (target >= {TARGET:.0f}x: {'met' if res['ratio'] >= TARGET else 'not met'})",
         ""],
    ]) + "\n")
    fr = res["full_run"]
    if fr:
        lines.append("The full default run, `python3 train.py` (30 epochs, validation every epoch), as a new "
                     "process:\n")
        lines.append(table(["", ""], [
            ["wall clock, process start included", f"{fr['wall_s']:.1f} s"],
            ["training loop (train.py's 'done in')", f"{fr['training_s']:.1f} s"],
            ["peak RSS", f"{fr['peak_rss_mb']:.0f} MiB"],
            ["validation BCE+KL after 30 epochs",
             f"{fr['val_bce_kl']:.2f} (2018 checkpoint: {B.REFERENCE_VAL['bce_kl']})"],
            ["validation SSIM after 30 epochs", f"{fr['val_ssim']:.4f} (2018 checkpoint: {B.REFERENCE_VAL['ssim']})"],
        ]) + "\n")
    return "\n".join(lines)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
