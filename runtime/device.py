"""Which device a run computes on."""
from __future__ import annotations

import torch

from core.errors import VaeLabError


def select_device(name: str = "auto", no_cuda: bool = False) -> torch.device:
    """CUDA, then Apple MPS, then CPU; ``no_cuda`` forces CPU (the 2018 flag)."""
    if no_cuda or name == "cpu":
        return torch.device("cpu")
    cuda_ok = torch.cuda.is_available()
    mps_ok = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "cuda":
        if not cuda_ok:
            raise VaeLabError("--device cuda was asked for but no CUDA device is available")
        return torch.device("cuda")
    if name == "mps":
        if not mps_ok:
            raise VaeLabError("--device mps was asked for but Apple MPS is not available")
        return torch.device("mps")
    if cuda_ok:
        return torch.device("cuda")
    if mps_ok:
        return torch.device("mps")
    return torch.device("cpu")
