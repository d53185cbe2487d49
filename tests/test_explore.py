"""explore.py: the page's API decodes what the model decodes, refuses bad input with one line and keeps
serving; the command line's errors; and the page itself, driven in headless Chromium (Playwright)."""
from __future__ import annotations

import io
import json
import os
import shutil
import socket
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch

import explore
from helpers import assert_cli_error, run_cli, run_module_cli, tiny_args
from serving import decoding
from serving.app import make_server, url_of
from serving.decoding import SLIDER_STEPS, Explorer

CHROMIUM = os.environ.get("VAE_LAB_CHROMIUM", "/usr/bin/chromium")


# ---------------------------------------------------------------- a tiny trained run, served


@pytest.fixture(scope="module")
def run_dir(tiny_mnist, tmp_path_factory) -> str:
    """A tiny fc_conv run (one epoch on tiny_mnist) and an eval JSON beside it."""
    out = tmp_path_factory.mktemp("explore_run")
    weights = str(out / "weights")
    cwd = os.getcwd()
    os.chdir(out)  # tb_logs/ and results/ land here
    try:
        code, _, err = run_cli(tiny_args(tiny_mnist, "--weights_dir", weights, "--tensorboard", "False"))
    finally:
        os.chdir(cwd)
    assert code == 0, err
    with open(os.path.join(weights, "r_eval.json"), "w") as f:  # what train.py --evaluate writes, in short
        json.dump({"val": {"n": 100, "bce_kl": 321.5}, "test": {"n": 100, "bce_kl": 322.25}}, f)
    return weights


@pytest.fixture(scope="module")
def served(run_dir):
    """The explorer of the run, served on a free port in a thread: (base URL, explorer)."""
    server = make_server("127.0.0.1", 0)
    server.explorer = Explorer.from_checkpoint(os.path.join(run_dir, "r_best.pth.tar"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield url_of(server), server.explorer
    server.shutdown()
    server.server_close()


def call(base: str, path: str, body=None, raw: bytes | None = None) -> tuple[int, dict]:
    """(status, JSON answer) of a GET (no body) or POST to the API."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(base.rstrip("/") + path, data=data, method="GET" if data is None else "POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def pixels(data_url: str) -> np.ndarray:
    """A PNG data URL's pixels (H, W, C) uint8."""
    import base64

    from PIL import Image

    a = np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))))
    return a[..., None] if a.ndim == 2 else a


def as_uint8(image: torch.Tensor) -> np.ndarray:
    """The model's image (C, H, W) in [0, 1] as 8-bit pixels (H, W, C), rounded to nearest."""
    return (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


# ---------------------------------------------------------------- the API


def test_info_orders_the_sliders_by_kl_and_carries_the_run(served):
    base, ex = served
    status, info = call(base, "/api/info")
    assert status == 200
    kl = np.array(info["kl"])
    assert info["latent_size"] == ex.model.latent_size == len(kl) == len(info["order"])
    assert list(kl[info["order"]]) == sorted(kl, reverse=True)
    assert len(info["map"]["points"]) == len(info["map"]["classes"]) == min(len(ex.val), decoding.MAP_POINTS)
    assert info["config"]["model_type"] == "fc_conv" and "device" not in info["config"]
    assert info["evaluation"]["splits"]["val"]["bce_kl"] == 321.5
    assert info["levels_note"] == ""  # one latent level


def test_decode_is_the_models_decode_and_is_cached(served):
    base, ex = served
    code = torch.randn(ex.model.latent_size, generator=torch.Generator().manual_seed(3))
    status, r = call(base, "/api/decode", {"code": code.tolist()})
    assert status == 200
    with torch.no_grad():
        want = as_uint8(ex.model.decode(code[None])[0])
    np.testing.assert_array_equal(pixels(r["image"]), want)
    hits = ex.hits
    status, again = call(base, "/api/decode", {"code": code.tolist()})
    assert again["image"] == r["image"] and ex.hits == hits + 1
    # another code, another image
    status, other = call(base, "/api/decode", {"code": (code + 2).tolist()})
    assert not np.array_equal(pixels(other["image"]), want)


def test_a_sweep_holds_every_slider_position_decoded(served):
    base, ex = served
    _, info = call(base, "/api/info")
    dim = info["order"][0]
    code = ex.mu[0].clone()
    status, r = call(base, "/api/sweep", {"code": code.tolist(), "dim": dim})
    assert status == 200 and len(r["images"]) == len(SLIDER_STEPS)
    for k in (0, 17, len(SLIDER_STEPS) - 1):
        c = code.clone()
        c[dim] = float(SLIDER_STEPS[k])
        np.testing.assert_array_equal(pixels(r["images"][k]), as_uint8(ex.decode_image(c, None)))
    # the frames of a sweep are cached: the single decode of a position asks the model nothing
    misses = ex.misses
    c = code.clone()
    c[dim] = float(SLIDER_STEPS[5])
    _, single = call(base, "/api/decode", {"code": c.tolist()})
    assert single["image"] == r["images"][5] and ex.misses == misses


def test_map_points_and_interpolations_decode_the_right_codes(served):
    base, ex = served
    status, r = call(base, "/api/map", {"point": [0.0, 0.0]})
    assert status == 200
    np.testing.assert_allclose(r["code"], ex.centre.tolist(), atol=1e-6)
    status, r = call(base, "/api/map", {"point": [1.5, -0.5]})
    np.testing.assert_allclose(ex.project(torch.tensor(r["code"])), [1.5, -0.5], atol=1e-5)
    a, b = ex.mu[0], ex.mu[1]
    status, r = call(base, "/api/interpolate", {"a": a.tolist(), "b": b.tolist(), "steps": 5})
    assert status == 200 and len(r["images"]) == 5
    np.testing.assert_array_equal(pixels(r["images"][0]), as_uint8(ex.decode_image(a, None)))
    np.testing.assert_array_equal(pixels(r["images"][-1]), as_uint8(ex.decode_image(b, None)))
    np.testing.assert_allclose(r["codes"][2], ((a + b) / 2).tolist(), atol=1e-6)


def test_start_codes_prior_mean_prior_and_gmm_draws(served, run_dir):
    base, ex = served
    before = sorted(os.listdir(run_dir))
    _, mean = call(base, "/api/start", {"kind": "mean"})
    assert mean["code"] == [0.0] * ex.model.latent_size
    _, p1 = call(base, "/api/start", {"kind": "prior", "seed": 1})
    _, p2 = call(base, "/api/start", {"kind": "prior", "seed": 1})
    assert p1["code"] == p2["code"] != mean["code"]
    status, g = call(base, "/api/start", {"kind": "gmm", "seed": 1})
    assert status == 200 and len(g["code"]) == ex.model.latent_size and "not saved" in g["note"]
    assert sorted(os.listdir(run_dir)) == before  # the mixture stays in memory


def test_an_upload_is_decoded_like_the_training_files_and_encoded(served, run_dir):
    base, ex = served
    before = sorted(os.listdir(run_dir))
    rgba = np.zeros((40, 50, 4), np.uint8)
    rgba[5:35, 10:40] = (200, 30, 30, 255)  # an opaque red square, the rest transparent (white background)
    status, r = call(base, "/api/upload", raw=png_bytes(rgba))
    assert status == 200, r
    got = pixels(r["image"])
    assert got.shape == (28, 28, 1) and r["size"] == [50, 40] and r["format"] == "PNG"
    assert got[0, 0, 0] == 255 and got[14, 14, 0] < 120  # white around, the square's grey in the middle
    x = torch.from_numpy(got.copy()).permute(2, 0, 1).float() / 255
    with torch.no_grad():
        mu, _ = ex.model.posterior(x[None])
    np.testing.assert_allclose(r["code"], mu[0].tolist(), atol=1e-5)
    assert sorted(os.listdir(run_dir)) == before  # never written anywhere


def test_bad_requests_get_one_line_and_the_server_keeps_serving(served, monkeypatch, capsys):
    base, ex = served
    status, r = call(base, "/api/decode", {"code": [0.0, 1.0, 2.0]})
    assert status == 400 and r["error"] == f"the code has 3 numbers; this model's latent size is {ex.model.latent_size}"
    assert call(base, "/api/decode", {"code": ["a"] * ex.model.latent_size})[0] == 400
    assert call(base, "/api/decode", {"code": [float("inf")] * ex.model.latent_size})[0] == 400
    assert call(base, "/api/decode", raw=b"{not json")[1]["error"].startswith("the request body is not JSON")
    assert call(base, "/api/sweep", {"code": [0.0] * ex.model.latent_size, "dim": 99})[0] == 400
    assert call(base, "/api/interpolate", {"a": [0.0] * ex.model.latent_size, "b": [0.0] * ex.model.latent_size,
                                           "steps": 1000})[0] == 400
    assert call(base, "/api/val/999999")[0] == 400
    assert call(base, "/api/nothing")[0] == 404
    status, r = call(base, "/api/upload", raw=b"%PDF-1.4 not an image")
    assert status == 400 and r["error"].startswith("not an image file")
    status, r = call(base, "/api/upload", raw=b"\0" * (decoding.MAX_UPLOAD_BYTES + 1))
    assert status == 413 and "at most" in r["error"]
    monkeypatch.setattr(decoding, "MAX_UPLOAD_PIXELS", 100)
    status, r = call(base, "/api/upload", raw=png_bytes(np.zeros((20, 20), np.uint8)))
    assert status == 413 and r["error"].startswith("the image is 20x20 = 400 pixels")
    err = capsys.readouterr().err
    assert "Traceback" not in err and "the code has 3 numbers" in err
    assert all(line.startswith("explore.py: ") for line in err.splitlines() if line.strip())
    assert call(base, "/api/info")[0] == 200  # still serving


def test_a_cvae_decodes_each_class_and_an_hvae_says_what_its_lower_level_is():
    from datasets import Split
    from models import ModelConfig, build_model

    torch.manual_seed(0)
    val = Split(torch.randint(0, 256, (60, 1, 28, 28), dtype=torch.uint8), torch.arange(60) % 10)
    cvae = Explorer(build_model(ModelConfig(conditional=True)), explore_cfg(), val)
    code = torch.zeros(10)
    assert pixels(cvae.decode(code[None], 0)[0][0]).tolist() != pixels(cvae.decode(code[None], 1)[0][0]).tolist()
    with pytest.raises(decoding.BadRequest, match="needs a class"):
        cvae.label(None)
    server = make_server("127.0.0.1", 0)  # over HTTP: the class is asked for where a decode needs it
    server.explorer = cvae
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = url_of(server)
        status, r = call(base, "/api/decode", {"code": code.tolist()})
        assert status == 400 and "needs a class" in r["error"]
        assert call(base, "/api/decode", {"code": code.tolist(), "y": 3})[0] == 200
        assert call(base, "/api/start", {"kind": "prior", "seed": 2})[0] == 200  # a code needs no class
        status, r = call(base, "/api/upload?y=12", raw=png_bytes(np.zeros((28, 28), np.uint8)))
        assert status == 400 and "needs a class" in r["error"]
        assert call(base, "/api/upload?y=4", raw=png_bytes(np.zeros((28, 28), np.uint8)))[0] == 200
    finally:
        server.shutdown()
        server.server_close()
    hvae = Explorer(build_model(ModelConfig(model_type="hvae")), explore_cfg(), val)
    assert "lower levels are at their mean" in hvae.info()["levels_note"]
    np.testing.assert_array_equal(pixels(hvae.decode(code[None], None)[0][0]),
                                  as_uint8(hvae.model.eval().decode(code[None])[0]))


def test_a_model_that_fails_is_a_500_with_one_line_and_the_server_goes_on(served, monkeypatch, capsys):
    base, ex = served

    def broken(z, y=None):
        raise RuntimeError("shapes do not match\nsecond line")

    monkeypatch.setattr(ex.model, "decode", broken)
    status, r = call(base, "/api/decode", {"code": [7.5] * ex.model.latent_size})
    assert status == 500 and r["error"] == "RuntimeError: shapes do not match"
    assert "Traceback" not in capsys.readouterr().err
    monkeypatch.undo()
    assert call(base, "/api/decode", {"code": [7.5] * ex.model.latent_size})[0] == 200


def explore_cfg():
    from config.run_config import RunConfig

    return RunConfig()


# ---------------------------------------------------------------- the command line


def test_cli_errors_are_one_line_exit_2(run_dir, tmp_path):
    code, _, err = run_module_cli(explore, ["--resume", str(tmp_path / "none.pth.tar")])
    assert_cli_error(code, err, "does not exist", prog="explore.py")
    foreign = tmp_path / "foreign.pth.tar"
    torch.save({"weights": torch.zeros(3)}, foreign)  # a PyTorch file, not a checkpoint
    code, _, err = run_module_cli(explore, ["--resume", str(foreign)])
    assert_cli_error(code, err, "foreign.pth.tar", prog="explore.py")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = run_module_cli(explore, ["--resume", os.path.join(run_dir, "r_best.pth.tar"),
                                                "--port", str(port)])
    assert_cli_error(code, err, f"port {port} is in use", prog="explore.py")
    code, _, err = run_module_cli(explore, ["--resume", "x", "--port", "70000"])
    assert_cli_error(code, err, "--port", prog="explore.py")


# ---------------------------------------------------------------- the page, in headless Chromium


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (Debian's, driven by Playwright); skipped without it, except where CI installs it."""
    from conftest import missing  # skip, or fail under VAE_LAB_REQUIRE_DATA=1 (CI installs both)

    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright is not installed (pip install -r requirements.txt)")
    if not os.path.isfile(CHROMIUM) and not shutil.which("chromium"):
        missing(f"Chromium is absent ({CHROMIUM}): apt-get install chromium")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM if os.path.isfile(CHROMIUM) else shutil.which("chromium"),
                              args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser, served):
    """The page loaded, every request it makes recorded (any not to its own server is aborted)."""
    base, _ = served
    # bypass_csp: the page's CSP forbids eval, which Playwright's wait_for_function uses; requests are checked below
    context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
    requests: list[str] = []

    def route(r):
        requests.append(r.request.url)
        r.continue_() if r.request.url.startswith(base) or r.request.url.startswith("data:") else r.abort()

    context.route("**/*", route)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(base)
    pg.wait_for_selector("body[data-ready='1']", timeout=30_000)
    settle(pg)
    yield pg, requests
    assert not errors, errors
    context.close()


def settle(pg) -> None:
    """Wait until no decode is queued or in flight."""
    pg.wait_for_function("!window.explorer.inflight && !window.explorer.pending", timeout=30_000)


SHOWN = """async (sel) => {  // the pixels the page shows in <img> sel, as the browser decoded them
  const img = document.querySelector(sel); await img.decode();
  const c = document.createElement("canvas"); c.width = img.naturalWidth; c.height = img.naturalHeight;
  const ctx = c.getContext("2d"); ctx.drawImage(img, 0, 0);
  return Array.from(ctx.getImageData(0, 0, c.width, c.height).data);
}"""


def shown(pg, ex, sel: str = "#main") -> np.ndarray:
    """The displayed image (H, W, C) uint8, as the model's channels."""
    c, h, w = ex.model.image_shape
    rgba = np.array(pg.evaluate(SHOWN, sel), np.uint8).reshape(h, w, 4)
    return rgba[..., :1] if c == 1 else rgba[..., :3]


def current(pg) -> torch.Tensor:
    return torch.tensor(pg.evaluate("window.explorer.code"), dtype=torch.float32)


def test_page_slider_shows_the_servers_decode(page, served):
    pg, requests = page
    base, ex = served
    np.testing.assert_array_equal(shown(pg, ex), as_uint8(ex.decode_image(current(pg), None)))
    dim = ex.order[0]
    before = shown(pg, ex)
    slider = pg.locator(f"#z{dim}")
    slider.focus()  # asks for the sweep of this dimension
    pg.wait_for_function("window.explorer.sweep && window.explorer.sweep.images", timeout=30_000)
    slider.press("End")  # the top position: a frame of the sweep
    pg.wait_for_function(f"window.explorer.code[{dim}] === {float(SLIDER_STEPS[-1])}")
    code = current(pg)
    assert code[dim] == float(SLIDER_STEPS[-1])
    after = shown(pg, ex)
    assert not np.array_equal(before, after)
    np.testing.assert_array_equal(after, as_uint8(ex.decode_image(code, None)))
    for _ in range(3):  # back down, frame by frame
        slider.press("ArrowLeft")
    settle(pg)
    code = current(pg)
    assert code[dim] == float(SLIDER_STEPS[-4])
    np.testing.assert_array_equal(shown(pg, ex), as_uint8(ex.decode_image(code, None)))
    assert all(u.startswith(base) for u in requests), [u for u in requests if not u.startswith(base)]


def test_page_map_click_interpolation_and_uploads(page, served):
    pg, requests = page
    base, ex = served
    old = pg.evaluate("JSON.stringify(window.explorer.code)")
    pg.locator("#map").click(position={"x": 250, "y": 70})
    pg.wait_for_function("(old) => JSON.stringify(window.explorer.code) !== old", arg=old)
    settle(pg)
    code = current(pg)
    point = pg.evaluate("window.explorer.point")
    np.testing.assert_allclose(code.tolist(), ex.map_code(point).tolist(), atol=1e-5)
    np.testing.assert_array_equal(shown(pg, ex), as_uint8(ex.decode_image(code, None)))

    pg.fill("#interp-steps", "6")
    pg.click("#interp-run")
    pg.wait_for_function("document.querySelectorAll('#interp img').length === 8")
    a = torch.tensor(pg.evaluate("window.explorer.ends.a.code"))
    np.testing.assert_array_equal(shown(pg, ex, "#interp figure:nth-child(2) img"), as_uint8(ex.decode_image(a, None)))

    square = np.zeros((30, 30, 3), np.uint8)
    square[8:22, 8:22] = 255
    pg.set_input_files("#b-file", files=[{"name": "square.png", "mimeType": "image/png", "buffer": png_bytes(square)}])
    pg.wait_for_function("window.explorer.ends.b && window.explorer.ends.b.what.startsWith('square.png')")
    assert shown(pg, ex, "#b-img")[14, 14, 0] == 255 and shown(pg, ex, "#b-img")[0, 0, 0] == 0
    pg.click("#interp-run")
    pg.wait_for_function("document.querySelector('#interp-timing').textContent.includes('square.png')")

    assert not pg.is_visible("#error")
    pg.set_input_files("#a-file", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello"}])
    pg.wait_for_selector("#error", state="visible")
    assert pg.inner_text("#error").startswith("not an image file")
    pg.click("#reset-prior")  # the server still answers, and a success clears the error
    pg.wait_for_selector("#error", state="hidden")
    assert all(u.startswith(base) for u in requests), [u for u in requests if not u.startswith(base)]


def test_page_works_with_a_slow_decoder_frame_by_frame(page, served, monkeypatch):
    """A model whose decode takes long (an autoregressive one, say): no sweeps, the latest position wins."""
    import time

    pg, requests = page
    base, ex = served
    fast = ex.model.decode

    def slow(z, y=None):
        time.sleep(0.15)
        return fast(z, y)

    monkeypatch.setattr(ex.model, "decode", slow)
    call(base, "/api/decode", {"code": torch.full((ex.model.latent_size,), 0.123).tolist()})  # measured slow
    assert ex.single_ms > 150
    pg.reload()
    pg.wait_for_selector("body[data-ready='1']", timeout=30_000)
    settle(pg)
    dim = ex.order[1]
    slider = pg.locator(f"#z{dim}")
    slider.focus()
    for _ in range(4):
        slider.press("ArrowRight")
    settle(pg)
    code = current(pg)
    np.testing.assert_array_equal(shown(pg, ex), as_uint8(ex.decode_image(code, None)))
    assert not any("/api/sweep" in u for u in requests)
    assert "the model takes" in pg.inner_text("#timing")


# ---------------------------------------------------------------- the page against hostile names, at any width


@pytest.fixture(scope="module")
def hostile_base():
    """An untrained model whose class names, paths and config hold HTML (test_explore_security.py), served."""
    from test_explore_security import hostile_explorer, serve

    server = serve(hostile_explorer())
    yield url_of(server)
    server.shutdown()
    server.server_close()


def open_page(browser, base: str, width: int, height: int, **options):
    """A new context (the page's own Content-Security-Policy unless options bypass it) with the page loaded
    and ready; the uncaught errors it raises are collected in ``pg.errors``."""
    context = browser.new_context(viewport={"width": width, "height": height}, **options)
    pg = context.new_page()
    pg.errors = []
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.goto(base)
    pg.wait_for_selector("body[data-ready='1']", timeout=30_000)
    return context, pg


def test_page_shows_html_in_names_and_paths_as_text_and_runs_no_inline_script(browser, hostile_base):
    from test_explore_security import XSS

    context, pg = open_page(browser, hostile_base, 1280, 900)  # the page's own CSP: its script is /page.js
    try:
        assert pg.evaluate("window.__xss") is None and pg.locator("img[src='x']").count() == 0
        assert XSS in pg.inner_text("#legend") and XSS in pg.inner_text("#model") and XSS in pg.inner_text("#eval")
        pg.click("details summary")
        assert "/data/<img src=x onerror=" in pg.inner_text("#config")  # JSON.stringify escapes its quotes
        assert XSS in pg.get_attribute("#thumbs img", "title")
        # and were HTML inserted all the same, the Content-Security-Policy would run none of its script
        pg.evaluate(f"document.body.insertAdjacentHTML('beforeend', {json.dumps(XSS)})")
        pg.wait_for_timeout(300)
        assert pg.evaluate("window.__xss") is None
        assert not pg.errors, pg.errors
    finally:
        context.close()


@pytest.mark.parametrize("width, height", [(800, 900), (390, 844)])
def test_page_layout_fits_800_px_and_a_phone(browser, hostile_base, tmp_path, width, height):
    """Every slider keeps a track to drag, the map and the decoded image stay on screen, nothing scrolls
    sideways; the screenshot is left in tmp_path to look at."""
    context, pg = open_page(browser, hostile_base, width, height)
    try:
        pg.screenshot(path=str(tmp_path / f"explore_{width}.png"), full_page=True)
        box = pg.evaluate("""() => {
            const r = (e) => { const b = e.getBoundingClientRect(); return [b.left, b.right, b.width]; };
            return { tracks: Array.from(document.querySelectorAll("#sliders input[type=range]")).map((s) => r(s)[2]),
                     map: r(document.getElementById("map")), main: r(document.getElementById("main")),
                     scroll: document.documentElement.scrollWidth, inner: window.innerWidth };
        }""")
        assert len(box["tracks"]) == 10 and min(box["tracks"]) >= 60, box["tracks"]
        for what in ("map", "main"):
            left, right, w = box[what]
            assert left >= 0 and right <= box["inner"] and w >= 150, (what, box[what], box["inner"])
        assert box["scroll"] <= box["inner"], box
        # a click on the scaled-down map still decodes the point under the pointer
        old = pg.evaluate("JSON.stringify(window.explorer.code)")
        pg.locator("#map").click(position={"x": 20, "y": 20})
        for _ in range(100):  # polled here: wait_for_function needs eval, which the page's CSP forbids
            if pg.evaluate("JSON.stringify(window.explorer.code)") != old:
                break
            pg.wait_for_timeout(100)
        assert pg.evaluate("JSON.stringify(window.explorer.code)") != old
        assert not pg.errors, pg.errors
    finally:
        context.close()
