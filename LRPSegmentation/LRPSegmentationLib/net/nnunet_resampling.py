"""nnU-Net v2's resampling (``resample_data_or_seg_to_shape``), reimplemented with scipy so nnunetv2 is not needed.

nnU-Net resizes each channel with ``skimage.transform.resize(order, mode='edge', anti_aliasing=False)``, which is
``scipy.ndimage.zoom(grid_mode=True, mode='nearest')`` clipped to the input's range. When the spacing is
anisotropic (largest / smallest > 3, on the source or the target grid) it resizes in-plane slice by slice with
``order`` and then along the coarse axis with ``order_z`` (0: nearest) via ``map_coordinates``. Images use the
plans' ``resampling_fn_data_kwargs`` (order 3, order_z 0), model outputs ``resampling_fn_probabilities_kwargs``
(order 1, order_z 0). The fixture test compares the result with nnU-Net's own predictor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

ANISO_THRESHOLD = 3.0
"""nnU-Net's ``ANISO_THRESHOLD``: a grid is anisotropic when its largest spacing exceeds 3x its smallest."""


@dataclass(frozen=True)
class Resampling:
    """One of the plans' resampling settings (``order``, ``order_z``, ``force_separate_z``)."""

    order: int = 3
    order_z: int = 0
    force_separate_z: bool | None = None

    @classmethod
    def from_plans(cls, kwargs: dict | None, default_order: int) -> "Resampling":
        kwargs = kwargs or {}
        return cls(int(kwargs.get("order", default_order)), int(kwargs.get("order_z", 0)),
                   kwargs.get("force_separate_z"))


def _coarse_axis(spacing) -> int | None:
    """The one axis with the largest spacing, or None when two or three axes share it (nnU-Net's rule)."""
    spacing = np.asarray(spacing, dtype=float)
    axes = np.where(spacing.max() / spacing == 1)[0]
    return int(axes[0]) if len(axes) == 1 else None


def separate_axis(setting: Resampling, current_spacing, new_spacing) -> int | None:
    """The axis nnU-Net resamples separately (with ``order_z``), or None (``determine_do_sep_z_and_axis``)."""
    if setting.force_separate_z is not None:
        return _coarse_axis(current_spacing) if setting.force_separate_z else None
    for spacing in (current_spacing, new_spacing):
        if max(spacing) / min(spacing) > ANISO_THRESHOLD:
            return _coarse_axis(spacing)
    return None


def _zoom(image: np.ndarray, shape, order: int) -> np.ndarray:
    """``skimage.transform.resize(image, shape, order, mode='edge', anti_aliasing=False)`` (clip included)."""
    factors = [n / o for n, o in zip(shape, image.shape)]
    out = ndimage.zoom(image, factors, order=order, mode="nearest", grid_mode=True)
    return np.clip(out, image.min(), image.max()) if order > 0 else out


def resample(data: np.ndarray, shape, current_spacing, new_spacing, setting: Resampling) -> np.ndarray:
    """A (C, D, H, W) array resampled to ``shape`` as nnU-Net does (module docstring); float32 out."""
    data = np.asarray(data)
    shape = tuple(int(s) for s in shape)
    if tuple(data.shape[1:]) == shape:
        return data.astype(np.float32, copy=False)
    axis = separate_axis(setting, current_spacing, new_spacing)
    out = np.zeros((data.shape[0], *shape), dtype=np.float32)
    for c, channel in enumerate(data.astype(np.float64)):
        if axis is None:
            out[c] = _zoom(channel, shape, setting.order)
            continue
        plane = [s for a, s in enumerate(shape) if a != axis]
        slices = [_zoom(np.take(channel, i, axis=axis), plane, setting.order) for i in range(channel.shape[axis])]
        inplane = np.stack(slices, axis=axis)
        if inplane.shape[axis] == shape[axis]:
            out[c] = inplane
            continue
        grid = np.mgrid[tuple(slice(0, s) for s in shape)].astype(np.float64)
        for a in range(3):
            grid[a] = inplane.shape[a] / shape[a] * (grid[a] + 0.5) - 0.5
        out[c] = ndimage.map_coordinates(inplane, grid, order=setting.order_z, mode="nearest")
    return out
