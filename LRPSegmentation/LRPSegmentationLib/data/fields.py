"""Seeded random smooth fields and mask helpers shared by the synthetic generator families (numpy only)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def _basis(size: int, cells: int) -> np.ndarray:
    """(size, cells) matrix spreading ``cells`` evenly spaced Gaussian bumps over ``size`` voxels (rows sum to 1)."""
    position = (np.arange(size) + 0.5) / size * cells - 0.5
    weights = np.exp(-0.5 * ((position[:, None] - np.arange(cells)[None, :]) / 0.75) ** 2)
    return weights / weights.sum(axis=1, keepdims=True)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int, int], cells: tuple[int, int, int]) -> np.ndarray:
    """Zero-mean, unit-sd random field varying over about ``cells`` bumps per axis (separable, fast)."""
    cells = tuple(max(2, int(c)) for c in cells)
    field = rng.standard_normal(cells)
    field = field @ _basis(shape[2], cells[2]).T  # (cz, cy, W)
    field = np.einsum("hj,ajw->ahw", _basis(shape[1], cells[1]), field)  # (cz, H, W)
    field = np.tensordot(_basis(shape[0], cells[0]), field, axes=(1, 0))  # (D, H, W)
    field = field - field.mean()
    return (field / (field.std() + 1e-12)).astype(np.float32)


def coordinates(shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalised voxel-centre coordinates z, y, x in (-1, 1), broadcastable to ``shape``."""
    axes = [(2.0 * (np.arange(n, dtype=np.float32) + 0.5) / n - 1.0) for n in shape]
    return axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest connected component (face connectivity) of a boolean mask."""
    labels, count = ndimage.label(mask)
    if count <= 1:
        return mask.astype(bool)
    sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, count + 1))
    return labels == (int(np.argmax(sizes)) + 1)


def top_fraction(score: np.ndarray, allowed: np.ndarray, count: int) -> np.ndarray:
    """The ``count`` allowed voxels with the highest score."""
    values = score[allowed]
    count = int(np.clip(count, 1, values.size))
    threshold = np.partition(values, values.size - count)[values.size - count]
    return allowed & (score >= threshold)
