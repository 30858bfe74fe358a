"""Radiological previews: whatever the file's voxel order, the patient's right is on the screen's left, anterior on
top, and the slice shown is the one through the largest part of the lesion."""

from __future__ import annotations

import numpy as np
import pytest

from LRPSegmentationLib.analysis.preview import AxialFrame, save_preview
from LRPSegmentationLib.data.geometry import Geometry

SHAPE = (6, 10, 14)  # (D, H, W) = (k, j, i)
DIRECTIONS = {
    "LPS identity": (1, 0, 0, 0, 1, 0, 0, 0, 1),
    "RAS file (x and y flipped)": (-1, 0, 0, 0, -1, 0, 0, 0, 1),
    "i along y, j along x": (0, 1, 0, 1, 0, 0, 0, 0, 1),
    "sagittal slices (k along x)": (0, 0, -1, 1, 0, 0, 0, -1, 0),
    "rotated 20 degrees in-plane": (np.cos(0.35), -np.sin(0.35), 0, np.sin(0.35), np.cos(0.35), 0, 0, 0, 1),
}


def world_points(geometry: Geometry) -> np.ndarray:
    """LPS position (mm) of every voxel, shape (D, H, W, 3), through SimpleITK (independent of AxialFrame)."""
    image = geometry.to_image(np.zeros(geometry.shape, np.float32))
    k, j, i = np.meshgrid(*(np.arange(n) for n in geometry.shape), indexing="ij")
    points = [image.TransformIndexToPhysicalPoint((int(a), int(b), int(c)))
              for a, b, c in zip(i.ravel(), j.ravel(), k.ravel())]
    return np.asarray(points).reshape(*geometry.shape, 3)


@pytest.mark.parametrize("name", list(DIRECTIONS))
def test_patients_right_is_on_the_screens_left_and_anterior_on_top(name):
    geometry = Geometry(SHAPE, spacing=(1.0, 2.0, 3.0), origin=(10.0, -5.0, 40.0),
                        direction=tuple(float(v) for v in DIRECTIONS[name]))
    points = world_points(geometry)
    frame = AxialFrame.of(geometry)
    right = np.zeros(SHAPE, np.float32)
    right.flat[np.argmin(points[..., 0])] = 1  # the most rightward voxel (LPS: smallest x)
    anterior = np.zeros(SHAPE, np.float32)
    anterior.flat[np.argmin(points[..., 1])] = 1  # the most anterior voxel (smallest y)
    superior = np.zeros(SHAPE, np.float32)
    superior.flat[np.argmax(points[..., 2])] = 1
    for marker, axis, first in ((right, 2, True), (anterior, 1, True), (superior, 0, False)):
        shown = frame.apply(marker)
        position = np.argwhere(shown)[0]
        size = shown.shape[axis]
        assert (position[axis] < size / 2) if first else (position[axis] >= size / 2), (name, axis)
    s = int(np.argwhere(frame.apply(superior))[0][0])
    assert frame.superior_mm(s) == pytest.approx(points[..., 2].max(), abs=3.0 * 1.0 + 1e-6)


def test_preview_shows_the_largest_lesion_slice_with_labels(tmp_path):
    geometry = Geometry(SHAPE, direction=(-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0))
    images = np.random.default_rng(0).random((6, *SHAPE)).astype(np.float32)
    lesion = np.zeros(SHAPE, bool)
    lesion[4, 2:8, 3:9] = True
    lesion[1, 4, 4] = True
    path = save_preview(tmp_path / "p.png", images, images - 0.5, prediction=lesion, geometry=geometry, title="t")
    assert path.stat().st_size > 5_000
    frame = AxialFrame.of(geometry)
    assert frame.file_index(int(np.argmax(frame.apply(lesion).sum(axis=(1, 2))))) == 4
