"""What a fresh clone gets: an install pinned to what CI tested (requirements.lock beside the ranges of
requirements.txt), and a repository that stands alone: no link or path out of the clone, and the 2018
checkpoint, which is not shipped, found in one place and asked for with the one line that downloads it."""
from __future__ import annotations

import hashlib
import importlib.metadata as md
import os
import re
import shutil
import subprocess

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from helpers import ROOT, assert_cli_error, run_cli, run_module_cli

# torch's CUDA wheels differ per platform (torch pins them itself); pip is the installer
PLATFORM_WHEELS = re.compile(r"^(nvidia-|cuda-|triton$|pip$)")


def requirements() -> list[Requirement]:
    lines = open(os.path.join(ROOT, "requirements.txt"), encoding="utf-8").read().splitlines()
    return [Requirement(line.split("#")[0]) for line in lines if line.split("#")[0].strip()]


def lock() -> dict[str, Version]:
    """requirements.lock as {canonical name: pinned version}; every line must be one exact pin."""
    pins: dict[str, Version] = {}
    for line in open(os.path.join(ROOT, "requirements.lock"), encoding="utf-8").read().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        req = Requirement(line)
        (spec,) = req.specifier
        assert spec.operator == "==" and not req.marker and not req.extras, f"not an exact pin: {line!r}"
        name = canonicalize_name(req.name)
        assert name not in pins, f"pinned twice: {name}"
        pins[name] = Version(spec.version)
    return pins


def test_lock_pins_every_requirement_inside_its_range():
    pins = lock()
    for req in requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"requirements.lock has no pin for {req.name} (run make lock)"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"requirements.lock pins {name}=={pins[name]}, outside requirements.txt's {req}"


def test_lock_leaves_out_platform_specific_wheels():
    assert not [n for n in lock() if PLATFORM_WHEELS.match(n)]


def _closure(reqs: list[Requirement]) -> dict[str, str]:
    """{canonical name: installed version} of reqs and everything they pull in here (markers and extras evaluated)."""
    seen: dict[str, str] = {}
    todo = [(r, frozenset()) for r in reqs]
    while todo:
        req, extras = todo.pop()
        env = default_environment()
        if req.marker and not any(req.marker.evaluate({**env, "extra": e}) for e in (extras or {""})):
            continue
        name = canonicalize_name(req.name)
        if name in seen or PLATFORM_WHEELS.match(name):
            continue
        dist = md.distribution(req.name)
        seen[name] = dist.version
        todo += [(Requirement(r), frozenset(req.extras)) for r in dist.requires or []]
    return seen


def test_the_environment_installed_from_the_lock_is_the_lock():
    """make venv / CI install with -c requirements.lock: then every package requirements.txt pulls in is
    pinned, at the version installed (a lock that misses a dependency, or was not what CI ran, fails here)."""
    pins, reqs = lock(), requirements()

    def installed(name: str) -> Version | None:
        try:
            return Version(md.version(name))
        except md.PackageNotFoundError:
            return None

    if any(installed(r.name) != pins.get(canonicalize_name(r.name)) for r in reqs):
        if os.environ.get("VAE_LAB_REQUIRE_DATA") == "1":
            pytest.fail("CI's venv was not installed from requirements.lock")
        pytest.skip("this environment was installed from the ranges of requirements.txt, not from the lock")
    pulled_in = _closure(reqs)
    assert {n: v for n, v in pulled_in.items() if n not in pins} == {}, "installed but not pinned: run make lock"
    assert {n: v for n, v in pulled_in.items() if Version(v) != pins[n]} == {}


# ---------------------------------------------------------------- the Makefile and CI use the lock

def _make_copy(tmp_path) -> str:
    if not shutil.which("make") or not shutil.which("sha256sum"):
        pytest.skip("needs make and sha256sum")
    for f in ("Makefile", "requirements.txt", "requirements.lock"):
        shutil.copy(os.path.join(ROOT, f), tmp_path / f)
    return str(tmp_path)


def _make(cwd: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_make_venv_installs_with_the_lock_and_reinstalls_when_it_changes(tmp_path):
    cwd = _make_copy(tmp_path)
    dry = _make(cwd, "-n", "venv", "VENV=v").stdout
    assert "install --quiet -r requirements.txt -c requirements.lock" in dry, dry
    os.makedirs(tmp_path / "v")
    (tmp_path / "v" / ".installed").touch()
    t = os.path.getmtime(tmp_path / "v" / ".installed")
    for f in ("requirements.txt", "requirements.lock"):
        os.utime(tmp_path / f, (t - 10, t - 10))
    assert _make(cwd, "-q", "venv", "VENV=v").returncode == 0  # up to date
    os.utime(tmp_path / "requirements.lock", (t + 10, t + 10))
    assert _make(cwd, "-q", "venv", "VENV=v").returncode == 1  # a new lock: rebuild


def test_ci_venv_key_changes_with_the_lock(tmp_path):
    cwd = _make_copy(tmp_path)
    key = _make(cwd, "venv-key").stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{16}", key), key
    lockfile = tmp_path / "requirements.lock"
    lockfile.write_text(re.sub(r"^torch==\S+", "torch==2.1.0", lockfile.read_text(), flags=re.M))
    assert _make(cwd, "venv-key").stdout.strip() != key
    ci = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read()
    # CI's venv is named by that key
    assert "$(make -s --no-print-directory venv-key)" in ci and 'VENV="$cache/venv-$hash"' in ci


# ---------------------------------------------------------------- a repository that stands alone

OUTSIDE = re.compile(r"\.\./shared|shared/(reference|seed)|[\"']shared[\"']\s*,\s*[\"'](reference|seed)[\"']")
# the CI harness and the one test fixture that finds CI's copy of the 2018 checkpoint beside the clone
MAY_REACH_CI = ("tests/conftest.py", ".ci/")


def tracked_text_files() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    files = []
    for f in out.decode().split("\0"):
        path = os.path.join(ROOT, f)
        if f and os.path.isfile(path) and b"\0" not in open(path, "rb").read(8192):
            files.append(f)
    return files


def test_no_tracked_file_points_outside_the_clone():
    hits = [f"{f}:{n}: {line.strip()[:100]}"
            for f in tracked_text_files() if not f.startswith(MAY_REACH_CI)
            for n, line in enumerate(open(os.path.join(ROOT, f), encoding="utf-8", errors="replace"), 1)
            if OUTSIDE.search(line)]
    assert hits == [], "\n".join(hits)


def test_relative_links_in_the_docs_resolve_inside_the_clone():
    broken = []
    for f in tracked_text_files():
        if not f.endswith(".md"):
            continue
        for target in re.findall(r"\]\(([^)\s]+)\)", open(os.path.join(ROOT, f), encoding="utf-8").read()):
            if re.match(r"[a-z]+:|#", target):
                continue
            path = os.path.normpath(os.path.join(ROOT, os.path.dirname(f), target.split("#")[0]))
            if not path.startswith(ROOT + os.sep) or not os.path.exists(path):
                broken.append(f"{f}: {target}")
    assert broken == [], broken


def test_every_download_line_is_the_published_file():
    from runtime.published_2018 import NAME, SHA256, URL

    urls, hashes = set(), set()
    for f in tracked_text_files():
        text = open(os.path.join(ROOT, f), encoding="utf-8", errors="replace").read()
        urls |= set(re.findall(r"https://raw\.githubusercontent\.com/snakers4/\S+?" + re.escape(NAME), text))
        hashes |= {h for h in re.findall(r"\b[0-9a-f]{64}\b", text) if "sha256 `" + h in text}
    assert urls == {URL}, urls  # README and docs give the one download line
    assert hashes <= {SHA256}, hashes


def test_the_2018_checkpoint_is_the_published_file(reference_ckpt):
    from runtime.published_2018 import SHA256

    assert hashlib.sha256(open(reference_ckpt, "rb").read()).hexdigest() == SHA256


def test_a_missing_2018_checkpoint_says_where_to_get_it(workdir):
    from runtime.published_2018 import NAME, URL

    missing = os.path.join("weights", "2018", NAME)
    code, _, err = run_cli(["--resume", missing, "--evaluate"])
    assert_cli_error(code, err, missing, f"curl -L --create-dirs -o {missing} {URL}")
    code, _, err = run_cli(["--resume", "weights/other.pth.tar", "--evaluate"])
    assert_cli_error(code, err, "does not exist")
    assert "curl" not in err  # the hint is for the 2018 file only
    from benchmarks import explore_latency, reproduce_2018

    for module in (reproduce_2018, explore_latency):
        code, _, err = run_module_cli(module, ["--reference", missing, "--out", "report"])
        assert_cli_error(code, err, f"curl -L --create-dirs -o {missing} {URL}", "VAE_LAB_2018_CHECKPOINT",
                         prog=module.get_args_parser().prog)
        assert not os.path.exists("report.md")


def test_the_2018_checkpoint_is_found_through_one_variable(monkeypatch, tmp_path):
    """$VAE_LAB_2018_CHECKPOINT when set (even if absent: the skip names it), else the user's download in
    weights/2018/, else CI's copy beside the clone, else weights/2018/ (where the skip says to download it)."""
    import conftest

    from runtime import published_2018

    monkeypatch.setattr(published_2018, "ROOT", str(tmp_path / "clone"))
    monkeypatch.setattr(conftest, "CI_CHECKPOINT_2018", str(tmp_path / "shared" / "ci.pth.tar"))
    download = tmp_path / "clone" / published_2018.DEFAULT
    monkeypatch.delenv(published_2018.ENV, raising=False)
    assert conftest.find_checkpoint_2018() == str(download)
    os.makedirs(tmp_path / "shared")
    (tmp_path / "shared" / "ci.pth.tar").touch()
    assert conftest.find_checkpoint_2018() == conftest.CI_CHECKPOINT_2018
    os.makedirs(download.parent)
    download.touch()
    assert conftest.find_checkpoint_2018() == str(download)
    monkeypatch.setenv(published_2018.ENV, str(tmp_path / "elsewhere.pth.tar"))
    assert conftest.find_checkpoint_2018() == published_2018.checkpoint_2018() == str(tmp_path / "elsewhere.pth.tar")
