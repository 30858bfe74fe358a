"""Maps kept compactly for showing later: float16 values divided by their per-channel peak, and back.

A band grid stores each band this way (half of float32); the live view reads a band back as the
:class:`~LRPSegmentationLib.analysis.filters.NormalisedMap` that ``normalise_map`` would make of it, without a pass
over a raw map.
"""

from __future__ import annotations

import numpy as np

from LRPSegmentationLib.analysis.filters import NormalisedMap
from LRPSegmentationLib.options import RelevanceNormalization


def compact_map(relevance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values / per-channel max |values| as float16, that max as float32) of a channel-first map."""
    relevance = np.asarray(relevance, dtype=np.float32)
    peak = np.abs(relevance).reshape(relevance.shape[0], -1).max(axis=1).astype(np.float32)
    safe = np.where(peak > 0, peak, 1.0).astype(np.float32)
    return (relevance / safe[(...,) + (None,) * (relevance.ndim - 1)]).astype(np.float16), peak


def compact_sums(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel sums of ``values`` and of ``|values|`` (float64), for :func:`normalised_from_compact`."""
    axes = tuple(range(1, np.ndim(values)))
    return (np.sum(values, axis=axes, dtype=np.float64), np.sum(np.abs(values), axis=axes, dtype=np.float64))


def normalised_from_compact(values: np.ndarray, peak: np.ndarray,
                            normalization: RelevanceNormalization = RelevanceNormalization.PER_CHANNEL,
                            sums: tuple[np.ndarray, np.ndarray] | None = None) -> NormalisedMap:
    """The map of (C, ...) ``values`` stored divided by their per-channel ``peak`` (:func:`compact_map`): what
    ``normalise_map`` gives for ``values * peak``, to float rounding. Per channel the stored values are used as they
    are (float16 stays float16: no conversion pass); ``sums`` (:func:`compact_sums`) saves the two passes that sum
    them."""
    peak = np.asarray(peak, dtype=np.float32)
    zero = peak == 0.0
    scale = np.where(zero, 1.0, peak).astype(np.float32)
    normalised = np.asarray(values)
    if normalization is RelevanceNormalization.GLOBAL:
        top = float(peak.max()) or 1.0
        normalised = normalised.astype(np.float32) * (scale / top)[(...,) + (None,) * (normalised.ndim - 1)]
        zero = np.full_like(zero, peak.max() == 0.0)
        scale = np.full_like(scale, top)
        sums = None
    normalised = normalised.view()
    normalised.setflags(write=False)
    magnitude = np.abs(normalised)
    magnitude.setflags(write=False)
    signed, absolute = sums if sums is not None else compact_sums(normalised)
    return NormalisedMap(normalised=normalised, magnitude=magnitude, scale=scale, channel_max=peak,
                         input_sum=np.asarray(signed, dtype=np.float64) * scale,
                         input_abs_sum=np.asarray(absolute, dtype=np.float64) * scale,
                         zero_groups=zero, normalization=normalization)
