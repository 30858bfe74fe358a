"""A scene without the Slicer application: its logics, slice views blended into pixels, and saving with storage nodes.

For console scripts, benchmarks, screenshots and tests (slicer-core from PyPI has MRML and the logics, no Qt).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from LRPSegmentationLib.mrml.nodes import SceneError, array_from_node

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
        """A ``vtkMRMLSliceLogic`` on the slice node of ``view_name`` at ``width`` x ``height`` pixels (made once)."""
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
