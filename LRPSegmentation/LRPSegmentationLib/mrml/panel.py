"""The side panel's parameters, Qt-free: which of them changed, and what each kind of change must update.

The module's parameter node fires one "modified" event for any change; :func:`changes` compares two
:func:`snapshot` s so that a display parameter only updates the display, a filter parameter only re-filters (or
fetches an in-chain band), and a change of model, rule, target, device or input only marks the result stale.
"""

from __future__ import annotations

from enum import Flag, auto
from pathlib import Path
from typing import Any

from LRPSegmentationLib.data.modalities import MODALITIES
from LRPSegmentationLib.mrml.run import RunSettings

VOLUME_PARAMETERS: dict[str, str] = {m: f"{m.lower()}Volume" for m in MODALITIES}
"""Parameter name of each modality's input volume (``adcVolume``, ..., ``ttpVolume``)."""


class Change(Flag):
    """What a parameter change touches."""

    NONE = 0
    DISPLAY = auto()  # opacity, outlines, single view and its modality
    FILTER = auto()  # filter kind, band, placement
    SETTINGS = auto()  # model, device, rule, target: the result is stale
    INPUTS = auto()  # an input volume or the ground truth: the result is stale


GROUPS: dict[Change, tuple[str, ...]] = {
    Change.DISPLAY: ("opacity", "singleView", "viewModality", "showOutlines"),
    Change.FILTER: ("filterKind", "alpha", "useAlphaLow", "alphaLow", "where"),
    Change.SETTINGS: ("modelPath", "device", "rule", "target"),
    Change.INPUTS: (*VOLUME_PARAMETERS.values(), "groundTruth"),
}


def snapshot(parameters: Any) -> dict[str, Any]:
    """The values of every panel parameter (node parameters by identity) of a parameter-node wrapper."""
    return {name: getattr(parameters, name) for names in GROUPS.values() for name in names}


def changes(old: dict[str, Any] | None, new: dict[str, Any]) -> Change:
    """The kinds of change from ``old`` to ``new`` (everything when there is no ``old``)."""
    found = Change.NONE
    for kind, names in GROUPS.items():
        if old is None or any(old[n] is not new[n] and old[n] != new[n] for n in names):
            found |= kind
    return found


def input_volumes(parameters: Any) -> dict[str, Any]:
    """The six selected input volumes by modality (None where nothing is selected)."""
    return {m: getattr(parameters, name) for m, name in VOLUME_PARAMETERS.items()}


def run_settings(parameters: Any) -> RunSettings:
    """The settings a run is computed with (an empty model path is the bundled model)."""
    return RunSettings(model=Path(parameters.modelPath) if parameters.modelPath else None, device=parameters.device,
                       rule=parameters.rule, target=parameters.target)


def filter_band(parameters: Any) -> tuple[str, float, float, str]:
    """(kind, alpha, alpha_low, where) of the filter controls; the lower bound only when it is switched on."""
    return (parameters.filterKind, float(parameters.alpha),
            float(parameters.alphaLow) if parameters.useAlphaLow else 0.0, parameters.where)
