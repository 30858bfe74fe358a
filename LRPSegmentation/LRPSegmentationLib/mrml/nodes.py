"""Volume, segmentation and output nodes in a scene: geometry, voxels, roles, subject hierarchy. Qt-free.

The Slicer module's Logic calls these functions with ``slicer.mrmlScene``; tests call them with a plain
``vtkMRMLScene`` from slicer-core. Arrays are numpy (D, H, W) = (K, J, I) as ``slicer.util.arrayFromVolume`` gives
them; :class:`~LRPSegmentationLib.data.geometry.Geometry` is in ITK's LPS convention and is converted to Slicer's
RAS here (flip the sign of the first two rows of origin and direction).

Nodes the module creates carry the attribute :data:`OUTPUT_ATTRIBUTE` = role, so a re-run reuses (updates) exactly
the module's own outputs and never touches the user's nodes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from LRPSegmentationLib.data.geometry import Geometry
from LRPSegmentationLib.data.modalities import MODALITIES

OUTPUT_ATTRIBUTE = "LRPSegmentation.Output"
"""Node attribute marking a node the module owns; its value is the node's role (e.g. ``relevance_ADC``)."""

MODALITY_ATTRIBUTE = "LRPSegmentation.Modality"
"""Node attribute naming the modality of an input volume the module loaded (used to fill the selectors)."""

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
            f"Cannot fill volume node {node.GetName()!r}: array shape {array.shape} does not match grid "
            f"{geometry.shape}."
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


def owned_output(scene, class_name: str, role: str, name: str):
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


def hierarchy_item(hierarchy, node) -> int:
    """The subject-hierarchy item of ``node``, created under the scene item when missing (no SH logic running)."""
    item = hierarchy.GetItemByDataNode(node)
    return item or hierarchy.CreateItem(hierarchy.GetSceneItemID(), node)


def place_next_to(scene, node, reference, folder: str | None = None) -> None:
    """Put ``node`` beside ``reference`` in the subject hierarchy (inside a sub-folder named ``folder`` if given)."""
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    if hierarchy is None or node is None or reference is None:
        return
    item = hierarchy_item(hierarchy, node)
    reference_item = hierarchy_item(hierarchy, reference)
    parent = hierarchy.GetItemParent(reference_item)
    if folder:
        existing = hierarchy.GetItemChildWithName(parent, folder)
        parent = existing or hierarchy.CreateFolderItem(parent, folder)
    hierarchy.SetItemParent(item, parent)


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
            export = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode
            if not export(node, ids, labelmap, reference):
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


# ------------------------------------------------------------------------------------------ segmentations

def segmentation_node(scene, mask: np.ndarray, geometry: Geometry, role: str = "prediction", *,
                      name: str = "Lesion (predicted)", segment_name: str = "Lesion",
                      color: tuple[float, float, float] = (1.0, 0.9, 0.1), reference=None):
    """The module's segmentation with one segment from a 0/1 mask, shown as outlines in the slice views."""
    node = owned_output(scene, "vtkMRMLSegmentationNode", role, name)
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


# ------------------------------------------------------------------------------------- per-modality outputs

RAW_ROLE = "raw_relevance_"
"""Role prefix of the volume nodes keeping the raw map (``raw_relevance_ADC`` ...)."""
MODALITIES_ATTRIBUTE = "LRPSegmentation.Modalities"
"""On the first raw relevance node: the JSON list of the result's modalities (absent in older scenes: the six)."""
OUTPUT_PREFIXES = ("relevance_", "overlay_", RAW_ROLE)
"""Role prefixes of the module's per-modality outputs (heatmap, overlay, raw map), followed by the modality name."""


def other_modality_roles(scene, modalities: Sequence[str]) -> list[str]:
    """Roles of the module's per-modality outputs in ``scene`` for modalities not in ``modalities`` (an earlier
    result of a model with other inputs): removed when a result replaces it, so a reloaded scene is unambiguous."""
    roles = {node.GetAttribute(OUTPUT_ATTRIBUTE) for node in output_nodes(scene) if node.IsA("vtkMRMLVolumeNode")}
    wanted = {f"{prefix}{m}" for prefix in OUTPUT_PREFIXES for m in modalities}
    return sorted(r for r in roles if r.startswith(OUTPUT_PREFIXES) and r not in wanted)


def saved_modalities(scene) -> tuple[str, ...]:
    """The modalities of the result saved in ``scene`` (the list its first raw map records; older scenes: the
    six)."""
    for node in output_nodes(scene):
        if node.GetAttribute(OUTPUT_ATTRIBUTE).startswith(RAW_ROLE) and node.GetAttribute(MODALITIES_ATTRIBUTE):
            return tuple(json.loads(node.GetAttribute(MODALITIES_ATTRIBUTE)))
    return MODALITIES
