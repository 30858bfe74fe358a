"""The one fixed modality order of the model input, and how file names map onto it."""

from __future__ import annotations

import re

MODALITIES: tuple[str, ...] = ("ADC", "MTT", "rCBF", "rCBV", "Tmax", "TTP")
"""Channel order of every model input and relevance map (the paper's order)."""

GROUND_TRUTH = "OT"
"""ISLES name of the ground-truth lesion mask."""

_ISLES_TOKEN = re.compile(r"\.MR_([A-Za-z0-9]+)\.|\.(OT)\.")


def canonical_modality(name: str) -> str:
    """Return the canonical spelling of a modality name (case-insensitive), or raise ValueError."""
    for modality in (*MODALITIES, GROUND_TRUTH):
        if name.strip().lower() == modality.lower():
            return modality
    raise ValueError(
        f"Unknown modality {name!r}: expected one of {', '.join(MODALITIES)} (or {GROUND_TRUTH} for the ground truth)."
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
