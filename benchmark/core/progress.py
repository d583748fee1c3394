"""Progress bars on long work (tqdm), quiet when not on a terminal."""

from __future__ import annotations

from typing import Iterable, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress_bar(iterable: Iterable[T] | None = None, *, desc: str = "", unit: str = "it", total: int | None = None, enable: bool = True, leave: bool = False) -> "tqdm[T]":
    """A tqdm bar that shows only on a terminal (``disable=None``) and never when ``enable`` is false."""
    return tqdm(iterable, desc=desc, unit=unit, total=total, disable=None if enable else True, leave=leave, dynamic_ncols=True)
