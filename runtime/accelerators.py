"""Accelerator options of train.py: bf16 autocast (--amp), torch.compile (--compile), malloc tuning.

Each check that can refuse a flag raises VaeLabError (one line, exit code 2) before any
data is loaded; nothing here changes the numbers of a default run.
"""
from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import platform
import shutil
import sys
from collections.abc import Callable

import torch

from runtime.distributed import is_main_process
from utils import VaeLabError

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def tune_malloc(mmap_threshold: int = 32 << 20, trim_threshold: int = 256 << 20) -> bool:
    """Keep freed tensor memory in the process instead of handing it back to the OS.

    A training step allocates and frees ~20 tensors of 1-2 MB. glibc's default returns
    such blocks to the kernel and page-faults them back on the next step (about 700
    faults a step at batch 512); with fixed thresholds they are reused. Same numbers,
    fewer page faults. Linux/glibc only; returns whether it applied.
    """
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold))
    except (OSError, AttributeError):
        return False


def check_flags(device: torch.device, amp: bool, compile: bool) -> None:
    """Refuse --amp / --compile where they cannot work, before any data is loaded."""
    if amp:
        check_amp(device)
    if compile:
        check_compile(device)


# ---------------------------------------------------------------- --amp


def check_amp(device: torch.device) -> None:
    """Refuse --amp where bfloat16 autocast is not available."""
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        name = torch.cuda.get_device_name(device)
        raise VaeLabError(f"--amp uses bfloat16, which {name} does not support (it needs compute "
                          f"capability 8.0+); drop --amp")
    if device.type not in ("cuda", "cpu", "mps"):
        raise VaeLabError(f"--amp is not supported on {device.type}; drop --amp")
    if not torch.amp.is_autocast_available(device.type):
        raise VaeLabError(f"--amp: this PyTorch has no autocast for {device.type}; drop --amp")
    if device.type == "cpu" and not _cpu_has_bf16():
        if is_main_process():
            print("note: this CPU has no bfloat16 instructions (AVX512-BF16 or AMX): --amp runs, but "
                  "several times slower than float32")


def _cpu_has_bf16() -> bool:
    cpu = getattr(torch, "cpu", None)
    probes = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(p() for p in probes if p is not None)


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast for the model's forward; a no-op context when disabled.

    Only the forward runs under it: losses are computed afterwards in float32 from the
    logits (BCE from logits, no sigmoid in bf16), so no gradient scaler is needed.
    """
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def float32(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Cast autocast outputs back to float32 for the losses (a no-op on float32)."""
    return tuple(t.float() for t in tensors)


# ---------------------------------------------------------------- --compile


def check_compile(device: torch.device) -> None:
    """Refuse --compile where torch.compile cannot work, before any data is loaded."""
    from torch._dynamo.eval_frame import is_dynamo_supported  # here: ~1 s, only for --compile

    if not is_dynamo_supported():
        raise VaeLabError(f"--compile is not supported on Python {platform.python_version()} "
                          f"with this PyTorch; drop --compile")
    if device.type == "cpu":
        cxx = os.environ.get("CXX", "clang++" if sys.platform == "darwin" else "g++")
        if shutil.which(cxx) is None:
            raise VaeLabError(f"--compile on the CPU needs a C++ compiler ({cxx!r} not found; set CXX "
                              f"or install g++); drop --compile")
    elif device.type == "cuda":
        if importlib.util.find_spec("triton") is None:
            raise VaeLabError("--compile on CUDA needs the triton package (pip install triton); drop --compile")
    else:
        raise VaeLabError(f"--compile is supported on cpu and cuda, not {device.type}; drop --compile")


class CompiledLoss:
    """A VAELoss whose ``__call__`` runs through torch.compile; other attributes pass through.

    Compiling the loss is what fuses BCE-from-logits (several passes over the batch in
    eager mode) into one loop; the model is compiled separately.
    """

    _OWN = ("inner", "_call")

    def __init__(self, loss_fn):
        object.__setattr__(self, "inner", loss_fn)
        object.__setattr__(self, "_call", torch.compile(loss_fn.__call__))

    def __call__(self, *args, **kwargs):
        return self._call(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def __setattr__(self, name: str, value) -> None:
        # The training loop sets the KL warm-up factor (``kl_scale``) every step: it must reach
        # the loss the compiled call reads, not stay on this wrapper.
        if name in self._OWN:
            object.__setattr__(self, name, value)
        else:
            setattr(self.inner, name, value)


def compile_for_training(model: torch.nn.Module, loss_fn) -> tuple[Callable, CompiledLoss]:
    """torch.compile the (possibly DDP-wrapped) model and the loss.

    The first steps compile (seconds with a warm cache under /tmp/torchinductor_*, up to
    a minute cold); the last, smaller batch of an epoch compiles once more.
    """
    import torch._inductor.config as inductor_config  # here: ~1 s, only for --compile

    # The reparameterisation noise comes from PyTorch's own generator, as in eager mode, so
    # a compiled run draws the same numbers (seeds, resume and torchrun behave the same).
    inductor_config.fallback_random = True
    return torch.compile(model), CompiledLoss(loss_fn)
