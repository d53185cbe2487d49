"""The explorer's HTTP server: the page (page.html, self-contained) and a small JSON API over an
:class:`~serving.decoding.Explorer`.

Served by the standard library's ``ThreadingHTTPServer``: one local user, a dozen routes and JSON
bodies need no web framework, and a framework would be one more dependency for a tool that
trains nothing (threads: a slow decode does not hold back the page's other requests).

API (JSON in and out; an error is ``{"error": "one line"}`` with status 400, 404, 413, or 500 if the model fails):

    GET  /api/info                     model, KL order, the map's plane and points, config, eval numbers
    GET  /api/val/<i>                  validation image i, its code and class
    POST /api/decode      {code, y}    the decoded image (PNG data URL), the milliseconds spent on it (0 when
                                       cached) and those one image took the model when last decoded
    POST /api/sweep       {code, dim, y}   every slider position of one dimension, in one batch
    POST /api/start       {kind, seed}     a code: the prior's mean, a prior or a GMM draw
    POST /api/map         {point, y}   the code of a point of the map's plane, decoded
    POST /api/interpolate {a, b, steps, y} the straight line from code a to code b, decoded
    POST /api/upload?y=Y  (the file's bytes)   an uploaded image, resized like the training data, encoded
"""
from __future__ import annotations

import errno
import json
import os
import re
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from serving.decoding import MAX_UPLOAD_BYTES, BadRequest, Explorer
from utils import VaeLabError

PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "page.html")
MAX_JSON_BYTES = 1 * 2**20  # the largest API body: a code of a few thousand numbers


class ExplorerServer(ThreadingHTTPServer):
    """The server; ``explorer`` is set once the model is loaded (the port is taken first, so a port in
    use is refused before seconds are spent loading)."""

    daemon_threads = True
    explorer: Explorer | None = None

    def handle_error(self, request, client_address) -> None:  # type: ignore[override]
        # a client that goes away mid-answer is no error of ours; anything else is one line, not a traceback
        exc = sys.exc_info()[1]
        if not isinstance(exc, (BrokenPipeError, ConnectionResetError)):
            print(f"explore.py: request from {client_address[0]} failed: {type(exc).__name__}: {exc}",
                  file=sys.stderr)


class Handler(BaseHTTPRequestHandler):
    server: ExplorerServer
    protocol_version = "HTTP/1.1"
    timeout = 60  # seconds a connection may stall mid-request (a body shorter than its Content-Length)

    def setup(self) -> None:
        super().setup()
        # headers and body go out as two writes: without TCP_NODELAY, Nagle's algorithm holds the body until
        # the client's delayed ACK (~40 ms a request, most of a slider frame)
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request would bury the URL and the errors

    # ---------------------------------------------------------------- answers

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        # the page may load nothing from anywhere else: a browser enforces what the tests check
        self.send_header("Content-Security-Policy", "default-src 'self' 'unsafe-inline' data:; "
                                                    "img-src 'self' data:; connect-src 'self'")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, obj: Any, status: int = 200) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        print(f"explore.py: {self.command} {urlparse(self.path).path}: {message}", file=sys.stderr)
        self._json({"error": message}, status)

    # ---------------------------------------------------------------- routes

    def do_GET(self) -> None:
        path = urlparse(self.path).path
        try:
            if path in ("/", "/index.html"):
                with open(PAGE, "rb") as f:
                    self._send(200, f.read(), "text/html; charset=utf-8")
            elif path == "/api/info":
                self._json(self.server.explorer.info())
            elif m := re.fullmatch(r"/api/val/(\d+)", path):
                ex = self.server.explorer
                self._json(ex.val_code(ex.index(int(m.group(1)))))
            else:
                self._error(404, f"no such page: {path}")
        except BadRequest as e:
            self._error(e.status, str(e))
        except Exception as e:  # as in do_POST
            self._error(500, f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else 'failed'}")

    def do_POST(self) -> None:
        url = urlparse(self.path)
        ex = self.server.explorer
        try:
            length = self._length()
            if url.path == "/api/upload":
                if length > MAX_UPLOAD_BYTES:  # refused before reading it
                    self._discard(length)
                    raise BadRequest(f"the upload is {length:,} bytes; at most {MAX_UPLOAD_BYTES:,}", 413)
                y = parse_qs(url.query).get("y", [None])[0]
                label = ex.label(int(y) if y is not None and y.lstrip("-").isdigit() else y)
                self._json(ex.encode_upload(self.rfile.read(length), label))
                return
            if length > MAX_JSON_BYTES:
                self._discard(length)
                raise BadRequest(f"the request is {length:,} bytes; at most {MAX_JSON_BYTES:,}", 413)
            body = self._body(length)
            y = lambda: ex.label(body.get("y"))  # noqa: E731 (the class, for the routes that decode)
            if url.path == "/api/decode":
                code = ex.code(body.get("code"))
                images, ms = ex.decode(code[None], y())
                self._json({"image": images[0], "ms": ms, "decode_ms": ex.single_ms, "point": ex.project(code)})
            elif url.path == "/api/sweep":
                self._json(ex.sweep(ex.code(body.get("code")), body.get("dim"), y()))
            elif url.path == "/api/start":
                code = ex.start_code(body.get("kind"), body.get("seed", 0))
                self._json({"code": code.tolist(), "note": ex.gmm_note if body.get("kind") == "gmm" else ""})
            elif url.path == "/api/map":
                code = ex.map_code(body.get("point"))
                images, ms = ex.decode(code[None], y())
                self._json({"code": code.tolist(), "image": images[0], "ms": ms})
            elif url.path == "/api/interpolate":
                self._json(ex.interpolate(ex.code(body.get("a")), ex.code(body.get("b")), body.get("steps"), y()))
            else:
                self._error(404, f"no such API: {url.path}")
        except BadRequest as e:
            self._error(e.status, str(e))
        except VaeLabError as e:  # e.g. a saved mixture that does not fit: the page says it, the server goes on
            self._error(400, str(e))
        except Exception as e:  # a model that fails on a code: one line, a 500, and the server goes on
            self._error(500, f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else 'failed'}")

    def _length(self) -> int:
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if length < 0:
            raise BadRequest("Content-Length is not a byte count")
        return length

    def _discard(self, length: int) -> None:
        """Read and drop an oversized body in chunks (kept out of memory), so the answer reaches the client."""
        left = length
        while left > 0:
            chunk = self.rfile.read(min(left, 2**16))
            if not chunk:
                break
            left -= len(chunk)

    def _body(self, length: int) -> dict:
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            raise BadRequest("the request body is not JSON") from None
        if not isinstance(body, dict):
            raise BadRequest("the request body is a JSON object")
        return body


def make_server(host: str = "127.0.0.1", port: int = 0) -> ExplorerServer:
    """A server bound to ``host``:``port`` (0: a free port), not yet serving; one line if the port is taken."""
    try:
        return ExplorerServer((host, port), Handler)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise VaeLabError(f"port {port} is in use on {host}; pass another --port, or --port 0 for a free one"
                              ) from None
        raise VaeLabError(f"cannot serve on {host}:{port} ({e.strerror or e})") from None


def url_of(server: ExplorerServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}/"
