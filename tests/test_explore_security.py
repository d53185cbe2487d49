"""explore.py's server, as a hostile page or client would use it: every malformed request is a 4xx with one
line and the connection stays in step (or is closed), a fuzz over every route finds no 5xx, the Host and Origin
are checked, the answers are strict JSON, and a burst of connections is answered at once. An untrained model on
random images is enough here (what the model decodes is tested in test_explore.py); its class names, checkpoint
path and config hold HTML, as a folder's names may (the page's test: test_explore.py)."""
from __future__ import annotations

import http.client
import json
import socket
import threading
import time

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving import app
from serving.app import make_server, url_of
from serving.decoding import Explorer

XSS = '<img src=x onerror="window.__xss=1">'  # a class (folder) name, a path, a config value


def hostile_explorer() -> Explorer:
    """An untrained fc_conv whose class names, checkpoint path, config and evaluation carry HTML."""
    from config.run_config import RunConfig
    from datasets import Split
    from models import ModelConfig, build_model

    torch.manual_seed(0)
    val = Split(torch.randint(0, 256, (60, 1, 28, 28), dtype=torch.uint8), torch.arange(60) % 10,
                classes=[f"{XSS} {c}" for c in range(10)])
    return Explorer(build_model(ModelConfig()), RunConfig().replace(data_root=f"/data/{XSS}"), val,
                    checkpoint=f"/weights/{XSS}/r_best.pth.tar",
                    evaluation={"path": f"/weights/{XSS}_eval.json", "splits": {XSS: {"n": 60, "bce_kl": 1.5}}})


def serve(explorer: Explorer, host: str = "127.0.0.1"):
    server = make_server(host, 0)
    server.explorer = explorer
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def hostile():
    """(server, explorer): the hostile explorer served on a free port in a thread."""
    server = serve(hostile_explorer())
    yield server, server.explorer
    server.shutdown()
    server.server_close()


def exchange(server, data: bytes, n: int = 1, timeout: float = 20,
             head: bool = False) -> list[tuple[int, http.client.HTTPMessage, bytes]]:
    """Send raw bytes on one connection and read up to ``n`` answers (fewer if the server closes it);
    ``head``: answers to HEAD, which have no body."""
    host, port = server.server_address[:2]
    out = []
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(data)
        f = s.makefile("rb")
        for _ in range(n):
            line = f.readline()
            if not line:
                break
            status = int(line.split()[1])
            headers = http.client.parse_headers(f)
            out.append((status, headers, b"" if head else f.read(int(headers.get("Content-Length", 0)))))
    return out


def request(server, method: str, path: str, body: bytes = b"", headers: dict | None = None) -> bytes:
    """One HTTP/1.1 request's bytes, with this server's Host and the body's Content-Length unless given."""
    host, port = server.server_address[:2]
    h = {"Host": f"{host}:{port}", **({"Content-Length": str(len(body))} if method == "POST" else {}),
         **(headers or {})}
    return (f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n").encode() + body


def one_line_error(answer) -> str:
    status, headers, body = answer
    assert 400 <= status < 500, (status, body[:200])
    message = json.loads(body)["error"]
    assert message and "\n" not in message and "Traceback" not in message
    return message


def strict_json(body: bytes):
    """JSON as a browser parses it: NaN and Infinity are refused."""
    def refuse(s):
        raise ValueError(f"{s} is not JSON")

    return json.loads(body, parse_constant=refuse)


def png(side: int = 28) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (side, side), 128).save(buf, format="PNG")
    return buf.getvalue()


# ---------------------------------------------------------------- client errors: 4xx, one line, in step


@pytest.mark.parametrize("bad, why", [
    (("GET", "/api/val/" + "9" * 5000, b""), "an index past the int conversion limit"),
    (("GET", "/api/val/%C2%B2", b""), "a superscript digit"),
    (("POST", "/api/decode", b'{"code": [' + b"1" * 400 + b"," + b"0," * 8 + b"0]}"), "a 400-digit integer"),
    (("POST", "/api/decode", b"[" * 100_000 + b"]" * 100_000), "JSON nested 100,000 deep"),
    (("POST", "/api/decode", b'{"code": [NaN, 0, 0, 0, 0, 0, 0, 0, 0, 0]}'), "NaN, which is not JSON"),
    (("POST", "/api/upload?y=%C2%B2", png()), "y = a superscript two"),
    (("POST", "/api/upload?y=" + "7" * 5000, png()), "a 5,000-digit y"),
    (("POST", "/api/upload?y=1&y=2", png()), "two y"),
    (("POST", "/api/start", b'{"kind": "prior", "seed": 1e400}'), "a seed of infinity"),
    (("GET", "/api/nothing", b""), "no such route"),
])
def test_a_malformed_request_is_a_4xx_with_one_line_and_the_connection_stays_in_step(hostile, bad, why):
    server, _ = hostile
    method, path, body = bad
    answers = exchange(server, request(server, method, path, body) + request(server, "GET", "/api/val/3"), n=2)
    one_line_error(answers[0])
    assert len(answers) == 2, f"{why}: the connection was closed or desynced"
    assert answers[1][0] == 200 and strict_json(answers[1][2])["index"] == 3, why


def test_a_body_shorter_than_its_content_length_is_a_408_once_the_socket_times_out(hostile, monkeypatch):
    server, _ = hostile
    monkeypatch.setattr(app.Handler, "timeout", 1)
    t0 = time.perf_counter()
    answers = exchange(server, request(server, "POST", "/api/decode", b'{"code": []}',
                                       {"Content-Length": "100"}), n=2)
    assert time.perf_counter() - t0 < 5
    assert len(answers) == 1 and answers[0][0] == 408 and answers[0][1]["Connection"] == "close"
    one_line_error(answers[0])


def test_protocol_refusals_length_chunked_expect_and_methods(hostile):
    server, _ = hostile
    body = b'{"kind": "mean"}'
    dup = request(server, "POST", "/api/start", body, {"Content-Length": f"{len(body)}\r\nContent-Length: 3"})
    assert one_line_error(exchange(server, dup)[0]) == "one Content-Length, a byte count"
    chunked = (request(server, "POST", "/api/start", headers={"Transfer-Encoding": "chunked"})
               .replace(b"Content-Length: 0\r\n", b"") + b"10\r\n" + body + b"\r\n0\r\n\r\n")
    answer = exchange(server, chunked)[0]
    assert answer[0] == 411 and answer[1]["Connection"] == "close"
    # a 50 MB upload announced with "Expect: 100-continue": refused before the client sends it, never a 100
    big = request(server, "POST", "/api/upload", headers={"Content-Length": str(50 * 10**6),
                                                         "Expect": "100-continue"})
    answer = exchange(server, big)[0]
    assert answer[0] == 413 and "at most" in one_line_error(answer)
    # a small one gets its 100 Continue, then its answer
    host, port = server.server_address[:2]
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(request(server, "POST", "/api/start", headers={"Content-Length": str(len(body)),
                                                                "Expect": "100-continue"}))
        assert s.recv(100).startswith(b"HTTP/1.1 100")
        s.sendall(body)
        assert s.recv(100).startswith(b"HTTP/1.1 200")
    status, headers, _ = exchange(server, request(server, "GET", "/api/decode"))[0]
    assert status == 405 and headers["Allow"] == "POST"
    status, headers, _ = exchange(server, request(server, "POST", "/api/info"))[0]
    assert status == 405 and headers["Allow"] == "GET"
    assert exchange(server, request(server, "DELETE", "/api/info"))[0][0] == 405
    assert exchange(server, request(server, "BREW", "/"))[0][0] == 405
    assert exchange(server, b"GET /api/info HTTP/2.0\r\n\r\n")[0][0] == 400  # not a 505


def test_a_request_line_with_escape_codes_is_not_echoed_raw(hostile, capsys):
    server, _ = hostile
    answers = exchange(server, request(server, "GET", "/\x1b]0;owned\x07\x1b[2J") + b"\x1b[31mGARBAGE\r\n\r\n",
                       n=2)
    assert answers[0][0] == 404
    err = capsys.readouterr().err
    assert "\\x1b]0;owned" in err and "\x1b" not in err and "\x07" not in err


# ---------------------------------------------------------------- values that break the page


def test_map_points_are_finite_numbers_and_every_answer_is_strict_json(hostile):
    server, ex = hostile
    for point in ([1e308, 1e308], [1e300, 0], [True, False], [10**400, 0], [1e6, 0], ["1", 0], [0], None):
        body = json.dumps({"point": point}).encode()
        one_line_error(exchange(server, request(server, "POST", "/api/map", body))[0])
    status, _, body = exchange(server, request(server, "POST", "/api/map", b'{"point": [2.5, -1]}'))[0]
    assert status == 200 and all(abs(v) < 1e3 for v in strict_json(body)["code"])
    for path in ("/api/info", "/api/val/0"):
        answer = exchange(server, request(server, "GET", path))[0]
        assert answer[0] == 200
        strict_json(answer[2])


# ---------------------------------------------------------------- Host, Origin and headers


def test_host_and_origin_are_checked_and_the_headers_forbid_sniffing_framing_and_inline_script(hostile):
    server, _ = hostile
    host, port = server.server_address[:2]
    for bad_host in (f"rebind.example:{port}", f"{host}:{port + 1}", "", f"{host}:{port}\r\nHost: other"):
        answer = exchange(server, request(server, "GET", "/api/info", headers={"Host": bad_host}))[0]
        assert answer[0] == 400 and "Host" in one_line_error(answer), bad_host
    assert exchange(server, request(server, "GET", "/api/val/0", headers={"Host": f"localhost:{port}"}))[0][0] == 200
    body = b'{"kind": "mean"}'
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"},
                    {"Origin": f"http://localhost:{port + 1}"},
                    {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"},
                    {"Origin": "http://evil.example", "Content-Type": "text/plain"}):
        answer = exchange(server, request(server, "POST", "/api/start", body, headers))[0]
        assert answer[0] == 403, headers
        one_line_error(answer)
    same = {"Origin": f"http://{host}:{port}", "Sec-Fetch-Site": "same-origin"}
    status, headers, _ = exchange(server, request(server, "POST", "/api/start", body, same))[0]
    assert status == 200
    for path in ("/", "/page.js", "/api/info"):
        status, headers, _ = exchange(server, request(server, "GET", path))[0]
        assert status == 200 and headers["X-Content-Type-Options"] == "nosniff"
        csp = dict(d.strip().split(" ", 1) for d in headers["Content-Security-Policy"].split(";"))
        assert csp["frame-ancestors"] == "'none'" and csp["script-src"] == "'self'", csp
        assert "unsafe-inline" not in csp["default-src"]
    page = exchange(server, request(server, "GET", "/"))[0][2].decode()
    assert '<script src="/page.js"></script>' in page and "<script>" not in page


def test_ipv6_host_is_served():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError as e:
        pytest.skip(f"this machine has no IPv6 loopback: {e}")
    server = serve(hostile_explorer(), "::1")
    try:
        assert url_of(server).startswith("http://[::1]:")
        port = server.server_address[1]
        answer = exchange(server, request(server, "GET", "/api/val/1", headers={"Host": f"[::1]:{port}"}))[0]
        assert answer[0] == 200 and strict_json(answer[2])["index"] == 1
        assert exchange(server, request(server, "GET", "/api/val/1", headers={"Host": f"evil:{port}"}))[0][0] == 400
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------- bursts and fuzz


def test_a_burst_of_50_connections_is_answered_within_a_second_each(hostile):
    """The stdlib's listen backlog of 5 dropped a burst's handshakes: 1 to 14 s of TCP retries."""
    server, ex = hostile
    host, port = server.server_address[:2]
    socks = []
    t0 = time.perf_counter()
    for _ in range(50):  # all 50 handshakes at once, before any is accepted
        s = socket.socket(server.address_family, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex((host, port))
        socks.append(s)
    times = [None] * 50

    def one(i: int, s: socket.socket) -> None:
        s.setblocking(True)
        s.settimeout(20)
        code = [0.01 * i] + [0.0] * (ex.model.latent_size - 1)  # 50 different decodes
        s.sendall(request(server, "POST", "/api/decode", json.dumps({"code": code}).encode()))
        f = s.makefile("rb")
        status = int(f.readline().split()[1])
        headers = http.client.parse_headers(f)
        f.read(int(headers["Content-Length"]))
        times[i] = (status, time.perf_counter() - t0)
        s.close()

    threads = [threading.Thread(target=one, args=(i, s)) for i, s in enumerate(socks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert all(t is not None and t[0] == 200 for t in times), times
    assert max(t[1] for t in times) < 1.0, sorted(t[1] for t in times)[-5:]


ROUTES = ["/", "/page.js", "/api/info", "/api/val/0", "/api/val/", "/api/decode", "/api/sweep", "/api/start",
          "/api/map", "/api/interpolate", "/api/upload", "/api/upload?y=3", "/nothing"]
numbers = st.one_of(st.integers(-10**40, 10**40), st.floats(allow_nan=False), st.booleans(), st.none(),
                    st.text(max_size=5))
json_values = st.recursive(numbers, lambda inner: st.lists(inner, max_size=12) | st.dictionaries(
    st.sampled_from(["code", "dim", "y", "kind", "seed", "point", "a", "b", "steps", "x"]), inner, max_size=6),
    max_leaves=40)
bodies = st.one_of(json_values.map(lambda v: json.dumps(v).encode()), st.binary(max_size=300),
                   st.builds(lambda n: b"[" * n + b"]" * n, st.integers(0, 50_000)))
headers = st.dictionaries(st.sampled_from(["Content-Type", "Origin", "Sec-Fetch-Site", "Expect", "Accept",
                                           "Content-Length", "Transfer-Encoding", "Connection", "Range"]),
                          st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30), max_size=3)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(method=st.sampled_from(["GET", "POST", "POST", "HEAD", "PUT"]), path=st.sampled_from(ROUTES),
       body=bodies, extra=headers, suffix=st.text(max_size=8))
def test_fuzz_every_route_is_never_a_5xx(hostile, monkeypatch, method, path, body, extra, suffix):
    server, _ = hostile
    monkeypatch.setattr(app.Handler, "timeout", 0.5)  # a Content-Length longer than the body: a 408 at once
    if "Content-Length" in extra and method == "POST":
        extra["Content-Length"] = str(len(body) + (hash(extra["Content-Length"]) % 3) - 1)  # one off either way
    target = path + "".join(f"%{b:02X}" for b in suffix.encode()[:12])
    answers = exchange(server, request(server, method, target, body if method == "POST" else b"", extra),
                       head=method == "HEAD")
    if answers:  # a closed connection is an answer too (Content-Length too short: the rest is garbage)
        status, _, data = answers[0]
        assert status < 500, (method, target, extra, data[:300])
        if status >= 400 and method != "HEAD":
            one_line_error(answers[0])


def test_the_server_still_serves_after_the_fuzz(hostile):
    server, _ = hostile
    assert exchange(server, request(server, "GET", "/api/val/2"))[0][0] == 200
