"""Atomic file writes: write to a temporary file beside the target, then rename.

A crash leaves either the old file or the new one, never a half-written file.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, IO

import numpy as np


class DiskFullError(OSError):
    """A write that ran out of space (errno ENOSPC or EDQUOT); the message names the file, the space
    it needed and the space free where it was written."""


def _is_disk_full(exc: OSError) -> bool:
    """ENOSPC / EDQUOT, or numpy's "Not enough free space to write N bytes" (raised without an errno)."""
    return exc.errno in (errno.ENOSPC, errno.EDQUOT) or "not enough free space" in str(exc).lower()


def _human(n: int) -> str:
    value = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n} bytes" if unit == "bytes" else f"{value:.1f} {unit} ({n} bytes)"
        value /= 1024
    return f"{n} bytes"  # pragma: no cover


def disk_full_error(path: Path, needed: int | None, cause: OSError) -> DiskFullError:
    """A :class:`DiskFullError` for writing ``path`` (``needed`` bytes, when known)."""
    try:
        free = _human(shutil.disk_usage(path.parent).free)
    except OSError:
        free = "unknown"
    need = f"needs {_human(needed)}" if needed is not None else "needs more space than is free"
    message = f"no space left to write {path}: it {need}; {free} free in {path.parent} (free space there or point the output elsewhere); {cause}"
    return DiskFullError(errno.ENOSPC, message, str(path))


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None], *, overwrite: bool = True, size: int | None = None) -> Path:
    """Call ``write(fh)`` on a temporary file in ``path``'s folder, fsync, then rename onto ``path``.

    With ``overwrite=False`` an existing ``path`` raises ``FileExistsError`` and is left untouched
    (the final step is a hard link, which fails if the name exists). A full disk raises
    :class:`DiskFullError` naming ``path`` and the space needed (``size``, the bytes to be written,
    when the caller knows it) and leaves no temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a plain open() would honour the umask
        with _open_temp(fd) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # raises FileExistsError, never clobbers
            os.unlink(tmp)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, DiskFullError) and _is_disk_full(exc):
            raise disk_full_error(path, size, exc) from exc
        raise
    return path


def _open_temp(fd: int) -> IO[bytes]:
    """The temporary file's binary writer (a seam for tests that write to a full device)."""
    return os.fdopen(fd, "wb")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, overwrite: bool = True) -> Path:
    return atomic_write(path, lambda fh: fh.write(data), overwrite=overwrite, size=len(data))


def atomic_write_text(path: str | os.PathLike, text: str, *, overwrite: bool = True) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), overwrite=overwrite)


def atomic_write_json(path: str | os.PathLike, obj: Any, *, overwrite: bool = True) -> Path:
    """JSON with full-precision floats (Python's repr round-trips), sorted keys, 2-space indent."""
    text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=True) + "\n"
    return atomic_write_text(path, text, overwrite=overwrite)


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray, *, overwrite: bool = True) -> Path:
    """``np.save`` through a temporary file (so a reader never memory-maps a partial array)."""
    header = 128  # np.save's header is padded to a multiple of 64 bytes; 128 covers any plain array's
    return atomic_write(path, lambda fh: np.save(fh, array, allow_pickle=False), overwrite=overwrite, size=array.nbytes + header)
