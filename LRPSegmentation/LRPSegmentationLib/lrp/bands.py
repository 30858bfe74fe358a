"""In-chain filter bands in batches: K bands of the paper's in-chain filter as the batch dimension of one explanation.

The forward pass is the same for every band; only the filters at the taps differ. :func:`explain_bands` stacks K
copies of the input, and :func:`band_tap_filter` filters sample k of the relevance arriving at each tap with band k,
normalised by that sample's own peak, exactly as :func:`~LRPSegmentationLib.lrp.taps.tap_filter` does for a single
band. No change to the engine: a tap filter already receives the whole (batched) relevance tensor.

Each band still costs its share of a batched forward and backward (the copies are computed, not shared); sharing
one forward across the bands would need the engine's autograd functions to support batched gradients (vmap).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from LRPSegmentationLib.analysis.filters import PAPER_CLAMP_GRID, PAPER_PASS_GRID, AmplitudeFilter
from LRPSegmentationLib.lrp.engine import StartRelevance, explain
from LRPSegmentationLib.lrp.errors import ExplainInputError
from LRPSegmentationLib.lrp.taps import TapFilter, tap_filter
from LRPSegmentationLib.options import DEFAULT_PRESET, FilterKind

__all__ = ["band_grid", "band_tap_filter", "explain_bands"]


def band_grid(step: float = 0.05) -> tuple[AmplitudeFilter, ...]:
    """The default bands: the paper's pass and clamp grids plus pass and clamp ``[0, a]`` for a in ``step`` steps."""
    if not 0.0 < step <= 1.0:
        raise ExplainInputError(f"The band step must lie in (0, 1], got {step}.")
    alphas = [round(float(a), 6) for a in np.arange(step, 1.0 + 1e-9, step)]
    bands = [AmplitudeFilter(FilterKind.PASS, lo, hi) for lo, hi in PAPER_PASS_GRID]
    bands += [AmplitudeFilter(FilterKind.CLAMP, lo, hi) for lo, hi in PAPER_CLAMP_GRID]
    bands += [AmplitudeFilter(kind, 0.0, a) for kind in (FilterKind.PASS, FilterKind.CLAMP) for a in alphas]
    return tuple(dict.fromkeys(bands))


def band_tap_filter(bands: Sequence[AmplitudeFilter | str]) -> TapFilter:
    """A tap filter for a batch of ``len(bands)`` samples: sample k filtered with band k (per-sample peak)."""
    filters = [tap_filter(band) for band in bands]

    def apply(relevance: torch.Tensor) -> torch.Tensor:
        if relevance.shape[0] != len(filters):
            raise ExplainInputError(f"The batch holds {relevance.shape[0]} samples for {len(filters)} bands.")
        return torch.cat([f(relevance[k : k + 1]) for k, f in enumerate(filters)])

    return apply


def explain_bands(model: nn.Module, x: torch.Tensor, start_relevance: StartRelevance,
                  bands: Iterable[AmplitudeFilter | str], preset: str = DEFAULT_PRESET, *,
                  taps: Iterable[str] | None = None, batch_size: int = 4,
                  progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Input relevance (len(bands), C, ...) of one input ``x`` (1, C, ...) for each in-chain band.

    Runs ``ceil(len(bands) / batch_size)`` batched explanations; ``start_relevance`` must work on a batch (every
    target does except "component"). ``progress(done, total)`` is called after each batch.
    """
    bands = [AmplitudeFilter.parse(band) for band in bands]
    if x.ndim < 2 or x.shape[0] != 1:
        raise ExplainInputError(f"x must be one input shaped (1, C, ...), got {tuple(x.shape)}.")
    if batch_size < 1:
        raise ExplainInputError(f"batch_size must be at least 1, got {batch_size}.")
    results = []
    for first in range(0, len(bands), batch_size):
        chunk = bands[first : first + batch_size]
        batch = x.detach().expand(len(chunk), *x.shape[1:]).contiguous()
        result = explain(model, batch, start_relevance, preset, tap_filter=band_tap_filter(chunk), taps=taps)
        results.append(result.relevance.detach())
        if progress is not None:
            progress(first + len(chunk), len(bands))
    if not results:
        return x.new_zeros((0, *x.shape[1:]))
    return torch.cat(results)
