"""In-chain filter bands from one forward pass: K bands of the paper's in-chain filter as K backward sweeps.

The forward pass is the same for every band; only the filters at the taps differ. :func:`explain_bands` runs the
explained forward once and one backward sweep per band over the kept graph
(:func:`~LRPSegmentationLib.lrp.engine.explain_filters`), each band filtering at the taps exactly as
:func:`~LRPSegmentationLib.lrp.taps.tap_filter` does for a single band.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import nn

from LRPSegmentationLib.analysis.filters import PAPER_CLAMP_GRID, PAPER_PASS_GRID, AmplitudeFilter
from LRPSegmentationLib.lrp.engine import StartRelevance, explain_filters
from LRPSegmentationLib.lrp.errors import ExplainInputError
from LRPSegmentationLib.lrp.taps import tap_filter
from LRPSegmentationLib.options import BAND_CHUNK, DEFAULT_PRESET, FilterKind

__all__ = ["band_grid", "explain_bands"]


def band_grid(step: float = 0.05) -> tuple[AmplitudeFilter, ...]:
    """The default bands: the paper's pass and clamp grids plus pass and clamp ``[0, a]`` for a in ``step`` steps."""
    if not 0.0 < step <= 1.0:
        raise ExplainInputError(f"The band step must lie in (0, 1], got {step}.")
    alphas = [round(float(a), 6) for a in np.arange(step, 1.0 + 1e-9, step)]
    bands = [AmplitudeFilter(FilterKind.PASS, lo, hi) for lo, hi in PAPER_PASS_GRID]
    bands += [AmplitudeFilter(FilterKind.CLAMP, lo, hi) for lo, hi in PAPER_CLAMP_GRID]
    bands += [AmplitudeFilter(kind, 0.0, a) for kind in (FilterKind.PASS, FilterKind.CLAMP) for a in alphas]
    return tuple(dict.fromkeys(bands))


def explain_bands(model: nn.Module, x: torch.Tensor, start_relevance: StartRelevance,
                  bands: Iterable[AmplitudeFilter | str], preset: str = DEFAULT_PRESET, *,
                  taps: Iterable[str] | None = None, chunk: int = BAND_CHUNK,
                  progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Input relevance (len(bands), C, ...) of one input ``x`` (1, C, ...) for each in-chain band.

    One explained forward per ``chunk`` bands (its graph is kept for their backward sweeps, so memory stays that
    of one explanation); ``progress(done, total)`` is called after each chunk.
    """
    bands = [AmplitudeFilter.parse(band) for band in bands]
    if x.ndim < 2 or x.shape[0] != 1:
        raise ExplainInputError(f"x must be one input shaped (1, C, ...), got {tuple(x.shape)}.")
    if chunk < 1:
        raise ExplainInputError(f"chunk must be at least 1, got {chunk}.")
    results = []
    for first in range(0, len(bands), chunk):
        part = bands[first : first + chunk]
        explained = explain_filters(model, x, start_relevance, [tap_filter(b) for b in part], preset, taps=taps,
                                    record_sums=False)
        results += [e.relevance.detach() for e in explained]
        if progress is not None:
            progress(first + len(part), len(bands))
    if not results:
        return x.new_zeros((0, *x.shape[1:]))
    return torch.cat(results)
