"""How relevance is shown: the diverging colour table, symmetric windows, heatmap nodes and the slice layouts.

Each modality has two nodes. The heatmap (a float scalar volume) holds the relevance values: saved with the scene,
read by scripts and by Slicer's Data Probe (it is each view's foreground, at opacity 0). The overlay (a uint8
labelmap of colour codes, :func:`relevance_codes`) is what the views show, as their label layer: a labelmap's
display pipeline is one colour lookup where a scalar volume's is about nine image filters, so re-blending six views
after a slider move costs a third as much.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import slicer

from LRPSegmentationLib.data.geometry import Geometry
from LRPSegmentationLib.data.modalities import MODALITIES
from LRPSegmentationLib.mrml.nodes import (
    MODALITY_ATTRIBUTE,
    SceneError,
    array_from_node,
    output_node,
    owned_output,
    place_next_to,
    volume_node,
    voxels_modified,
)

RELEVANCE_COLOR_NAME = "LRPSegmentation Relevance"
GRID_LAYOUT_ID = 20170
"""Custom layout id (> 100, Slicer's built-in ids stay below) of the linked 2x3 modality/heatmap layout."""
GRID_VIEW_NAMES: tuple[str, ...] = tuple(f"LRP{modality}" for modality in MODALITIES)
OTHER_GRID_LAYOUT_BASE = 20180
"""A model with other modalities (any list but our U-Net's six) gets the layout of id ``20180 + N`` for N views."""
STARTUP_GRIDS = range(1, 10)
"""The view counts whose layouts the module registers at startup (a scene saved in one reopens in it)."""
SINGLE_VIEW_NAME = "Red"
ONE_UP_RED_LAYOUT_ID = 6  # vtkMRMLLayoutNode.SlicerLayoutOneUpRedSliceView


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
        node = owned_output(scene, "vtkMRMLColorTableNode", "relevance_colors", RELEVANCE_COLOR_NAME)
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
    node = owned_output(scene, "vtkMRMLScalarVolumeNode", role, name or f"Relevance {modality}")
    node.SetAttribute(MODALITY_ATTRIBUTE, modality)
    volume_node(scene, np.asarray(relevance, dtype=np.float32), geometry, node.GetName(), node=node)
    display = node.GetDisplayNode()
    display.SetAndObserveColorNodeID(relevance_color_node(scene).GetID())
    display.ApplyThresholdOff()
    display.InterpolateOff()  # one colour per voxel: relevance is a voxel-wise quantity
    set_window(node, half_width if half_width is not None else symmetric_window(relevance))
    place_next_to(scene, node, reference, "LRPSegmentation")
    return node


def relevance_codes(values: np.ndarray, half_width: float, entries: int = 256) -> np.ndarray:
    """uint8 colour codes of ``values`` in the window [-half_width, half_width] of :func:`relevance_color_node`:
    code ``round((v / half_width + 1) * (entries - 1) / 2)``, clipped (the window/level mapping of a heatmap)."""
    half = (entries - 1) / 2.0
    codes = np.multiply(values, half / max(float(half_width), 1e-30), dtype=np.float32)
    codes += half
    np.clip(codes, 0, entries - 1, out=codes)
    return np.rint(codes, out=codes).astype(np.uint8)


def overlay_node(scene, heatmap, geometry: Geometry, modality: str):
    """The labelmap of colour codes the views show for ``heatmap`` (role ``overlay_<MOD>``), created or reused."""
    node = owned_output(scene, "vtkMRMLLabelMapVolumeNode", f"overlay_{modality}", f"{heatmap.GetName()} overlay")
    node.SetAttribute(MODALITY_ATTRIBUTE, modality)
    codes = relevance_codes(array_from_node(heatmap), heatmap.GetDisplayNode().GetWindowLevelMax() or 1.0)
    volume_node(scene, codes, geometry, node.GetName(), labelmap=True, node=node)
    node.GetDisplayNode().SetAndObserveColorNodeID(relevance_color_node(scene).GetID())
    place_next_to(scene, node, heatmap, "LRPSegmentation")
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


def update_heatmap_region(node, values: np.ndarray, region: tuple[slice, ...]) -> None:
    """Overwrite only ``voxels[region]`` of a heatmap or overlay (the slices the views show while a slider moves)."""
    voxels = array_from_node(node)
    voxels[region] = values
    voxels_modified(node)


ALL_SLICES = None
"""What :func:`shown_slices` returns for a volume some view shows obliquely: every voxel may be on screen."""


def shown_slices(scene, volume_nodes: Sequence[Any], ras_to_ijk: np.ndarray, shape: Sequence[int]
                 ) -> dict[str, list[tuple[int, int]] | None]:
    """The grid slices each slice view shows of ``volume_nodes`` (all on one grid): node ID -> (numpy axis, index).

    A view whose plane is not aligned with the grid gives :data:`ALL_SLICES` for the volumes it shows; a plane
    between two voxel centres names both neighbours. Volumes no view shows are absent (nothing on screen).
    """
    wanted = {node.GetID() for node in volume_nodes}
    slice_nodes = {}
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceNode")):
        node = scene.GetNthNodeByClass(index, "vtkMRMLSliceNode")
        slice_nodes[node.GetLayoutName()] = node
    shown: dict[str, list[tuple[int, int]] | None] = {}
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        composite = scene.GetNthNodeByClass(index, "vtkMRMLSliceCompositeNode")
        ids = {composite.GetForegroundVolumeID(), composite.GetBackgroundVolumeID(), composite.GetLabelVolumeID()}
        ids &= wanted
        view = slice_nodes.get(composite.GetLayoutName())
        if not ids or view is None:
            continue
        slices = _plane_slices(view, ras_to_ijk, shape)
        for node_id in ids:
            if slices is ALL_SLICES or shown.get(node_id, []) is ALL_SLICES:
                shown[node_id] = ALL_SLICES
            else:
                shown[node_id] = sorted(set(shown.get(node_id, [])) | set(slices))
    return shown


def _plane_slices(slice_node, ras_to_ijk: np.ndarray, shape: Sequence[int]) -> list[tuple[int, int]] | None:
    matrix = slice_node.GetSliceToRAS()
    normal = np.array([matrix.GetElement(r, 2) for r in range(3)])
    origin = np.array([matrix.GetElement(r, 3) for r in range(3)] + [1.0])
    direction = ras_to_ijk[:3, :3] @ normal
    axis = int(np.argmax(np.abs(direction)))
    if np.any(np.abs(np.delete(direction, axis)) > 1e-6 * abs(direction[axis])):
        return ALL_SLICES
    position = float((ras_to_ijk @ origin)[axis])
    numpy_axis = 2 - axis  # IJK (x, y, z) -> numpy (D, H, W)
    nearest = {math.floor(position + 1e-4), math.ceil(position - 1e-4)}
    return [(numpy_axis, k) for k in sorted(nearest) if 0 <= k < shape[numpy_axis]]


# -------------------------------------------------------------------------------------------------- layouts

def grid_shape(count: int) -> tuple[int, int]:
    """(rows, columns) of a grid of ``count`` views: one row up to 3, two rows up to 8 (2x3 for six), else about
    square."""
    if count < 1:
        raise SceneError("A grid layout needs at least one view.")
    rows = 1 if count <= 3 else 2 if count <= 8 else math.ceil(count / math.ceil(math.sqrt(count)))
    return rows, math.ceil(count / rows)


def grid_layout_id(modalities: Sequence[str] = MODALITIES) -> int:
    """The layout id of the grid for ``modalities``: :data:`GRID_LAYOUT_ID` for our U-Net's six, else one per count."""
    return GRID_LAYOUT_ID if tuple(modalities) == MODALITIES else OTHER_GRID_LAYOUT_BASE + len(modalities)


def grid_view_names(modalities: Sequence[str] = MODALITIES) -> tuple[str, ...]:
    """The slice views of the grid for ``modalities`` (``LRPADC`` ... for the six, else ``LRPView1`` ...)."""
    if tuple(modalities) == MODALITIES:
        return GRID_VIEW_NAMES
    return tuple(f"LRPView{k + 1}" for k in range(len(modalities)))


def grid_layout_xml(modalities: Sequence[str] = MODALITIES) -> str:
    """Slicer layout description of linked axial views, one per modality: 2 rows x 3 columns for the six, else
    :func:`grid_shape` (views of other lists are labelled 1..N here and renamed when shown)."""
    names = grid_view_names(modalities)
    labels = MODALITIES if tuple(modalities) == MODALITIES else tuple(str(k + 1) for k in range(len(names)))
    rows, columns = grid_shape(len(names))
    lines = []
    for row in range(rows):
        items = []
        for index in range(row * columns, min((row + 1) * columns, len(names))):
            items.append(
                f'<item><view class="vtkMRMLSliceNode" singletontag="{names[index]}">'
                '<property name="orientation" action="default">Axial</property>'
                f'<property name="viewlabel" action="default">{labels[index]}</property>'
                '<property name="viewcolor" action="default">#E0A040</property>'
                '<property name="viewgroup" action="default">0</property>'
                "</view></item>"
            )
        lines.append(f'<item><layout type="horizontal">{"".join(items)}</layout></item>')
    return f'<layout type="vertical">{"".join(lines)}</layout>'


def layout_node(scene):
    node = scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    if node is None:
        node = scene.AddNode(slicer.vtkMRMLLayoutNode())
    return node


def register_grid_layout(scene, modalities: Sequence[str] = MODALITIES):
    """Make the grid layout of ``modalities`` (default the 2x3 one) known to the scene's layout node."""
    layout = layout_node(scene)
    if not layout.IsLayoutDescription(grid_layout_id(modalities)):
        layout.AddLayoutDescription(grid_layout_id(modalities), grid_layout_xml(modalities))
    return layout


def register_grid_layouts(scene):
    """At startup: the 2x3 layout and those of :data:`STARTUP_GRIDS` views, so a scene saved in one reopens in it."""
    for count in STARTUP_GRIDS:
        register_grid_layout(scene, tuple(str(k) for k in range(count)))
    return register_grid_layout(scene)


def composite_node(scene, view_name: str):
    """The slice composite node of view ``view_name`` (created with that layout name when the view has none yet)."""
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        node = scene.GetNthNodeByClass(index, "vtkMRMLSliceCompositeNode")
        if node.GetLayoutName() == view_name:
            return node
    node = slicer.vtkMRMLSliceCompositeNode()
    node.SetLayoutName(view_name)
    return scene.AddNode(node)


def set_view_layers(scene, view_name: str, background=None, heatmap=None, overlay=None,
                    opacity: float | None = None, linked: bool | None = None) -> None:
    """One slice view: ``background`` volume, ``heatmap`` as the foreground at opacity 0 (its values in the Data
    Probe), its ``overlay`` as the label layer at ``opacity`` (None leaves a layer or the opacity as is)."""
    node = composite_node(scene, view_name)
    if background is not None:
        node.SetBackgroundVolumeID(background.GetID())
    if heatmap is not None:
        node.SetForegroundVolumeID(heatmap.GetID())
        node.SetForegroundOpacity(0.0)
    if overlay is not None:
        node.SetLabelVolumeID(overlay.GetID())
    if opacity is not None:
        node.SetLabelOpacity(float(np.clip(opacity, 0.0, 1.0)))
    if linked is not None:
        node.SetLinkedControl(bool(linked))


def set_heatmap_opacity(scene, opacity: float, view_names: Sequence[str] | None = None) -> None:
    """Opacity of the heatmap overlays in the given views (default: the 2x3 views and the single view)."""
    for view in view_names or (*GRID_VIEW_NAMES, SINGLE_VIEW_NAME):
        set_view_layers(scene, view, opacity=opacity)


def show_grid(scene, backgrounds: Mapping[str, Any], heatmaps: Mapping[str, Any], overlays: Mapping[str, Any],
              opacity: float = 0.5, modalities: Sequence[str] = MODALITIES) -> None:
    """Switch to the linked grid of ``modalities`` (2x3 for our U-Net's six), view k showing modality k under
    heatmap k and labelled with its name."""
    layout = register_grid_layout(scene, modalities)
    if layout.GetViewArrangement() != grid_layout_id(modalities):  # re-setting would rebuild the views every move
        layout.SetViewArrangement(grid_layout_id(modalities))
    views = grid_view_names(modalities)
    for modality, view in zip(modalities, views):
        set_view_layers(scene, view, backgrounds.get(modality), heatmaps.get(modality), overlays.get(modality),
                        opacity=opacity, linked=True)
    if views is not GRID_VIEW_NAMES:
        label_views(scene, dict(zip(views, modalities)))


def label_views(scene, labels: Mapping[str, str]) -> None:
    """Name the slice views (view name -> label shown in its corner) that exist in ``scene``."""
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceNode")):
        node = scene.GetNthNodeByClass(index, "vtkMRMLSliceNode")
        if node.GetLayoutName() in labels and node.GetLayoutLabel() != labels[node.GetLayoutName()]:
            node.SetLayoutLabel(labels[node.GetLayoutName()])


def show_single(scene, background, heatmap, overlay, opacity: float = 0.5,
                view_name: str = SINGLE_VIEW_NAME) -> None:
    """Switch to the one-view layout showing one modality under its heatmap."""
    layout = layout_node(scene)
    if layout.GetViewArrangement() != ONE_UP_RED_LAYOUT_ID:
        layout.SetViewArrangement(ONE_UP_RED_LAYOUT_ID)
    set_view_layers(scene, view_name, background, heatmap, overlay, opacity=opacity)
