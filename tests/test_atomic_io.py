"""A full disk while writing atomically: the error names the file and the space needed, and no
temporary file is left behind."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest

from benchmark.core import io
from benchmark.core.io import DiskFullError, atomic_save_npy, atomic_write, atomic_write_bytes

FULL = Path("/dev/full")  # every write to it fails with the real ENOSPC from the kernel


@pytest.fixture
def full_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """Route the temporary file's writes to /dev/full (the temporary file itself is still created beside the target)."""
    if not FULL.exists():
        pytest.skip("no /dev/full on this system")

    def open_full(fd: int):
        os.close(fd)
        return open(FULL, "wb", buffering=0)

    monkeypatch.setattr(io, "_open_temp", open_full)


def test_full_disk_names_the_file_and_the_space_needed(tmp_path: Path, full_device) -> None:
    target = tmp_path / "cache" / "train_images.npy"
    array = np.zeros((100, 32, 32, 3), dtype=np.uint8)
    with pytest.raises(DiskFullError) as info:
        atomic_save_npy(target, array)
    exc = info.value
    assert exc.errno == errno.ENOSPC and exc.filename == str(target)
    message = str(exc)
    assert f"no space left to write {target}: it needs 300.1 KiB ({array.nbytes + 128} bytes)" in message
    assert f"free in {target.parent}" in message and "No space left on device" in message
    assert not target.exists() and list(target.parent.iterdir()) == []  # no temporary file left


def test_full_disk_with_bytes(tmp_path: Path, full_device) -> None:
    with pytest.raises(DiskFullError, match=r"no space left to write .*record\.json: it needs 5 bytes"):
        atomic_write_bytes(tmp_path / "record.json", b"hello")


def test_numpy_message_without_errno_is_recognised(tmp_path: Path) -> None:
    """numpy's own "Not enough free space to write N bytes" carries no errno; it is named the same way."""
    def write(fh) -> None:
        raise OSError("Not enough free space to write 153600000 bytes")

    with pytest.raises(DiskFullError, match=r"no space left to write .*train_images\.npy: it needs 146\.5 MiB \(153600128 bytes\)"):
        atomic_write(tmp_path / "train_images.npy", write, size=153600128)
    assert list(tmp_path.iterdir()) == []


def test_unknown_size_and_other_errors(tmp_path: Path) -> None:
    def full(fh) -> None:
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))

    with pytest.raises(DiskFullError, match=r"x\.pt: it needs more space than is free"):
        atomic_write(tmp_path / "x.pt", full)

    def denied(fh) -> None:
        raise PermissionError(errno.EACCES, "denied")

    with pytest.raises(PermissionError) as info:  # not a full disk: raised as it was
        atomic_write(tmp_path / "y.pt", denied)
    assert not isinstance(info.value, DiskFullError)
