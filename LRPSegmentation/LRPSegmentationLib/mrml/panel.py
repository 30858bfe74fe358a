"""The side panel's parameters, Qt-free: which of them changed, and what each kind of change must update.

The module's parameter node fires one "modified" event for any change; :func:`changes` compares two
:func:`snapshot` s so that a display parameter only updates the display, a filter parameter only re-filters (or
fetches an in-chain band), and a change of model, rule, target, device or input only marks the result stale.

The inputs follow the model's modality list (:func:`modalities`, read from its metadata): the parameter node keeps
its six volume slots (``adcVolume`` ... ``ttpVolume``, so saved scenes and scripts keep working) and slot k holds
the volume of the model's k-th modality; our U-Net's six map onto their own slots, a DWI/ADC/FLAIR model uses the
first three (relabelled), the others are hidden.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Flag, auto
from functools import lru_cache
from pathlib import Path
from typing import Any

from LRPSegmentationLib.data.modalities import MODALITIES
from LRPSegmentationLib.mrml import run
from LRPSegmentationLib.mrml.run import RunSettings
from LRPSegmentationLib.net.weights import model_modalities

VOLUME_PARAMETERS: dict[str, str] = {m: f"{m.lower()}Volume" for m in MODALITIES}
"""Parameter name of each of our U-Net's modalities' input volume (``adcVolume``, ..., ``ttpVolume``)."""
VOLUME_SLOTS: tuple[str, ...] = tuple(VOLUME_PARAMETERS.values())
"""The volume slots in order: slot k holds the model's k-th modality."""


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


def model_path(text: str) -> Path | None:
    """The model a panel path names: None (the bundled model) for "", an nnU-Net folder for its ``plans.json``
    (the file dialog picks files), else the path."""
    if not text:
        return None
    path = Path(text)
    return path.parent if path.name == "plans.json" else path


@lru_cache(maxsize=16)
def _read_modalities(path: str, stamp: int) -> tuple[str, ...]:
    return model_modalities(model_path(path))


def modalities(parameters: Any) -> tuple[str, ...]:
    """The input modalities of the panel's model (read once per model file version); our U-Net's six when the model
    cannot be read (the model line says why) or takes more modalities than the panel has slots."""
    path = model_path(parameters.modelPath)
    try:
        stamp = 0 if path is None else (path / "dataset.json" if path.is_dir() else path).stat().st_mtime_ns
        found = _read_modalities(parameters.modelPath, stamp)
    except (OSError, ValueError):
        return MODALITIES
    return found if 0 < len(found) <= len(VOLUME_SLOTS) else MODALITIES


MODALITY_NAMES: dict[str, str] = {
    "ADC": "Apparent diffusion coefficient map", "MTT": "Mean transit time", "rCBF": "Relative cerebral blood flow",
    "rCBV": "Relative cerebral blood volume", "Tmax": "Time to maximum of the residue function",
    "TTP": "Time to peak", "DWI": "Diffusion-weighted image", "FLAIR": "Fluid-attenuated inversion recovery image"}
"""What the selectors' tooltips call the modalities they know (any other is named as the model names it)."""


@dataclass(frozen=True)
class SelectorRow:
    """One input row of the panel: its volume slot, selector and label widget, and what it shows (text None:
    hidden, the model has fewer modalities)."""

    slot: str
    selector: str
    label: str
    text: str | None
    tooltip: str


def selector_rows(names: tuple[str, ...]) -> list[SelectorRow]:
    """The six input rows for the model's modality list ``names``: the first len(names) labelled with them."""
    rows = []
    for k, slot in enumerate(VOLUME_SLOTS):
        name = names[k] if k < len(names) else None
        known = f"{MODALITY_NAMES[name]} ({name})" if name in MODALITY_NAMES else name
        tooltip = f"{known} volume, input {k + 1} of the model's {len(names)}." if name else ""
        rows.append(SelectorRow(slot, slot.replace("Volume", "Selector"), f"inputsFormLayoutLabel{k + 1}",
                                None if name is None else f"{name}:", tooltip))
    return rows


def input_volumes(parameters: Any, names: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The selected input volume of each of the model's modalities (``names``, default :func:`modalities`), from
    the slots by position (None where nothing is selected)."""
    names = modalities(parameters) if names is None else names
    return {m: getattr(parameters, slot) for m, slot in zip(names, VOLUME_SLOTS)}


def input_problems(parameters: Any) -> list[str]:
    """The model's modalities that still need a volume of their own (the Run button's tooltip names them)."""
    names = modalities(parameters)
    return run.input_problems(input_volumes(parameters, names), names)


def select_volumes(parameters: Any, volumes: dict[str, Any]) -> None:
    """Put a case's volumes (in the model's order) into the slots by position; the slots after them are cleared."""
    nodes = list(volumes.values())
    for k, slot in enumerate(VOLUME_SLOTS):
        setattr(parameters, slot, nodes[k] if k < len(nodes) else None)


def view_modality(parameters: Any, names: tuple[str, ...]) -> str:
    """The modality of the single view: the parameter when the model has it, else the model's first."""
    return parameters.viewModality if parameters.viewModality in names else names[0]


def run_settings(parameters: Any) -> RunSettings:
    """The settings a run is computed with (an empty model path is the bundled model)."""
    return RunSettings(model=model_path(parameters.modelPath), device=parameters.device,
                       rule=parameters.rule, target=parameters.target)


def filter_band(parameters: Any) -> tuple[str, float, float, str]:
    """(kind, alpha, alpha_low, where) of the filter controls; the lower bound only when it is switched on."""
    return (parameters.filterKind, float(parameters.alpha),
            float(parameters.alphaLow) if parameters.useAlphaLow else 0.0, parameters.where)


def enabled_widgets(parameters: Any, session: Any, problems: list[str]) -> dict[str, bool]:
    """Which of the panel's widgets are enabled (widget name -> enabled), from the parameters, the session's state
    (running, check, result) and the input ``problems`` (:func:`input_problems`)."""
    filtering = parameters.filterKind != "none"
    return {"applyButton": not problems and not session.running,
            "cancelButton": session.running or session.checkRunning,
            "checkButton": session.live is not None and not session.checkRunning,
            "showCurvesButton": session.checkNodes is not None, "alphaSlider": filtering,
            "alphaLowSlider": bool(parameters.useAlphaLow) and filtering,
            "viewModalityComboBox": bool(parameters.singleView)}
