"""Host (CPU) memory allocator settings: keep large tensors in the heap instead of fresh mappings.

PyTorch allocates CPU tensors with glibc's ``malloc``. Above glibc's mmap threshold (at most
32 MiB on 64-bit Linux, and not raisable beyond that) every allocation is a fresh ``mmap`` and
every free an ``munmap``, so each large activation of a forward or backward pass is page-faulted
in again, page by page, at every step. A bf16 ResNet-8 at 512 rows has 16 MiB activations (below
the threshold); the same network on a BatchEnsemble batch tiled 4 times, or an MC-dropout batch
repeated K times, has 64 MiB ones (above it), and those steps ran 2x slower per row than the
deterministic model's for that reason alone (``python -m benchmark perf``; docs/performance.md).

:func:`tune_host_allocator` (called at the start of every CLI command, run, sweep job and perf
measurement) sets, through ``mallopt``:

- ``M_MMAP_MAX = 0``: no allocation is served by its own mapping; large blocks come from the heap;
- ``M_TRIM_THRESHOLD = -1``: trimming off; freed memory is kept for the next step rather than
  returned to the kernel (as CUDA's caching allocator does on a GPU).

The process therefore keeps its peak heap for its lifetime (peak RSS is what the run needed at
its largest, not more). Only glibc on Linux is tuned; elsewhere (macOS, musl) nothing changes and
the returned state says why. ``PLURES_HOST_ALLOCATOR=system`` leaves glibc's defaults (to measure
the difference, or where memory must go back to the system between phases). The state is
recorded in every record's provenance (``host_allocator``), since it changes measured timings.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
from typing import Any

ENV = "PLURES_HOST_ALLOCATOR"
CHOICES = ("tuned", "system")

# glibc <malloc.h> parameter numbers
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4

_state: dict[str, Any] | None = None


def requested_mode(environ: dict[str, str] | None = None) -> str:
    """``tuned`` (default) or ``system``, from ``$PLURES_HOST_ALLOCATOR``; anything else is an error."""
    value = (os.environ if environ is None else environ).get(ENV, "tuned").strip().lower() or "tuned"
    if value not in CHOICES:
        raise ValueError(f"{ENV}={value!r} is not a host allocator mode; valid choices: {', '.join(CHOICES)}")
    return value


def _glibc() -> Any | None:
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(None)
        return libc if hasattr(libc, "mallopt") else None
    except OSError:  # pragma: no cover - no C library handle
        return None


def tune_host_allocator(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Apply the requested mode once per process (idempotent) and return the state recorded in provenance."""
    global _state
    mode = requested_mode(environ)
    if _state is not None and _state["requested"] == mode:
        return dict(_state)
    libc = _glibc()
    if mode == "system":
        state = {"requested": mode, "tuned": False, "detail": "glibc defaults (mmap above 32 MiB, memory trimmed)"}
        if libc is not None and _state is not None and _state["tuned"]:
            # back to glibc's defaults for what is allocated from now on
            libc.mallopt(_M_MMAP_MAX, 65536)
            libc.mallopt(_M_TRIM_THRESHOLD, 128 * 1024)
    elif libc is None:
        state = {"requested": mode, "tuned": False, "detail": f"not glibc on Linux ({sys.platform}, {platform.libc_ver()[0] or 'unknown libc'}): left as is"}
    else:
        ok = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, -1))  # -1: never trim (mallopt(3))
        state = {"requested": mode, "tuned": ok,
                 "detail": "glibc mallopt: M_MMAP_MAX=0 (no mmap per allocation), M_TRIM_THRESHOLD=-1 (no trimming)" if ok
                 else "glibc mallopt refused the settings: left as is"}
    _state = state
    return dict(state)


def host_allocator_state() -> dict[str, Any]:
    """What this process runs with (``tuned`` false and a reason when :func:`tune_host_allocator` was not called)."""
    if _state is None:
        return {"requested": None, "tuned": False, "detail": "not tuned (tune_host_allocator was not called in this process)"}
    return dict(_state)
