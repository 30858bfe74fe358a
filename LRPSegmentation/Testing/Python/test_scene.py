"""The Qt-free MRML layer (LRPSegmentationLib.mrml) on a real slicer-core scene: nodes, display, blending, saving."""

from __future__ import annotations

import math

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is needed for the MRML tests")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the installed 'slicer' package has no MRML (install slicer-core)", allow_module_level=True)

from LRPSegmentationLib.analysis import metrics  # noqa: E402
from LRPSegmentationLib.data.caseio import Case  # noqa: E402
from LRPSegmentationLib.data.geometry import Geometry  # noqa: E402
from LRPSegmentationLib.data.modalities import MODALITIES  # noqa: E402
from LRPSegmentationLib.mrml import case as case_nodes  # noqa: E402
from LRPSegmentationLib.mrml import display as heatmap_display  # noqa: E402
from LRPSegmentationLib.mrml import headless as headless_mrml  # noqa: E402
from LRPSegmentationLib.mrml import nodes as scene_nodes  # noqa: E402
from LRPSegmentationLib.mrml import tables as score_tables  # noqa: E402

ROTATED = Geometry(
    shape=(4, 6, 5),
    spacing=(0.9, 1.1, 3.0),
    origin=(12.5, -30.0, 7.25),
    # rotation by 30 degrees about z, then a flip of the third axis: a proper oblique, non-RAS grid
    direction=tuple(np.array([[math.cos(0.5236), -math.sin(0.5236), 0.0],
                              [math.sin(0.5236), math.cos(0.5236), 0.0],
                              [0.0, 0.0, -1.0]]).ravel()),
)


@pytest.fixture
def mrml():
    env = headless_mrml.headless_scene()
    yield env
    del env


def synthetic_case(geometry: Geometry = ROTATED) -> Case:
    rng = np.random.default_rng(3)
    images = rng.uniform(0, 100, (len(MODALITIES), *geometry.shape)).astype(np.float32)
    images += np.arange(len(MODALITIES), dtype=np.float32)[:, None, None, None] * 1000  # each channel distinct
    truth = np.zeros(geometry.shape, np.uint8)
    truth[1:3, 2:4, 1:3] = 1
    return Case(case_id="synthetic_7", images=images, geometry=geometry, ground_truth=truth)


# ------------------------------------------------------------------------------------------------- geometry

def test_volume_round_trip_keeps_rotated_geometry(mrml):
    array = np.arange(np.prod(ROTATED.shape), dtype=np.float32).reshape(ROTATED.shape)
    node = scene_nodes.volume_node(mrml.scene, array, ROTATED, "oblique")
    back = scene_nodes.geometry_of_node(node)
    assert back.matches(ROTATED, tolerance=1e-6)
    np.testing.assert_array_equal(scene_nodes.array_from_node(node), array)
    # Slicer's RAS matrix is the LPS one with the first two rows negated
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    ras = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    lps_direction = np.asarray(ROTATED.direction).reshape(3, 3) @ np.diag(ROTATED.spacing)
    np.testing.assert_allclose(ras[:3, :3], np.diag([-1, -1, 1]) @ lps_direction, atol=1e-9)
    np.testing.assert_allclose(ras[:3, 3], [-12.5, 30.0, 7.25], atol=1e-9)
    # the same voxel lies at the same physical point as SimpleITK says
    image = ROTATED.to_image(array)
    lps_point = np.array(image.TransformIndexToPhysicalPoint((2, 3, 1)))
    ras_point = ras @ np.array([2, 3, 1, 1.0])
    np.testing.assert_allclose(ras_point[:3], [-lps_point[0], -lps_point[1], lps_point[2]], atol=1e-9)


def test_volume_node_refill_reuses_node_and_rejects_wrong_shape(mrml):
    node = scene_nodes.volume_node(mrml.scene, np.zeros(ROTATED.shape, np.float32), ROTATED, "v")
    image_before = node.GetImageData()
    scene_nodes.volume_node(mrml.scene, np.ones(ROTATED.shape, np.float32), ROTATED, "v2", node=node)
    assert node.GetImageData() is image_before and node.GetName() == "v2"
    assert scene_nodes.array_from_node(node).sum() == np.prod(ROTATED.shape)
    with pytest.raises(scene_nodes.SceneError, match="does not match grid"):
        scene_nodes.volume_node(mrml.scene, np.ones((2, 2, 2), np.float32), ROTATED, "bad")


# ------------------------------------------------------------------------------------------------- case I/O

def test_case_to_nodes_and_back(mrml, tmp_path):
    case = synthetic_case()
    nodes = case_nodes.add_case(mrml.scene, case)
    assert list(nodes.volumes) == list(MODALITIES)
    for channel, modality in enumerate(MODALITIES):
        node = nodes.volumes[modality]
        assert node.GetName() == f"synthetic_7_{modality}"
        assert node.GetAttribute(scene_nodes.MODALITY_ATTRIBUTE) == modality
        assert node.GetAttribute(scene_nodes.OUTPUT_ATTRIBUTE) is None  # inputs are never module outputs
        assert scene_nodes.geometry_of_node(node).matches(case.geometry, tolerance=1e-6)
        np.testing.assert_array_equal(scene_nodes.array_from_node(node), case.images[channel])
    assert nodes.ground_truth.IsA("vtkMRMLLabelMapVolumeNode")
    np.testing.assert_array_equal(scene_nodes.array_from_node(nodes.ground_truth), case.ground_truth)
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(mrml.scene)
    folder = hierarchy.GetItemParent(hierarchy.GetItemByDataNode(nodes.volumes["TTP"]))
    assert hierarchy.GetItemName(folder) == "synthetic_7"

    back = case_nodes.case_from_nodes(nodes.volumes, nodes.ground_truth, case_id="again")
    assert back.case_id == "again" and back.geometry.matches(case.geometry, tolerance=1e-5)
    np.testing.assert_allclose(back.images, case.images, rtol=1e-6)
    np.testing.assert_array_equal(back.ground_truth, case.ground_truth)

    written = case_nodes.write_case_folder(nodes.volumes, tmp_path / "case", nodes.ground_truth)
    assert sorted(p.name for p in written.iterdir()) == sorted(f"{m}.nii.gz" for m in (*MODALITIES, "OT"))


def test_case_from_nodes_needs_all_six(mrml):
    nodes = case_nodes.add_case(mrml.scene, synthetic_case())
    partial = dict(nodes.volumes)
    partial["rCBV"] = None
    with pytest.raises(scene_nodes.SceneError, match="rCBV"):
        case_nodes.case_from_nodes(partial)


def test_load_case_folder_from_isles_layout(mrml, tmp_path):
    synthetic = pytest.importorskip("LRPSegmentationLib.data.synthetic")
    generated = synthetic.generate_case(5, shape=(4, 16, 16))
    folder = synthetic.write_isles_case(generated, tmp_path, 2)
    nodes = case_nodes.load_case_folder(mrml.scene, folder)
    for channel, modality in enumerate(MODALITIES):
        voxels = scene_nodes.array_from_node(nodes.volumes[modality])
        np.testing.assert_allclose(voxels, generated.images[channel], rtol=1e-6)
        assert scene_nodes.geometry_of_node(nodes.volumes[modality]).matches(generated.geometry, tolerance=1e-5)
    np.testing.assert_array_equal(scene_nodes.array_from_node(nodes.ground_truth), generated.ground_truth)


def test_segmentation_ground_truth_exports_onto_reference(mrml):
    case = synthetic_case()
    nodes = case_nodes.add_case(mrml.scene, case)
    segmentation = scene_nodes.segmentation_node(mrml.scene, case.ground_truth, case.geometry, "ground_truth",
                                        name="GT", reference=nodes.volumes["ADC"])
    mask = scene_nodes.mask_from_node(segmentation, nodes.volumes["ADC"])
    np.testing.assert_array_equal(mask, case.ground_truth)


# ------------------------------------------------------------------------------------------------- heatmaps

def test_heatmap_node_display_settings(mrml):
    relevance = np.zeros(ROTATED.shape, np.float32)
    relevance[0, 0, 0], relevance[1, 1, 1] = 2.0, -0.5
    node = heatmap_display.heatmap_node(mrml.scene, relevance, ROTATED, "Tmax")
    assert node.GetAttribute(scene_nodes.OUTPUT_ATTRIBUTE) == "relevance_Tmax"
    display = node.GetDisplayNode()
    assert display.GetAutoWindowLevel() == 0
    assert display.GetWindow() == pytest.approx(4.0) and display.GetLevel() == pytest.approx(0.0)
    assert display.GetInterpolate() == 0
    color = display.GetColorNode()
    assert color.GetName() == heatmap_display.RELEVANCE_COLOR_NAME and color.GetNumberOfColors() == 256
    rgba = [0.0] * 4
    alphas = []
    for index in range(256):
        color.GetColor(index, rgba)
        alphas.append(rgba[3])
    alphas = np.array(alphas)
    assert alphas[127] == 0 and alphas[128] == 0  # zero relevance is see-through
    assert alphas[0] == 1 and alphas[255] == 1 and alphas[100] == 1 and alphas[155] == 1
    color.GetColor(255, rgba)
    top = tuple(rgba[:3])
    color.GetColor(0, rgba)
    bottom = tuple(rgba[:3])
    assert top[0] > top[2] and bottom[2] > bottom[0]  # red positive, blue negative
    # refilling keeps the node and its colour table, and the table is made once per scene
    same = heatmap_display.heatmap_node(mrml.scene, relevance * 3, ROTATED, "Tmax", half_width=1.5)
    assert same is node and node.GetDisplayNode().GetWindow() == pytest.approx(3.0)
    assert len(scene_nodes.output_nodes(mrml.scene, "relevance_colors")) == 1


def test_update_heatmap_writes_in_place(mrml):
    node = heatmap_display.heatmap_node(mrml.scene, np.ones(ROTATED.shape, np.float32), ROTATED, "ADC")
    voxels = scene_nodes.array_from_node(node)
    modified = node.GetImageData().GetMTime()
    heatmap_display.update_heatmap(node, np.full(ROTATED.shape, -0.25, np.float32), half_width=0.5)
    assert np.shares_memory(voxels, scene_nodes.array_from_node(node))
    assert np.all(voxels == -0.25) and node.GetImageData().GetMTime() > modified
    assert node.GetDisplayNode().GetWindowLevelMin() == pytest.approx(-0.5)
    with pytest.raises(scene_nodes.SceneError, match="shape"):
        heatmap_display.update_heatmap(node, np.zeros((1, 2, 3)))


def test_overlay_pixels_follow_opacity_and_filter(mrml):
    geometry = Geometry(shape=(3, 8, 10), spacing=(1.0, 1.0, 2.0))
    background = scene_nodes.volume_node(mrml.scene, np.full(geometry.shape, 100, np.float32), geometry, "ADC")
    background.GetDisplayNode().AutoWindowLevelOff()
    background.GetDisplayNode().SetWindowLevelMinMax(0, 200)  # 100 -> grey 127
    relevance = np.zeros(geometry.shape, np.float32)
    relevance[:, 1:4, 1:4] = 1.0  # positive block at the top of the window
    relevance[:, 5:7, 6:9] = -1.0  # negative block at the bottom
    heatmap = heatmap_display.heatmap_node(mrml.scene, relevance, geometry, "ADC", reference=background)
    overlay = heatmap_display.overlay_node(mrml.scene, heatmap, geometry, "ADC")
    np.testing.assert_array_equal(scene_nodes.array_from_node(overlay), heatmap_display.relevance_codes(relevance, 1))
    heatmap_display.show_grid(mrml.scene, {"ADC": background}, {"ADC": heatmap}, {"ADC": overlay}, opacity=0.0)
    assert mrml.layout.GetLayoutNode().GetViewArrangement() == heatmap_display.GRID_LAYOUT_ID
    logic = mrml.slice_logic("LRPADC", 30, 24)
    composite = logic.GetSliceCompositeNode()
    assert composite.GetForegroundVolumeID() == heatmap.GetID() and composite.GetForegroundOpacity() == 0
    assert composite.GetLabelVolumeID() == overlay.GetID()
    voxels, clear = headless_mrml.view_voxels(logic, heatmap, margin=0.1)  # no pixel near a voxel boundary
    value = relevance[tuple(voxels[..., a] for a in range(3))]  # the relevance each pixel shows
    positive, negative, neutral = clear & (value > 0), clear & (value < 0), clear & (value == 0)
    assert positive.sum() >= 9 and negative.sum() >= 6 and neutral.sum() >= 30

    color = heatmap.GetDisplayNode().GetColorNode()
    rgba = [0.0] * 4
    color.GetColor(255, rgba)
    red = np.array(rgba[:3]) * 255
    color.GetColor(0, rgba)
    blue = np.array(rgba[:3]) * 255
    grey = np.array([127, 127, 127])

    pixels = headless_mrml.blend_view(logic)[..., :3].astype(float)
    assert np.all(np.abs(pixels[clear] - grey) <= 1)  # opacity 0: only the anatomy

    heatmap_display.set_heatmap_opacity(mrml.scene, 1.0)
    pixels = headless_mrml.blend_view(logic)[..., :3].astype(float)
    assert np.all(np.abs(pixels[positive] - red) <= 1)
    assert np.all(np.abs(pixels[negative] - blue) <= 1)
    assert np.all(np.abs(pixels[neutral] - grey) <= 1)  # zero relevance is transparent

    heatmap_display.set_heatmap_opacity(mrml.scene, 0.5)
    pixels = headless_mrml.blend_view(logic)[..., :3].astype(float)
    assert np.all(np.abs(pixels[positive] - (red + grey) / 2) <= 2)
    assert np.all(np.abs(pixels[negative] - (blue + grey) / 2) <= 2)
    assert np.all(np.abs(pixels[neutral] - grey) <= 1)

    # a filter change rewrites the voxels in place: the negative block is filtered away, the positive one halved
    filtered = np.where(relevance > 0, 0.5, 0.0).astype(np.float32)
    heatmap_display.update_heatmap(overlay, heatmap_display.relevance_codes(filtered, 1.0))
    heatmap_display.set_heatmap_opacity(mrml.scene, 1.0)
    pixels = headless_mrml.blend_view(logic)[..., :3].astype(float)
    assert np.all(np.abs(pixels[negative] - grey) <= 1)
    index = int(round((0.5 + 1.0) / 2.0 * 255))  # 0.5 in the window [-1, 1] of 256 entries
    expected = [np.array(color.GetColor(i, rgba) and rgba[:3]) * 255 for i in (index - 1, index, index + 1)]
    assert all(min(np.abs(p - e).max() for e in expected) <= 1 for p in pixels[positive])
    assert not np.allclose(pixels[positive], red, atol=5)

    heatmap_display.show_single(mrml.scene, background, heatmap, overlay, opacity=0.25)
    assert mrml.layout.GetLayoutNode().GetViewArrangement() == heatmap_display.ONE_UP_RED_LAYOUT_ID
    red_composite = heatmap_display.composite_node(mrml.scene, "Red")
    assert red_composite.GetForegroundVolumeID() == heatmap.GetID()
    assert red_composite.GetLabelVolumeID() == overlay.GetID()
    assert red_composite.GetLabelOpacity() == pytest.approx(0.25)


def test_grid_layout_pairs_each_modality_with_its_heatmap(mrml):
    nodes = case_nodes.add_case(mrml.scene, synthetic_case())
    heatmaps = {m: heatmap_display.heatmap_node(mrml.scene, np.ones(ROTATED.shape, np.float32) * (i + 1), ROTATED, m)
                for i, m in enumerate(MODALITIES)}
    overlays = {m: heatmap_display.overlay_node(mrml.scene, h, ROTATED, m) for m, h in heatmaps.items()}
    heatmap_display.show_grid(mrml.scene, nodes.volumes, heatmaps, overlays, opacity=0.7)
    description = mrml.layout.GetLayoutNode().GetCurrentLayoutDescription()
    assert description.count("vtkMRMLSliceNode") == 6
    for modality, view in zip(MODALITIES, heatmap_display.GRID_VIEW_NAMES):
        composite = heatmap_display.composite_node(mrml.scene, view)
        assert composite.GetBackgroundVolumeID() == nodes.volumes[modality].GetID()
        assert composite.GetForegroundVolumeID() == heatmaps[modality].GetID()
        assert composite.GetLabelVolumeID() == overlays[modality].GetID()
        assert composite.GetLabelOpacity() == pytest.approx(0.7)
        assert composite.GetLinkedControl()
    slice_names = {mrml.scene.GetNthNodeByClass(i, "vtkMRMLSliceNode").GetLayoutName()
                   for i in range(mrml.scene.GetNumberOfNodesByClass("vtkMRMLSliceNode"))}
    assert set(heatmap_display.GRID_VIEW_NAMES) <= slice_names


# ------------------------------------------------------------------------------- segmentation, table, outputs

def test_segmentation_node_and_dice(mrml):
    case = synthetic_case()
    nodes = case_nodes.add_case(mrml.scene, case)
    predicted = case.ground_truth.copy()
    predicted[1, 2, 1] = 0  # one voxel missed
    predicted[0, 0, 0] = 1  # one false positive
    segmentation = scene_nodes.segmentation_node(mrml.scene, predicted, case.geometry, reference=nodes.volumes["ADC"])
    assert segmentation.GetAttribute(scene_nodes.OUTPUT_ATTRIBUTE) == "prediction"
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 1
    display = segmentation.GetDisplayNode()
    assert display.GetVisibility2DOutline() and not display.GetVisibility2DFill()
    mask = scene_nodes.segmentation_mask(segmentation, nodes.volumes["ADC"])
    np.testing.assert_array_equal(mask, predicted)
    truth_voxels = int(case.ground_truth.sum())
    expected = 2 * (truth_voxels - 1) / (truth_voxels + truth_voxels)
    assert metrics.dice(mask, scene_nodes.array_from_node(nodes.ground_truth)) == pytest.approx(expected)
    assert metrics.dice(np.zeros(3), np.zeros(3)) == 1.0
    # re-running with an empty prediction refills the same node with an empty segment
    again = scene_nodes.segmentation_node(mrml.scene, np.zeros(case.geometry.shape, np.uint8), case.geometry,
                                 reference=nodes.volumes["ADC"])
    assert again is segmentation
    assert scene_nodes.segmentation_mask(again, nodes.volumes["ADC"]).sum() == 0


def test_scores_table_in_place_update(mrml):
    rows = [{"modality": m, "inclusivity": 0.1 * i, "share": None if i == 2 else 1 / 6}
            for i, m in enumerate(MODALITIES)]
    table = score_tables.scores_table(mrml.scene, rows)
    assert table.GetAttribute(scene_nodes.OUTPUT_ATTRIBUTE) == "scores"
    read = score_tables.table_rows(table)
    assert [r["modality"] for r in read] == list(MODALITIES)
    assert read[3]["inclusivity"] == pytest.approx(0.3) and math.isnan(read[2]["share"])
    column = table.GetTable().GetColumn(1)
    rows2 = [{**r, "inclusivity": r["inclusivity"] + 1} for r in rows]
    assert score_tables.scores_table(mrml.scene, rows2) is table
    assert table.GetTable().GetColumn(1) is column  # same arrays, values overwritten
    assert score_tables.table_rows(table)[3]["inclusivity"] == pytest.approx(1.3)
    rows3 = [{**r, "dice": 0.5} for r in rows]
    score_tables.scores_table(mrml.scene, rows3)
    assert table.GetNumberOfColumns() == 4 and score_tables.table_rows(table)[0]["dice"] == 0.5
    with pytest.raises(scene_nodes.SceneError):
        score_tables.scores_table(mrml.scene, [])


def test_outputs_are_tagged_and_removed_without_touching_inputs(mrml):
    case = synthetic_case()
    nodes = case_nodes.add_case(mrml.scene, case)
    user_node = scene_nodes.volume_node(mrml.scene, np.zeros(case.geometry.shape, np.float32), case.geometry,
                               "Relevance ADC")  # the user's node with the module's default name
    heatmap = heatmap_display.heatmap_node(mrml.scene, np.ones(case.geometry.shape, np.float32), case.geometry, "ADC",
                              reference=nodes.volumes["ADC"])
    assert heatmap is not user_node
    score_tables.scores_table(mrml.scene, [{"a": 1.0}], reference=nodes.volumes["ADC"])
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(mrml.scene)
    folder = hierarchy.GetItemParent(hierarchy.GetItemByDataNode(heatmap))
    assert hierarchy.GetItemName(folder) == "LRPSegmentation"
    assert hierarchy.GetItemParent(folder) == hierarchy.GetItemParent(hierarchy.GetItemByDataNode(nodes.volumes["ADC"]))
    assert scene_nodes.remove_outputs(mrml.scene, ["relevance_ADC"]) == 1
    assert scene_nodes.output_node(mrml.scene, "relevance_ADC") is None
    assert scene_nodes.output_node(mrml.scene, "scores") is not None
    scene_nodes.remove_outputs(mrml.scene)
    assert scene_nodes.output_nodes(mrml.scene) == []
    assert mrml.scene.IsNodePresent(user_node) and all(mrml.scene.IsNodePresent(n) for n in nodes.volumes.values())


# ------------------------------------------------------------------------------------------------ save/load

def on_grid(node, geometry: Geometry) -> np.ndarray:
    """The voxels of ``node`` resampled (nearest neighbour) onto ``geometry``: compares volumes physically.

    Slicer's reader may store a flipped axis with a compensating direction; the physical content is what counts.
    """
    import SimpleITK as sitk

    image = scene_nodes.geometry_of_node(node).to_image(scene_nodes.array_from_node(node))
    reference = geometry.to_image(np.zeros(geometry.shape, np.float32))
    return sitk.GetArrayFromImage(sitk.Resample(image, reference, sitk.Transform(), sitk.sitkNearestNeighbor))


def on_grid_mask(segmentation, reference, geometry: Geometry) -> np.ndarray:
    mask = scene_nodes.segmentation_mask(segmentation, reference)
    grid = scene_nodes.geometry_of_node(reference)
    holder = scene_nodes.volume_node(reference.GetScene(), mask, grid, "__mask__", labelmap=True)
    return on_grid(holder, geometry)


def test_scene_save_and_reload_keeps_everything(mrml, tmp_path):
    case = synthetic_case()
    nodes = case_nodes.add_case(mrml.scene, case)
    relevance = np.linspace(-1, 1, int(np.prod(case.geometry.shape)), dtype=np.float32).reshape(case.geometry.shape)
    heatmap = heatmap_display.heatmap_node(mrml.scene, relevance, case.geometry, "ADC", half_width=0.8,
                              reference=nodes.volumes["ADC"])
    scene_nodes.segmentation_node(mrml.scene, case.ground_truth, case.geometry, reference=nodes.volumes["ADC"])
    score_tables.scores_table(mrml.scene, [{"modality": m, "score": i / 10} for i, m in enumerate(MODALITIES)])
    overlay = heatmap_display.overlay_node(mrml.scene, heatmap, case.geometry, "ADC")
    heatmap_display.show_grid(mrml.scene, nodes.volumes, {"ADC": heatmap}, {"ADC": overlay}, opacity=0.6)
    saved = headless_mrml.save_scene(mrml.scene, tmp_path / "scene" / "lrp.mrml")
    assert saved.scene_file.is_file() and all(p.is_file() for p in saved.data_files)

    env = headless_mrml.headless_scene()
    env.scene.SetURL(str(saved.scene_file))
    assert env.scene.Import()
    scene = env.scene
    heatmap2 = scene_nodes.output_node(scene, "relevance_ADC")
    np.testing.assert_allclose(on_grid(heatmap2, case.geometry), relevance)
    display = heatmap2.GetDisplayNode()
    assert display.GetAutoWindowLevel() == 0 and display.GetWindowLevelMax() == pytest.approx(0.8)
    color = display.GetColorNode()
    assert color is not None and color.GetName() == heatmap_display.RELEVANCE_COLOR_NAME
    rgba = [0.0] * 4
    color.GetColor(127, rgba)
    assert rgba[3] == 0
    color.GetColor(255, rgba)
    assert rgba[3] == 1
    adc = scene.GetFirstNodeByName("synthetic_7_ADC")
    np.testing.assert_allclose(on_grid(adc, case.geometry), case.images[0])
    assert adc.GetAttribute(scene_nodes.MODALITY_ATTRIBUTE) == "ADC"
    segmentation = scene_nodes.output_node(scene, "prediction")
    np.testing.assert_array_equal(on_grid_mask(segmentation, adc, case.geometry), case.ground_truth)
    table = scene_nodes.output_node(scene, "scores")
    assert [r["modality"] for r in score_tables.table_rows(table)] == list(MODALITIES)
    assert score_tables.table_rows(table)[4]["score"] == pytest.approx(0.4)
    layout = scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    assert layout.GetViewArrangement() == heatmap_display.GRID_LAYOUT_ID
    composite = heatmap_display.composite_node(scene, "LRPADC")
    assert composite.GetForegroundVolumeID() == heatmap2.GetID()
    overlay2 = scene_nodes.output_node(scene, "overlay_ADC")
    assert composite.GetLabelVolumeID() == overlay2.GetID() and composite.GetLabelOpacity() == pytest.approx(0.6)
    np.testing.assert_array_equal(on_grid(overlay2, case.geometry), heatmap_display.relevance_codes(relevance, 0.8))
    del env


def test_save_scene_rejects_other_suffix(mrml, tmp_path):
    with pytest.raises(scene_nodes.SceneError, match=".mrml"):
        headless_mrml.save_scene(mrml.scene, tmp_path / "scene.mrb")
