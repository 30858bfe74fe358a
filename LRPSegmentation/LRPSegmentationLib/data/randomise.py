"""Domain randomisation: vary everything that is not the lesion signal, so a model trained on synthetic cases
meets other scanners, software and grids (the SynthSeg idea).

Two places use it. :func:`scanner_variation` acts once per generated case on its native grid (per-map
intensity scale, bias field, noise level, partial-volume blur): the kind of variation between sites.
:func:`randomise_sample` acts on every training step on the model-grid input (per-modality contrast (gamma)
and intensity scale, bias fields, noise, blur, lower slab/in-plane resolution, missing edge slices, left-right
flips); the label follows the geometric changes. Both are pure functions of their random generator.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from LRPSegmentationLib.data.fields import smooth_noise

RELATIVE_MAPS = (2, 3)
"""Channels (rCBF, rCBV in MODALITIES order) whose absolute scale differs most between perfusion software."""


def scanner_variation(rng: np.random.Generator, images: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Per-case site variation of (6, D, H, W) maps on their native grid; background stays 0."""
    shape = images.shape[1:]
    out = np.empty_like(images)
    for channel, image in enumerate(images):
        low, high = (0.4, 2.5) if channel in RELATIVE_MAPS else (0.85, 1.15)
        scale = np.exp(rng.uniform(np.log(low), np.log(high)))
        bias = 1.0 + rng.uniform(0.0, 0.12) * smooth_noise(rng, shape, (2, 3, 3))
        varied = image * scale * bias
        sigma = rng.uniform(0.0, 0.8)
        if sigma > 0.2:
            varied = ndimage.gaussian_filter(varied, (sigma * 0.3, sigma, sigma))
        spread = float(np.std(varied[brain])) if brain.any() else 1.0
        varied = varied + rng.standard_normal(shape, dtype=np.float32) * rng.uniform(0.0, 0.15) * spread
        out[channel] = np.where(brain, np.clip(varied, 0.0, None), 0.0)
    return out


def _resample_axis(volume: np.ndarray, axis: int, factor: float) -> np.ndarray:
    """Lose resolution along ``axis`` by ``factor`` (average down, linear back up), same shape."""
    size = volume.shape[axis]
    small = max(2, int(round(size / factor)))
    zoom = [1.0] * volume.ndim
    zoom[axis] = small / size
    down = ndimage.zoom(volume, zoom, order=1, prefilter=False, grid_mode=True, mode="grid-constant")
    zoom[axis] = size / down.shape[axis]
    up = ndimage.zoom(down, zoom, order=1, prefilter=False, grid_mode=True, mode="grid-constant")
    pad = [(0, 0)] * volume.ndim
    pad[axis] = (0, max(0, size - up.shape[axis]))
    return np.pad(up, pad, mode="edge").take(range(size), axis=axis)


def randomise_sample(rng: np.random.Generator, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One training view of a model-grid input ``x`` (6, D, H, W), values about [0, 1], and its label ``y``
    (D, H, W), classes or partial-volume shares; returns new arrays (float32, and int64 classes or float32
    shares)."""
    x = np.array(x, dtype=np.float32, copy=True)
    y = np.array(y, copy=True)
    if rng.random() < 0.5:
        x, y = x[..., ::-1].copy(), y[..., ::-1].copy()
    brain = np.any(x != 0, axis=0)
    shape = x.shape[1:]
    for channel in range(x.shape[0]):
        image = np.clip(x[channel], 0.0, None)
        top = float(image.max()) or 1.0
        image = top * (image / top) ** np.exp(rng.uniform(-0.35, 0.35))  # contrast
        image = image * np.exp(rng.uniform(-0.2, 0.2))  # intensity scale
        image = image * (1.0 + rng.uniform(0.0, 0.15) * smooth_noise(rng, shape, (2, 3, 3)))  # bias field
        x[channel] = image
    if rng.random() < 0.3:  # thicker slabs
        x = np.stack([_resample_axis(c, 0, rng.uniform(1.2, 2.0)) for c in x])
    if rng.random() < 0.3:  # coarser in-plane resolution
        factor = rng.uniform(1.2, 2.0)
        x = np.stack([_resample_axis(_resample_axis(c, 1, factor), 2, factor) for c in x])
    if rng.random() < 0.3:  # partial-volume blur
        sigma = rng.uniform(0.3, 1.0)
        x = np.stack([ndimage.gaussian_filter(c, (0.3 * sigma, sigma, sigma)) for c in x])
    x = x + rng.standard_normal(x.shape, dtype=np.float32) * np.float32(rng.uniform(0.0, 0.06))
    x = np.where(brain, x, 0.0).astype(np.float32)
    if rng.random() < 0.2:  # the slab misses the first or last slices
        cut = int(rng.integers(1, max(2, shape[0] // 6) + 1))
        edge = slice(0, cut) if rng.random() < 0.5 else slice(shape[0] - cut, shape[0])
        x[:, edge] = 0.0
        y[edge] = 0
    return x, (y.astype(np.float32) if y.dtype.kind == "f" else y.astype(np.int64))
