"""explore.py's memory under hostile uploads, measured on a server in its own process (its peak resident set,
Linux's VmHWM): files of a few KB that decode to tens of millions of pixels, alone and ten at once, each within
200 MB above the idle server; what would take more is refused (413) before it is decoded."""
from __future__ import annotations

import os

import pytest

from benchmarks import explore_limits  # benchmarks/: the hostile files and the measurements the docs quote


@pytest.fixture(scope="module")
def server():
    if not os.path.isfile("/proc/self/status"):
        pytest.skip("the resident set is read from /proc (Linux)")
    s = explore_limits.Server()
    yield s
    s.close()


@pytest.fixture(scope="module")
def files():
    return explore_limits.hostile_files()


def test_each_hostile_upload_stays_within_200_mb_above_the_idle_server(server, files):
    rows = explore_limits.upload_memory(server, files)
    for r in rows:
        assert r["status"] == r["want"], r
        assert r["peak_above_idle_mb"] <= explore_limits.BUDGET_MB, r
    assert any(r["status"] == 413 and "MiB to decode" in r["error"] for r in rows)
    assert rows[0]["bytes"] < 10_000 and rows[0]["status"] == 200  # the file: 5 KB, 40 M pixels


def test_ten_hostile_uploads_at_once_are_decoded_one_at_a_time_within_the_same_bound(server, files):
    bomb = files["1-bit palette PNG 6320x6320, transparent (the issue's)"][0]
    res = explore_limits.concurrent_uploads(server, bomb, n=10)
    assert res["statuses"] == [200] * 10, res
    assert res["peak_above_idle_mb"] <= explore_limits.BUDGET_MB, res
    assert server.post("/api/start", b'{"kind": "mean"}')[0] == 200  # still serving
