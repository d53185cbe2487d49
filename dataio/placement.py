"""Where a split's images live while training, and their conversion to floats per batch."""
from __future__ import annotations

import os

import torch


def as_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 in [0, 1] (k / 255, the values torchvision's ToTensor gives);
    float images are returned as they are. Applied per batch, on the batch's device."""
    return x.to(torch.float32).div_(255.0) if x.dtype == torch.uint8 else x


def _free_bytes(device: torch.device) -> int | None:
    """Free memory of ``device`` (the host's available RAM for the CPU), None if unknown."""
    try:
        if device.type == "cuda":
            return torch.cuda.mem_get_info(device)[0]
        if device.type == "mps":
            return torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory()
        if os.path.isfile("/proc/meminfo"):  # Linux: MemAvailable counts the page cache it would give back
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError, RuntimeError):  # not Linux, no such device API
        return None


def place_images(x: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, str]:
    """Where a split's uint8 images live while training, and a few words that say so.

    On the CPU: float32 when that copy takes under a quarter of the available memory (a batch is
    then a plain slice: converting each batch costs ~5% of a default fc_conv step there), else
    uint8. On an accelerator: uint8 on the device when it takes under half of its free memory,
    else uint8 in pinned host memory, each batch copied over (non-blocking).
    """
    if x.dtype != torch.uint8:
        return x.to(device), f"{x.dtype} on {device.type}"
    free, size = _free_bytes(device), x.numel()
    mib = lambda n: f"{n / 2**20:,.0f} MiB"  # noqa: E731
    if device.type == "cpu":
        if free is None or 4 * size < free / 4:
            return as_float(x), f"float32 in memory ({mib(4 * size)})"
        return x, f"uint8 in memory ({mib(size)}), converted per batch"
    if free is None or size < free / 2:
        return x.to(device), f"uint8 on {device.type} ({mib(size)}), converted per batch"
    return x.pin_memory(), f"uint8 in pinned host memory ({mib(size)}), streamed to {device.type} per batch"


def pixel_mean_std(x: torch.Tensor) -> tuple[float, float]:
    """Mean and std of every pixel of ``x`` (the --normalize statistics), as floats."""
    x64 = as_float(x).to(torch.float64)  # 37M pixels: float32 sums lose digits
    return float(x64.mean()), float(x64.std())
