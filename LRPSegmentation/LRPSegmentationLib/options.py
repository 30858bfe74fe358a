"""The project's vocabulary: every named choice a user can make, defined once and without torch.

The CLI's option choices, the Slicer parameter node's ``Choice`` lists, the child-process request and the
engine all read these, so a name cannot be spelled differently in two places (a test ties the engine's
presets and target kinds to this file).
"""

from __future__ import annotations

from enum import Enum
from typing import TypeVar

E = TypeVar("E", bound=Enum)


class FilterKind(Enum):
    """Which amplitude filter: none (identity), pass band, or clamp into the band."""

    NONE = "none"
    PASS = "pass"
    CLAMP = "clamp"


class FilterPlacement(str, Enum):
    """Where the amplitude filter acts."""

    OUTPUT = "output"  # on the final input-level map only (cheap: re-filter a cached map live)
    LAYERS = "layers"  # inside the relevance chain at the paper's taps (needs a new LRP pass per filter)


class RelevanceNormalization(Enum):
    """How a final relevance map is scaled before filtering: by max |R_c| of each channel or by max |R| of the map."""

    PER_CHANNEL = "per-channel"
    GLOBAL = "global"


class IntensityNormalization(str, Enum):
    """How each input modality's intensities are normalised per volume before the network sees them."""

    MINMAX = "minmax"  # the paper: (x - min) / (max - min) per volume, into [0, 1]
    ZSCORE = "zscore"  # (x - mean) / std over brain voxels (any modality non-zero); background 0


class TargetKind(Enum):
    """What is explained: the starting relevance put on the logits (signs in :mod:`LRPSegmentationLib.lrp.targets`)."""

    LESION_LOGITS = "lesion-logits"
    """Lesion-class logit on the predicted lesion, zero elsewhere (default). Where the model predicts no lesion
    voxel: the lesion logit weighted by the lesion probability relative to its maximum (where the model saw
    lesion evidence), with :data:`NO_LESION_NOTE`."""
    PROBABILITY = "probability"
    """Lesion logit times the softmax lesion probability, on every voxel (a soft lesion mask)."""
    EQUAL = "equal"
    """Relevance 1 on the lesion channel of every predicted-lesion voxel (each voxel weighs the same)."""
    WHOLE_OUTPUT = "whole-output"
    """The whole output, every class and voxel (the paper's code)."""
    COMPONENT = "component"
    """Lesion logit on one connected component of the predicted lesion."""
    MASK = "mask"
    """Lesion logit inside a user mask."""
    VOXEL = "voxel"
    """Lesion logit of a single voxel."""
    FALSE_POSITIVE = "false-positive"
    """Lesion logit on predicted voxels outside the ground truth (why did the model over-segment?)."""
    FALSE_NEGATIVE = "false-negative"
    """Lesion logit on ground-truth voxels the model missed (what lesion evidence did it see there?)."""
    CONTRASTIVE = "contrastive"
    """Lesion minus the other classes' logits (their mean) on the predicted lesion."""


TARGETS_NEEDING_ARGUMENTS: tuple[TargetKind, ...] = (TargetKind.COMPONENT, TargetKind.MASK, TargetKind.VOXEL)
"""Targets that need more than a name (a component index, a mask file, a voxel): not offered as a plain choice."""

PANEL_TARGETS: tuple[TargetKind, ...] = tuple(k for k in TargetKind if k not in TARGETS_NEEDING_ARGUMENTS)
"""The targets the Slicer panel offers (each needs only the case and, for false-positive/negative, its truth)."""

DEFAULT_TARGET = TargetKind.LESION_LOGITS

NO_LESION_NOTE = "no lesion predicted: showing lesion evidence"
"""The one-line note of an explanation whose default target found no predicted lesion (CLI output, scores.json,
provenance, the Slicer panel)."""

FALSE_NEGATIVE_HINT = "with the ground truth, target 'false-negative' explains the missed lesion"
"""Appended to :data:`NO_LESION_NOTE` when the case has a ground truth."""

PRESET_NAMES: tuple[str, ...] = (
    "epsilon", "epsilon-zb", "zplus", "epsilon-zplus", "epsilon-alpha1beta0", "epsilon-gamma-zb", "paper",
)
"""The named LRP rule presets (defined in :mod:`LRPSegmentationLib.lrp.presets`), recommended first."""

DEFAULT_PRESET = "epsilon"
"""Recommended, from measurements on the bundled model and synthetic cases with a known explanation (README):
epsilon keeps ~99% of the positive relevance inside the lesion territory, ranks the two modalities that carry
the most lesion signal (ADC, Tmax) first, stays near-conserving (0.8-0.9, biases absorb the rest) and costs
no modified forward. Its first layer is input-dependent (never flat), so per-modality shares mean something.
z+ (the paper's rule) on inputs that LeakyReLU made negative has near-zero denominators and gave conservation
far from 1 on the trained model (the spiky "noise" the paper describes)."""

GENERATOR_FAMILIES: tuple[str, ...] = ("procedural", "anatomy", "ellipsoid")
"""The synthetic case generators (``data.synthetic``): procedural, MNI152 anatomy, and the held-out ellipsoid."""

DEVICE_CHOICES: tuple[str, ...] = ("auto", "cuda", "cpu")
"""Where the network runs: "auto" takes the GPU when PyTorch sees one, else the CPU."""

BAND_CHUNK = 16
"""In-chain bands computed from one explained forward pass (one backward sweep each; memory that of one
explanation): ``lrpseg bands --chunk``, the panel's background band grid."""


def values(choices) -> list[str]:
    """The string values of an Enum class (or the items of a tuple of names), in order: for CLI and GUI lists."""
    return [c.value if isinstance(c, Enum) else str(c) for c in choices]


def choose(vocabulary: type[E], value, what: str, error: type[Exception] = ValueError) -> E:
    """``value`` (a member or its string value) as a member of ``vocabulary``; ``error`` names the choices."""
    try:
        return vocabulary(value)
    except ValueError:
        raise error(f"Unknown {what} {value!r}: use one of {', '.join(values(vocabulary))}.") from None
