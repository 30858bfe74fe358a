"""Modality names: our U-Net's fixed order (ISLES 2017), other models' lists, and how file names map onto them."""

from __future__ import annotations

import re

MODALITIES: tuple[str, ...] = ("ADC", "MTT", "rCBF", "rCBV", "Tmax", "TTP")
"""Channel order of every model input and relevance map (the paper's order)."""

GROUND_TRUTH = "OT"
"""ISLES name of the ground-truth lesion mask."""

_ISLES_TOKEN = re.compile(r"\.MR_([A-Za-z0-9]+)\.|\.(OT)\.")


ISLES2022_MODALITIES: tuple[str, ...] = ("DWI", "ADC", "FLAIR")
"""The ISLES 2022 inputs (BIDS names ``..._dwi``, ``..._adc``, ``..._FLAIR``), in the usual nnU-Net channel order."""


def canonical_modality(name: str, modalities: tuple[str, ...] = MODALITIES) -> str:
    """Return the canonical spelling of a modality name among ``modalities`` (case-insensitive), or raise ValueError.

    ``modalities`` is the model's input list (default: the six ISLES 2017 maps of our U-Net)."""
    for modality in (*modalities, GROUND_TRUTH):
        if name.strip().lower() == modality.lower():
            return modality
    raise ValueError(
        f"Unknown modality {name!r}: expected one of {', '.join(modalities)} (or {GROUND_TRUTH} for the ground truth)."
    )


def isles_modality(filename: str) -> str | None:
    """Modality named by an ISLES 2017 file or folder name (``...O.MR_Tmax.123...``, ``...O.OT.123...``), else None.

    Names that are no input of the model (4DPWI, unknown tokens) give None.
    """
    match = _ISLES_TOKEN.search(filename)
    if match is None:
        return None
    token = match.group(1) or match.group(2)
    try:
        return canonical_modality(token)
    except ValueError:
        return None
