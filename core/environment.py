"""What the process learns from its environment: how many processes torchrun started, the CPU's name."""
from __future__ import annotations

import os


def launched_processes() -> int:
    """How many processes torchrun started (1 for a plain run): flags that need one process check it."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def cpu_name() -> str:
    """The CPU's model name (``lscpu``), to print beside any speed figure: they depend on it."""
    import platform
    import subprocess

    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or platform.machine() or "unknown"
