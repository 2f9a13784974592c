"""Where to run and in which precision: the one place that turns "auto" into a device and a dtype.

Two precisions are chosen differently on purpose:
- `train_dtype`: the autocast *compute* dtype of training. Weights and optimizer state stay float32; bf16 pays
  wherever bf16 matmuls are fast: CUDA GPUs that have them, and CPUs with AVX512-BF16 or AMX (2-2.5x faster
  matmuls on such a CPU, docs/LOG.md).
- `inference_dtype`: the dtype the *weights* are stored in for generation. On CPU float32 stays the default:
  exact, and at the small sizes that run on a CPU the decode step is overhead-bound, not matmul-bound.
"""

from __future__ import annotations

from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


_TRIM = []  # glibc's malloc_trim, looked up once ([None] where there is none)


def release_host_memory() -> None:
    """Hand freed CPU memory back to the operating system (glibc's malloc_trim; elsewhere nothing to do).

    PyTorch's CPU tensors come from malloc. Batches padded to different lengths free and allocate tensors of ever
    new sizes, and glibc keeps the freed pages in its heap: a process's RSS only grows. In the demo (all stages in
    one process) that was 4.5 GB at the end, 1.4 GB of it DPO's reference pass alone, mostly free heap. Fixing
    glibc's mmap threshold instead halves the memory but doubles DPO's time (every large tensor a fresh mmap).
    A trim costs ~40 ms, so callers do it between phases or every few seconds, not every step."""
    if not _TRIM:
        import ctypes
        import ctypes.util

        try:
            _TRIM.append(getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), "malloc_trim", None))
        except OSError:
            _TRIM.append(None)
    if _TRIM[0] is not None:
        _TRIM[0](0)


def resolve_device(name: str = "auto") -> str:
    """"auto": cuda > mps > cpu; an explicit device that is not there is a one-line error."""
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but no CUDA GPU is visible; use cpu or auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' requested but MPS is unavailable; use cpu or auto")
    return name


def cpu_has_fast_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: be conservative
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _named(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; use one of auto, {', '.join(DTYPES)}")
    return DTYPES[name]


def train_dtype(name: str, device: str) -> torch.dtype:
    """Autocast dtype for training: "auto" = bfloat16 where it is fast, else float32."""
    if name != "auto":
        return _named(name)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device == "cpu" and cpu_has_fast_bf16():
        return torch.bfloat16
    return torch.float32


def inference_dtype(name: str | torch.dtype, device: str) -> torch.dtype:
    """Weight dtype for generation: "auto" = bfloat16 on GPUs that have it, float32 elsewhere."""
    if isinstance(name, torch.dtype):
        return name
    if name == "auto":
        if str(device).startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return _named(name)
