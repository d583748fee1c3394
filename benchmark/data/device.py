"""Batches formed on the device: a split held as uint8 on the training device, augmented and
normalised there (one gather per batch, no per-image loop)."""

from __future__ import annotations

from typing import Iterator, Protocol

import numpy as np
import torch


class ArraySplit(Protocol):
    """A split held as arrays (e.g. :class:`benchmark.data.base.Split`): images uint8 ``[N, H, W, 3]``, labels int64 ``[N]``."""

    images: np.ndarray
    labels: np.ndarray


DEFAULT_CROP_PAD = 4  # px of zero padding of the random crop (a shift of +-4 px) when ``train.crop_pad`` is unset


def random_crop_flip(images: torch.Tensor, generator: torch.Generator, pad: int = DEFAULT_CROP_PAD) -> torch.Tensor:
    """Random crop with ``pad`` zero pixels of padding and random horizontal flip, on a whole batch:
    each image is shifted by a uniform offset in ``[-pad, pad]`` px along each axis (uncovered
    pixels are zero) and flipped with probability 1/2. (uncertainty-baselines' CIFAR pipeline pads
    2 px to 36x36 and crops 32x32: ``pad = 2``.)

    ``images``: uint8 ``[B, H, W, C]`` on any device -> same shape. One gather, no per-image loop.
    """
    b, h, w, _ = images.shape
    dev = images.device
    padded = torch.nn.functional.pad(images, (0, 0, pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b, 1, 1), device=dev, generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (b, 1, 1), device=dev, generator=generator)
    flip = torch.rand((b, 1, 1), device=dev, generator=generator) < 0.5
    rows = torch.arange(h, device=dev).view(1, h, 1) + dy
    cols = torch.arange(w, device=dev).view(1, 1, w)
    cols = torch.where(flip, w - 1 - cols, cols) + dx
    idx = torch.arange(b, device=dev).view(b, 1, 1)
    return padded[idx, rows, cols]


class DeviceData:
    """A split held on the training device as uint8 ``[N, H, W, C]``; yields normalised float batches.

    Batches are ``[B, C, H, W]`` float32 in channels_last memory layout (a permuted NHWC tensor).
    """

    def __init__(self, split: ArraySplit, mean: tuple[float, ...], std: tuple[float, ...], device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.images = torch.from_numpy(np.array(split.images, dtype=np.uint8, order="C")).to(self.device)  # copy: the cache is a read-only memmap
        self.labels = torch.from_numpy(np.asarray(split.labels, dtype=np.int64)).to(self.device)
        self.mean = torch.tensor(mean, device=self.device).view(1, -1, 1, 1) * 255
        self.inv_std = 1.0 / (torch.tensor(std, device=self.device).view(1, -1, 1, 1) * 255)

    def __len__(self) -> int:
        return len(self.labels)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``[B, H, W, C]`` -> float ``[B, C, H, W]`` (channels_last), mean/std normalised."""
        return (images.permute(0, 3, 1, 2).float() - self.mean) * self.inv_std

    def steps_per_epoch(self, batch_size: int) -> int:
        return len(self) // batch_size

    def epoch_order(self, generator: torch.Generator) -> torch.Tensor:
        return torch.randperm(len(self), device=self.device, generator=generator)

    def train_batch(self, order: torch.Tensor, step: int, batch_size: int, generator: torch.Generator, augment: bool = True,
                    crop_pad: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch ``step`` of an epoch whose shuffled ``order`` is given (drop-last batching); with
        ``augment``, random crops padded by ``crop_pad`` px (None: :data:`DEFAULT_CROP_PAD`) and flips."""
        idx = order[step * batch_size : (step + 1) * batch_size]
        images = self.images[idx]
        if augment:
            images = random_crop_flip(images, generator, DEFAULT_CROP_PAD if crop_pad is None else int(crop_pad))
        return self.normalise(images), self.labels[idx]

    def eval_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(self), batch_size):
            yield self.normalise(self.images[start : start + batch_size]), self.labels[start : start + batch_size]
