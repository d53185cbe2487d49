"""How long a slider frame of explore.py's page takes: the page served in-process, driven in headless
Chromium (Playwright on the system's /usr/bin/chromium), each frame timed in the page from the slider's
input event to the new image decoded by the browser and the next animation frame.

Two kinds of frame: *batched* (the slider was touched, so the page fetched every position of that
dimension in one batched decode, and a frame is a lookup) and *single* (a position the page has not
got: one request to the server, one uncached model.decode, the PNG, the answer). Beside them, the
server's own times: one image decoded (model.decode + PNG), and a slider's 81 positions in one batch.

Models: the 2018 checkpoint (the published weights: --reference, by default $VAE_LAB_2018_CHECKPOINT or
weights/2018/; when absent, one line says how to download it) and the `--preset best` and `--preset hvae`
models as built (their initial weights: the time of a decode does not depend on the weights' values), all on
the Fashion-MNIST validation split (28x28).

    python3 -m benchmarks.explore_latency                       # writes benchmarks/explore_latency.md / .json
    python3 -m benchmarks.explore_latency --screenshot docs/img/explore_page.png   # also the README's picture
"""
from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import threading

import torch

from benchmarks.scaffold import ROOT, command_line, write_report
from config.parsers import run_cli
from config.run_config import PRESETS, RunConfig, data_options, model_config
from core.environment import cpu_name
from datasets import train_val_split
from fileio.atomic import atomic_write
from models import build_model
from runtime.checkpoints import load_model
from runtime.published_2018 import checkpoint_2018, require_checkpoint_2018
from serving.app import make_server, url_of
from serving.decoding import SLIDER_STEPS, Explorer

BUDGET_MS = 50  # the target for a frame, 28x28 models on 2 cores

# Runs in the page: `frames` slider moves of dimension `dim`, each timed from the input event to the image
# decoded by the browser and the next animation frame. `batched`: after the page fetched the slider's batch.
FRAMES_JS = """async ([dim, frames, batched]) => {
  const S = window.explorer, s = document.getElementById(`z${dim}`), img = document.getElementById("main");
  const until = async (ok, ms) => {  // wait for ok(), polling; a hang is an error, not a stuck benchmark
    const end = performance.now() + 30000;
    while (!ok()) {
      if (performance.now() > end) throw new Error("page stuck");
      await new Promise((r) => setTimeout(r, ms));
    }
  };
  const idle = () => until(() => !S.inflight && !S.pending, 0);
  if (batched) { s.focus(); await until(() => S.sweep && S.sweep.images, 5); }
  else { S.lastMs = 1e9; s.blur(); }  // no batch: every position is one request
  const times = [], n = S.info.slider_steps.length;
  for (let k = 0; k < frames; k++) {
    const idx = (k * 7 + 3) % n;  // positions spread over the slider, none repeated before n frames
    const t0 = performance.now();
    s.value = idx; s.dispatchEvent(new Event("input"));
    await idle(); await img.decode(); await new Promise((r) => requestAnimationFrame(r));
    times.push(performance.now() - t0);
  }
  return times;
}"""


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 -m benchmarks.explore_latency", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--frames", type=int, default=60, help="slider frames timed per model and kind")
    p.add_argument("--repeats", type=int, default=30, help="server-side decodes timed per model")
    p.add_argument("--data_root", default="data", help="Fashion-MNIST (found in Debian's package as training finds it)")
    p.add_argument("--threads", type=int, default=1, help="torch threads while serving (explore.py --threads)")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("--reference", default=checkpoint_2018(),
                   help="the 2018 checkpoint ($VAE_LAB_2018_CHECKPOINT, else weights/2018/)")
    p.add_argument("--screenshot", default="", help="also save a screenshot of the page (the 2018 model) here")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "explore_latency"),
                   help="report path, no extension")
    return p


def models(data_root: str, reference: str):
    """(name, model, config) of each model timed."""
    model, cfg = load_model(reference)
    yield "2018 (fc_conv, published weights)", model, cfg.replace(data_root=data_root)
    for preset in ("best", "hvae"):
        cfg = RunConfig(**{k: v for k, v in PRESETS[preset].items()}, preset=preset, data_root=data_root)
        torch.manual_seed(0)
        yield f"--preset {preset} ({cfg.model_type}, initial weights)", build_model(model_config(cfg)), cfg


def server_times(ex: Explorer, repeats: int) -> dict:
    """Median ms of one image (uncached: model.decode + PNG) and of a slider's positions in one batch."""
    g = torch.Generator().manual_seed(1)
    one, batch = [], []
    for _ in range(repeats):
        code = torch.randn(ex.model.latent_size, generator=g)
        one.append(ex.decode(code[None], None)[1])
        batch.append(ex.sweep(torch.randn(ex.model.latent_size, generator=g), ex.order[0], None)["ms"])
    return {"server_one_ms": statistics.median(one), "server_batch_ms": statistics.median(batch)}


def summary(times: list[float]) -> dict:
    q = sorted(times)
    return {"median_ms": statistics.median(q), "p95_ms": q[min(len(q) - 1, round(0.95 * (len(q) - 1)))],
            "max_ms": q[-1]}


def main(args: argparse.Namespace) -> list[dict]:
    require_checkpoint_2018(args.reference)  # before the browser starts: one line saying where to get it
    from playwright.sync_api import sync_playwright

    rows = []
    train, val = None, None
    cores = torch.get_num_threads()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
        for name, model, cfg in models(args.data_root, args.reference):
            if val is None:
                train, val = train_val_split(cfg.dataset_type, cfg.data_root, cfg.fold, cfg.num_folds, cfg.seed,
                                             **data_options(cfg))
            torch.set_num_threads(cores)  # loading uses every core, serving --threads (as explore.py does)
            ex = Explorer(model, cfg, val, train, args.reference if name.startswith("2018") else "")
            torch.set_num_threads(args.threads)
            row = {"model": name, "family": model.family, "image": "x".join(map(str, model.image_shape)),
                   **server_times(ex, args.repeats)}
            server = make_server("127.0.0.1", 0)
            server.explorer = ex
            threading.Thread(target=server.serve_forever, daemon=True).start()
            page = browser.new_page(viewport={"width": 1280, "height": 860}, bypass_csp=True)
            page.goto(url_of(server))
            page.wait_for_selector("body[data-ready='1']", timeout=60_000)
            for kind, batched in (("batched", True), ("single", False)):
                ex._cache.clear()  # every frame's image decoded anew (the batch, or each single request)
                times = page.evaluate(FRAMES_JS, [ex.order[0] if batched else ex.order[1], args.frames, batched])
                row[kind] = summary(times)
            if args.screenshot and name.startswith("2018"):
                screenshot(page, args.screenshot)
            page.close()
            server.shutdown()
            server.server_close()
            rows.append(row)
            print(f"{name}: batched frame {row['batched']['median_ms']:.1f} ms (p95 {row['batched']['p95_ms']:.1f}), "
                  f"single {row['single']['median_ms']:.1f} ms (p95 {row['single']['p95_ms']:.1f}); server one "
                  f"{row['server_one_ms']:.1f} ms, {len(SLIDER_STEPS)} in a batch {row['server_batch_ms']:.1f} ms",
                  flush=True)
        browser.close()
    save_report(rows, args)
    return rows


def screenshot(page, path: str) -> None:
    """The page after a slider move and an interpolation, as a user sees it."""
    page.reload()
    page.wait_for_selector("body[data-ready='1']", timeout=60_000)
    slider = page.locator(".slider input").first  # the dimension of most KL
    slider.focus()
    for _ in range(8):
        slider.press("ArrowRight")
    page.fill("#interp-steps", "12")
    page.fill("#b-index", "7")
    page.click("#b-val")
    page.wait_for_timeout(300)
    page.click("#interp-run")
    page.wait_for_function("document.querySelectorAll('#interp img').length === 14")
    page.locator("#map").click(position={"x": 210, "y": 120})
    page.wait_for_timeout(500)
    page.evaluate("window.scrollTo(0, 0)")
    from PIL import Image

    im = Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")
    # lossless: a palette of a few hundred colours tinted the grey images (the greys and the class colours compete)
    atomic_write(path, lambda f: im.save(f, format="PNG", optimize=True))
    print(f"wrote {path} ({im.width}x{im.height})")


def save_report(rows: list[dict], args: argparse.Namespace) -> None:
    cpu, cores = cpu_name(), os.cpu_count()
    lines = [f"Slider frame latency of explore.py's page: `python3 -m benchmarks.explore_latency --frames "
             f"{args.frames}`; {cores} cores ({cpu}), torch {torch.__version__} (`--threads {args.threads}` while "
             "serving), headless Chromium, page and server on the same machine. A frame: slider input event -> "
             f"image decoded by the browser -> next animation frame; median and p95 of {args.frames}. "
             f"Budget: {BUDGET_MS} ms.", "",
             "| model | image | batched frame ms (p95) | single frame ms (p95) | server: one image ms | "
             f"server: {len(SLIDER_STEPS)} positions in a batch ms |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['image']} | {r['batched']['median_ms']:.1f} "
                     f"({r['batched']['p95_ms']:.1f}) | {r['single']['median_ms']:.1f} ({r['single']['p95_ms']:.1f}) | "
                     f"{r['server_one_ms']:.1f} | "
                     f"{r['server_batch_ms']:.1f} |")
    worst = max(max(r["batched"]["p95_ms"], r["single"]["p95_ms"]) for r in rows)
    lines += ["", "A frame ends at the browser's next animation frame (60 Hz, one every ~16.7 ms): a frame's time "
                  "includes the wait for it.",
              "", f"Slowest p95 frame: {worst:.1f} ms: the {BUDGET_MS} ms budget is "
                  f"{'met' if worst < BUDGET_MS else 'not met'} for every model and kind of frame."]
    write_report(args.out, "\n".join(lines), {"rows": rows, "threads": args.threads, "frames": args.frames,
                                              "budget_ms": BUDGET_MS}, command_line("explore_latency"))


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))
