"""Time one live slider update in a real slicer-core scene, side by side with the floor and the full recomputation.

Run: ``python benchmarks/bench_slider.py [--repeats N] [--model FILE]``. A synthetic 19x192x192 case is explained
once with ``explain_case`` (the bundled model unless ``--model`` is given), loaded into a headless scene (six
modality volumes, six heatmap nodes, the scores table, the 2x3 layout with a ``vtkMRMLSliceLogic`` per view
observing the heatmaps). Timed in one run, medians over a drag (a new band every update):

- the update: ``LiveExplanation.apply`` (band scores of every channel and of the total from the band index, the
  slices the views show rewritten in place, the table values);
- the floor proxy: one read of the whole cached map, ``np.abs(R).max()`` over (6, 19, 192, 192);
- the full recomputation the update replaces: re-filter the whole map, ``score_explanation``, rewrite all voxels;
- the frame: the update plus blending the six 256x256 slice views (what Slicer renders after it);
- ``flush``: writing the rest of the volume (before a save; not in the drag).

The machine may be shared: wall time then includes waiting for a core, so CPU time is printed too.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

LIBRARY_TARGET_MS = 5.0
FRAME_TARGET_MS = 16.0
SHAPE = (19, 192, 192)
FILTERS = ("none", "pass:0.2", "pass:0.1,1", "clamp:0.05", "clamp:0.05,1")


def explained_case(seed: int, model: str | None = None):
    """(explanation, model description): the synthetic case explained with ``model`` (default: the bundled model)."""
    from LRPSegmentationLib.data.synthetic import generate_case
    from LRPSegmentationLib.net import weights
    from LRPSegmentationLib.pipeline.explain_case import ExplainSettings, explain_case

    loaded = weights.load_model(model)
    case = generate_case(seed, shape=SHAPE).to_case(f"synthetic_{seed}")
    started = time.perf_counter()
    explanation = explain_case(case, loaded, ExplainSettings(), "cpu")
    what = f"{'model' if model else 'bundled model'} {loaded.path.name}"
    return explanation, f"{what}; explain_case took {time.perf_counter() - started:.1f} s"


def median_ms(values) -> float:
    return 1e3 * float(np.median(values))


def timed(function, repeats: int) -> tuple[float, float]:
    """(median wall ms, median CPU ms) of ``function(i)`` for i in range(repeats)."""
    walls, cpus = [], []
    for i in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        function(i)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return median_ms(walls), median_ms(cpus)


def full_recomputation(live, filt, state: dict) -> None:
    """The update before the band index: re-filter the whole map, score it, rewrite every voxel and the table."""
    from LRPSegmentationLib.analysis.scores import score_explanation
    from LRPSegmentationLib.data.modalities import MODALITIES
    from LRPSegmentationLib.mrml import display, tables

    state["map"] = live.cache.filtered(filt, reuse=state.get("map"))
    scores = score_explanation(state["map"], live.references)
    for channel, modality in enumerate(MODALITIES):
        display.update_heatmap(live.heatmaps[modality], state["map"].normalised[channel])
    tables.update_table_values(live.table, tables.score_rows(scores, live.dice))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=31, help="timed updates per line (median reported)")
    parser.add_argument("--seed", type=int, default=2017)
    parser.add_argument("--model", help="a model file instead of the bundled model")
    args = parser.parse_args()

    from LRPSegmentationLib.analysis.filters import AmplitudeFilter
    from LRPSegmentationLib.analysis.metrics import EmptyMaskWarning
    from LRPSegmentationLib.mrml import case as case_nodes
    from LRPSegmentationLib.mrml import display as heatmap_display
    from LRPSegmentationLib.mrml import headless as headless_mrml
    from LRPSegmentationLib.mrml.live import UPDATE_STEPS, LiveExplanation

    warnings.simplefilter("ignore", EmptyMaskWarning)
    explanation, what = explained_case(args.seed, args.model)
    headless = headless_mrml.headless_scene()
    nodes = case_nodes.add_case(headless.scene, explanation.case)
    started = time.perf_counter()
    live = LiveExplanation.from_explanation(headless.scene, explanation, nodes.volumes)
    setup = time.perf_counter() - started
    live.show(opacity=0.6)
    views = [headless.slice_logic(view, 256, 256) for view in heatmap_display.GRID_VIEW_NAMES]
    relevance = explanation.relevance
    n = args.repeats

    print(f"relevance {relevance.shape} float32 from {what}")
    print(f"scene: 6 modality volumes, 6 heatmap nodes, scores table, 2x3 layout with 6 slice logics; one-off "
          f"LiveExplanation setup (normalise + band index + masks + nodes) {1e3 * setup:.0f} ms")
    floor_wall, floor_cpu = timed(lambda i: np.abs(relevance).max(), n)
    print(f"floor proxy: one read of the cached map, np.abs(R).max() over {relevance.shape}: {floor_wall:.2f} ms wall "
          f"({floor_cpu:.2f} ms cpu)")

    header = f"{'filter':14s} {'wall':>8s} {'cpu':>8s}   " + " ".join(f"{s:>7s}" for s in UPDATE_STEPS)
    print(header + f" {'x floor':>8s}")
    for spec in FILTERS:
        filt = AmplitudeFilter.parse(spec)
        steps = []

        def update(_, filt=filt, steps=steps):
            live.apply(filt)
            steps.append(live.timing.wall)

        wall_ms, cpu_ms = timed(update, n)
        parts = " ".join(f"{median_ms([s[i] for s in steps]):7.2f}" for i in range(len(UPDATE_STEPS)))
        print(f"{filt.label:14s} {wall_ms:6.2f}ms {cpu_ms:6.2f}ms   {parts} {wall_ms / floor_wall:7.2f}x")

    # a real drag: every update changes the band, alternating pass and clamp
    bands = [AmplitudeFilter(kind, 0.0, float(a)) for a in np.linspace(0.05, 0.6, 12) for kind in ("pass", "clamp")]
    drag_wall, drag_cpu = timed(lambda i: live.apply(bands[i % len(bands)]), n)
    state: dict = {}
    old_wall, old_cpu = timed(lambda i: full_recomputation(live, bands[i % len(bands)], state), max(5, n // 3))

    def frame(i):
        live.apply(bands[i % len(bands)])
        for logic in views:
            headless_mrml.blend_view(logic)

    frame_wall, frame_cpu = timed(frame, max(5, n // 2))
    live.apply(bands[0])
    flush_wall, flush_cpu = timed(lambda i: (live.apply(bands[i % len(bands)]), live.flush()), max(5, n // 3))
    print(f"drag (new band every update): {drag_wall:.2f} ms wall, {drag_cpu:.2f} ms cpu; the full recomputation it "
          f"replaces {old_wall:.1f} ms wall ({old_cpu:.1f} ms cpu): {old_wall / drag_wall:.0f}x faster")
    print(f"frame (update + blending the six 256x256 views): {frame_wall:.1f} ms wall, {frame_cpu:.1f} ms cpu; "
          f"target {FRAME_TARGET_MS:.0f} ms: {frame_wall / FRAME_TARGET_MS:.2f}x")
    print(f"not in the drag: update + flush of the whole volume (before a save) {flush_wall:.1f} ms wall")
    # the in-chain slider: a band grid offered as the background job leaves it (compact float16 with its float32
    # scores), read into memory by the polls, each band shown for the first time
    from LRPSegmentationLib.analysis.filters import compact_map
    from LRPSegmentationLib.analysis.scores import score_explanation

    rng = np.random.default_rng(0)
    grid = [AmplitudeFilter("clamp", 0.0, float(a)) for a in np.linspace(0.05, 1.0, max(8, n))]
    for band in grid:
        relevance_k = relevance * rng.uniform(0.5, 1.5, size=(relevance.shape[0], 1, 1, 1)).astype(np.float32)
        scores_k = score_explanation(relevance_k, explanation.case.images, explanation.case.ground_truth)
        live.add_layer_source(band, lambda r=relevance_k: compact_map(r), scores_k)
    live.prefetch_layers(seconds=600)
    layer_wall, _ = timed(lambda i: live.apply_layers(grid[i % len(grid)]), len(grid))
    layer_frame, _ = timed(lambda i: (live.apply_layers(grid[i % len(grid)]),
                                      [headless_mrml.blend_view(logic) for logic in views]), len(grid))
    print(f"in-chain slider, a grid band shown for the first time (read into memory by the polls): "
          f"{layer_wall:.1f} ms; with blending the six views: {layer_frame:.1f} ms; "
          f"target {FRAME_TARGET_MS:.0f} ms")
    print(f"slider: update {drag_wall:.2f} ms ({drag_wall / floor_wall:.2f} x one pass over the map; "
          f"{drag_wall / old_wall:.3f} x the full recomputation; target {LIBRARY_TARGET_MS:.0f} ms: "
          f"{drag_wall / LIBRARY_TARGET_MS:.2f}x)")


if __name__ == "__main__":
    main()
