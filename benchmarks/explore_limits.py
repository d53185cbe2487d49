"""explore.py's server under hostile input, measured: the memory each hostile upload takes above the idle
server (peak resident set, Linux's VmHWM, reset before each), ten hostile uploads at once, a burst of 50
connections, and what the server refuses with which status.

The server runs in its own process, as `explore.py` does: an untrained fc_conv (28x28 grey, the 2018 shape) on
random validation images by default (what an upload costs does not depend on the weights), or
`explore.py --resume CKPT` itself with --resume.

    python3 -m benchmarks.explore_limits          # writes benchmarks/explore_limits.md / .json
"""
from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time

from benchmarks.scaffold import ROOT, command_line, write_report
from config.parsers import run_cli
from core.environment import cpu_name

BUDGET_MB = 200  # the bound: any accepted upload, above the idle server
# the server an untrained model needs: the product's own make_server and Explorer
UNTRAINED = """
import sys, torch
from config.run_config import RunConfig
from datasets import Split
from models import ModelConfig, build_model
from serving.app import make_server, url_of
from serving.decoding import Explorer
torch.set_num_threads(1)
torch.manual_seed(0)
server = make_server("127.0.0.1", 0)
val = Split(torch.randint(0, 256, (2000, 1, 28, 28), dtype=torch.uint8), torch.arange(2000) % 10)
server.explorer = Explorer(build_model(ModelConfig()), RunConfig(), val)
print(f"explore.py: open {url_of(server)}", flush=True)
server.serve_forever()
"""


def _png(im, **options) -> bytes:
    buf = io.BytesIO()
    im.save(buf, **options)
    return buf.getvalue()


def hostile_files() -> dict[str, tuple[bytes, int]]:
    """Files a hostile page may upload, by name: (bytes, the status the server should answer). Each decodes to
    far more than its size; the accepted ones are the largest of their kind under the limits."""
    import numpy as np
    from PIL import Image

    side = 6320  # 39.9 M pixels: under the 40 M-pixel cap
    bomb = Image.new("P", (side, side), 0)
    bomb.putpalette([0, 0, 0, 255, 255, 255])
    grey16 = Image.fromarray(np.zeros((5600, 5600), np.uint16))  # 5600^2 x 2 bytes: 60 MiB decoded
    return {
        "1-bit palette PNG 6320x6320, transparent (the issue's)": (
            _png(bomb, format="PNG", bits=1, transparency=0), 200),
        "RGBA PNG 4096x4096 (64 MiB decoded)": (_png(Image.new("RGBA", (4096, 4096)), format="PNG"), 200),
        "16-bit grey PNG 5600x5600": (_png(grey16, format="PNG"), 200),
        "GIF 6320x6320": (_png(bomb, format="GIF"), 200),
        "JPEG 6320x6320": (_png(Image.new("L", (side, side)), format="JPEG", quality=10), 200),
        "32-bit float TIFF 1200x1200": (_png(Image.new("F", (1200, 1200)), format="TIFF"), 200),
        "RGB PNG 6320x6320 (152 MiB decoded)": (_png(Image.new("RGB", (side, side)), format="PNG"), 413),
    }


class Server:
    """The explorer in its own process; ``url``, ``pid``; memory read from /proc (Linux)."""

    def __init__(self, resume: str | None = None) -> None:
        cmd = ([sys.executable, os.path.join(ROOT, "explore.py"), "--resume", resume, "--port", "0"] if resume
               else [sys.executable, "-c", UNTRAINED])
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        if "open http://" not in line:
            self.close()
            raise RuntimeError(f"the server did not start: {line!r}")
        self.url = line.split("open ", 1)[1].split()[0]
        self.host, self.port = self.url[len("http://"):].rstrip("/").rsplit(":", 1)
        self.port = int(self.port)
        self.pid = self.proc.pid

    def _status(self, key: str) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))

    def rss(self) -> int:
        return self._status("VmRSS")

    def reset_peak(self) -> None:
        """Start a peak: VmHWM reset (Linux 4.0+), or where /proc forbids it, the resident set sampled every ms."""
        self._sampler = None
        try:
            with open(f"/proc/{self.pid}/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            self._high, self._stop = self.rss(), threading.Event()

            def sample() -> None:
                while not self._stop.wait(0.001):
                    self._high = max(self._high, self.rss())

            self._sampler = threading.Thread(target=sample, daemon=True)
            self._sampler.start()

    def peak(self) -> int:
        """The peak resident set since reset_peak."""
        if self._sampler is None:
            return self._status("VmHWM")
        self._stop.set()
        self._sampler.join()
        return self._high

    def post(self, path: str, body: bytes, headers: dict | None = None, timeout: float = 120) -> tuple[int, dict]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request("POST", path, body=body, headers=headers or {})
            r = conn.getresponse()
            return r.status, json.loads(r.read() or b"{}")
        finally:
            conn.close()

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def upload_memory(server: Server, files: dict[str, tuple[bytes, int]]) -> list[dict]:
    """Each file uploaded alone: status, seconds, and the peak resident set above the idle server (MB)."""
    from PIL import Image

    server.post("/api/upload", _png(Image.new("L", (64, 64)), format="PNG"))  # warm: Pillow's plugins loaded
    rows = []
    for name, (data, want) in files.items():
        time.sleep(0.2)
        idle = server.rss()
        server.reset_peak()
        t0 = time.perf_counter()
        status, answer = server.post("/api/upload", data)
        rows.append({"file": name, "bytes": len(data), "status": status, "want": want,
                     "error": answer.get("error", ""), "seconds": round(time.perf_counter() - t0, 2),
                     "idle_mb": round(idle / 1e6, 1), "peak_above_idle_mb": round((server.peak() - idle) / 1e6, 1)})
    return rows


def concurrent_uploads(server: Server, data: bytes, n: int = 10) -> dict:
    """``n`` uploads of ``data`` at once: their statuses, the slowest's seconds and the peak above idle (MB)."""
    time.sleep(0.2)
    idle = server.rss()
    server.reset_peak()
    statuses: list[int] = []
    t0 = time.perf_counter()
    threads = [threading.Thread(target=lambda: statuses.append(server.post("/api/upload", data)[0]))
               for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"uploads": n, "statuses": sorted(statuses), "seconds": round(time.perf_counter() - t0, 2),
            "peak_above_idle_mb": round((server.peak() - idle) / 1e6, 1)}


def burst(server: Server, n: int = 50, latent_size: int = 10) -> dict:
    """``n`` connections opened at once (all handshakes before any is accepted), each a different decode:
    the seconds from the burst's start to each answer."""
    socks = []
    t0 = time.perf_counter()
    for _ in range(n):
        s = socket.socket(socket.AF_INET6 if ":" in server.host.strip("[]") else socket.AF_INET)
        s.setblocking(False)
        s.connect_ex((server.host.strip("[]"), server.port))
        socks.append(s)
    done: list[tuple[int, float]] = []

    def one(i: int, s: socket.socket) -> None:
        s.setblocking(True)
        s.settimeout(30)
        body = json.dumps({"code": [0.01 * i] + [0.0] * (latent_size - 1)}).encode()
        s.sendall(f"POST /api/decode HTTP/1.1\r\nHost: {server.host}:{server.port}\r\nContent-Length: {len(body)}"
                  f"\r\nConnection: close\r\n\r\n".encode() + body)
        f = s.makefile("rb")
        status = int(f.readline().split()[1])
        f.read()
        done.append((status, time.perf_counter() - t0))
        s.close()

    threads = [threading.Thread(target=one, args=(i, s)) for i, s in enumerate(socks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    times = sorted(t for _, t in done)
    return {"connections": n, "ok": sum(st == 200 for st, _ in done), "median_s": round(times[len(times) // 2], 3),
            "max_s": round(times[-1], 3)}


def refusals(server: Server) -> list[dict]:
    """Malformed and hostile requests, sent raw, and the status each got."""
    hp = f"{server.host}:{server.port}"
    expect = {"Expect": "100-continue"}

    def req(method: str, path: str, body: str = "", headers: dict | None = None, length: bool = True) -> str:
        h = {"Host": hp, **({"Content-Length": str(len(body.encode()))} if length and method == "POST" else {}),
             **(headers or {})}
        return f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n" + body

    cases = [
        ("an upload over 8 MiB, with Expect: 100-continue (50 MB)",
         req("POST", "/api/upload", headers={"Content-Length": "50000000", **expect})),
        ("a JSON body over 1 MiB", req("POST", "/api/decode", headers={"Content-Length": "2000000", **expect})),
        ("a Host that is not the server's (DNS rebinding)",
         req("GET", "/api/info", headers={"Host": f"rebind.example:{server.port}"})),
        ("a text/plain POST from another origin",
         req("POST", "/api/start", "{}", {"Origin": "http://evil.example", "Content-Type": "text/plain"})),
        ("a chunked body", req("POST", "/api/start", "2\r\n{}\r\n0\r\n\r\n", {"Transfer-Encoding": "chunked"},
                               length=False)),
        ("two Content-Lengths", req("POST", "/api/start", "{}", {"Content-Length": "2\r\nContent-Length: 3"})),
        ("no Content-Length", req("POST", "/api/start", length=False)),
        ("GET on a POST route", req("GET", "/api/decode")),
        ("POST on a GET route", req("POST", "/api/info")),
        ("an unknown method", req("BREW", "/api/info")),
        ("a 5,000-digit index", req("GET", "/api/val/" + "9" * 5000)),
        ("JSON nested 100,000 deep", req("POST", "/api/decode", "[" * 100_000 + "]" * 100_000)),
        ("a code holding a 400-digit integer", req("POST", "/api/decode", '{"code": [' + "1" * 400 + ", 0]}")),
        ("NaN in a code", req("POST", "/api/decode", '{"code": [NaN]}')),
        ("a map point of 1e300", req("POST", "/api/map", '{"point": [1e300, 0]}')),
        ("true / false as a map point", req("POST", "/api/map", '{"point": [true, false]}')),
        ("upload ?y=² (a superscript two)", req("POST", "/api/upload?y=%C2%B2", "x")),
        ("an HTTP/2.0 request line", "GET /api/info HTTP/2.0\r\n\r\n"),
        ("a body shorter than its Content-Length (the client stalls)",
         req("POST", "/api/start", "{}", {"Content-Length": "100"})),
    ]
    rows = []
    for what, raw in cases:
        t0 = time.perf_counter()
        with socket.create_connection((server.host.strip("[]"), server.port), timeout=30) as s:
            s.sendall(raw.encode())
            line = s.makefile("rb").readline()
        rows.append({"request": what, "status": int(line.split()[1]) if line else None,
                     "seconds": round(time.perf_counter() - t0, 2)})
    return rows


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 -m benchmarks.explore_limits", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--resume", default=None, help="serve this checkpoint with explore.py (default: an untrained "
                                                  "fc_conv on random images, in its own process)")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "explore_limits.md"))
    return p


def main(args: argparse.Namespace) -> dict:
    files = hostile_files()
    bomb = files["1-bit palette PNG 6320x6320, transparent (the issue's)"][0]
    server = Server(args.resume)
    try:
        res = {"cpu": cpu_name(), "cores": os.cpu_count(), "server": args.resume or "untrained fc_conv, 28x28 grey",
               "idle_rss_mb": round(server.rss() / 1e6, 1), "uploads": upload_memory(server, files),
               "concurrent": concurrent_uploads(server, bomb),
               "burst": burst(server), "refusals": refusals(server)}
    finally:
        server.close()
    lines = ["# explore.py under hostile input", "",
             f"`{command_line('explore_limits')}`; {res['cpu']}, {res['cores']} cores; server: {res['server']} "
             f"(its own process; idle resident set {res['idle_rss_mb']} MB).", "",
             "| upload | file bytes | status | seconds | peak above idle (MB) |", "|---|---|---|---|---|"]
    lines += [f"| {r['file']} | {r['bytes']:,} | {r['status']} | {r['seconds']} | {r['peak_above_idle_mb']} |"
              for r in res["uploads"]]
    c, b = res["concurrent"], res["burst"]
    lines += ["", f"Ten uploads of the palette PNG at once: statuses {c['statuses']}, all answered in "
                  f"{c['seconds']} s, peak {c['peak_above_idle_mb']} MB above idle.", "",
              f"A burst of {b['connections']} connections at once (each a different decode): {b['ok']} answered 200, "
              f"median {b['median_s']} s, slowest {b['max_s']} s after the burst began.", "",
              "| request | status | answered after (s) |", "|---|---|---|"]
    lines += [f"| {r['request']} | {r['status']} | {r['seconds']} |" for r in res["refusals"]]
    write_report(args.out, "\n".join(lines), res, command_line("explore_limits"))
    print("\n".join(lines))
    return res


if __name__ == "__main__":
    sys.exit(run_cli(lambda a: main(a) and None, get_args_parser()))
