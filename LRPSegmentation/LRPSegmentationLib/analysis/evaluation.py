"""Segmentation quality by generator family and lesion size: Dice, lesion-wise detection, false-positive volume.

A case is scored on its native grid. Dice is reported for cases with a lesion (on a healthy case Dice says
nothing useful); a ground-truth lesion (26-connected component of at least :data:`MIN_LESION_ML`) counts as
detected when the predicted mask touches it; on healthy cases the whole predicted volume is a false positive,
reported in ml and as a share of the brain (voxels where any map is non-zero: the cases are skull-stripped).
Torch-free.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage

from LRPSegmentationLib.analysis.metrics import dice

SIZE_CLASSES: tuple[tuple[str, float, float], ...] = (("<5 ml", 0.0, 5.0), ("5-30 ml", 5.0, 30.0),
                                                      (">=30 ml", 30.0, math.inf))
"""(label, lower ml, upper ml) of the lesion size classes (case: total lesion volume; lesion-wise: one lesion)."""

MIN_LESION_ML = 0.05
"""Ground-truth components smaller than this (partial-volume specks) are not counted as lesions."""


def size_class(volume_ml: float) -> str:
    return next(label for label, low, high in SIZE_CLASSES if low <= volume_ml < high)


@dataclass
class CaseRecord:
    """The scores of one case."""

    case_id: str
    family: str
    healthy: bool
    dice: float | None  # None on healthy cases
    lesion_ml: float
    predicted_ml: float
    false_positive_ml: float  # predicted outside the ground truth
    brain_ml: float
    lesions: list[tuple[float, bool]] = field(default_factory=list)  # (volume ml, detected) per lesion

    @property
    def size_class(self) -> str | None:
        return None if self.healthy else size_class(self.lesion_ml)


def score_case(case_id: str, family: str, mask: np.ndarray, truth: np.ndarray, images: np.ndarray,
               voxel_ml: float) -> CaseRecord:
    """Score one predicted ``mask`` against ``truth`` (both (D, H, W)) on a grid of ``voxel_ml`` ml voxels."""
    mask, truth = np.asarray(mask) != 0, np.asarray(truth) != 0
    brain = np.any(np.asarray(images) != 0, axis=0)
    labels, count = ndimage.label(truth, structure=np.ones((3, 3, 3), bool))
    lesions = []
    for index, region in enumerate(ndimage.find_objects(labels), start=1):
        component = labels[region] == index
        volume = float(component.sum()) * voxel_ml
        if volume >= MIN_LESION_ML:
            lesions.append((volume, bool(mask[region][component].any())))
    healthy = not truth.any()
    return CaseRecord(case_id, family, healthy, None if healthy else dice(mask, truth),
                      float(truth.sum()) * voxel_ml, float(mask.sum()) * voxel_ml,
                      float((mask & ~truth).sum()) * voxel_ml, float(brain.sum()) * voxel_ml, lesions)


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _group(records: list[CaseRecord]) -> dict:
    lesion_cases = [r for r in records if not r.healthy]
    healthy = [r for r in records if r.healthy]
    lesions = [lesion for r in records for lesion in r.lesions]
    dices = [r.dice for r in lesion_cases]
    summary = {
        "cases": len(records), "lesion_cases": len(lesion_cases), "healthy_cases": len(healthy),
        "mean_dice": _mean(dices), "median_dice": float(np.median(dices)) if dices else None,
        "min_dice": float(np.min(dices)) if dices else None,
        "lesions": len(lesions), "detection_rate": _mean([float(hit) for _, hit in lesions]),
        "healthy_false_positive_ml": _mean([r.predicted_ml for r in healthy]),
        "healthy_false_positive_share_max": (max(r.predicted_ml / max(r.brain_ml, 1e-9) for r in healthy)
                                             if healthy else None),
        "by_size": {},
    }
    for label, low, high in SIZE_CLASSES:
        in_class = [r.dice for r in lesion_cases if r.size_class == label]
        detected = [float(hit) for volume, hit in lesions if low <= volume < high]
        summary["by_size"][label] = {"cases": len(in_class), "mean_dice": _mean(in_class),
                                     "lesions": len(detected), "detection_rate": _mean(detected)}
    return summary


def summarise(records: list[CaseRecord]) -> dict:
    """Per family (in first-seen order) and over all cases: see :func:`_group` keys."""
    families = list(dict.fromkeys(r.family for r in records))
    return {"families": {f: _group([r for r in records if r.family == f]) for f in families},
            "all": _group(records), "cases": [asdict(r) for r in records]}


def _cell(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown_table(summary: dict) -> str:
    """The per-family table of :func:`summarise` (Dice per size class, detection, healthy false positives)."""
    sizes = [label for label, _, _ in SIZE_CLASSES]
    head = ["family", "cases (healthy)", "mean Dice", *[f"Dice {s} (n)" for s in sizes], "detection",
            *[f"detection {s}" for s in sizes], "healthy FP ml (max % brain)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, group in [*summary["families"].items(), ("all", summary["all"])]:
        by = group["by_size"]
        share = group["healthy_false_positive_share_max"]
        fp = ("-" if group["healthy_false_positive_ml"] is None else
              f"{group['healthy_false_positive_ml']:.2f} ({100 * share:.3f}%)")
        cells = [name, f"{group['cases']} ({group['healthy_cases']})", _cell(group["mean_dice"]),
                 *[f"{_cell(by[s]['mean_dice'])} ({by[s]['cases']})" for s in sizes],
                 f"{_cell(group['detection_rate'])} ({group['lesions']})",
                 *[_cell(by[s]["detection_rate"]) for s in sizes], fp]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
