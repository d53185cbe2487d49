"""Output folders: created and proven writable before any work starts."""
from __future__ import annotations

import os

from core.errors import VaeLabError


def ensure_writable_dir(path: str, what: str) -> None:
    """Create ``path`` if needed and prove we can write there, before any training starts."""
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".write_probe_{os.getpid()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise VaeLabError(f"cannot write to the {what} folder {path!r}: {e.strerror or e}") from None
