"""PNG previews: one axial slice per modality, relevance heatmap over the image, prediction and truth outlines."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from LRPSegmentationLib.data.modalities import MODALITIES


def lesion_slice(*masks: np.ndarray | None) -> int:
    """Index of the axial slice with the most lesion voxels in the first non-empty mask (middle slice otherwise)."""
    for mask in masks:
        if mask is not None and mask.any():
            return int(np.argmax(mask.reshape(mask.shape[0], -1).sum(axis=1)))
    shape = next((m.shape for m in masks if m is not None), None)
    return shape[0] // 2 if shape else 0


def save_preview(path: Path | str, images: np.ndarray, heatmap: np.ndarray | None = None, *,
                 prediction: np.ndarray | None = None, ground_truth: np.ndarray | None = None,
                 spacing: tuple[float, float, float] = (1.0, 1.0, 1.0), slice_index: int | None = None,
                 title: str = "", threshold: float = 0.05, modalities: tuple[str, ...] | None = None) -> Path:
    """Write a panel PNG (three per row) for ``images`` (C, D, H, W), channels named by ``modalities`` (default:
    the six ISLES 2017 maps), with an optional ``heatmap`` normalised to [-1, 1].

    Each channel is shown divided by its own max |r| (as the paper's figures show filtered maps), and values below
    ``threshold`` of it are transparent so the anatomy shows; red is positive relevance (for the lesion), blue
    negative. Prediction outlines are yellow, ground-truth outlines green.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    z = lesion_slice(prediction, ground_truth) if slice_index is None else slice_index
    aspect = spacing[1] / spacing[0]  # ITK (x, y, z) spacing: rows are y, columns x
    names = tuple(modalities) if modalities is not None else MODALITIES
    rows = max(1, -(-len(names) // 3))
    figure, axes = plt.subplots(rows, 3, figsize=(12, 4.2 * rows), constrained_layout=True, squeeze=False)
    for axis in axes.flat[len(names):]:
        axis.set_axis_off()
    for channel, (axis, name) in enumerate(zip(axes.flat, names)):
        image = images[channel, z]
        low, high = np.percentile(image, (1, 99)) if image.any() else (0.0, 1.0)
        axis.imshow(image, cmap="gray", vmin=low, vmax=max(high, low + 1e-6), aspect=aspect)
        if heatmap is not None:
            peak = float(np.abs(heatmap[channel]).max()) or 1.0
            shown_map = heatmap[channel, z] / peak
            layer = np.ma.masked_where(np.abs(shown_map) < threshold, shown_map)
            shown = axis.imshow(layer, cmap="bwr", vmin=-1, vmax=1, alpha=0.75, aspect=aspect)
        for mask, colour in ((prediction, "yellow"), (ground_truth, "lime")):
            if mask is not None and mask[z].any():
                axis.contour(mask[z], levels=[0.5], colors=colour, linewidths=1.0)
        axis.set_title(name)
        axis.set_axis_off()
    if heatmap is not None:
        figure.colorbar(shown, ax=axes, shrink=0.6, label="relevance / its max |R_c| per modality")
    figure.suptitle(f"{title}  (slice {z}; yellow: prediction, green: ground truth)".strip())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path
