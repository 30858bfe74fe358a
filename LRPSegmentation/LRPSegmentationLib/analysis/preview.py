"""PNG previews: one axial slice per modality, relevance heatmap over the image, prediction and truth outlines.

Slices are shown the way Slicer and radiologists show them (the radiological convention): whatever the file's
voxel order, the array is reoriented from its ITK direction (LPS) so that the patient's right is on the screen's left
and anterior is at the top, and the sides are labelled.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from LRPSegmentationLib.data.geometry import Geometry
from LRPSegmentationLib.data.modalities import MODALITIES


@dataclass(frozen=True)
class AxialFrame:
    """How a (D, H, W) array of ``geometry`` becomes radiological axial slices.

    ``axes[k]`` is the array axis that runs along LPS world axis ``2 - k`` (k = 0: superior, 1: posterior,
    2: left), ``flips[k]`` whether it runs against it. After :meth:`apply`, index 0 of the result steps inferior to
    superior, rows anterior (top) to posterior, columns patient's right (screen left) to patient's left.
    """

    geometry: Geometry
    axes: tuple[int, int, int]
    flips: tuple[bool, bool, bool]

    @classmethod
    def of(cls, geometry: Geometry) -> AxialFrame:
        direction = np.asarray(geometry.direction, dtype=float).reshape(3, 3)  # columns: ITK index axes i, j, k
        world_of_index = np.zeros(3, dtype=int)
        sign_of_index = np.ones(3)
        remaining = [0, 1, 2]
        for index_axis in np.argsort(-np.abs(direction).max(axis=0)):  # most decided axis first
            column = direction[:, index_axis]
            world = max(remaining, key=lambda w: abs(column[w]))
            remaining.remove(world)
            world_of_index[index_axis], sign_of_index[index_axis] = world, np.sign(column[world]) or 1.0
        axes, flips = [], []
        for world in (2, 1, 0):  # S, P, L
            index_axis = int(np.flatnonzero(world_of_index == world)[0])
            axes.append(2 - index_axis)  # ITK index axis i, j, k is numpy axis 2, 1, 0
            flips.append(bool(sign_of_index[index_axis] < 0))
        return cls(geometry, tuple(axes), tuple(flips))

    def apply(self, volume: np.ndarray) -> np.ndarray:
        """(..., D, H, W) in file order -> (..., S, P, L) radiological order (a view, no copy)."""
        lead = volume.ndim - 3
        out = np.transpose(volume, (*range(lead), *(lead + a for a in self.axes)))
        for k, flip in enumerate(self.flips):
            if flip:
                out = np.flip(out, axis=lead + k)
        return out

    @property
    def pixel_aspect(self) -> float:
        """Row spacing over column spacing of the reoriented slices (for ``imshow(aspect=...)``)."""
        itk_spacing = self.geometry.spacing  # (x, y, z) = numpy axes (2, 1, 0)
        return itk_spacing[2 - self.axes[1]] / itk_spacing[2 - self.axes[2]]

    def file_index(self, axial: int) -> int:
        """The file's index along its slice axis for reoriented slice ``axial``."""
        size = self.geometry.shape[self.axes[0]]
        return size - 1 - axial if self.flips[0] else axial

    def superior_mm(self, axial: int) -> float:
        """The S coordinate (mm; the same in LPS and RAS) of the centre of reoriented slice ``axial``."""
        index = [(n - 1) / 2 for n in self.geometry.shape]  # numpy (k, j, i) at the centre
        index[self.axes[0]] = self.file_index(axial)
        ijk = np.array([index[2], index[1], index[0]]) * np.asarray(self.geometry.spacing)
        world = np.asarray(self.geometry.origin) + np.asarray(self.geometry.direction).reshape(3, 3) @ ijk
        return float(world[2])


def lesion_slice(*masks: np.ndarray | None) -> int:
    """Index of the slice (first axis) with the most lesion voxels in the first non-empty mask (middle otherwise)."""
    for mask in masks:
        if mask is not None and mask.any():
            return int(np.argmax(mask.reshape(mask.shape[0], -1).sum(axis=1)))
    shape = next((m.shape for m in masks if m is not None), None)
    return shape[0] // 2 if shape else 0


def _label_sides(axis) -> None:
    style = {"color": "white", "fontsize": 11, "fontweight": "bold", "transform": axis.transAxes}
    axis.text(0.02, 0.5, "R", ha="left", va="center", **style)
    axis.text(0.98, 0.5, "L", ha="right", va="center", **style)
    axis.text(0.5, 0.98, "A", ha="center", va="top", **style)
    axis.text(0.5, 0.02, "P", ha="center", va="bottom", **style)


def save_preview(path: Path | str, images: np.ndarray, heatmap: np.ndarray | None = None, *,
                 prediction: np.ndarray | None = None, ground_truth: np.ndarray | None = None,
                 geometry: Geometry | None = None, slice_index: int | None = None,
                 title: str = "", threshold: float = 0.05, modalities: tuple[str, ...] | None = None) -> Path:
    """Write a panel PNG (three per row) for ``images`` (C, D, H, W), channels named by ``modalities`` (default:
    the six ISLES 2017 maps), with an optional ``heatmap`` normalised to [-1, 1].

    Radiological axial slices (see :class:`AxialFrame`; ``geometry`` defaults to an identity LPS grid) labelled
    R/L and A/P; the slice is ``slice_index`` (reoriented, inferior first) or the one through the largest part of
    the prediction (else the ground truth). Each channel is shown divided by its own max |r| (as the paper's
    figures show filtered maps), and values below ``threshold`` of it are transparent so the anatomy shows; red is
    positive relevance (for the lesion), blue negative. Prediction outlines are yellow, ground-truth outlines green.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    frame = AxialFrame.of(geometry if geometry is not None else Geometry(tuple(images.shape[1:])))
    images = frame.apply(np.asarray(images))
    heatmap = None if heatmap is None else frame.apply(np.asarray(heatmap))
    prediction = None if prediction is None else frame.apply(np.asarray(prediction))
    ground_truth = None if ground_truth is None else frame.apply(np.asarray(ground_truth))
    z = lesion_slice(prediction, ground_truth) if slice_index is None else slice_index
    names = tuple(modalities) if modalities is not None else MODALITIES
    rows = max(1, -(-len(names) // 3))
    figure, axes = plt.subplots(rows, 3, figsize=(12, 4.2 * rows), constrained_layout=True, squeeze=False)
    for axis in axes.flat[len(names):]:
        axis.set_axis_off()
    for channel, (axis, name) in enumerate(zip(axes.flat, names)):
        image = images[channel, z]
        low, high = np.percentile(image, (1, 99)) if image.any() else (0.0, 1.0)
        axis.imshow(image, cmap="gray", vmin=low, vmax=max(high, low + 1e-6), aspect=frame.pixel_aspect)
        if heatmap is not None:
            peak = float(np.abs(heatmap[channel]).max()) or 1.0
            shown_map = heatmap[channel, z] / peak
            layer = np.ma.masked_where(np.abs(shown_map) < threshold, shown_map)
            shown = axis.imshow(layer, cmap="bwr", vmin=-1, vmax=1, alpha=0.75, aspect=frame.pixel_aspect)
        for mask, colour in ((prediction, "yellow"), (ground_truth, "lime")):
            if mask is not None and mask[z].any():
                axis.contour(mask[z], levels=[0.5], colors=colour, linewidths=1.0)
        _label_sides(axis)
        axis.set_title(name)
        axis.set_axis_off()
    if heatmap is not None:
        figure.colorbar(shown, ax=axes, shrink=0.6, label="relevance / its max |R_c| per modality")
    where = (f"axial slice {frame.file_index(z)} of {images.shape[1]} (file index), S {frame.superior_mm(z):.1f} mm; "
             "radiological view")
    figure.suptitle(f"{title}  ({where}; yellow: prediction, green: ground truth)".strip())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path
