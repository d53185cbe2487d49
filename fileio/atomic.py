"""Atomic writes: every file the project writes (checkpoints, eval JSON, pictures, tables).

A file is written to a temp file in the same folder, fsynced, then renamed over its path,
so a crash or kill at any moment leaves either the old file or the new one, never a mix
(plus, after a kill, a temp file that the next write of the same path removes).
"""
from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Callable
from typing import IO, Any


def _temp_prefix(path: str, pid: int) -> str:
    return f"{os.path.basename(path)}.{pid}."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process
        return True
    return True


def _remove_stale_temps(path: str) -> None:
    """Delete temp files that killed processes left next to ``path``.

    A SIGKILL during a write leaves ``<name>.<pid>.<random>.tmp``; the pid says whether its
    writer is still alive, so a concurrent writer's temp file is never touched.
    """
    folder = os.path.dirname(os.path.abspath(path))
    head = os.path.basename(path) + "."
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        pid = name[len(head):].split(".", 1)[0]
        if not (name.startswith(head) and name.endswith(".tmp") and pid.isdigit()):
            continue
        if int(pid) != os.getpid() and not _alive(int(pid)):
            try:
                os.remove(os.path.join(folder, name))
            except OSError:
                pass


def _fsync_dir(folder: str) -> None:
    """Make the rename itself durable (power loss); best effort, the file is already in place."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp makes its file private (0600); the renamed file gets what open() would have given it.
_FILE_MODE = 0o666 & ~_umask()


def atomic_write(path: str, write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(f)`` on a binary temp file beside ``path``, fsync, then rename over ``path``.

    Raises the OSError of a failed write; ``path`` then still holds its previous content.
    """
    folder = os.path.dirname(os.path.abspath(path))
    _remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path, os.getpid()), suffix=".tmp", dir=folder)
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(folder)


def write_text(path: str, text: str) -> None:
    """Atomically write ``text`` (UTF-8)."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def write_json(path: str, obj: Any, indent: int = 2, **kwargs: Any) -> None:
    """Atomically write ``obj`` as JSON."""
    write_text(path, json.dumps(obj, indent=indent, **kwargs))


def write_figure(fig: Any, path: str, dpi: int = 100) -> None:
    """Atomically write a matplotlib figure as PNG."""
    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, format="png")
    atomic_write(path, lambda f: f.write(buf.getvalue()))
