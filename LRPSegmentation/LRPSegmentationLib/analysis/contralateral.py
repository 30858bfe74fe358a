"""The contralateral check: a predicted region that the other hemisphere shows as well is no acute lesion.

An acute stroke changes the maps on one side: its deficit stands out against the mirror-image tissue of the other
hemisphere (how a reader looks at perfusion maps, and why rCBF is read relative to the contralateral side). Healthy
tissue that differs from grey matter in the lesion's direction (deep white matter: lower CBF and CBV, longer MTT,
Tmax and TTP) is the same on both sides. For each connected region of a predicted mask, the check compares the
z-scored maps inside it with the mirror-image voxels across the brain's midline, signed so that a lesion-like
difference is positive, and averages over the maps. A region whose contrast is below a minimum is dropped. Mirror
voxels that are themselves predicted are left out of the comparison (bilateral lesions keep each other), and a
region with no such mirror voxel is kept (nothing to compare with). numpy/scipy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

LESION_DIRECTION: dict[str, float] = {"ADC": -1.0, "MTT": 1.0, "rCBF": -1.0, "rCBV": -1.0, "Tmax": 1.0, "TTP": 1.0}
"""The sign of an acute lesion's change in each map (diffusion restricted, perfusion reduced and delayed)."""


@dataclass(frozen=True)
class RegionContrast:
    """One connected region of a predicted mask: its size, its mean signed contrast to the mirror-image tissue
    (in standard deviations of the brain; None: no unpredicted mirror voxel in the brain), and the verdict."""

    voxels: int
    contrast: float | None
    kept: bool


def left_right_axis(direction) -> int:
    """The array axis of a (D, H, W) volume that runs most nearly left-right, from its ITK direction cosines
    (row-major 3x3; column j is index axis j in patient coordinates, whose first axis is left-right)."""
    matrix = np.asarray(direction, dtype=float).reshape(3, 3)
    return 2 - int(np.argmax(np.abs(matrix[0])))


def contralateral_check(mask: np.ndarray, images: np.ndarray, modalities, axis: int,
                        min_contrast: float) -> tuple[np.ndarray, list[RegionContrast]]:
    """Drop the regions of ``mask`` (D, H, W) whose contrast to their mirror image across the brain's midline on
    array ``axis`` is below ``min_contrast``; returns the new mask (uint8) and every region's verdict.

    ``images`` are the (C, D, H, W) maps named by ``modalities`` (those without a lesion direction are not used),
    zero outside the brain; the midline is the brain's centroid along ``axis``."""
    mask = np.asarray(mask) > 0
    channels = [i for i, name in enumerate(modalities) if name in LESION_DIRECTION]
    if not channels:
        raise ValueError(f"The contralateral check needs at least one of {', '.join(LESION_DIRECTION)} "
                         f"among the inputs, got {', '.join(modalities)}.")
    brain = np.any(images != 0, axis=0)
    labels, count = ndimage.label(mask)
    if count == 0 or not brain.any():
        return mask.astype(np.uint8), []
    # signed per-map scale: a lesion-like difference, in sd of the brain, comes out positive
    scale = np.array([[LESION_DIRECTION[modalities[i]] / (float(images[i][brain].std()) + 1e-6)] for i in channels])
    rows = np.array(channels)[:, None]
    profile = brain.sum(axis=tuple(a for a in range(3) if a != axis))
    middle = float(np.dot(profile, np.arange(profile.size)) / profile.sum())
    keep = mask.copy()
    verdicts = []
    for region, box in enumerate(ndimage.find_objects(labels), start=1):
        where = tuple(w + b.start for w, b in zip(np.nonzero(labels[box] == region), box))
        mirrored = list(where)
        mirrored[axis] = np.clip(np.rint(2 * middle - where[axis]), 0, mask.shape[axis] - 1).astype(int)
        mirrored = tuple(mirrored)
        usable = brain[mirrored] & ~mask[mirrored]
        contrast = None
        if usable.any():
            inside = images[(rows,) + tuple(w[usable][None] for w in where)]
            outside = images[(rows,) + tuple(m[usable][None] for m in mirrored)]
            contrast = float(np.mean(scale * (inside - outside)))
        kept = contrast is None or contrast >= min_contrast
        if not kept:
            keep[where] = False
        verdicts.append(RegionContrast(int(where[0].size), contrast, kept))
    return keep.astype(np.uint8), verdicts
