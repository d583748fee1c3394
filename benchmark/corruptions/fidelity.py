"""Fidelity checks for corrupted sets: PSNR vs clean per corruption and severity."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from benchmark.corruptions import ALL_CORRUPTIONS, SEVERITIES
from benchmark.corruptions.generate import corrupt_array


def psnr(clean: np.ndarray, corrupted: np.ndarray) -> np.ndarray:
    """Per-image PSNR in dB of uint8 [N, H, W, C] pairs: float64 [N] (identical images: 148 dB cap)."""
    diff = clean.astype(np.float64) - corrupted.astype(np.float64)
    mse = np.maximum((diff**2).reshape(len(clean), -1).mean(1), 1e-10)
    return 10.0 * np.log10(255.0**2 / mse)


def psnr_table(
    clean: np.ndarray,
    corruptions: Sequence[str] = ALL_CORRUPTIONS,
    severities: Sequence[int] = SEVERITIES,
    seed: int = 0,
    *,
    profile: str = "cifar",
    batch_size: int = 1000,
) -> pd.DataFrame:
    """Mean PSNR (dB) vs clean: rows corruption, columns severity.

    clean: uint8 [N, H, W, 3]. Uses the same derived seeds as ``generate_cifar_c``.
    """
    rows = {}
    for c in corruptions:
        rows[c] = {
            s: float(psnr(clean, corrupt_array(clean, c, s, seed=seed, batch_size=batch_size, profile=profile)).mean())
            for s in severities
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "corruption"
    table.columns.name = "severity"
    return table


def monotone_in_severity(table: pd.DataFrame, tol: float = 0.0) -> pd.Series:
    """Per corruption: True when PSNR strictly decreases (by more than ``tol`` dB) with severity."""
    values = table.to_numpy()
    ok = (np.diff(values, axis=1) < -tol).all(axis=1)
    return pd.Series(ok, index=table.index, name="monotone")
