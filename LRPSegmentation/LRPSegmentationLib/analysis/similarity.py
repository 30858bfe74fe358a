"""Numbers the sanity checks report, numpy only: rank correlation, 3-D SSIM, area over the perturbation curve.

- :func:`spearman`: Spearman rank correlation (ties get their average rank), e.g. of |R| before and after a
  randomisation (Adebayo et al. 2018), or of six modality shares against six ablation effects.
- :func:`ssim`: structural similarity of two volumes with a cubic box window (Wang et al. 2004), each volume first
  scaled to [0, 1] by its own max (the randomisation test compares patterns, not amplitudes).
- :func:`aopc`: area over the perturbation curve (Samek et al. 2017), normalised by the unperturbed score.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 of a flat array, ties sharing their average rank (float64)."""
    values = np.asarray(values).ravel()
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    boundaries = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1], True])
    average = (boundaries[:-1] + boundaries[1:] - 1) / 2.0
    out = np.empty(values.size, dtype=np.float64)
    out[order] = np.repeat(average, np.diff(boundaries))
    return out


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two flat arrays; 0.0 when either is constant (no pattern to correlate)."""
    a = np.asarray(a, np.float64).ravel() - np.mean(a)
    b = np.asarray(b, np.float64).ravel() - np.mean(b)
    norm = float(np.sqrt((a @ a) * (b @ b)))
    return float(a @ b / norm) if norm > 0 else 0.0


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two arrays of the same size (0.0 when either is constant)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.size != b.size:
        raise ValueError(f"spearman needs arrays of one size, got {a.size} and {b.size}.")
    return pearson(ranks(a), ranks(b))


def box_mean(volume: np.ndarray, size: int) -> np.ndarray:
    """Mean over a ``size``-wide cube around each voxel (edges: the part of the cube inside the volume)."""
    out = np.asarray(volume, np.float64)
    for axis in range(out.ndim):
        n = out.shape[axis]
        half = size // 2
        padded = np.concatenate([np.zeros_like(np.take(out, [0], axis=axis)), np.cumsum(out, axis=axis)], axis=axis)
        upper = np.minimum(np.arange(n) + half + 1, n)
        lower = np.maximum(np.arange(n) - half, 0)
        total = np.take(padded, upper, axis=axis) - np.take(padded, lower, axis=axis)
        shape = [1] * out.ndim
        shape[axis] = n
        out = total / (upper - lower).reshape(shape)
    return out


def ssim(a: np.ndarray, b: np.ndarray, window: int = 7) -> float:
    """Mean SSIM of two same-shape volumes, each divided by its own max (0 if all zero), window ``window``^3."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"ssim needs arrays of one shape, got {a.shape} and {b.shape}.")
    a = a / (np.max(a) or 1.0)
    b = b / (np.max(b) or 1.0)
    c1, c2 = 0.01**2, 0.03**2  # data range 1
    mean_a, mean_b = box_mean(a, window), box_mean(b, window)
    var_a = box_mean(a * a, window) - mean_a**2
    var_b = box_mean(b * b, window) - mean_b**2
    cov = box_mean(a * b, window) - mean_a * mean_b
    index = ((2 * mean_a * mean_b + c1) * (2 * cov + c2)) / ((mean_a**2 + mean_b**2 + c1) * (var_a + var_b + c2))
    return float(index.mean())


def aopc(scores: Sequence[float]) -> float:
    """AOPC of a perturbation curve ``scores`` (unperturbed score first): mean of (f0 - f_k) / |f0| over all steps
    including k = 0 (Samek et al. 2017), so 0 means removing did nothing and 1 that the score fell to zero at once."""
    values = np.asarray(scores, np.float64)
    if values.size == 0:
        raise ValueError("aopc needs at least the unperturbed score.")
    first = float(values[0])
    return float(np.mean(first - values) / abs(first)) if first != 0 else 0.0
