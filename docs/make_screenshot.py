"""Make docs/screenshot.png (and docs/screenshot-clamp.png) from a real run: Slicer's own slice-view blending.

Run: ``python docs/make_screenshot.py [--seed N] [--model FILE] [--out-dir docs]``. A synthetic ISLES-like case
(19x192x192) is generated, added to a headless slicer-core scene, explained with ``explain_case`` (the bundled model
unless ``--model`` is given), shown with ``LiveExplanation`` in the module's linked 2x3 layout, and each of the six
slice views is blended by ``vtkMRMLSliceLogic`` (modality background + heatmap foreground at the module's default
opacity; no OpenGL). Prediction (yellow) and ground-truth (green) outlines are drawn from the same view-to-voxel
mapping. The first image shows the unfiltered map, the second the same run under a clamp filter, applied live.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SHAPE = (19, 192, 192)
VIEW_PIXELS = 300


def explain(seed: int, model: str | None = None):
    """(explanation, model label): the synthetic case explained with ``model`` (default: the bundled model)."""
    from LRPSegmentationLib.data.synthetic import generate_case
    from LRPSegmentationLib.net import weights
    from LRPSegmentationLib.pipeline.explain_case import ExplainSettings, explain_case

    loaded = weights.load_model(model)
    case = generate_case(seed, shape=SHAPE).to_case(f"synthetic_{seed}")
    label = f"{'model' if model else 'bundled model'} {loaded.path.name}"
    return explain_case(case, loaded, ExplainSettings(), "cpu"), label


def outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of a 2D boolean mask that touch a pixel outside it (4-neighbourhood)."""
    padded = np.pad(mask, 1, mode="edge")
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def render_views(headless, live, slice_index: int) -> list[np.ndarray]:
    """RGB (rows top-down) of the six grid views at the axial slice ``slice_index``, with outlines."""
    from LRPSegmentationLib.mrml import display as heatmap_display
    from LRPSegmentationLib.mrml import headless as headless_mrml
    from LRPSegmentationLib.mrml import nodes as scene_nodes

    masks = [(live.segmentation, np.array([255, 230, 30])), (live.ground_truth_segmentation, np.array([60, 230, 80]))]
    prediction = None if live.segmentation is None else scene_nodes.segmentation_mask(live.segmentation, live.reference)
    truth = live.references.ground_truth
    centre = scene_nodes.ijk_to_ras(live.geometry) @ np.array([0.0, 0.0, slice_index, 1.0])
    views = []
    for view in heatmap_display.GRID_VIEW_NAMES:
        logic = headless.slice_logic(view, VIEW_PIXELS, VIEW_PIXELS)
        logic.GetSliceNode().JumpSliceByOffsetting(*centre[:3])
        rgb = headless_mrml.blend_view(logic)[..., :3].copy()
        kji, inside = headless_mrml.view_voxels(logic, live.heatmaps["ADC"])
        index = tuple(kji[..., a] for a in range(3))
        for mask, (node, colour) in zip((prediction, truth), masks):
            if mask is not None and node is not None:
                rgb[outline((mask[index] != 0) & inside)] = colour
        views.append(rgb[::-1])  # VTK row 0 is the bottom row
    return views


def save_figure(path: Path, views, live, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from LRPSegmentationLib.data.modalities import MODALITIES

    rows = {row["Modality"]: row for row in live.rows}
    figure, axes = plt.subplots(2, 3, figsize=(10.5, 7.9), dpi=100)
    for axis, modality, rgb in zip(axes.flat, MODALITIES, views):
        axis.imshow(rgb, interpolation="nearest")
        row = rows[modality]
        axis.set_title(f"{modality}\nD(LRP,x) {row['D(LRP,x)']:.2f}   D(LRP,y_OT) {row['D(LRP,y_OT)']:.2f}   "
                       f"|share| {row['|Share|']:.2f}", fontsize=9)
        axis.set_axis_off()
    figure.suptitle(title, fontsize=10)
    figure.text(0.5, 0.01, "Slicer slice views (vtkMRMLSliceLogic blending): modality + LRP heatmap, red positive, "
                "blue negative, near-zero transparent; outlines: yellow prediction, green ground truth",
                ha="center", fontsize=8)
    figure.subplots_adjust(left=0.01, right=0.99, top=0.89, bottom=0.04, wspace=0.03, hspace=0.16)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=2017)
    parser.add_argument("--model", help="a model file instead of the bundled model")
    parser.add_argument("--out-dir", type=Path, default=HERE)
    parser.add_argument("--clamp", type=float, default=0.1, help="alpha of the clamp filter of the second image")
    args = parser.parse_args()

    from LRPSegmentationLib.mrml import case as case_nodes
    from LRPSegmentationLib.mrml import headless as headless_mrml
    from LRPSegmentationLib.mrml.live import LiveExplanation, slider_filter

    started = time.perf_counter()
    explanation, label = explain(args.seed, args.model)
    print(f"explained with the {label} in {time.perf_counter() - started:.1f} s")
    headless = headless_mrml.headless_scene()
    nodes = case_nodes.add_case(headless.scene, explanation.case)
    live = LiveExplanation.from_explanation(headless.scene, explanation, nodes.volumes)
    live.show(opacity=0.6)
    truth = live.references.ground_truth
    slice_index = int(np.argmax(truth.reshape(truth.shape[0], -1).sum(axis=1)))
    dice = "-" if live.dice is None else f"{live.dice:.2f}"
    common = f"{explanation.case.case_id}, {label}, Dice {dice}, slice {slice_index}"
    for filt, name in ((slider_filter(), "screenshot.png"),
                       (slider_filter("clamp", args.clamp), "screenshot-clamp.png")):
        live.apply(filt)
        path = save_figure(args.out_dir / name, render_views(headless, live, slice_index), live,
                           f"LRP Segmentation: {common}; filter {filt.label} on the final map")
        print(f"wrote {path} ({path.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
