"""The host allocator setting: large blocks from the heap when tuned, from mmap with glibc's defaults."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap

import pytest

from benchmark.core.allocator import CHOICES, ENV, host_allocator_state, requested_mode, tune_host_allocator

glibc_linux = pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc on Linux only")

# Allocates 96 MiB with malloc (as PyTorch's CPU allocator does) and reports how many bytes glibc
# holds in mmapped blocks (mallinfo2().hblkhd) while it is live.
PROBE = textwrap.dedent("""
    import ctypes, json, sys
    from benchmark.core.allocator import tune_host_allocator

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    state = tune_host_allocator()
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "mallinfo2"):  # glibc < 2.33
        print(json.dumps({"state": state, "mmapped_bytes": None}))
        sys.exit(0)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    libc.mallinfo2.restype = MallInfo2
    before = libc.mallinfo2().hblkhd
    p = libc.malloc(96 * 2**20)
    during = libc.mallinfo2().hblkhd
    libc.free(p)
    print(json.dumps({"state": state, "mmapped_bytes": during - before}))
""")


def probe(mode: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != ENV}
    if mode is not None:
        env[ENV] = mode
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    result = json.loads(out.stdout)
    if result["mmapped_bytes"] is None:
        pytest.skip("glibc without mallinfo2 (older than 2.33)")
    return result


@glibc_linux
def test_tuned_allocator_serves_large_blocks_from_the_heap():
    result = probe(None)  # the default is "tuned"
    assert result["state"]["tuned"] is True
    assert result["mmapped_bytes"] == 0


@glibc_linux
def test_system_mode_keeps_glibc_defaults():
    result = probe("system")
    assert result["state"] == {"requested": "system", "tuned": False, "detail": result["state"]["detail"]}
    assert result["mmapped_bytes"] >= 96 * 2**20  # glibc maps a block this large by itself


def test_bad_mode_names_the_value_and_the_choices():
    with pytest.raises(ValueError, match=r"PLURES_HOST_ALLOCATOR='fast'.*tuned, system"):
        requested_mode({ENV: "fast"})
    assert requested_mode({}) == "tuned" and requested_mode({ENV: " System "}) == "system"
    assert CHOICES == ("tuned", "system")


def test_cli_rejects_a_bad_mode_with_a_clear_error():
    env = dict(os.environ, **{ENV: "fast"})
    out = subprocess.run([sys.executable, "-m", "benchmark", "list"], env=env, capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 2
    assert "PLURES_HOST_ALLOCATOR='fast'" in out.stderr and "valid choices: tuned, system" in out.stderr


def test_provenance_records_the_allocator_state():
    from benchmark.records import provenance

    state = tune_host_allocator({})
    assert provenance("cpu")["host_allocator"] == state == host_allocator_state()
