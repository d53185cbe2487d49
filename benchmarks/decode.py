"""How fast, and in how much memory, a folder of image files becomes one uint8 tensor: vae-lab's
loader (dataio/folders.py: threads, JPEG draft mode, one preallocated tensor, the cache written)
against a plain Pillow loop (open, convert("RGB"), centre crop, resize, np.stack) on the same
files and cores, each in a fresh process, side by side in one run. Files are generated once
(smooth colour fields with noise, so that JPEG has detail to code) under --files.

    python3 -m benchmarks.decode                                   # 20,000 178x218 -> 64, 200 4000x3000 -> 128
    python3 -m benchmarks.decode --small 2000 --big 20 --many 10000  # a quick look

Writes benchmarks/decode.md and .json (--out). Peak memory: the process's resident set sampled
every 2 ms during the decode, minus the resident set before it (imports done: torch, torchvision's
resize, Pillow's plugins), over the final tensor's bytes.
"""
from __future__ import annotations

import argparse
import json
import os
import threading
import time

import numpy as np

from benchmarks.scaffold import ROOT, run_module, write_report
from core.environment import cpu_name

# name -> (files, width, height, --image_size, extension)
SETS = {"small": ("178x218 JPEGs (CelebA's size)", 178, 218, 64, "jpg"),
        "big": ("4000x3000 JPEGs (12 MP photos)", 4000, 3000, 128, "jpg"),
        "many": ("8x8 PNGs in one folder", 8, 8, 8, "png")}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 -m benchmarks.decode", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--small", type=int, default=20_000, help="178x218 JPEGs, decoded to 64x64")
    p.add_argument("--big", type=int, default=200, help="4000x3000 JPEGs, decoded to 128x128")
    p.add_argument("--many", type=int, default=100_000, help="8x8 PNGs in one folder (scan + decode, vae-lab only)")
    p.add_argument("--files", default="/tmp/vae_lab_decode_bench", help="where the generated files go")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "decode"), help="report path, no extension")
    p.add_argument("--one", nargs=3, metavar=("LOADER", "FOLDER", "SIZE"), help=argparse.SUPPRESS)
    return p


def generate(folder: str, n: int, w: int, h: int, ext: str) -> None:
    """``n`` files of ``w`` x ``h`` in ``folder`` (kept: a second run reuses them)."""
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    have = len([f for f in os.listdir(folder) if f.endswith(ext)])
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    for i in range(have, n):
        base = Image.fromarray(np.roll(small, i, axis=(0, 1))).resize((w, h), Image.BILINEAR)
        a = np.asarray(base).astype(np.int16) + rng.integers(-12, 13, (h, w, 1), dtype=np.int16)
        im = Image.fromarray(a.clip(0, 255).astype(np.uint8)[..., :1 if ext == "png" else 3].squeeze())
        im.save(os.path.join(folder, f"{i:06d}.{ext}"), **({"quality": 90} if ext == "jpg" else {}))


class PeakRSS:
    """The resident set's peak above its level at start, sampled in a thread."""

    def __enter__(self):
        self.start, self.peak, self.running = self.rss(), 0, True
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()
        return self

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.rss())
            time.sleep(0.002)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self.rss())
        self.extra = self.peak - self.start


def plain_loop(folder: str, files: list[str], size: int) -> np.ndarray:
    """What one writes without thinking: open, convert, crop, resize, stack."""
    from PIL import Image

    out = []
    for f in files:
        with Image.open(os.path.join(folder, f)) as im:
            im = im.convert("RGB")
            side = min(im.size)
            left, top = (im.width - side) // 2, (im.height - side) // 2
            out.append(np.asarray(im.crop((left, top, left + side, top + side)).resize((size, size))))
    return np.stack(out)


def run_one(loader: str, folder: str, size: int) -> dict:
    """One loader on one folder, in this (fresh) process."""
    import shutil

    import torch
    from PIL import Image

    from dataio import folders
    from dataio.reshape import reshape_images

    torch.set_num_threads(1)  # the decode's threads are the loader's own
    Image.init()  # imports done before the clock starts (a training run has them already)
    reshape_images(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), 4, None)
    shutil.rmtree(os.path.join(folder, folders.CACHE_DIR), ignore_errors=True)
    t0 = time.perf_counter()
    files, _ = folders.scan_folder(folder)
    scan = time.perf_counter() - t0
    if loader == "vae-lab 1 thread":
        folders.DECODE_THREADS = 1
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        if loader == "plain PIL loop":
            x = plain_loop(folder, files, size)
        else:
            x = folders.decoded_images(folder, files, size, None).x
        seconds = time.perf_counter() - t0
    return {"loader": loader, "images": len(files), "scan_s": scan, "decode_s": seconds,
            "images_per_s": len(files) / seconds, "peak_extra_bytes": mem.extra, "tensor_bytes": int(x.nbytes),
            "shape": list(x.shape)}


def main(args: argparse.Namespace) -> list[dict]:
    rows = []
    for key, n in (("small", args.small), ("big", args.big), ("many", args.many)):
        if not n:
            continue
        what, w, h, size, ext = SETS[key]
        folder = os.path.join(args.files, f"{key}_{w}x{h}")
        t0 = time.perf_counter()
        generate(folder, n, w, h, ext)
        print(f"{n} {what}: files ready in {time.perf_counter() - t0:.0f} s", flush=True)
        loaders = ["vae-lab"] if key == "many" else ["plain PIL loop", "vae-lab 1 thread", "vae-lab"]
        for loader in loaders:
            out = run_module("decode", ["--one", loader, folder, str(size)])
            if out.returncode:
                raise SystemExit(out.stderr)
            row = {"set": f"{n:,} {what} -> {size}x{size}", **json.loads(out.stdout.splitlines()[-1])}
            rows.append(row)
            print(f"  {loader}: {row['images_per_s']:.0f} images/s, peak +{row['peak_extra_bytes'] / 2**20:.0f} MiB "
                  f"for a {row['tensor_bytes'] / 2**20:.1f} MiB tensor", flush=True)
    save_report(rows, args)
    return rows


def save_report(rows: list[dict], args: argparse.Namespace) -> None:
    plain = {r["set"]: r["images_per_s"] for r in rows if r["loader"] == "plain PIL loop"}
    lines = [f"Decode benchmark: `python3 -m benchmarks.decode --small {args.small} --big {args.big} --many "
             f"{args.many}`; {os.cpu_count()} cores ({cpu_name()}), Pillow {__import__('PIL').__version__}.", "",
             "| files | loader | images/s | vs plain loop | scan s | decode s | peak memory | final tensor | "
             "peak / tensor |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r['images_per_s'] / plain[r['set']]:.1f}x" if r["set"] in plain else "n/a"
        lines.append(f"| {r['set']} | {r['loader']} | {r['images_per_s']:,.0f} | {ratio} | {r['scan_s']:.2f} | "
                     f"{r['decode_s']:.1f} | {r['peak_extra_bytes'] / 2**20:,.0f} MiB | "
                     f"{r['tensor_bytes'] / 2**20:,.1f} MiB | {r['peak_extra_bytes'] / r['tensor_bytes']:.2f} |")
    write_report(args.out, "\n".join(lines), {"rows": rows})


if __name__ == "__main__":
    a = get_args_parser().parse_args()
    if a.one:
        print(json.dumps(run_one(a.one[0], a.one[1], int(a.one[2]))))
    else:
        main(a)
