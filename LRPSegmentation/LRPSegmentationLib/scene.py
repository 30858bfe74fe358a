"""Everything MRML: volume, heatmap, segmentation and table nodes, slice layouts. Qt-free; the scene is an argument.

The Slicer module's Logic calls these functions with ``slicer.mrmlScene``; tests call them with a plain
``vtkMRMLScene`` from slicer-core. Arrays are numpy (D, H, W) = (K, J, I) as ``slicer.util.arrayFromVolume`` gives
them; :class:`~LRPSegmentationLib.geometry.Geometry` is in ITK's LPS convention and is converted to Slicer's RAS here
(flip the sign of the first two rows of origin and direction).

Nodes the module creates carry the attribute :data:`OUTPUT_ATTRIBUTE` = role, so a re-run reuses (updates) exactly
the module's own outputs and never touches the user's nodes.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from .geometry import Geometry
from .modalities import GROUND_TRUTH, MODALITIES

OUTPUT_ATTRIBUTE = "LRPSegmentation.Output"
"""Node attribute marking a node the module owns; its value is the node's role (e.g. ``relevance_ADC``)."""

MODALITY_ATTRIBUTE = "LRPSegmentation.Modality"
"""Node attribute naming the modality of an input volume the module loaded (used to fill the selectors)."""

RELEVANCE_COLOR_NAME = "LRPSegmentation Relevance"
GRID_LAYOUT_ID = 20170
"""Custom layout id (> 100, Slicer's built-in ids stay below) of the linked 2x3 modality/heatmap layout."""
GRID_VIEW_NAMES: tuple[str, ...] = tuple(f"LRP{modality}" for modality in MODALITIES)
SINGLE_VIEW_NAME = "Red"
ONE_UP_RED_LAYOUT_ID = 6  # vtkMRMLLayoutNode.SlicerLayoutOneUpRedSliceView

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


class SceneError(ValueError):
    """A node or scene that cannot be used as asked; the message names the node and what to do."""


# ------------------------------------------------------------------------------------------------- geometry

def ijk_to_ras(geometry: Geometry) -> np.ndarray:
    """The 4x4 IJK-to-RAS matrix of an LPS geometry (columns: RAS direction of each index axis times spacing)."""
    direction = np.asarray(geometry.direction, dtype=float).reshape(3, 3)
    matrix = np.eye(4)
    matrix[:3, :3] = _LPS_TO_RAS @ direction @ np.diag(geometry.spacing)
    matrix[:3, 3] = _LPS_TO_RAS @ np.asarray(geometry.origin, dtype=float)
    return matrix


def geometry_of_node(node) -> Geometry:
    """The LPS geometry of a volume node (shape from its image data)."""
    image = node.GetImageData()
    if image is None:
        raise SceneError(f"Volume node {node.GetName()!r} holds no image data; load or compute the volume first.")
    i, j, k = image.GetDimensions()
    directions = vtk.vtkMatrix4x4()
    node.GetIJKToRASDirectionMatrix(directions)
    ras_direction = np.array([[directions.GetElement(r, c) for c in range(3)] for r in range(3)])
    return Geometry(
        shape=(k, j, i),
        spacing=tuple(float(v) for v in node.GetSpacing()),
        origin=tuple(float(v) for v in _LPS_TO_RAS @ np.asarray(node.GetOrigin(), dtype=float)),
        direction=tuple(float(v) for v in (_LPS_TO_RAS @ ras_direction).ravel()),
    )


def array_from_node(node) -> np.ndarray:
    """A (D, H, W) view of a volume node's voxels (writes go into the node; call ``voxels_modified`` after)."""
    image = node.GetImageData()
    if image is None or image.GetPointData().GetScalars() is None:
        raise SceneError(f"Volume node {node.GetName()!r} holds no voxels; load or compute the volume first.")
    i, j, k = image.GetDimensions()
    components = image.GetNumberOfScalarComponents()
    array = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    return array.reshape((k, j, i) if components == 1 else (k, j, i, components))


def voxels_modified(node) -> None:
    """Tell the display pipeline that voxels written into ``array_from_node(node)`` changed."""
    image = node.GetImageData()
    image.GetPointData().GetScalars().Modified()
    image.Modified()
    node.Modified()


def _set_voxels(node, array: np.ndarray, geometry: Geometry) -> None:
    array = np.ascontiguousarray(array)
    if array.ndim != 3 or tuple(array.shape) != tuple(geometry.shape):
        raise SceneError(
            f"Cannot fill volume node {node.GetName()!r}: array shape {array.shape} does not match grid {geometry.shape}."
        )
    image = node.GetImageData()
    same = (
        image is not None
        and image.GetPointData().GetScalars() is not None
        and image.GetDimensions() == tuple(reversed(array.shape))
        and numpy_support.get_vtk_array_type(array.dtype) == image.GetScalarType()
        and image.GetNumberOfScalarComponents() == 1
    )
    if same:
        array_from_node(node)[...] = array
    else:
        image = vtk.vtkImageData()
        image.SetDimensions(array.shape[2], array.shape[1], array.shape[0])
        scalars = numpy_support.numpy_to_vtk(array.ravel(), deep=True)
        image.GetPointData().SetScalars(scalars)
        node.SetAndObserveImageData(image)
    matrix = vtk.vtkMatrix4x4()
    for r, row in enumerate(ijk_to_ras(geometry)):
        for c, value in enumerate(row):
            matrix.SetElement(r, c, float(value))
    node.SetIJKToRASMatrix(matrix)
    voxels_modified(node)


def volume_node(
    scene, array: np.ndarray, geometry: Geometry, name: str, *, labelmap: bool = False, node=None
):
    """A scalar (or labelmap) volume node holding ``array`` on ``geometry``; fills ``node`` when given."""
    class_name = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
    if node is None:
        node = scene.AddNewNodeByClass(class_name, name)
    elif not node.IsA(class_name):
        raise SceneError(f"Node {node.GetName()!r} is a {node.GetClassName()}, not a {class_name}.")
    else:
        node.SetName(name)
    _set_voxels(node, array, geometry)
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    return node


# -------------------------------------------------------------------------------------------------- outputs

def output_nodes(scene, role: str | None = None) -> list:
    """The module's own nodes (all, or those with ``role``), in scene order."""
    found = []
    nodes = scene.GetNodes()
    for index in range(nodes.GetNumberOfItems()):
        node = nodes.GetItemAsObject(index)
        value = node.GetAttribute(OUTPUT_ATTRIBUTE)
        if value is not None and (role is None or value == role):
            found.append(node)
    return found


def output_node(scene, role: str, class_name: str | None = None):
    """The module's node with ``role`` (of ``class_name`` when given), or None."""
    for node in output_nodes(scene, role):
        if class_name is None or node.IsA(class_name):
            return node
    return None


def _output(scene, class_name: str, role: str, name: str):
    """The module's node with ``role``, created (and tagged) when missing; renamed to ``name``."""
    node = output_node(scene, role, class_name)
    if node is None:
        node = scene.AddNewNodeByClass(class_name, name)
        node.SetAttribute(OUTPUT_ATTRIBUTE, role)
    else:
        node.SetName(name)
    return node


def remove_outputs(scene, roles: Sequence[str] | None = None) -> int:
    """Remove the module's outputs (all, or the given roles) with their display/storage nodes; returns the count."""
    doomed = [n for n in output_nodes(scene) if roles is None or n.GetAttribute(OUTPUT_ATTRIBUTE) in roles]
    for node in doomed:
        if node.IsA("vtkMRMLDisplayableNode"):
            for index in range(node.GetNumberOfDisplayNodes()):
                display = node.GetNthDisplayNode(index)
                if display is not None:
                    scene.RemoveNode(display)
        if node.IsA("vtkMRMLStorableNode") and node.GetStorageNode() is not None:
            scene.RemoveNode(node.GetStorageNode())
        scene.RemoveNode(node)
    return len(doomed)


def _hierarchy_item(hierarchy, node) -> int:
    """The subject-hierarchy item of ``node``, created under the scene item when missing (no SH logic running)."""
    item = hierarchy.GetItemByDataNode(node)
    return item or hierarchy.CreateItem(hierarchy.GetSceneItemID(), node)


def place_next_to(scene, node, reference, folder: str | None = None) -> None:
    """Put ``node`` beside ``reference`` in the subject hierarchy (inside a sub-folder named ``folder`` if given)."""
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    if hierarchy is None or node is None or reference is None:
        return
    item = _hierarchy_item(hierarchy, node)
    reference_item = _hierarchy_item(hierarchy, reference)
    parent = hierarchy.GetItemParent(reference_item)
    if folder:
        existing = hierarchy.GetItemChildWithName(parent, folder)
        parent = existing or hierarchy.CreateFolderItem(parent, folder)
    hierarchy.SetItemParent(item, parent)


# ------------------------------------------------------------------------------------------------ case I/O

@dataclass
class CaseNodes:
    """The volume nodes of one case in the scene: six modalities (MODALITIES order) and the ground truth, if any."""

    volumes: dict[str, Any]
    ground_truth: Any | None = None


def add_case(scene, case) -> CaseNodes:
    """Load a ``caseio.Case`` into six scalar volume nodes named ``<case_id>_<MOD>`` (+ ``_OT`` labelmap).

    These are input nodes (the user's data once loaded): they are tagged with their modality, never as outputs.
    They are grouped in a subject-hierarchy folder named after the case.
    """
    images = np.asarray(case.images)
    if images.ndim != 4 or images.shape[0] != len(MODALITIES):
        raise SceneError(f"Case {case.case_id!r}: images of shape {images.shape}, expected (6, D, H, W).")
    volumes = {}
    for channel, modality in enumerate(MODALITIES):
        node = volume_node(scene, images[channel], case.geometry, f"{case.case_id}_{modality}")
        node.SetAttribute(MODALITY_ATTRIBUTE, modality)
        volumes[modality] = node
    ground_truth = None
    if case.ground_truth is not None:
        ground_truth = volume_node(
            scene, np.asarray(case.ground_truth, dtype=np.uint8), case.geometry,
            f"{case.case_id}_{GROUND_TRUTH}", labelmap=True,
        )
        ground_truth.SetAttribute(MODALITY_ATTRIBUTE, GROUND_TRUTH)
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    if hierarchy is not None:
        folder = hierarchy.CreateFolderItem(hierarchy.GetSceneItemID(), str(case.case_id))
        for node in [*volumes.values(), ground_truth]:
            if node is not None:
                hierarchy.SetItemParent(_hierarchy_item(hierarchy, node), folder)
    return CaseNodes(volumes=volumes, ground_truth=ground_truth)


def load_case_folder(scene, folder: Path | str) -> CaseNodes:
    """Read an ISLES (or flat) case folder with ``caseio.load_case`` and add it to the scene."""
    from . import caseio

    return add_case(scene, caseio.load_case(folder))


def load_synthetic_case(scene, root: Path | str, seed: int = 2017) -> CaseNodes:
    """Generate a synthetic ISLES-like case into ``root/seed<seed>/training_1`` (once) and add it to the scene."""
    from .synthetic import generate_case, write_isles_case

    folder = Path(root) / f"seed{seed}"
    if not (folder / "training_1").is_dir():
        write_isles_case(generate_case(seed), folder, 1)
    return load_case_folder(scene, folder / "training_1")


def mask_from_node(node, reference=None) -> np.ndarray:
    """A uint8 0/1 (D, H, W) mask from a labelmap/scalar volume node (nonzero = 1) or a segmentation node.

    A segmentation node is exported on the grid of ``reference`` (a volume node; required for segmentations).
    """
    if node.IsA("vtkMRMLSegmentationNode"):
        if reference is None:
            raise SceneError(f"Segmentation {node.GetName()!r}: a reference volume is needed to export it.")
        scene = node.GetScene()
        labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__LRPSegmentation_export__")
        try:
            ids = vtk.vtkStringArray()
            node.GetSegmentation().GetSegmentIDs(ids)
            if not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(node, ids, labelmap, reference):
                raise SceneError(f"Segmentation {node.GetName()!r} could not be exported onto {reference.GetName()!r}.")
            return (array_from_node(labelmap) != 0).astype(np.uint8)
        finally:
            display = labelmap.GetDisplayNode()
            scene.RemoveNode(labelmap)
            if display is not None:
                scene.RemoveNode(display)
    if node.IsA("vtkMRMLVolumeNode"):
        return (array_from_node(node) != 0).astype(np.uint8)
    raise SceneError(f"Node {node.GetName()!r} ({node.GetClassName()}) is neither a volume nor a segmentation.")


def write_case_folder(volumes: Mapping[str, Any], folder: Path | str, ground_truth=None) -> Path:
    """Write six volume nodes (each on its own grid) as ``<MOD>.nii.gz`` (+ ``OT.nii.gz``) into ``folder``.

    ``caseio.load_case(folder)`` then brings them onto the ADC grid with its usual checks; the child
    ``lrpseg explain`` process reads the same folder.
    """
    from . import caseio

    missing = [m for m in MODALITIES if volumes.get(m) is None]
    if missing:
        raise SceneError(f"No volume selected for {', '.join(missing)}; select one volume node for each modality.")
    folder = Path(folder)
    for modality in MODALITIES:
        node = volumes[modality]
        caseio.write_volume(array_from_node(node).astype(np.float32), geometry_of_node(node),
                            folder / f"{modality}.nii.gz")
    if ground_truth is not None:
        caseio.write_volume(mask_from_node(ground_truth, volumes["ADC"]), geometry_of_node(volumes["ADC"]),
                            folder / f"{GROUND_TRUTH}.nii.gz")
    return folder


def case_from_nodes(volumes: Mapping[str, Any], ground_truth=None, case_id: str | None = None):
    """A ``caseio.Case`` from six user-chosen volume nodes (other grids resampled onto the ADC node's grid)."""
    from . import caseio

    with tempfile.TemporaryDirectory(prefix="lrpseg-case-") as folder:
        write_case_folder(volumes, folder, ground_truth)
        case = caseio.load_case(folder, case_id=case_id or volumes["ADC"].GetName())
    case.sources = {}
    return case


# ------------------------------------------------------------------------------------------------- heatmaps

def _relevance_rgb(t: float) -> tuple[float, float, float]:
    """Diverging colour at t in [-1, 1]: light blue -> deep blue (negative), light orange -> deep red (positive)."""
    s = min(1.0, abs(t))
    if t >= 0:
        low, high = (1.0, 0.85, 0.35), (0.8, 0.0, 0.0)
    else:
        low, high = (0.55, 0.85, 1.0), (0.0, 0.15, 0.8)
    return tuple(a + (b - a) * s for a, b in zip(low, high))


def relevance_color_node(scene, neutral_band: float = 0.03, entries: int = 256):
    """The diverging relevance colour table (created once per scene): transparent within ``neutral_band`` of zero.

    Entries whose centre lies within +-``neutral_band`` (fraction of the half window) of zero get alpha 0, so
    zero relevance shows the anatomy; everything else is opaque (slice layers treat alpha as binary; graded
    transparency comes from the foreground opacity).
    """
    node = output_node(scene, "relevance_colors", "vtkMRMLColorTableNode")
    if node is None:
        node = _output(scene, "vtkMRMLColorTableNode", "relevance_colors", RELEVANCE_COLOR_NAME)
        node.SetTypeToUser()
    node.SetNumberOfColors(entries)
    node.GetLookupTable().SetTableRange(0, entries - 1)
    half = (entries - 1) / 2.0
    band = max(neutral_band * half, 0.75)  # always clears the entries next to zero
    for index in range(entries):
        offset = index - half
        red, green, blue = _relevance_rgb(offset / half)
        alpha = 0.0 if abs(offset) <= band else 1.0
        node.SetColor(index, f"{offset / half:+.3f}", red, green, blue, alpha)
    node.SetAttribute("Category", "LRPSegmentation")
    return node


def symmetric_window(array: np.ndarray, percentile: float = 100.0) -> float:
    """Half width m of the symmetric display window [-m, m]: a percentile of |values| (1.0 when all zero)."""
    magnitude = np.abs(np.asarray(array, dtype=np.float64))
    value = float(np.percentile(magnitude, percentile)) if magnitude.size else 0.0
    return value if value > 0 and math.isfinite(value) else 1.0


def set_window(node, half_width: float) -> None:
    """Symmetric window [-half_width, half_width] on a heatmap node (auto window/level off, zero in the middle)."""
    display = node.GetDisplayNode()
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(-float(half_width), float(half_width))


def heatmap_node(scene, relevance: np.ndarray, geometry: Geometry, modality: str, *, name: str | None = None,
                 half_width: float | None = None, reference=None):
    """The module's relevance volume for ``modality`` (role ``relevance_<MOD>``), created or refilled, with display.

    float32 voxels, the relevance colour table, window [-m, m] (``half_width``, default max |relevance|).
    """
    role = f"relevance_{modality}"
    node = _output(scene, "vtkMRMLScalarVolumeNode", role, name or f"Relevance {modality}")
    node.SetAttribute(MODALITY_ATTRIBUTE, modality)
    volume_node(scene, np.asarray(relevance, dtype=np.float32), geometry, node.GetName(), node=node)
    display = node.GetDisplayNode()
    display.SetAndObserveColorNodeID(relevance_color_node(scene).GetID())
    display.ApplyThresholdOff()
    display.InterpolateOff()  # one colour per voxel: relevance is a voxel-wise quantity
    set_window(node, half_width if half_width is not None else symmetric_window(relevance))
    place_next_to(scene, node, reference, "LRPSegmentation")
    return node


def update_heatmap(node, values: np.ndarray, half_width: float | None = None) -> None:
    """Overwrite a heatmap's voxels in place (no reallocation) and optionally its window; fast enough for sliders."""
    voxels = array_from_node(node)
    if voxels.shape != np.shape(values):
        raise SceneError(f"Heatmap {node.GetName()!r} has shape {voxels.shape}; new values have {np.shape(values)}.")
    voxels[...] = values
    voxels_modified(node)
    if half_width is not None:
        set_window(node, half_width)


# -------------------------------------------------------------------------------------------------- layouts

def grid_layout_xml() -> str:
    """Slicer layout description of six linked axial views in 2 rows x 3 columns, one per modality."""
    rows = []
    for row in range(2):
        items = []
        for column in range(3):
            index = 3 * row + column
            items.append(
                f'<item><view class="vtkMRMLSliceNode" singletontag="{GRID_VIEW_NAMES[index]}">'
                '<property name="orientation" action="default">Axial</property>'
                f'<property name="viewlabel" action="default">{MODALITIES[index]}</property>'
                '<property name="viewcolor" action="default">#E0A040</property>'
                '<property name="viewgroup" action="default">0</property>'
                "</view></item>"
            )
        rows.append(f'<item><layout type="horizontal">{"".join(items)}</layout></item>')
    return f'<layout type="vertical">{"".join(rows)}</layout>'


def layout_node(scene):
    node = scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    if node is None:
        node = scene.AddNode(slicer.vtkMRMLLayoutNode())
    return node


def composite_node(scene, view_name: str):
    """The slice composite node of view ``view_name`` (created with that layout name when the view has none yet)."""
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        node = scene.GetNthNodeByClass(index, "vtkMRMLSliceCompositeNode")
        if node.GetLayoutName() == view_name:
            return node
    node = slicer.vtkMRMLSliceCompositeNode()
    node.SetLayoutName(view_name)
    return scene.AddNode(node)


def set_view_layers(scene, view_name: str, background=None, foreground=None, label=None,
                    opacity: float | None = None, linked: bool | None = None) -> None:
    """Background/foreground/label volumes and foreground opacity of one slice view (None leaves a layer as is)."""
    node = composite_node(scene, view_name)
    if background is not None:
        node.SetBackgroundVolumeID(background.GetID())
    if foreground is not None:
        node.SetForegroundVolumeID(foreground.GetID())
    if label is not None:
        node.SetLabelVolumeID(label.GetID())
    if opacity is not None:
        node.SetForegroundOpacity(float(np.clip(opacity, 0.0, 1.0)))
    if linked is not None:
        node.SetLinkedControl(bool(linked))


def set_foreground_opacity(scene, opacity: float, view_names: Sequence[str] | None = None) -> None:
    """Foreground (heatmap) opacity of the given views (default: the 2x3 views and the single view)."""
    for view in view_names or (*GRID_VIEW_NAMES, SINGLE_VIEW_NAME):
        set_view_layers(scene, view, opacity=opacity)


def show_grid(scene, backgrounds: Mapping[str, Any], heatmaps: Mapping[str, Any], opacity: float = 0.5) -> None:
    """Switch to the linked 2x3 layout, each view showing modality k under heatmap k."""
    layout = layout_node(scene)
    if not layout.IsLayoutDescription(GRID_LAYOUT_ID):
        layout.AddLayoutDescription(GRID_LAYOUT_ID, grid_layout_xml())
    if layout.GetViewArrangement() != GRID_LAYOUT_ID:  # re-setting would rebuild the views on every slider move
        layout.SetViewArrangement(GRID_LAYOUT_ID)
    for modality, view in zip(MODALITIES, GRID_VIEW_NAMES):
        set_view_layers(scene, view, backgrounds.get(modality), heatmaps.get(modality), opacity=opacity, linked=True)


def show_single(scene, background, heatmap, opacity: float = 0.5, view_name: str = SINGLE_VIEW_NAME) -> None:
    """Switch to the one-view layout showing one modality under its heatmap."""
    layout = layout_node(scene)
    if layout.GetViewArrangement() != ONE_UP_RED_LAYOUT_ID:
        layout.SetViewArrangement(ONE_UP_RED_LAYOUT_ID)
    set_view_layers(scene, view_name, background, heatmap, opacity=opacity)


# ------------------------------------------------------------------------------------------ segmentations

def dice(mask: np.ndarray, reference: np.ndarray) -> float:
    """Dice coefficient of two binary masks (1.0 when both are empty)."""
    a, b = np.asarray(mask) != 0, np.asarray(reference) != 0
    if a.shape != b.shape:
        raise ValueError(f"Dice of masks with different shapes {a.shape} and {b.shape}.")
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def segmentation_node(scene, mask: np.ndarray, geometry: Geometry, role: str = "prediction", *,
                      name: str = "Lesion (predicted)", segment_name: str = "Lesion",
                      color: tuple[float, float, float] = (1.0, 0.9, 0.1), reference=None):
    """The module's segmentation with one segment from a 0/1 mask, shown as outlines in the slice views."""
    node = _output(scene, "vtkMRMLSegmentationNode", role, name)
    node.GetSegmentation().RemoveAllSegments()
    labelmap = volume_node(scene, np.asarray(mask != 0, dtype=np.uint8), geometry, "__LRPSegmentation_mask__",
                           labelmap=True)
    try:
        if reference is not None:
            node.SetReferenceImageGeometryParameterFromVolumeNode(reference)
        else:
            node.SetReferenceImageGeometryParameterFromVolumeNode(labelmap)
        if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, node):
            raise SceneError(f"Could not import the mask into segmentation {name!r}.")
    finally:
        display = labelmap.GetDisplayNode()
        scene.RemoveNode(labelmap)
        if display is not None:
            scene.RemoveNode(display)
    segmentation = node.GetSegmentation()
    if segmentation.GetNumberOfSegments() == 0:  # empty mask: keep an empty, named segment
        segmentation.AddEmptySegment(segment_name, segment_name, list(color))
    segment = segmentation.GetNthSegment(0)
    if segment is None:
        raise SceneError(f"Segmentation {name!r} has no segment; the Segmentations module logic is not running.")
    segment.SetName(segment_name)
    segment.SetColor(*color)
    node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    display.SetVisibility2DFill(False)
    display.SetVisibility2DOutline(True)
    display.SetSliceIntersectionThickness(2)
    place_next_to(scene, node, reference, "LRPSegmentation")
    return node


def segmentation_mask(node, reference) -> np.ndarray:
    """The union of a segmentation's segments as a 0/1 array on ``reference``'s grid."""
    return mask_from_node(node, reference)


# -------------------------------------------------------------------------------------------------- tables

def _column_kind(values: list) -> str:
    return "string" if any(isinstance(v, str) for v in values) else "double"


def scores_table(scene, rows: Sequence[Mapping[str, Any]], role: str = "scores", name: str = "LRP scores",
                 reference=None):
    """The module's table node holding ``rows`` (one dict per row; str columns as text, others as numbers).

    When the columns are unchanged the values are overwritten in place (cheap; for slider moves).
    None and non-finite numbers become NaN.
    """
    if not rows:
        raise SceneError("No score rows to show; compute the explanation first.")
    columns: list[str] = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    kinds = {c: _column_kind([row.get(c) for row in rows]) for c in columns}
    node = _output(scene, "vtkMRMLTableNode", role, name)
    table = node.GetTable()
    reuse = table.GetNumberOfColumns() == len(columns) and table.GetNumberOfRows() == len(rows) and all(
        table.GetColumn(i).GetName() == c
        and (table.GetColumn(i).IsA("vtkStringArray") == (kinds[c] == "string"))
        for i, c in enumerate(columns)
    )
    if not reuse:
        node.RemoveAllColumns()
        for column in columns:
            array = vtk.vtkStringArray() if kinds[column] == "string" else vtk.vtkDoubleArray()
            array.SetName(column)
            array.SetNumberOfValues(len(rows))
            table.AddColumn(array)
    update_table_values(node, [{c: row.get(c) for c in columns} for row in rows])
    place_next_to(scene, node, reference, "LRPSegmentation")
    return node


def update_table_values(node, rows: Sequence[Mapping[str, Any]]) -> None:
    """Overwrite the values of a table made by :func:`scores_table` with rows of the same columns (slider path).

    No column or row is added, renamed or re-typed (raises SceneError when ``rows`` do not fit); one Modified
    event per column plus one for the node.
    """
    table = node.GetTable()
    if table.GetNumberOfRows() != len(rows):
        raise SceneError(f"Table {node.GetName()!r} has {table.GetNumberOfRows()} rows, not {len(rows)}.")
    for i in range(table.GetNumberOfColumns()):
        array = table.GetColumn(i)
        column, text = array.GetName(), array.IsA("vtkStringArray")
        for r, row in enumerate(rows):
            if column not in row:
                raise SceneError(f"Row {r} has no value for column {column!r} of table {node.GetName()!r}.")
            value = row[column]
            if text:
                array.SetValue(r, "" if value is None else str(value))
            else:
                number = float("nan") if value is None else float(value)
                array.SetValue(r, number if math.isfinite(number) else float("nan"))
        array.Modified()
    table.Modified()
    node.Modified()


def table_rows(node) -> list[dict[str, Any]]:
    """The rows of a table node as dicts (numbers as float, text as str)."""
    table = node.GetTable()
    rows = []
    for r in range(table.GetNumberOfRows()):
        row = {}
        for c in range(table.GetNumberOfColumns()):
            array = table.GetColumn(c)
            row[array.GetName()] = array.GetValue(r) if array.IsA("vtkStringArray") else float(array.GetValue(r))
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------------- headless

@dataclass
class HeadlessScene:
    """A scene with the logics the Slicer application sets up (colours, layouts, subject hierarchy, segmentations)
    but no Qt and no OpenGL: for console scripts, benchmarks, screenshots and tests. Keep it alive while in use
    (it holds the logics), and use :meth:`slice_logic` to blend a slice view into pixels."""

    scene: Any
    app: Any
    layout: Any
    hierarchy: Any
    segmentations: Any
    slice_logics: dict[str, Any] = field(default_factory=dict)

    def slice_logic(self, view_name: str, width: int, height: int, fit: bool = True):
        """A ``vtkMRMLSliceLogic`` on the slice node of ``view_name`` at ``width`` x ``height`` pixels (created once)."""
        logic = self.slice_logics.get(view_name)
        if logic is None:
            slice_node = None
            for index in range(self.scene.GetNumberOfNodesByClass("vtkMRMLSliceNode")):
                node = self.scene.GetNthNodeByClass(index, "vtkMRMLSliceNode")
                if node.GetLayoutName() == view_name:
                    slice_node = node
            if slice_node is None:
                raise SceneError(f"No slice view named {view_name!r}: show a layout with that view first.")
            logic = slicer.vtkMRMLSliceLogic()
            logic.SetMRMLApplicationLogic(self.app)
            logic.SetMRMLScene(self.scene)
            logic.SetSliceNode(slice_node)
            self.slice_logics[view_name] = logic
        logic.GetSliceNode().SetDimensions(int(width), int(height), 1)
        if fit:
            logic.FitSliceToBackground(int(width), int(height))
        return logic


def headless_scene() -> HeadlessScene:
    """A new scene set up as in Slicer (also made ``slicer.mrmlScene``), without the application."""
    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    app = slicer.vtkSlicerApplicationLogic()
    app.SetMRMLScene(scene)
    colors = app.GetColorLogic()
    colors.SetMRMLScene(scene)
    colors.AddDefaultColorNodes()
    app.SetModuleLogic("Colors", colors)
    layout = slicer.vtkMRMLLayoutLogic()
    layout.SetMRMLScene(scene)
    hierarchy = slicer.vtkSlicerSubjectHierarchyModuleLogic()
    hierarchy.SetMRMLScene(scene)
    segmentations = slicer.vtkSlicerSegmentationsModuleLogic()  # registers the segment representations
    segmentations.SetMRMLScene(scene)
    return HeadlessScene(scene, app, layout, hierarchy, segmentations)


def blend_view(logic) -> np.ndarray:
    """The RGBA pixels (height, width, 4) uint8 a slice view shows (layers blended); row 0 is the bottom row."""
    producer = logic.GetImageDataConnection().GetProducer()
    producer.Update()
    image = producer.GetOutputDataObject(0)
    width, height, _ = image.GetDimensions()
    return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, -1).copy()


def view_voxels(logic, volume, margin: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """For each pixel (row 0 = bottom) of a slice view: the nearest (k, j, i) voxel of ``volume``, and inside-ness.

    With ``margin`` > 0 a pixel sampling within ``margin`` voxel of a voxel boundary also counts as outside: its
    voxel is ambiguous (tests that compare pixels with voxels use this).
    """
    slice_node = logic.GetSliceNode()
    width, height, _ = slice_node.GetDimensions()
    ras_to_ijk = vtk.vtkMatrix4x4()
    volume.GetRASToIJKMatrix(ras_to_ijk)
    xy_to_ijk = vtk.vtkMatrix4x4()
    vtk.vtkMatrix4x4.Multiply4x4(ras_to_ijk, slice_node.GetXYToRAS(), xy_to_ijk)
    matrix = np.array([[xy_to_ijk.GetElement(r, c) for c in range(4)] for r in range(4)])
    y, x = np.mgrid[0:height, 0:width]
    points = np.stack([x, y, np.zeros_like(x), np.ones_like(x)], axis=-1).astype(float) @ matrix.T
    kji = np.rint(points[..., 2::-1]).astype(int)
    shape = np.array(array_from_node(volume).shape)
    inside = np.all((kji >= 0) & (kji < shape), axis=-1)
    if margin > 0:
        inside &= np.all(np.abs(points[..., 2::-1] - kji) < 0.5 - margin, axis=-1)
    return np.clip(kji, 0, shape - 1), inside


# ---------------------------------------------------------------------------------------------------- saving

_STORAGE_SUFFIX = {
    "vtkMRMLSegmentationNode": ".seg.nrrd",
    "vtkMRMLLabelMapVolumeNode": ".nrrd",
    "vtkMRMLScalarVolumeNode": ".nrrd",
    "vtkMRMLTableNode": ".tsv",
    "vtkMRMLColorTableNode": ".ctbl",
}


@dataclass
class SavedScene:
    """Where ``save_scene`` wrote the scene file and each node's data file."""

    scene_file: Path
    data_files: list[Path] = field(default_factory=list)


def save_scene(scene, path: Path | str) -> SavedScene:
    """Write a ``.mrml`` scene with every volume, segmentation, table and user colour node stored beside it.

    For console scripts and headless use; in the Slicer application use File > Save (same files).
    """
    path = Path(path).expanduser().resolve()
    if path.suffix != ".mrml":
        raise SceneError(f"Cannot save the scene as {path}: give a .mrml file name.")
    data_folder = path.parent / "Data"
    data_folder.mkdir(parents=True, exist_ok=True)
    scene.SetRootDirectory(str(path.parent))
    written = []
    for class_name, suffix in _STORAGE_SUFFIX.items():
        for index in range(scene.GetNumberOfNodesByClass(class_name)):
            node = scene.GetNthNodeByClass(index, class_name)
            if node.GetClassName() != class_name or node.GetHideFromEditors():
                continue
            if class_name == "vtkMRMLColorTableNode" and node.GetType() != node.User:
                continue
            storage = node.GetStorageNode() or (node.AddDefaultStorageNode() and node.GetStorageNode())
            if storage is None:
                continue
            safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in node.GetName()) or node.GetID()
            target = data_folder / f"{safe}{suffix}"
            storage.SetFileName(str(target))
            if not storage.WriteData(node):
                raise SceneError(f"Could not write {node.GetName()!r} to {target}.")
            written.append(target)
    scene.SetURL(str(path))
    if not scene.Commit(str(path)):
        raise SceneError(f"Could not write the scene file {path}.")
    return SavedScene(scene_file=path, data_files=written)
