"""Real brain anatomy for synthetic cases: the MNI152 grey/white-matter templates warped onto ISLES-like grids.

The MNI ICBM152 2009a symmetric tissue maps ship with ``nilearn`` (BSD; the templates carry the MNI notice:
Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal Neurological Institute, McGill
University) and load offline. Each case draws a thick-slab grid like the ISLES 2017 perfusion series (19-30
slices of 5-7 mm, 128-256 voxels in-plane), a head pose (tilt, roll, yaw, position in the field of view, size)
and a smooth random deformation, and samples grey matter, white matter and CSF partial volumes with slab
averaging through each slice. Every voxel also keeps its MNI coordinates, so lesions can be placed in vascular
territories defined in MNI space (:mod:`.lesions`). Needs the optional ``anatomy`` extra (``nilearn``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

from LRPSegmentationLib.data.fields import smooth_noise

SLAB_SUBSAMPLES = 3
"""Points averaged through each slice's thickness (partial volume of a thick slab)."""

BRAIN_CENTRE_MNI = (0.0, -18.0, 12.0)
"""MNI point (mm, RAS) at the centre of the field of view before the random head position."""


def anatomy_available() -> bool:
    """Whether the MNI templates can be loaded (``nilearn`` installed: ``pip install lrpsegmentation[anatomy]``)."""
    try:
        import nilearn.datasets  # noqa: F401
    except ImportError:
        return False
    return True


@lru_cache(maxsize=1)
def tissue_templates() -> tuple[np.ndarray, np.ndarray]:
    """(3, X, Y, Z) float32 GM, WM, CSF probabilities at 1 mm in MNI space and the 4x4 voxel-to-RAS affine."""
    try:
        from nilearn import datasets
    except ImportError:
        raise ImportError("The 'anatomy' family needs nilearn: pip install 'lrpsegmentation[anatomy]' (or choose "
                          "the 'procedural' family).") from None
    gm_image = datasets.load_mni152_gm_template(resolution=1)
    grey = np.asarray(gm_image.dataobj, dtype=np.float32)
    white = np.asarray(datasets.load_mni152_wm_template(resolution=1).dataobj, dtype=np.float32)
    brain = np.asarray(datasets.load_mni152_brain_mask(resolution=1).dataobj, dtype=np.float32)
    brain = ndimage.binary_fill_holes(ndimage.binary_closing(brain > 0, iterations=2)).astype(np.float32)
    csf = np.clip(brain - grey - white, 0.0, 1.0)
    return np.stack([grey, white, csf]), np.asarray(gm_image.affine, dtype=float)


@dataclass
class WarpedAnatomy:
    """Tissue partial volumes on a case grid (D, H, W) and the MNI coordinates (mm) of every voxel."""

    grey: np.ndarray
    white: np.ndarray
    csf: np.ndarray
    mni: np.ndarray  # (3, D, H, W) float32: MNI x (right +), y (anterior +), z (superior +)

    @property
    def brain(self) -> np.ndarray:
        return (self.grey + self.white + self.csf) > 0.5

    @property
    def tissue(self) -> np.ndarray:
        """Parenchyma: where grey plus white matter dominate."""
        return (self.grey + self.white) > 0.5


def draw_slab_grid(rng: np.random.Generator) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """An ISLES-like thick-slab grid: (D, H, W) and ITK spacing (x, y, z) mm."""
    thickness = float(rng.uniform(5.0, 7.0))
    slices = int(np.clip(round(rng.uniform(100.0, 150.0) / thickness), 19, 30))
    in_plane = int(rng.choice((128, 160, 192, 224, 256)))
    pixel = float(rng.uniform(200.0, 240.0)) / in_plane
    return (slices, in_plane, in_plane), (pixel, pixel, thickness)


def _rotation(rng: np.random.Generator) -> np.ndarray:
    """Random head pose: tilt (pitch) up to 15 degrees, roll up to 6, yaw up to 8."""
    pitch, roll, yaw = np.deg2rad(rng.uniform(-15, 15)), np.deg2rad(rng.uniform(-6, 6)), np.deg2rad(rng.uniform(-8, 8))
    rx = np.array([[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)], [0, np.sin(pitch), np.cos(pitch)]])
    ry = np.array([[np.cos(roll), 0, np.sin(roll)], [0, 1, 0], [-np.sin(roll), 0, np.cos(roll)]])
    rz = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
    return rz @ ry @ rx


def warp_anatomy(rng: np.random.Generator, shape: tuple[int, int, int],
                 spacing: tuple[float, float, float]) -> WarpedAnatomy:
    """Sample the MNI tissue maps on a (D, H, W) grid with ITK spacing (x, y, z), under a random pose and warp.

    Array axes: W runs right to left, H anterior to posterior, D inferior to superior (identity LPS direction).
    """
    templates, affine = tissue_templates()
    depth, height, width = shape
    sx, sy, sz = spacing
    k = (np.arange(depth) - (depth - 1) / 2) * sz
    j = (np.arange(height) - (height - 1) / 2) * sy
    i = (np.arange(width) - (width - 1) / 2) * sx
    # scanner RAS of each voxel centre (LPS grid: x and y flip)
    zz, yy, xx = np.meshgrid(k, -j, -i, indexing="ij")
    scanner = np.stack([xx, yy, zz]).reshape(3, -1).astype(np.float32)

    scale = rng.uniform(0.9, 1.1) * rng.uniform(0.95, 1.05, 3)
    rotation = _rotation(rng)
    shift = np.array([rng.uniform(-10, 10), rng.uniform(-10, 10), rng.uniform(-12, 12)])
    centre = np.asarray(BRAIN_CENTRE_MNI) + shift
    mni = (rotation @ scanner) / scale[:, None] + centre[:, None]
    amplitude = rng.uniform(1.0, 4.0)  # mm of smooth non-linear deformation
    for axis in range(3):
        mni[axis] += amplitude * smooth_noise(rng, shape, (3, 4, 4)).ravel()
    mni = mni.reshape(3, *shape)

    # slab partial volume: average SLAB_SUBSAMPLES points through each slice (along the slab normal)
    normal = rotation @ np.array([0.0, 0.0, 1.0]) / scale
    inverse = np.linalg.inv(affine)
    maps = np.zeros((3, *shape), dtype=np.float32)
    for offset in (np.arange(SLAB_SUBSAMPLES) + 0.5) / SLAB_SUBSAMPLES - 0.5:
        points = mni + (offset * sz * normal)[:, None, None, None]
        voxel = inverse[:3, :3] @ points.reshape(3, -1) + inverse[:3, 3:4]
        for index in range(3):
            maps[index] += ndimage.map_coordinates(templates[index], voxel, order=1, mode="constant",
                                                   cval=0.0).reshape(shape)
    maps /= SLAB_SUBSAMPLES
    return WarpedAnatomy(grey=maps[0], white=maps[1], csf=maps[2], mni=mni.astype(np.float32))
