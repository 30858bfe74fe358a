"""Layer-wise Relevance Propagation for 3-D segmentation networks: the project's U-Net, MONAI and nnU-Net v2 U-Nets.

``explain(model, x, start_relevance, preset)`` returns an :class:`Explanation` with the input-level
relevance; rules (:mod:`.rules`, sums and gates :mod:`.sums`, normalisations :mod:`.norms`), presets
(:mod:`.presets`), the explanation-ready copy (:mod:`.canonize`: in-place off, BatchNorm folded), start
relevance (:mod:`.targets`), taps and in-chain filters (:mod:`.taps`) and the engine (:mod:`.engine`) are one
concept each. Everything here needs torch: the Slicer process never imports this package.
"""

from LRPSegmentationLib.lrp.canonize import CanonizationError, canonize
from LRPSegmentationLib.lrp.engine import Explanation, explain
from LRPSegmentationLib.lrp.errors import ExplainInputError, UnsupportedModelError
from LRPSegmentationLib.lrp.norms import FrozenNorm
from LRPSegmentationLib.lrp.presets import PRESETS, Composite, PresetError, get_composite
from LRPSegmentationLib.lrp.rules import AlphaBeta, Epsilon, Gamma, Gradient, Norm, Pass, Rule, RuleError, ZBox, ZPlus
from LRPSegmentationLib.lrp.sums import SumRule
from LRPSegmentationLib.lrp.taps import TapFilter, TapRecord, available_taps, default_taps
from LRPSegmentationLib.options import DEFAULT_PRESET

__all__ = [
    "DEFAULT_PRESET", "PRESETS", "AlphaBeta", "CanonizationError", "Composite", "Epsilon", "ExplainInputError",
    "Explanation", "FrozenNorm", "Gamma", "Gradient", "Norm", "Pass", "PresetError", "Rule", "RuleError", "SumRule",
    "TapFilter", "TapRecord", "UnsupportedModelError", "ZBox", "ZPlus", "available_taps", "canonize", "default_taps",
    "explain", "get_composite",
]
