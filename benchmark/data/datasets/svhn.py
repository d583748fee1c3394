"""SVHN's test split as an out-of-distribution set (torchvision's ``test_32x32.mat`` in the data
root or ``<root>/svhn``); not a training dataset of plures."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..base import OOD_SETS, DataError, OODSpec

SVHN_FILE = "test_32x32.mat"
SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"


def load_svhn_test(root: Path) -> np.ndarray:
    """SVHN's test images ``[N, 32, 32, 3]`` uint8; DataError when absent."""
    path = next((p for p in (root / SVHN_FILE, root / "svhn" / SVHN_FILE) if p.exists()), None)
    if path is None:
        raise DataError(f"SVHN not found: expected {root / SVHN_FILE} or {root / 'svhn' / SVHN_FILE} ({SVHN_URL})")
    try:
        from scipy.io import loadmat
    except ImportError:
        raise DataError(f"reading {path} needs scipy (pip install scipy)") from None
    return np.ascontiguousarray(loadmat(path)["X"].transpose(3, 0, 1, 2))


OOD_SETS.register("svhn")(OODSpec("svhn", load_svhn_test, f"SVHN test split ({SVHN_FILE}, {SVHN_URL})"))
