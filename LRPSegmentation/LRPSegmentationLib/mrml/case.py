"""A case as volume nodes: load case folders and synthetic samples into a scene, write nodes back to a case folder."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import slicer

from LRPSegmentationLib.data.modalities import GROUND_TRUTH, MODALITIES
from LRPSegmentationLib.mrml.nodes import (
    MODALITY_ATTRIBUTE,
    SceneError,
    array_from_node,
    geometry_of_node,
    hierarchy_item,
    mask_from_node,
    volume_node,
)

# ------------------------------------------------------------------------------------------------ case I/O

@dataclass
class CaseNodes:
    """The volume nodes of one case in the scene: its modalities (the model's order; our U-Net: MODALITIES) and the
    ground truth, if any."""

    volumes: dict[str, Any]
    ground_truth: Any | None = None


def add_case(scene, case) -> CaseNodes:
    """Load a ``caseio.Case`` into one scalar volume node per modality, ``<case_id>_<MOD>`` (+ ``_OT`` labelmap).

    These are input nodes (the user's data once loaded): they are tagged with their modality, never as outputs.
    They are grouped in a subject-hierarchy folder named after the case.
    """
    images = np.asarray(case.images)
    modalities = tuple(getattr(case, "modalities", MODALITIES))
    if images.ndim != 4 or images.shape[0] != len(modalities):
        raise SceneError(f"Case {case.case_id!r}: images of shape {images.shape}, expected "
                         f"({len(modalities)}, D, H, W).")
    volumes = {}
    for channel, modality in enumerate(modalities):
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
                hierarchy.SetItemParent(hierarchy_item(hierarchy, node), folder)
    return CaseNodes(volumes=volumes, ground_truth=ground_truth)


def load_case_folder(scene, folder: Path | str, modalities: Sequence[str] = MODALITIES) -> CaseNodes:
    """Read a case folder of ``modalities`` (the model's list; ISLES 2017, ISLES 2022 or flat layout) with
    ``caseio.load_case`` and add it to the scene."""
    from LRPSegmentationLib.data import caseio

    return add_case(scene, caseio.load_case(folder, modalities=tuple(modalities)))


def load_synthetic_case(scene, root: Path | str, seed: int = 2017) -> CaseNodes:
    """Generate a synthetic ISLES-like case into ``root/seed<seed>/training_1`` (once) and add it to the scene."""
    from LRPSegmentationLib.data.synthetic import generate_case, write_isles_case

    folder = Path(root) / f"seed{seed}"
    if not (folder / "training_1").is_dir():
        write_isles_case(generate_case(seed), folder, 1)
    return load_case_folder(scene, folder / "training_1")


def write_case_folder(volumes: Mapping[str, Any], folder: Path | str, ground_truth=None,
                      modalities: Sequence[str] = MODALITIES) -> Path:
    """Write the volume nodes of ``modalities`` (each on its own grid) as ``<MOD>.nii.gz`` (+ ``OT.nii.gz``, on the
    first modality's grid) into ``folder``.

    ``caseio.load_case(folder, modalities=...)`` then brings them onto the first modality's grid (ADC for our U-Net)
    with its usual checks; the child ``lrpseg explain`` process reads the same folder.
    """
    from LRPSegmentationLib.data import caseio

    missing = [m for m in modalities if volumes.get(m) is None]
    if missing:
        raise SceneError(f"No volume selected for {', '.join(missing)}; select one volume node for each modality.")
    folder, reference = Path(folder), volumes[modalities[0]]
    for modality in modalities:
        node = volumes[modality]
        caseio.write_volume(array_from_node(node).astype(np.float32), geometry_of_node(node),
                            folder / f"{modality}.nii.gz")
    if ground_truth is not None:
        caseio.write_volume(mask_from_node(ground_truth, reference), geometry_of_node(reference),
                            folder / f"{GROUND_TRUTH}.nii.gz")
    return folder


def case_from_nodes(volumes: Mapping[str, Any], ground_truth=None, case_id: str | None = None,
                    modalities: Sequence[str] = MODALITIES):
    """A ``caseio.Case`` from user-chosen volume nodes of ``modalities`` (other grids resampled onto the first
    modality's grid)."""
    from LRPSegmentationLib.data import caseio

    with tempfile.TemporaryDirectory(prefix="lrpseg-case-") as folder:
        write_case_folder(volumes, folder, ground_truth, modalities)
        case = caseio.load_case(folder, case_id=case_id or volumes[modalities[0]].GetName(),
                                modalities=tuple(modalities))
    case.sources = {}
    return case
