"""The live view (LRPSegmentationLib.mrml.live) on a real slicer-core scene with a real (tiny, random) model's
relevance."""

from __future__ import annotations

import math
import time
import warnings

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is needed for the MRML tests")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the installed 'slicer' package has no MRML (install slicer-core)", allow_module_level=True)

from LRPSegmentationLib.analysis.filters import AmplitudeFilter, filter_map  # noqa: E402
from LRPSegmentationLib.analysis.metrics import EmptyMaskWarning  # noqa: E402
from LRPSegmentationLib.analysis.scores import score_explanation  # noqa: E402
from LRPSegmentationLib.data.caseio import Case  # noqa: E402
from LRPSegmentationLib.data.modalities import MODALITIES  # noqa: E402
from LRPSegmentationLib.lrp.targets import Target  # noqa: E402
from LRPSegmentationLib.mrml import case as case_nodes  # noqa: E402
from LRPSegmentationLib.mrml import display as heatmap_display  # noqa: E402
from LRPSegmentationLib.mrml import headless as headless_mrml  # noqa: E402
from LRPSegmentationLib.mrml import live as live_module  # noqa: E402
from LRPSegmentationLib.mrml import nodes as scene_nodes  # noqa: E402
from LRPSegmentationLib.mrml import tables as score_tables  # noqa: E402
from LRPSegmentationLib.mrml.live import UPDATE_STEPS, LiveError, LiveExplanation, band_key  # noqa: E402
from LRPSegmentationLib.mrml.tables import score_rows  # noqa: E402
from LRPSegmentationLib.net.weights import load_model  # noqa: E402
from LRPSegmentationLib.options import NO_LESION_NOTE  # noqa: E402
from LRPSegmentationLib.pipeline.cli import main as cli_main  # noqa: E402
from LRPSegmentationLib.pipeline.explain_case import ExplainSettings, explain_case  # noqa: E402
from LRPSegmentationLib.pipeline.outputs import MissingOutputError  # noqa: E402

FILTERS = [AmplitudeFilter(), AmplitudeFilter.pass_band(0.3), AmplitudeFilter.clamp_band(0.05, 0.5)]




@pytest.fixture(scope="module")
def explanation(synthetic_case, tiny_model_file):
    case = Case("synthetic_7", synthetic_case.images, synthetic_case.geometry, synthetic_case.ground_truth)
    return explain_case(case, load_model(tiny_model_file), ExplainSettings(target=Target("probability")), "cpu")


@pytest.fixture
def mrml():
    return headless_mrml.headless_scene()


@pytest.fixture
def live(mrml, explanation):
    nodes = case_nodes.add_case(mrml.scene, explanation.case)
    result = LiveExplanation.from_explanation(mrml.scene, explanation, nodes.volumes)
    result.case_nodes = nodes
    return result


def expected_rows(explanation, filt, dice):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmptyMaskWarning)
        scores = score_explanation(filter_map(explanation.relevance, filt), explanation.case.images,
                                   explanation.case.ground_truth,
                                   output_relevance_sum=explanation.start_relevance_sum)
    return score_rows(scores, dice)


def assert_rows_equal(actual, expected):
    assert len(actual) == len(expected) == len(MODALITIES) + 1
    for got, want in zip(actual, expected):
        assert set(got) == set(want)
        for key, value in want.items():
            if isinstance(value, str):
                assert got[key] == value
            elif value is None or not math.isfinite(value):
                assert math.isnan(got[key]), key
            else:
                assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


def test_relevance_is_real_and_nonzero(explanation):
    assert explanation.relevance.shape == (6, *explanation.case.geometry.shape)
    assert np.all(np.abs(explanation.relevance).reshape(6, -1).max(axis=1) > 0)


@pytest.mark.parametrize("filt", FILTERS, ids=lambda f: f.label)
def test_apply_writes_the_filtered_map_and_its_scores(live, explanation, filt):
    live.apply(AmplitudeFilter.pass_band(0.1, 0.9))  # a different filter first: apply reuses its buffers
    began = time.perf_counter()
    scores = live.apply(filt)
    took = time.perf_counter() - began
    assert live.stale  # no view shows a heatmap: every voxel waits for flush()
    live.flush()
    assert not live.stale
    expected = filter_map(explanation.relevance, filt)
    for channel, modality in enumerate(MODALITIES):
        voxels = scene_nodes.array_from_node(live.heatmaps[modality])
        np.testing.assert_array_equal(voxels, expected.normalised[channel])
        window = live.heatmaps[modality].GetDisplayNode()
        assert window.GetWindow() == pytest.approx(2 * max(filt.high, 1e-3))
        assert not window.GetAutoWindowLevel()
    assert scores.filter == filt.label and live.filter == filt and live.where == "output"
    assert live.dice == pytest.approx(explanation.prediction.dice)
    assert_rows_equal(score_tables.table_rows(live.table), expected_rows(explanation, filt, live.dice))
    # the timing describes this update: every step measured, together no longer than the call itself
    assert all(live.timing.step(name) > 0 for name in UPDATE_STEPS) and live.timing.total <= took


def test_overlay_pixels_follow_a_filter_change(mrml, live):
    live.show(single_view=False, opacity=0.0)
    assert mrml.layout.GetLayoutNode().GetViewArrangement() == heatmap_display.GRID_LAYOUT_ID
    logic = mrml.slice_logic("LRPTmax", 40, 40)
    k = int(np.argmax(live.references.ground_truth.sum(axis=(1, 2))))  # the slice with most lesion
    centre = scene_nodes.ijk_to_ras(live.geometry) @ np.array([0.0, 0.0, k, 1.0])
    logic.GetSliceNode().JumpSliceByOffsetting(*centre[:3])  # through voxel centres: no ambiguous pixels
    composite = logic.GetSliceCompositeNode()
    assert composite.GetForegroundVolumeID() == live.heatmaps["Tmax"].GetID()  # the values, for the Data Probe
    assert composite.GetForegroundOpacity() == 0.0 and composite.GetLabelVolumeID() == live.overlays["Tmax"].GetID()
    assert composite.GetBackgroundVolumeID() == live.backgrounds["Tmax"].GetID()
    anatomy = headless_mrml.blend_view(logic)[..., :3].astype(int)

    live.apply(None)
    heatmap_display.set_heatmap_opacity(mrml.scene, 1.0)
    before = headless_mrml.blend_view(logic)[..., :3].astype(int)
    voxels, clear = headless_mrml.view_voxels(logic, live.heatmaps["Tmax"], margin=0.1)
    index = tuple(voxels[..., a] for a in range(3))
    shown_before = scene_nodes.array_from_node(live.heatmaps["Tmax"])[index].copy()

    band = AmplitudeFilter.pass_band(0.1, 1.0)  # same window [-1, 1]: kept voxels keep their colour
    live.apply(band)
    after = headless_mrml.blend_view(logic)[..., :3].astype(int)  # before any flush: the overlay slice is written
    live.flush()
    shown_after = scene_nodes.array_from_node(live.heatmaps["Tmax"])[index]
    dropped = clear & (shown_after == 0) & (np.abs(shown_before) > 0.05)  # was coloured (outside neutral band)
    kept = clear & (shown_after != 0)
    assert dropped.sum() >= 5 and kept.sum() >= 5, (dropped.sum(), kept.sum())
    assert np.all(np.abs(after[dropped] - anatomy[dropped]) <= 1)  # filtered away: the anatomy shows
    assert np.all(np.abs(before[dropped] - anatomy[dropped]).max(axis=-1) > 1)  # it was coloured before
    assert np.all(np.abs(after[kept] - before[kept]) <= 1)
    heatmap_display.set_heatmap_opacity(mrml.scene, 0.0)
    np.testing.assert_array_equal(headless_mrml.blend_view(logic)[..., :3], anatomy)  # at opacity 0 no filter shows


def test_overlay_codes_follow_at_once_and_the_heatmap_values_on_flush(mrml, live, explanation):
    """The shown overlay slice holds the colour codes of the band (window [-a, a]) right after apply; the values
    (heatmaps) and the rest of the overlay follow on flush, equal to the filtered map and its codes."""
    live.show(single_view=False, opacity=0.6)
    logic = mrml.slice_logic("LRPADC", 40, 40)
    k = int(np.argmax(live.references.ground_truth.sum(axis=(1, 2))))
    centre = scene_nodes.ijk_to_ras(live.geometry) @ np.array([0.0, 0.0, k, 1.0])
    logic.GetSliceNode().JumpSliceByOffsetting(*centre[:3])
    live.flush()
    band = AmplitudeFilter.clamp_band(0.3)
    expected = filter_map(explanation.relevance, band).normalised[0]
    live.apply(band)
    overlay = scene_nodes.array_from_node(live.overlays["ADC"])
    np.testing.assert_array_equal(overlay[k], heatmap_display.relevance_codes(expected[k], 0.3))
    assert not np.array_equal(overlay, heatmap_display.relevance_codes(expected, 0.3))  # off screen: later
    assert not np.array_equal(scene_nodes.array_from_node(live.heatmaps["ADC"]), expected)
    live.flush()
    np.testing.assert_array_equal(scene_nodes.array_from_node(live.overlays["ADC"]),
                                  heatmap_display.relevance_codes(expected, 0.3))
    np.testing.assert_array_equal(scene_nodes.array_from_node(live.heatmaps["ADC"]), expected)
    assert live.heatmaps["ADC"].GetDisplayNode().GetWindowLevelMax() == pytest.approx(0.3)
    codes = heatmap_display.relevance_codes(np.array([-1.0, -0.3, 0.0, 0.15, 0.3, 2.0]), 0.3)
    assert codes.tolist() == [0, 0, 128, 191, 255, 255]  # the window maps onto the 256 colours, clipped


def test_user_nodes_untouched_and_outputs_reused(mrml, live, explanation):
    inputs = {m: scene_nodes.array_from_node(n).copy() for m, n in live.case_nodes.volumes.items()}
    names = {m: n.GetName() for m, n in live.case_nodes.volumes.items()}
    for filt in FILTERS:
        live.apply(filt)
    live.show(single_view=True, modality="rCBF", opacity=0.4, outlines=False)
    assert not live.segmentation.GetDisplayNode().GetVisibility()
    again = LiveExplanation.from_explanation(mrml.scene, explanation, live.case_nodes.volumes)
    for modality, node in live.case_nodes.volumes.items():
        np.testing.assert_array_equal(scene_nodes.array_from_node(node), inputs[modality])
        assert node.GetName() == names[modality] and node.GetAttribute(scene_nodes.OUTPUT_ATTRIBUTE) is None
    assert again.heatmaps["ADC"] is live.heatmaps["ADC"] and again.table is live.table
    assert again.segmentation is live.segmentation
    roles = [n.GetAttribute(scene_nodes.OUTPUT_ATTRIBUTE) for n in scene_nodes.output_nodes(mrml.scene)]
    # heatmaps, overlays, raw maps, outlines, table, colours
    assert len(roles) == len(set(roles)) == 6 + 6 + 6 + 2 + 1 + 1
    assert again.raw_nodes["TTP"] is live.raw_nodes["TTP"]


def test_layer_results_are_cached_per_band(live, explanation):
    band = AmplitudeFilter.pass_band(0.2)
    assert not live.has_layer_result(band) and live.apply_layers(band) is None
    assert live.has_layer_result(None)  # the unfiltered chain is the map itself
    chained = explanation.relevance * np.linspace(0.5, 1.5, explanation.relevance.shape[-1], dtype=np.float32)
    live.add_layer_result(AmplitudeFilter.pass_band(0.2000001), chained)
    assert live.has_layer_result(band) and live.layer_bands == (band_key(band),)
    scores = live.apply_layers(band)
    live.flush()
    expected = filter_map(chained, None)
    np.testing.assert_array_equal(scene_nodes.array_from_node(live.heatmaps["MTT"]), expected.normalised[1])
    assert live.where == "layers" and scores.filter == "none"
    reference = score_explanation(expected, explanation.case.images, explanation.case.ground_truth,
                                  output_relevance_sum=explanation.start_relevance_sum)
    assert_rows_equal(score_tables.table_rows(live.table), score_rows(reference, live.dice))
    assert live.nearest_layer_band("pass:0.26") == band_key(band) and live.nearest_layer_band("clamp:0.2") is None
    assert live.apply_layers("pass:0.26") is None and live.apply_layers("pass:0.26", nearest=True) is not None
    assert live.filter == band_key(band)
    live.max_layer_results = 2
    for high in (0.3, 0.4):
        live.add_layer_result(AmplitudeFilter.pass_band(high), chained)
    assert not live.has_layer_result(band) and len(live.layer_bands) == 2  # oldest dropped
    grid = [AmplitudeFilter.clamp_band(high) for high in (0.1, 0.2, 0.3)]
    for pinned in grid:  # a precomputed grid is kept whole, beside the on-demand bands
        live.add_layer_result(pinned, chained, pinned=True)
    live.add_layer_result(AmplitudeFilter.pass_band(0.5), chained)
    assert set(grid) <= set(live.layer_bands) and len(live.layer_bands) == 5
    assert not live.has_layer_result("pass:0.3")  # only on-demand bands are dropped
    live.apply(None)  # back to the live path after showing a cached (read-only) map
    live.flush()
    np.testing.assert_array_equal(scene_nodes.array_from_node(live.heatmaps["MTT"]),
                                  filter_map(explanation.relevance, None).normalised[1])
    live.clear_layer_results()
    assert live.layer_bands == ()


def test_from_run_folder_reads_the_cli_outputs(mrml, synthetic_case_dir, tiny_model_file, tmp_path):
    out = tmp_path / "out"
    assert cli_main(["explain", str(synthetic_case_dir), "--model", str(tiny_model_file), "--out", str(out),
                     "--target", "probability", "--device", "cpu", "--progress", "none"]) == 0
    nodes = case_nodes.load_case_folder(mrml.scene, synthetic_case_dir)
    live = LiveExplanation.from_run_folder(mrml.scene, out, synthetic_case_dir, nodes.volumes)
    clamp = AmplitudeFilter.clamp_band(0.2)
    live.apply(clamp)
    live.flush()
    assert float(np.abs(scene_nodes.array_from_node(live.heatmaps["TTP"])).max()) <= 0.2 + 1e-6
    assert live.dice is not None and live.segmentation is not None and live.ground_truth_segmentation is not None
    with pytest.raises(MissingOutputError, match="relevance_ADC"):
        LiveExplanation.from_run_folder(mrml.scene, tmp_path, synthetic_case_dir)


def test_a_run_that_found_no_lesion_carries_its_note(mrml, synthetic_case, synthetic_case_dir, silent_model_file,
                                                     tmp_path):
    out = tmp_path / "silent"
    assert cli_main(["explain", str(synthetic_case_dir), "--model", str(silent_model_file), "--out", str(out),
                     "--device", "cpu", "--progress", "none"]) == 0
    nodes = case_nodes.load_case_folder(mrml.scene, synthetic_case_dir)
    live = LiveExplanation.from_run_folder(mrml.scene, out, synthetic_case_dir, nodes.volumes)
    assert live.note is not None and live.note.startswith(NO_LESION_NOTE)
    assert np.isfinite(scene_nodes.array_from_node(live.heatmaps["ADC"])).all()
    assert live.dice == 0.0  # nothing predicted, a lesion in the truth
    in_process = explain_case(synthetic_case.to_case(), load_model(silent_model_file), ExplainSettings(), "cpu")
    assert LiveExplanation.from_explanation(mrml.scene, in_process, nodes.volumes).note == live.note
    assert LiveExplanation.from_run_folder(mrml.scene, out, synthetic_case_dir).note == live.note
    plain = tmp_path / "plain"
    assert cli_main(["explain", str(synthetic_case_dir), "--model", str(silent_model_file), "--out", str(plain),
                     "--target", "probability", "--device", "cpu", "--progress", "none"]) == 0
    assert LiveExplanation.from_run_folder(mrml.scene, plain, synthetic_case_dir).note is None


def test_bad_shapes_are_rejected(mrml, explanation):
    case = explanation.case
    with pytest.raises(LiveError, match="relevance has shape"):
        LiveExplanation(mrml.scene, explanation.relevance[:5], case.images, case.geometry)
    live = LiveExplanation(mrml.scene, explanation.relevance, case.images, case.geometry)
    assert live.dice is None and live.segmentation is None
    with pytest.raises(LiveError, match="does not match"):
        live.add_layer_result("pass:0.2", explanation.relevance[:, :2])


def shown_slice(mrml, live, k):
    """Show the 2x3 layout, all views on grid slice k; returns the slice logics."""
    live.show(opacity=0.6)
    logics = [mrml.slice_logic(view, 32, 32) for view in heatmap_display.GRID_VIEW_NAMES]
    centre = scene_nodes.ijk_to_ras(live.geometry) @ np.array([0.0, 0.0, k, 1.0])
    logics[0].GetSliceNode().JumpSliceByOffsetting(*centre[:3])  # linked views follow
    for logic in logics:
        logic.GetSliceNode().JumpSliceByOffsetting(*centre[:3])
    return logics


@pytest.mark.parametrize("where", ["output", "layers"])
def test_dragging_50_alphas_updates_views_and_table_as_a_full_recomputation(mrml, live, explanation, where):
    """The slider gesture in the test bed: 50 alpha values, each update's shown slices and table (and the complete
    scores) equal a full recomputation; the voxels off screen follow on flush()."""
    k = int(np.argmax(live.references.ground_truth.sum(axis=(1, 2))))
    other = (k + 3) % live.geometry.shape[0]
    logics = shown_slice(mrml, live, k)
    relevance = explanation.relevance
    chained = {}
    if where == "layers":  # an in-chain band per 0.1 step, each a different map, cached as the run would
        live.max_layer_results = 10
        for step in range(1, 11):
            key = band_key(AmplitudeFilter.pass_band(step / 10))
            chained[key] = relevance * np.float32(1 + step / 7) + np.float32(step * 1e-4) * np.sign(relevance)
            live.add_layer_result(key, chained[key])
    live.flush()
    off_screen = {m: scene_nodes.array_from_node(live.overlays[m])[other].copy() for m in MODALITIES}
    values = {m: scene_nodes.array_from_node(live.heatmaps[m]).copy() for m in MODALITIES}
    alphas = np.round(np.concatenate([np.linspace(0.02, 1.0, 25), np.linspace(1.0, 0.05, 25)]), 3)
    kinds = ("pass", "clamp")
    for step, alpha in enumerate(alphas):
        if where == "layers":
            band = AmplitudeFilter.pass_band(max(0.1, round(float(alpha), 1)))
            assert live.apply_layers(band) is not None
            filt, expected_map, window = None, filter_map(chained[band_key(band)], None), 1.0
        else:
            filt = AmplitudeFilter(kinds[step % 2], 0.0 if step % 3 else alpha / 2, alpha)
            live.apply(filt)
            expected_map, window = filter_map(relevance, filt), max(float(alpha), live_module.MIN_WINDOW)
        for channel, modality in enumerate(MODALITIES):
            codes = scene_nodes.array_from_node(live.overlays[modality])
            np.testing.assert_array_equal(codes[k], heatmap_display.relevance_codes(
                expected_map.normalised[channel][k], window))
            np.testing.assert_array_equal(codes[other], off_screen[modality])  # not on screen: not yet written
            np.testing.assert_array_equal(scene_nodes.array_from_node(live.heatmaps[modality]), values[modality])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", EmptyMaskWarning)
            expected = score_explanation(expected_map, explanation.case.images, explanation.case.ground_truth,
                                         output_relevance_sum=live.output_relevance_sum)
        assert_rows_equal(score_tables.table_rows(live.table), score_rows(expected, live.dice))
        for got, want in zip(live.scores.to_rows(), expected.to_rows(), strict=True):
            for key, value in want.items():
                assert got[key] == (value if isinstance(value, str) or value is None
                                    else pytest.approx(value, rel=1e-5, abs=1e-6)), key
    headless_mrml.blend_view(logics[0])
    live.flush()
    for channel, modality in enumerate(MODALITIES):
        np.testing.assert_array_equal(scene_nodes.array_from_node(live.heatmaps[modality]),
                                      expected_map.normalised[channel])
        np.testing.assert_array_equal(scene_nodes.array_from_node(live.overlays[modality]),
                                      heatmap_display.relevance_codes(expected_map.normalised[channel], window))


def test_observe_flushes_on_save_and_writes_slices_shown_after_a_scroll(mrml, live, explanation):
    k = int(np.argmax(live.references.ground_truth.sum(axis=(1, 2))))
    logics = shown_slice(mrml, live, k)
    observations = live_module.observe(live)
    band = AmplitudeFilter.pass_band(0.2)
    expected = filter_map(explanation.relevance, band).normalised
    codes = heatmap_display.relevance_codes(expected, 0.2)
    live.apply(band)
    assert live.stale
    tmax = scene_nodes.array_from_node(live.overlays["Tmax"])
    below = k - 1 if k > 0 else k + 1
    channel = MODALITIES.index("Tmax")
    assert not np.array_equal(tmax[below], codes[channel][below])
    centre = scene_nodes.ijk_to_ras(live.geometry) @ np.array([0.0, 0.0, below, 1.0])
    for logic in logics:  # the user scrolls to the next slice: it is written when the view moves
        logic.GetSliceNode().JumpSliceByOffsetting(*centre[:3])
    np.testing.assert_array_equal(tmax[below], codes[channel][below])
    assert live.stale
    mrml.scene.InvokeEvent(mrml.scene.StartSaveEvent)
    assert not live.stale
    np.testing.assert_array_equal(tmax, codes[channel])
    np.testing.assert_array_equal(scene_nodes.array_from_node(live.heatmaps["Tmax"]), expected[channel])
    live_module.unobserve(observations)
    live.apply(AmplitudeFilter.clamp_band(0.3))
    mrml.scene.InvokeEvent(mrml.scene.StartSaveEvent)
    assert live.stale  # no longer observed


def test_conservation_agrees_everywhere_it_is_shown(mrml, synthetic_case_dir, tiny_model_file, tmp_path, capsys):
    """The case (8, 32, 32) is explained on the model grid (8, 16, 16): the native maps keep the model grid's sum,
    so scores.json, scores.csv, provenance.json, the CLI line and the Slicer table show one conservation."""
    import csv
    import json
    import re

    out = tmp_path / "out"
    assert cli_main(["explain", str(synthetic_case_dir), "--model", str(tiny_model_file), "--out", str(out),
                     "--device", "cpu", "--progress", "json", "--target", "probability", "--filter", "clamp",
                     "--alpha", "0.2"]) == 0
    done = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    shown = float(re.search(r"conservation (-?[0-9.]+)", done["message"]).group(1))
    provenance = json.loads((out / "provenance.json").read_text())
    expected = provenance["conservation"]
    assert json.loads((out / "scores.json").read_text())["conservation"] == pytest.approx(expected, rel=1e-4)
    with open(out / "scores.csv") as stream:
        assert {round(float(row["conservation"]) / expected, 4) for row in csv.DictReader(stream)} == {1.0}
    assert shown == pytest.approx(expected, abs=5e-4)
    nodes = case_nodes.load_case_folder(mrml.scene, synthetic_case_dir)
    live = LiveExplanation.from_run_folder(mrml.scene, out, synthetic_case_dir, nodes.volumes)
    live.apply(AmplitudeFilter.clamp_band(0.2))
    assert {round(row["Conservation"] / expected, 4) for row in live.rows} == {1.0}
    relevance = np.stack([np.asarray(live.relevance[c], np.float64) for c in range(6)])
    assert relevance.sum() / provenance["start_relevance_sum"] == pytest.approx(expected, rel=1e-4)
