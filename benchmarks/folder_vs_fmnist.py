"""Is the generic folder path as good and as fast as the special one? Fashion-MNIST both ways.

Writes Fashion-MNIST out as PNG files (``--png_root``/train/<class>/ and test/<class>/, 70,000
files, once), then trains the same command line (``--flags``, default the 2018 best command at
``--epochs``) with ``--dataset_type fmnist`` and with ``--dataset_type folder --data_root
<png_root>``, once per seed, interleaved, through benchmarks/scaffold.py; each best checkpoint is
scored on its own validation fold (BCE+KL, SSIM) and by KNN test accuracy. Also times the
first decode of the PNGs (filling the cache) and a cached load against reading the IDX files.
Writes ``--out``.md / .json.

    python3 -m benchmarks.folder_vs_fmnist                 # seeds 42,1,2, 10 epochs
    python3 -m benchmarks.folder_vs_fmnist --seeds 42 --epochs 2
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

from benchmarks.scaffold import (
    ROOT,
    add_sweep_args,
    cell,
    command_line,
    machine_line,
    run_scored,
    start,
    summarise,
    write_report,
)
from config.flag_types import positive_int
from config.parsers import OneLineParser, run_cli
from datasets import CACHE_DIR, CLASS_NAMES, ensure_raw_files, load_split

METRICS = (("val_bce_kl", ".2f"), ("val_ssim", ".4f"), ("knn_acc", ".4f"), ("seconds_per_epoch", ".2f"))


def get_args_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python3 -m benchmarks.folder_vs_fmnist", description=__doc__.splitlines()[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--epochs", type=positive_int, default=10, help="epochs of every run")
    p.add_argument("--flags", default="", help="more train.py flags for both runs, e.g. '--model_type fc'")
    p.add_argument("--png_root", default=os.path.join(ROOT, "results", "fmnist_png"),
                   help="where Fashion-MNIST is written out as PNG files")
    p.add_argument("--only", default="", help="comma-separated: fmnist, folder")
    add_sweep_args(p, "folder_vs_fmnist")
    return p


def class_folder(index: int, name: str) -> str:
    """A folder name per class that sorts in class order and has no path separator."""
    return f"{index}_{name.replace('/', '_')}"


def export_pngs(data_root: str, png_root: str) -> dict:
    """Fashion-MNIST's training and test sets as PNG files under ``png_root`` (skipped when all are there).
    Hand-written: torchvision has no exporter, and this is ten lines."""
    from PIL import Image

    splits = {"train": load_split("fmnist", data_root, True), "test": load_split("fmnist", data_root, False)}
    names = [class_folder(i, n) for i, n in enumerate(CLASS_NAMES["fmnist"])]
    have = {split: sum(len(files) for _, _, files in os.walk(os.path.join(png_root, split))) for split in splits}
    if have == {split: len(data) for split, data in splits.items()}:
        return {"written": 0, "seconds": 0.0}
    shutil.rmtree(png_root, ignore_errors=True)
    t0 = time.perf_counter()
    for split, data in splits.items():
        images = data.x[:, 0].numpy()  # uint8, as stored
        for i, (img, y) in enumerate(zip(images, data.y.tolist())):
            folder = os.path.join(png_root, split, names[y])
            os.makedirs(folder, exist_ok=True)
            Image.fromarray(img).save(os.path.join(folder, f"{i:05d}.png"))
    return {"written": sum(len(data) for data in splits.values()), "seconds": time.perf_counter() - t0}


def load_times(data_root: str, png_root: str) -> dict:
    """Seconds to read the training images: IDX files, the PNGs decoded (empty cache), the cache."""
    shutil.rmtree(os.path.join(png_root, CACHE_DIR), ignore_errors=True)
    out = {}
    for key, name, root in (("idx", "fmnist", data_root), ("png_decode", "folder", png_root),
                            ("png_cached", "folder", png_root)):
        t0 = time.perf_counter()
        data = load_split(name, root, True)
        out[key] = time.perf_counter() - t0
        out[f"{key}_images"] = len(data)
    return out


def save_report(rows: list[dict], args: argparse.Namespace, export: dict, loads: dict, wall: float) -> None:
    by = {r["dataset"]: r for r in rows}
    lines = [f"# Fashion-MNIST through the folder path vs the IDX path ({args.epochs} epochs)", "",
             f"`{command_line('folder_vs_fmnist')}`; {machine_line()}; wall time {wall:.0f} s. The same train.py flags "
             f"(`{args.flags or 'the 2018 best command'} --epochs {args.epochs}`) with `--dataset_type fmnist` and "
             f"with `--dataset_type folder` on the PNG files of the same images, once per seed, interleaved; mean ± "
             "std over seeds. Validation: each run's fold 0 (12,000 images; the folder's files are in another "
             "order, so its fold holds other images); KNN: test accuracy of k = 10 on the posterior means; "
             "seconds per epoch: train.main's seconds / epochs (the data are loaded before).", "",
             "| data | seeds | val BCE+KL | val SSIM | KNN test acc | s / epoch |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['dataset']} | {len(r['seeds'])} | " + " | ".join(cell(r[k], f) for k, f in METRICS) + " |")
    if "fmnist" in by and "folder" in by:
        ref, gen = by["fmnist"], by["folder"]
        lines += [""]
        for key, what in (("val_bce_kl", "val BCE+KL"), ("val_ssim", "val SSIM")):
            lo, hi = min(ref[key]["values"]), max(ref[key]["values"])
            inside = lo <= gen[key]["mean"] <= hi
            lines.append(f"- {what}: folder mean {gen[key]['mean']:.4g}, fmnist seeds span [{lo:.4g}, {hi:.4g}]: "
                         f"{'within' if inside else 'outside'} the fmnist spread")
        ratio = gen["seconds_per_epoch"]["mean"] / ref["seconds_per_epoch"]["mean"]
        lines.append(f"- time per epoch, folder / fmnist: {ratio:.3f} (target at most 1.1)")
    if loads:
        lines.append(f"- reading the {loads['idx_images']:,} training images: IDX {loads['idx']:.2f} s, PNGs decoded "
                     f"{loads['png_decode']:.1f} s (first run: fills the cache), cached {loads['png_cached']:.2f} s")
    if export.get("written"):
        lines.append(f"- writing the {export['written']:,} PNG files: {export['seconds']:.0f} s")
    write_report(args.out, "\n".join(lines), {"epochs": args.epochs, "flags": args.flags, "seeds": args.seeds,
                                              "rows": rows, "export": export, "load_seconds": loads,
                                              "wall_seconds": wall}, command_line("folder_vs_fmnist"))


def main(args: argparse.Namespace) -> list[dict]:
    seeds, runs = start(args, ["fmnist", "folder"])
    t0 = time.perf_counter()
    ensure_raw_files("fmnist", args.data_root)
    export = export_pngs(args.data_root, args.png_root)
    loads = load_times(args.data_root, args.png_root) if len(runs) == 2 else {}
    flags = args.flags.split() + ["--epochs", str(args.epochs)]
    rows: list[dict] = []
    for seed in seeds:
        for name in runs:
            root = args.data_root if name == "fmnist" else args.png_root
            result = run_scored("folder_vs_fmnist", name, seed, flags + ["--dataset_type", name],
                                argparse.Namespace(**{**vars(args), "data_root": root}))
            runs[name].append({**result, "seconds_per_epoch": result["train_seconds"] / result["epochs"]})
            rows = summarise(runs, (k for k, _ in METRICS), lambda n, _: {"dataset": n})
            save_report(rows, args, export, loads, time.perf_counter() - t0)
    print(open(args.out + ".md").read())
    return rows


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
