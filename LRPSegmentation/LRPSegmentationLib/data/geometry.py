"""Voxel-grid geometry (ITK/LPS conventions) carried alongside every array."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk


@dataclass(frozen=True)
class Geometry:
    """Where a (D, H, W) array lies in patient space, as SimpleITK and NIfTI/NRRD files store it.

    ``spacing`` and ``origin`` are in ITK (x, y, z) order, millimetres, LPS; ``direction`` is the
    3x3 direction-cosine matrix, row-major. ``shape`` is the numpy array shape (D, H, W) = (z, y, x).
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    @classmethod
    def from_image(cls, image: sitk.Image) -> "Geometry":
        size = image.GetSize()
        return cls(
            shape=(int(size[2]), int(size[1]), int(size[0])),
            spacing=tuple(float(v) for v in image.GetSpacing()),
            origin=tuple(float(v) for v in image.GetOrigin()),
            direction=tuple(float(v) for v in image.GetDirection()),
        )

    def to_image(self, array: np.ndarray) -> sitk.Image:
        """Wrap a (D, H, W) array into a SimpleITK image with this geometry."""
        if tuple(array.shape) != self.shape:
            raise ValueError(f"Array of shape {array.shape} does not fit a grid of shape {self.shape}.")
        image = sitk.GetImageFromArray(np.ascontiguousarray(array))
        self.apply_to(image)
        return image

    def apply_to(self, image: sitk.Image) -> None:
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)

    def matches(self, other: "Geometry", tolerance: float = 1e-4) -> bool:
        """Same grid up to ``tolerance`` (relative for spacing, mm for origin, absolute for direction)."""
        return (
            self.shape == other.shape
            and np.allclose(self.spacing, other.spacing, rtol=tolerance, atol=0)
            and np.allclose(self.origin, other.origin, rtol=0, atol=tolerance * max(1.0, max(self.spacing)))
            and np.allclose(self.direction, other.direction, rtol=0, atol=tolerance)
        )

    def to_dict(self) -> dict:
        return {"shape": list(self.shape), "spacing": list(self.spacing), "origin": list(self.origin),
                "direction": list(self.direction)}
