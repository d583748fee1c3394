"""The CPU a run trains on: its model, the instruction sets that decide which kernels are fast, its
physical cores; and the thread settings every run starts with.

- :func:`cpu_facts`: ``{"model", "vendor", "capability": {"avx2", "avx512", "avx512_bf16", "amx"},
  "torch_isa", "physical_cores", "logical_cpus"}``, recorded in every record's provenance (``cpu``).
  ``capability`` comes from the kernel's flags (``/proc/cpuinfo``); ``torch_isa`` is the vector
  instruction set PyTorch's own kernels dispatch to (``torch.backends.cpu.get_cpu_capability()``).
  Which precision is faster is not read from these flags: ``benchmark.training.precision`` measures it.
- :func:`configure_threads`: intra-op threads = the physical cores this process may run on
  (hyper-threads share a core's vector units: a second thread per core slows the convolutions
  down), inter-op threads = 1 (a training step is one chain of operators). ``PLURES_THREADS``, a SLURM task's
  ``SLURM_CPUS_PER_TASK`` or ``OMP_NUM_THREADS`` win (in that order); the state is recorded in provenance (``threads``).
"""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from pathlib import Path
from typing import Any

CPUINFO = Path("/proc/cpuinfo")
THREADS_ENV = "PLURES_THREADS"

# capability -> the /proc/cpuinfo flags that give it (any one of them)
CAPABILITY_FLAGS: dict[str, tuple[str, ...]] = {
    "avx2": ("avx2",),
    "avx512": ("avx512f",),
    "avx512_bf16": ("avx512_bf16",),
    "amx": ("amx_bf16", "amx_tile"),
}

_threads: dict[str, Any] | None = None


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """Model, vendor, flags and physical cores from the text of ``/proc/cpuinfo`` (x86 Linux layout).

    Physical cores: distinct ``(physical id, core id)`` pairs; where the file has no core ids
    (virtual machines, other architectures) every listed processor counts as a core.
    """
    model, vendor, flags = "", "", set()
    cores, processors = set(), 0
    block: dict[str, str] = {}
    for line in text.splitlines() + [""]:
        if not line.strip():
            if block:
                processors += "processor" in block
                if "core id" in block:
                    cores.add((block.get("physical id", "0"), block["core id"]))
                block = {}
            continue
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        block[key] = value
        if key == "model name" and not model:
            model = value
        elif key == "vendor_id" and not vendor:
            vendor = value
        elif key == "flags" and not flags:
            flags = set(value.split())
    return {"model": model, "vendor": vendor, "flags": flags, "physical_cores": len(cores) or processors, "processors": processors}


def capability_of(flags: set[str]) -> dict[str, bool]:
    """``{"avx2", "avx512", "avx512_bf16", "amx"}`` -> whether the flags include them."""
    return {name: any(f in flags for f in wanted) for name, wanted in CAPABILITY_FLAGS.items()}


@lru_cache(maxsize=1)
def _cpuinfo() -> dict[str, Any]:
    try:
        return parse_cpuinfo(CPUINFO.read_text())
    except OSError:
        return {"model": "", "vendor": "", "flags": set(), "physical_cores": 0, "processors": 0}


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else ``platform.processor()``, else the machine type."""
    return _cpuinfo()["model"] or platform.processor() or platform.machine()


def usable_physical_cores() -> int:
    """Physical cores among the processors this process may run on (its affinity mask)."""
    info = _cpuinfo()
    try:
        allowed = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        allowed = os.cpu_count() or 1
    per_core = max(1, info["processors"] // info["physical_cores"]) if info["physical_cores"] else 1
    return max(1, allowed // per_core)


def cpu_facts() -> dict[str, Any]:
    """The CPU as a record states it (see the module docstring)."""
    import torch

    info = _cpuinfo()
    try:
        isa = torch.backends.cpu.get_cpu_capability()
    except Exception:  # noqa: BLE001  (an older torch or a non-x86 build)
        isa = None
    return {"model": cpu_model(), "vendor": info["vendor"] or None, "capability": capability_of(info["flags"]), "torch_isa": isa,
            "physical_cores": info["physical_cores"] or None, "logical_cpus": os.cpu_count()}


def configure_threads(environ: dict[str, str] | None = None, processes: int = 1) -> dict[str, Any]:
    """Intra-op threads = usable physical cores, inter-op threads = 1 (idempotent; see the module
    docstring). ``PLURES_THREADS=N`` sets N intra-op threads; with ``OMP_NUM_THREADS`` set, PyTorch's
    own choice from it is kept. ``processes``: how many processes of one job share this machine's cores
    (data-parallel ranks; torchrun's ``LOCAL_WORLD_SIZE`` wins): each takes its share. Returns the state
    recorded in provenance."""
    global _threads
    import torch

    env = os.environ if environ is None else environ
    if _threads is not None:
        return {**_threads, "intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads()}
    requested = env.get(THREADS_ENV, "").strip()
    if requested:
        if not requested.isdigit() or int(requested) < 1:
            raise ValueError(f"{THREADS_ENV}={requested!r} is not a thread count; valid values: integers >= 1")
        intra, source = int(requested), THREADS_ENV
    elif env.get("SLURM_CPUS_PER_TASK", "").strip().isdigit():  # a SLURM task's share of the node
        intra, source = max(1, int(env["SLURM_CPUS_PER_TASK"])), "SLURM_CPUS_PER_TASK"
    elif env.get("OMP_NUM_THREADS"):
        intra, source = torch.get_num_threads(), "OMP_NUM_THREADS"
    else:
        local = env.get("LOCAL_WORLD_SIZE", "").strip()  # torchrun: the node's cores shared by its processes
        ranks = int(local) if local.isdigit() and int(local) > 0 else max(1, int(processes))
        intra, source = max(1, usable_physical_cores() // ranks), "physical cores" + (f" / {ranks} processes" if ranks > 1 else "")
    torch.set_num_threads(intra)
    inter_note = ""
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError as exc:  # inter-op work already ran in this process: its pool cannot change any more
        inter_note = f"left as is: {exc}"
    _threads = {"source": source, **({"inter_op_note": inter_note} if inter_note else {})}
    return {**_threads, "intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads()}


def thread_state() -> dict[str, Any]:
    """The thread counts this process runs with (``source`` None when :func:`configure_threads` was not called)."""
    import torch

    base = _threads or {"source": None}
    return {**base, "intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads()}
