"""Layer-wise Relevance Propagation for the project's 3D U-Net (and similar conv/pool/concat networks).

``explain(model, x, start_relevance, preset)`` returns an :class:`Explanation` with the input-level
relevance; rules (:mod:`.rules`), presets (:mod:`.presets`), BatchNorm folding (:mod:`.canonize`) and
the engine (:mod:`.engine`) are one concept each.
"""

from .canonize import CanonizationError, canonize
from .engine import (
    Explanation,
    ExplainInputError,
    TapFilter,
    TapRecord,
    UnsupportedModelError,
    available_taps,
    default_taps,
    explain,
)
from .presets import DEFAULT_PRESET, PRESETS, Composite, PresetError, get_composite
from .rules import AlphaBeta, Epsilon, Gamma, Gradient, Norm, Pass, Rule, RuleError, ZBox, ZPlus

__all__ = [
    "DEFAULT_PRESET", "PRESETS", "AlphaBeta", "CanonizationError", "Composite", "Epsilon", "ExplainInputError",
    "Explanation", "Gamma", "Gradient", "Norm", "Pass", "PresetError", "Rule", "RuleError", "TapFilter", "TapRecord",
    "UnsupportedModelError", "ZBox", "ZPlus", "available_taps", "canonize", "default_taps", "explain",
    "get_composite",
]
