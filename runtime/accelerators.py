"""Accelerator options of train.py: the memory layout (--channels_last) and bf16 autocast (--amp) a run
computes in, torch.compile (--compile), malloc tuning.

Each check that can refuse a flag raises VaeLabError (one line, exit code 2) before any
data is loaded. The 2018 default run (fc_conv) keeps its float32, contiguous path and its numbers.
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
from dataclasses import dataclass

import torch

from config.run_config import RunConfig
from core.errors import VaeLabError
from losses import Objective
from models import MODELS
from runtime.distributed import is_main_process

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


# The fastest numerically safe path per --model_type is what its family declares (models/<family>.py:
# channels_last_faster, bf16_faster), from benchmarks/conv_speed.py (docs/speed.md): the conv models whose
# training step got faster with their layers channels-last, and those whose step got faster in bfloat16
# autocast on a device with native bfloat16 arithmetic. The 2018 models stay float32 and contiguous, so the
# 2018 commands keep their numbers: fc_conv measured no faster in bfloat16; fc measured faster, and is left
# to --amp on.


@dataclass(frozen=True)
class FastPath:
    """What a run's training computes in: the conv layers' memory layout and the forward's precision."""

    channels_last: bool = False
    amp: bool = False

    def describe(self) -> str:
        return ", ".join(what for what, on in (("channels-last", self.channels_last),
                                               ("bfloat16 autocast", self.amp)) if on) or "float32"

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format


def choose_path(device: torch.device, cfg: RunConfig) -> FastPath:
    """--channels_last and --amp resolved for this device and model: ``on`` / ``off`` as given, ``auto``
    as the benchmark found (bfloat16 only where the device has native bfloat16 arithmetic, and never
    for the IWAE bound, which is trained in float32)."""
    conv_device = device.type in ("cpu", "cuda")
    family = MODELS[cfg.model_type]
    channels_last = _resolve(cfg.channels_last, conv_device and family.channels_last_faster)
    amp = _resolve(cfg.amp, family.bf16_faster and cfg.iw_train == 1 and native_bf16(device))
    return FastPath(channels_last, amp)


def _resolve(setting: str, auto: bool) -> bool:
    return auto if setting == "auto" else setting == "on"


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes in bfloat16 natively: a GPU of compute capability 8.0+, a CPU with
    AVX512-BF16 or AMX."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return device.type == "cpu" and _cpu_has_bf16()


def check_flags(device: torch.device, cfg: RunConfig) -> None:
    """Refuse --amp on / --compile where they cannot work, before any data is loaded."""
    if cfg.amp == "on":
        check_amp(device)
    if cfg.compile:
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
            print("note: this CPU has no bfloat16 instructions (AVX512-BF16 or AMX): --amp on runs, but "
                  "several times slower than float32 (--amp auto leaves it off here)")


def _cpu_has_bf16() -> bool:
    # PyTorch's kernels limited below AVX-512 (ATEN_CPU_CAPABILITY=avx2) use no bfloat16 instructions either
    if torch.backends.cpu.get_cpu_capability() not in ("AVX512", "AMX"):
        return False
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


def compile_for_training(model: torch.nn.Module, objective: Objective) -> tuple[Callable, Objective]:
    """torch.compile the (possibly DDP-wrapped) model and the objective's per-step arithmetic
    (``objective.compile()``); returns the compiled model and the objective.

    The first steps compile (seconds with a warm cache under /tmp/torchinductor_*, up to
    a minute cold); the last, smaller batch of an epoch compiles once more.
    """
    import torch._inductor.config as inductor_config  # here: ~1 s, only for --compile

    # The reparameterisation noise comes from PyTorch's own generator, as in eager mode, so
    # a compiled run draws the same numbers (seeds, resume and torchrun behave the same).
    inductor_config.fallback_random = True
    objective.compile()
    return torch.compile(model), objective
