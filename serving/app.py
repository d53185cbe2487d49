"""The explorer's HTTP server: the page (page.html and its script page.js) and a small JSON API over an
:class:`~serving.decoding.Explorer`.

Served by the standard library's ``ThreadingHTTPServer``: one local user, a dozen routes and JSON
bodies need no web framework, and a framework would be one more dependency for a tool that
trains nothing (threads: a slow decode does not hold back the page's other requests).

API (JSON in and out; an error is ``{"error": "one line"}`` with a 4xx status, or 500 if the model fails):

    GET  /api/info                     model, KL order, the map's plane and points, config, eval numbers
    GET  /api/val/<i>                  validation image i, its code and class
    POST /api/decode      {code, y}    the decoded image (PNG data URL), the milliseconds spent on it (0 when
                                       cached) and those one image took the model when last decoded
    POST /api/sweep       {code, dim, y}   every slider position of one dimension, in one batch
    POST /api/start       {kind, seed}     a code: the prior's mean, a prior or a GMM draw
    POST /api/map         {point, y}   the code of a point of the map's plane, decoded
    POST /api/interpolate {a, b, steps, y} the straight line from code a to code b, decoded
    POST /api/upload?y=Y  (the file's bytes)   an uploaded image, resized like the training data, encoded

A web page anywhere may send requests to a local server, so every request is checked before its body
is read (docs/explore.md, "Limits"): the Host must name this server (DNS rebinding), a POST must come
from the page itself (Origin, Sec-Fetch-Site), carry one plain Content-Length within its route's limit,
and a malformed request is a 4xx with one line, its body read or its connection closed, never a 500.
"""
from __future__ import annotations

import errno
import ipaddress
import json
import os
import re
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from core.errors import VaeLabError
from serving.decoding import MAX_UPLOAD_BYTES, BadRequest, Explorer

HERE = os.path.dirname(os.path.abspath(__file__))
FILES = {"/": ("page.html", "text/html; charset=utf-8"), "/index.html": ("page.html", "text/html; charset=utf-8"),
         "/page.js": ("page.js", "text/javascript; charset=utf-8")}
MAX_JSON_BYTES = 1 * 2**20  # the largest API body: a code of a few thousand numbers
POST_LIMITS = {"/api/decode": MAX_JSON_BYTES, "/api/sweep": MAX_JSON_BYTES, "/api/start": MAX_JSON_BYTES,
               "/api/map": MAX_JSON_BYTES, "/api/interpolate": MAX_JSON_BYTES, "/api/upload": MAX_UPLOAD_BYTES}
VAL_ROUTE = re.compile(r"/api/val/[^/]*")
MAX_DISCARD_BYTES = 64 * 2**20  # a refused body up to this size is read and dropped (so the client gets the answer)
MAX_INT_DIGITS = 30  # a JSON integer longer than this is no code, seed or index (and would overflow float)
REQUEST_TIMEOUT_S = 10  # a connection that sends nothing for this long mid-request gets 408 and is closed
REQUEST_QUEUE = 128  # connections waiting to be accepted (the stdlib's 5 made a burst of 50 wait on TCP retries)
# script-src 'self': the page's script is /page.js, so nothing inserted into the page can run (no inline script)
CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class ExplorerServer(ThreadingHTTPServer):
    """The server; ``explorer`` is set once the model is loaded (the port is taken first, so a port in
    use is refused before seconds are spent loading). IPv4 or IPv6, as ``host`` is."""

    daemon_threads = True
    request_queue_size = REQUEST_QUEUE
    explorer: Explorer | None = None

    def __init__(self, host: str, port: int) -> None:
        info = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
        self.address_family = info[0][0]  # before the socket is made (TCPServer.__init__ reads it)
        self.host = host
        super().__init__((host, port), Handler)
        self.ip = ipaddress.ip_address(self.server_address[0].split("%")[0])
        # the names a browser may use for this server: its address, localhost for a loopback one, any of the
        # machine's for an unspecified one (0.0.0.0, ::); a DNS-rebinding page's name is none of them
        self.names = {host.lower(), str(self.ip)}
        if self.ip.is_loopback or self.ip.is_unspecified:
            self.names.add("localhost")
        if self.ip.is_unspecified:
            self.names |= {socket.gethostname().lower(), socket.getfqdn().lower()}

    def host_ok(self, value: str) -> bool:
        """Whether a Host header names this server (an IP literal for an unspecified address, too)."""
        m = re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[^:\[\]]+)(?::([0-9]{1,5}))?", value.strip())
        if not m or int(m.group(2) or 80) != self.server_address[1]:
            return False
        name = m.group(1).strip("[]").lower()
        try:
            ip = ipaddress.ip_address(name)
        except ValueError:
            return name in self.names
        return ip == self.ip or self.ip.is_unspecified

    def handle_error(self, request, client_address) -> None:  # type: ignore[override]
        # a client that goes away mid-answer is no error of ours; anything else is one line, not a traceback
        exc = sys.exc_info()[1]
        if not isinstance(exc, (BrokenPipeError, ConnectionResetError)):
            print(clean(f"explore.py: request from {client_address[0]} failed: {type(exc).__name__}: {exc}"),
                  file=sys.stderr)


def clean(text: str) -> str:
    """``text`` with control characters escaped (the stdlib's table): a request cannot write escape codes to
    the user's terminal."""
    return str(text).translate(BaseHTTPRequestHandler._control_char_table)


def parse_json(raw: bytes) -> Any:
    """A request body as JSON: strict (no NaN / Infinity), integers of at most MAX_INT_DIGITS digits; one line
    (BadRequest) for anything else, however deep or long."""
    def integer(s: str) -> int:
        if len(s.lstrip("-")) > MAX_INT_DIGITS:
            raise ValueError("too long")
        return int(s)

    def constant(s: str) -> None:
        raise ValueError(s)

    try:
        return json.loads(raw or b"{}", parse_int=integer, parse_constant=constant)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser's stack
        raise BadRequest("the request body is not JSON (strict: no NaN or Infinity, integers of at most "
                         f"{MAX_INT_DIGITS} digits)") from None


class Handler(BaseHTTPRequestHandler):
    server: ExplorerServer
    protocol_version = "HTTP/1.1"
    timeout = REQUEST_TIMEOUT_S

    def setup(self) -> None:
        super().setup()
        # headers and body go out as two writes: without TCP_NODELAY, Nagle's algorithm holds the body until
        # the client's delayed ACK (~40 ms a request, most of a slider frame)
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request would bury the URL and the errors (errors: _error, escaped)

    # ---------------------------------------------------------------- answers

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        # the page may load nothing from anywhere else nor be framed: a browser enforces what the tests check
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        # allow_nan=False: NaN and Infinity are not JSON (browsers refuse the whole answer)
        self._send(status, json.dumps(obj, allow_nan=False).encode(), "application/json", headers)

    def _error(self, status: int, message: str, close: bool = False, headers: dict[str, str] | None = None) -> None:
        """One line on the console and ``{"error": ...}``; ``close``: the connection is not in step (a body
        left unread), so it is closed after the answer."""
        message = clean(message)
        path = getattr(self, "path", "").partition("?")[0][:200]
        print(f"explore.py: {clean(self.command or '-')} {clean(path) or '-'}: {message}", file=sys.stderr)
        if close:
            headers = {**(headers or {}), "Connection": "close"}
        self._json({"error": message}, status, headers)
        if close:
            self.close_connection = True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The stdlib's own refusals (a malformed request line or headers): JSON, one line, connection closed;
        505 (an HTTP version other than 1.x) is the client's error, a 400 here."""
        if self.request_version == "HTTP/0.9" and len(getattr(self, "requestline", "").split()) != 2:
            self.request_version = "HTTP/1.0"  # refused before its version was read: answer with a status line
        self._error(400 if code == 505 else code, message or self.responses.get(code, ("error",))[0], close=True)

    # ---------------------------------------------------------------- checks before any body is read

    def parse_request(self) -> bool:
        self._checked = False
        if not super().parse_request():
            return False
        return self._checked or self._check()

    def handle_expect_100(self) -> bool:
        # the checks come before "100 Continue": a refused upload is never sent
        self._checked = True
        return self._check() and super().handle_expect_100()

    def _check(self) -> bool:
        """Host, method, route, Origin and Content-Length, before the body: False once refused."""
        path = self.path.partition("?")[0]
        hosts = self.headers.get_all("Host") or []
        if len(hosts) != 1 or not self.server.host_ok(hosts[0]):
            return self._refuse(400, f"the Host header must name this server ({url_of(self.server)}), "
                                     f"not {hosts[0] if hosts else 'nothing'}")
        method = "GET" if path in FILES or path == "/api/info" or VAL_ROUTE.fullmatch(path) else \
                 "POST" if path in POST_LIMITS else None
        if method is None:
            return self._refuse(404, f"no such page: {path[:200]}")
        if self.command != method:
            return self._refuse(405, f"{path} takes {method} only", headers={"Allow": method})
        if method == "GET":
            if self.headers.get("Content-Length", "0").strip() != "0" or "Transfer-Encoding" in self.headers:
                return self._refuse(400, "a GET has no body")
            return True
        origin = self.headers.get("Origin")
        site = self.headers.get("Sec-Fetch-Site")
        if (origin is not None and origin.lower() != f"http://{hosts[0].strip().lower()}") or \
                site not in (None, "same-origin", "none"):
            return self._refuse(403, f"a POST must come from the page itself, not {origin or site}")
        if "Transfer-Encoding" in self.headers:
            return self._refuse(411, "send the body with a Content-Length, not a Transfer-Encoding", body=False)
        lengths = self.headers.get_all("Content-Length") or []
        if not lengths:
            return self._refuse(411, "a POST needs a Content-Length", body=False)
        if len(lengths) != 1 or not re.fullmatch(r"[0-9]{1,15}", lengths[0].strip()):
            return self._refuse(400, "one Content-Length, a byte count", body=False)
        self.length = int(lengths[0])
        if self.length > POST_LIMITS[path]:
            return self._refuse(413, f"the {'upload' if path == '/api/upload' else 'request'} is "
                                     f"{self.length:,} bytes; at most {POST_LIMITS[path]:,}")
        return True

    def _refuse(self, status: int, message: str, headers: dict[str, str] | None = None, body: bool = True) -> bool:
        """Refuse the request before its body: a body of a known length (and not awaiting "100 Continue") is
        read and dropped in chunks so the connection stays in step; otherwise the connection is closed."""
        lengths = [v.strip() for v in self.headers.get_all("Content-Length") or ["0"]]  # none: no body
        expecting = self.headers.get("Expect", "").lower() == "100-continue"
        n = int(lengths[0]) if body and len(lengths) == 1 and re.fullmatch(r"[0-9]{1,15}", lengths[0]) else -1
        keep = (0 <= n <= MAX_DISCARD_BYTES and not expecting and "Transfer-Encoding" not in self.headers
                and self._discard(n))
        self._error(status, message, close=not keep, headers=headers)
        return False

    def _discard(self, length: int) -> bool:
        """Read and drop ``length`` bytes in chunks (kept out of memory); False if they did not all come."""
        left = length
        try:
            while left > 0:
                chunk = self.rfile.read(min(left, 2**16))
                if not chunk:
                    return False
                left -= len(chunk)
        except (TimeoutError, OSError):
            return False
        return True

    def _read_body(self) -> bytes | None:
        """The body (its length checked already); None, answered, if it does not all come in time."""
        try:
            data = self.rfile.read(self.length)
        except TimeoutError:
            self._error(408, f"the body stopped coming: {self.length:,} bytes announced, none for "
                             f"{self.timeout} s", close=True)
            return None
        if len(data) < self.length:
            self._error(400, f"the body is {len(data):,} bytes; its Content-Length said {self.length:,}", close=True)
            return None
        return data

    # ---------------------------------------------------------------- routes (checked by _check)

    def do_GET(self) -> None:
        path = self.path.partition("?")[0]
        try:
            if path in FILES:
                name, kind = FILES[path]
                with open(os.path.join(HERE, name), "rb") as f:
                    self._send(200, f.read(), kind)
            elif path == "/api/info":
                self._json(self.server.explorer.info())
            else:  # /api/val/<i>
                ex = self.server.explorer
                i = path.rsplit("/", 1)[1]
                self._json(ex.val_code(ex.index(int(i) if re.fullmatch(r"[0-9]{1,12}", i) else i)))
        except BadRequest as e:
            self._error(e.status, str(e))
        except Exception as e:  # as in do_POST
            self._error(500, f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else 'failed'}")

    def do_POST(self) -> None:
        path, _, query = self.path.partition("?")
        data = self._read_body()  # all of it first, whatever follows: the connection stays in step
        if data is None:
            return
        ex = self.server.explorer
        try:
            if path == "/api/upload":
                self._json(ex.encode_upload(data, ex.label(upload_class(query))))
                return
            body = parse_json(data)
            if not isinstance(body, dict):
                raise BadRequest("the request body is a JSON object")
            y = lambda: ex.label(body.get("y"))  # noqa: E731 (the class, for the routes that decode)
            if path == "/api/decode":
                code = ex.code(body.get("code"))
                images, ms = ex.decode(code[None], y())
                self._json({"image": images[0], "ms": ms, "decode_ms": ex.single_ms, "point": ex.project(code)})
            elif path == "/api/sweep":
                self._json(ex.sweep(ex.code(body.get("code")), body.get("dim"), y()))
            elif path == "/api/start":
                code = ex.start_code(body.get("kind"), body.get("seed", 0))
                self._json({"code": code.tolist(), "note": ex.gmm_note if body.get("kind") == "gmm" else ""})
            elif path == "/api/map":
                code = ex.map_code(body.get("point"))
                images, ms = ex.decode(code[None], y())
                self._json({"code": code.tolist(), "image": images[0], "ms": ms})
            else:  # /api/interpolate
                self._json(ex.interpolate(ex.code(body.get("a")), ex.code(body.get("b")), body.get("steps"), y()))
        except BadRequest as e:
            self._error(e.status, str(e))
        except VaeLabError as e:  # e.g. a saved mixture that does not fit: the page says it, the server goes on
            self._error(400, str(e))
        except Exception as e:  # a model that fails on a code: one line, a 500, and the server goes on
            self._error(500, f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else 'failed'}")


def upload_class(query: str) -> int | None:
    """``y`` of an upload's query string: an integer (ASCII digits) or absent; BadRequest otherwise."""
    try:
        ys = parse_qs(query, max_num_fields=20).get("y", [])
    except ValueError:
        raise BadRequest("the query string has too many fields") from None
    if not ys:
        return None
    if len(ys) > 1 or not re.fullmatch(r"-?[0-9]{1,9}", ys[0]):
        raise BadRequest(f"y is a class number, not {ys[-1][:40]!r}")
    return int(ys[0])


def make_server(host: str = "127.0.0.1", port: int = 0) -> ExplorerServer:
    """A server bound to ``host``:``port`` (0: a free port), not yet serving; one line if the port is taken."""
    try:
        return ExplorerServer(host, port)
    except socket.gaierror as e:
        raise VaeLabError(f"cannot serve on {host}: not an address of this machine ({e.strerror or e})") from None
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise VaeLabError(f"port {port} is in use on {host}; pass another --port, or --port 0 for a free one"
                              ) from None
        raise VaeLabError(f"cannot serve on {host}:{port} ({e.strerror or e})") from None


def url_of(server: ExplorerServer) -> str:
    host, port = server.server_address[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"
