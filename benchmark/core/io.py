"""Atomic file writes: write to a temporary file beside the target, then rename.

A crash leaves either the old file or the new one, never a half-written file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, IO

import numpy as np


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None], *, overwrite: bool = True) -> Path:
    """Call ``write(fh)`` on a temporary file in ``path``'s folder, fsync, then rename onto ``path``.

    With ``overwrite=False`` an existing ``path`` raises ``FileExistsError`` and is left untouched
    (the final step is a hard link, which fails if the name exists).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a plain open() would honour the umask
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # raises FileExistsError, never clobbers
            os.unlink(tmp)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, overwrite: bool = True) -> Path:
    return atomic_write(path, lambda fh: fh.write(data), overwrite=overwrite)


def atomic_write_text(path: str | os.PathLike, text: str, *, overwrite: bool = True) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), overwrite=overwrite)


def atomic_write_json(path: str | os.PathLike, obj: Any, *, overwrite: bool = True) -> Path:
    """JSON with full-precision floats (Python's repr round-trips), sorted keys, 2-space indent."""
    text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=True) + "\n"
    return atomic_write_text(path, text, overwrite=overwrite)


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray, *, overwrite: bool = True) -> Path:
    """``np.save`` through a temporary file (so a reader never memory-maps a partial array)."""
    return atomic_write(path, lambda fh: np.save(fh, array, allow_pickle=False), overwrite=overwrite)
