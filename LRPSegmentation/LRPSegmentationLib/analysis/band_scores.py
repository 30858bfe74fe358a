"""Every score of a filter band in a few binary searches: the live slider's scoring, without a pass over the map.

A pass or clamp filter maps each channel's normalised values ``s`` (sorted once) piecewise: on each contiguous run
of the sorted order it either keeps ``s`` or replaces it by one constant (0, +-low, +-high). So every count and sum
:func:`~LRPSegmentationLib.analysis.scores.score_explanation` needs — voxels above the binarisation threshold, their
overlap with the input masks and the ground truth, signed, absolute and positive sums, the k-th largest value and
its ties, the maximum and its ties — is a sum over at most six runs, read from prefix counts and prefix sums along
the sorted order (:class:`BandIndex`, built once per map). Comparisons use the map's float32 values and float32
bounds exactly as the filter does, so counts (hence inclusivities, precisions, rank accuracy, pointing game) are
identical to the reference; sums come from float64 prefix sums and agree with the reference's float32 sums to
float32 rounding.

Only the "all" row's mass accuracy, rank accuracy and pointing game are scores of the channel-summed map, which no
per-channel order describes: :meth:`BandIndex.score` leaves them None and :func:`complete_total` fills them from
the filtered map (one pass, done lazily by the live view). numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from LRPSegmentationLib.analysis.filters import AmplitudeFilter, FilteredMap, NormalisedMap, removed_fractions
from LRPSegmentationLib.analysis.metrics import MetricsError, safe_ratio, shares_from_sums
from LRPSegmentationLib.analysis.scores import (
    ExplanationScores,
    ModalityScores,
    ReferenceMasks,
    conservation,
    summed_map_scores,
    total_row,
)
from LRPSegmentationLib.data.modalities import MODALITIES
from LRPSegmentationLib.options import FilterKind

__all__ = ["BandIndex", "complete_total", "filtered_region"]

_ZERO = np.float32(0.0)


@dataclass(frozen=True)
class _Run:
    """Positions [a, b) of the sorted order on which the filtered value is ``s`` itself (``value`` None) or
    ``value``; ``nonnegative``: all of ``s`` there is >= 0."""

    a: int
    b: int
    value: np.float32 | None
    nonnegative: bool


@dataclass(frozen=True, eq=False)
class _Channel:
    """One channel's sorted values with prefix counts of its input mask and prefix sums along that order, and the
    sorted positions of the ground-truth voxels in that order with prefix sums of their values."""

    sorted: np.ndarray
    input_prefix: np.ndarray
    value_prefix: np.ndarray
    gt_positions: np.ndarray
    gt_value_prefix: np.ndarray

    def gt(self, a: int, b: int) -> tuple[int, int]:
        return int(np.searchsorted(self.gt_positions, a)), int(np.searchsorted(self.gt_positions, b))

    def runs(self, filt: AmplitudeFilter, zero_group: bool) -> tuple[_Run, ...]:
        """The runs of ``filt`` on this channel (empty runs dropped)."""
        s, n = self.sorted, self.sorted.size
        lo, hi = np.float32(filt.low), np.float32(filt.high)
        z0 = int(np.searchsorted(s, _ZERO, "left"))
        if filt.kind is FilterKind.NONE:
            runs = [(0, z0, None, False), (z0, n, None, True)]
        elif filt.kind is FilterKind.PASS:
            q0 = int(np.searchsorted(s, -hi, "left"))
            q1 = max(q0, min(int(np.searchsorted(s, -lo, "right")), z0))
            p0 = max(int(np.searchsorted(s, lo, "left")), int(np.searchsorted(s, _ZERO, "right")))
            p1 = max(p0, int(np.searchsorted(s, hi, "right")))
            runs = [(0, q0, _ZERO, False), (q0, q1, None, False), (q1, p0, _ZERO, False), (p0, p1, None, True),
                    (p1, n, _ZERO, True)]
        elif filt.low > 0.0 and zero_group:
            runs = [(0, n, _ZERO, True)]  # a channel without relevance stays zero
        else:
            a1 = int(np.searchsorted(s, -hi, "left"))
            b1 = max(a1, min(int(np.searchsorted(s, -lo, "right")), z0))
            d1 = max(int(np.searchsorted(s, lo, "left")), z0)
            e1 = max(d1, int(np.searchsorted(s, hi, "right")))
            runs = [(0, a1, -hi, False), (a1, b1, None, False), (b1, z0, -lo, False), (z0, d1, lo, True),
                    (d1, e1, None, True), (e1, n, hi, True)]
        return tuple(_Run(a, b, v, nn) for a, b, v, nn in runs if b > a)


@dataclass(frozen=True)
class _Counts:
    """Voxels of a set, how many of them are in the input mask, and in the ground truth."""

    voxels: int = 0
    input: int = 0
    gt: int = 0

    def __add__(self, other: _Counts) -> _Counts:
        return _Counts(self.voxels + other.voxels, self.input + other.input, self.gt + other.gt)


def _range_counts(ch: _Channel, a: int, b: int) -> _Counts:
    if b <= a:
        return _Counts()
    i, j = ch.gt(a, b)
    return _Counts(b - a, int(ch.input_prefix[b] - ch.input_prefix[a]), j - i)


def _counts_where(ch: _Channel, runs: tuple[_Run, ...], threshold: np.float32, side: str,
                  magnitude: bool) -> _Counts:
    """Counts of the filtered values F with ``F > threshold`` (side "right") or ``F >= threshold`` ("left"), or of
    ``|F| > threshold`` when ``magnitude`` (side "right" only)."""
    total = _Counts()
    for run in runs:
        if run.value is not None:
            value = abs(run.value) if magnitude else run.value
            if value > threshold or (side == "left" and value == threshold):
                total += _range_counts(ch, run.a, run.b)
        elif magnitude and not run.nonnegative:  # negative s: |s| > t <=> s < -t
            total += _range_counts(ch, run.a, min(run.b, int(np.searchsorted(ch.sorted, -threshold, "left"))))
        else:
            total += _range_counts(ch, max(run.a, int(np.searchsorted(ch.sorted, threshold, side))), run.b)
    return total


def _sums(ch: _Channel, runs: tuple[_Run, ...]) -> tuple[float, float, float, float]:
    """(sum F, sum |F|, sum F+, sum F+ on the ground truth) of the filtered channel."""
    signed = absolute = positive = positive_gt = 0.0
    for run in runs:
        i, j = ch.gt(run.a, run.b)
        if run.value is not None:
            value = float(run.value)
            signed += value * (run.b - run.a)
            absolute += abs(value) * (run.b - run.a)
            if value > 0:
                positive += value * (run.b - run.a)
                positive_gt += value * (j - i)
            continue
        part = float(ch.value_prefix[run.b] - ch.value_prefix[run.a])
        signed += part
        absolute += part if run.nonnegative else -part
        if run.nonnegative:
            positive += part
            positive_gt += float(ch.gt_value_prefix[j] - ch.gt_value_prefix[i])
    return signed, absolute, positive, positive_gt


def _extremes(ch: _Channel, runs: tuple[_Run, ...]) -> tuple[np.float32, np.float32]:
    """(max |F|, max F) of the filtered channel."""
    peak, top = _ZERO, None
    for run in runs:
        if run.value is not None:
            low = high = run.value
        else:
            low, high = ch.sorted[run.a], ch.sorted[run.b - 1]
        peak = max(peak, abs(low), abs(high))
        top = high if top is None else max(top, high)
    return np.float32(peak), np.float32(_ZERO if top is None else top)


@dataclass(frozen=True, eq=False)
class BandIndex:
    """A normalised map and the references it is scored against, indexed for scoring any filter band at once.

    Build it with :meth:`build` (one sort per channel, about the cost of ``normalise_map(presort=True)``);
    :meth:`score` then costs microseconds per channel, independent of the volume size.
    """

    source: NormalisedMap
    references: ReferenceMasks
    channels: tuple[_Channel, ...]
    names: tuple[str, ...] = ()  # the channels' modality names (empty: MODALITIES for six channels, else channelK)

    @classmethod
    def build(cls, source: NormalisedMap, references: ReferenceMasks,
              names: Sequence[str] | None = None) -> BandIndex:
        """Sort every channel of ``source`` (channel-first numpy map) and accumulate the masks along that order;
        ``names`` name the channels in the scores (the model's modalities)."""
        values = np.asarray(source.normalised)
        if source.channel_axis != 0 or values.ndim != 4:
            raise MetricsError("BandIndex needs a channel-first (C, D, H, W) numpy map.")
        if references.shape != values.shape:
            raise MetricsError(f"relevance has shape {values.shape} but the references have {references.shape}.")
        flat = values.reshape(values.shape[0], -1)
        inputs = references.input_masks.reshape(values.shape[0], -1)
        truth = None if references.ground_truth is None else references.ground_truth.ravel()
        channels, ordered = [], []
        for c in range(flat.shape[0]):
            order = np.argsort(flat[c])
            s = flat[c][order]
            s.setflags(write=False)
            ordered.append(s)
            input_prefix = np.zeros(s.size + 1, np.int32)
            np.cumsum(inputs[c][order], out=input_prefix[1:], dtype=np.int32)
            value_prefix = np.zeros(s.size + 1, np.float64)
            np.cumsum(s, out=value_prefix[1:], dtype=np.float64)
            positions = np.zeros(0, np.int64) if truth is None else np.flatnonzero(truth[order])
            gt_prefix = np.concatenate(([0.0], np.cumsum(s[positions], dtype=np.float64)))
            channels.append(_Channel(s, input_prefix, value_prefix, positions, gt_prefix))
        if source.sorted_values is None:  # the rank scores' k-th largest reads the sorted values
            source = replace(source, sorted_values=np.stack(ordered))
        if names is not None and len(names) != len(channels):
            raise MetricsError(f"{len(names)} modality names for {len(channels)} relevance channels.")
        return cls(source, references, tuple(channels), tuple(names or ()))

    @classmethod
    def display_only(cls, source: NormalisedMap, references: ReferenceMasks,
                     names: Sequence[str] | None = None) -> BandIndex:
        """An index of ``source`` that serves showing it, not scoring it (no sort): for a map whose scores were
        computed with it (a band grid's float32 scores)."""
        return cls(source, references, (), tuple(names or ()))

    def score(self, filt: AmplitudeFilter | str | None = None, *, lrp_threshold: float = 0.5,
              smoothing: float = 0.0, output_relevance_sum: float | None = None) -> ExplanationScores:
        """The scores of ``source.filtered(filt)`` as :func:`score_explanation` gives them (without warnings), except
        the "all" row's mass accuracy, rank accuracy and pointing game, left None: see :func:`complete_total`."""
        if not self.channels:
            raise MetricsError("This map's index serves display only: its scores come with it.")
        filt = AmplitudeFilter.parse(filt)
        if not 0.0 <= lrp_threshold < 1.0:
            raise MetricsError(f"lrp_threshold must lie in [0, 1), got {lrp_threshold}.")
        if smoothing < 0:
            raise MetricsError(f"smoothing must be >= 0, got {smoothing}.")
        src, refs = self.source, self.references
        count = len(self.channels)
        names = self.names or (MODALITIES if count == len(MODALITIES) else tuple(f"channel{c}" for c in range(count)))
        has_gt = refs.gt_index is not None
        gt_voxels = int(refs.gt_index.size) if has_gt else None
        rows, signed_sums, abs_sums = [], np.empty(count), np.empty(count)
        for c, ch in enumerate(self.channels):
            runs = ch.runs(filt, bool(src.zero_groups[c]))
            signed, absolute, positive, positive_gt = _sums(ch, runs)
            signed_sums[c] = signed
            abs_sums[c] = src.input_abs_sum[c] / src.scale[c] if filt.kind is FilterKind.NONE else absolute
            peak32, top32 = _extremes(ch, runs)
            peak = float(peak32)
            binary = _counts_where(ch, runs, np.float32(lrp_threshold * peak), "right", magnitude=True)
            n_input = refs.input_counts[c]
            row = {
                "modality": names[c],
                "channel_max": float(src.channel_max[c]),
                "lrp_voxels": binary.voxels,
                "input_voxels": n_input,
                "input_inclusivity": safe_ratio(binary.input, n_input + smoothing),
                "input_precision": safe_ratio(binary.input, binary.voxels + smoothing),
                "mu": float(signed / ch.sorted.size / peak) if peak > 0 else 0.0,
                "gt_inclusivity": None, "gt_precision": None, "mass_accuracy": None, "rank_accuracy": None,
                "pointing_game": None,
            }
            if has_gt:
                row.update(
                    gt_inclusivity=safe_ratio(binary.gt, gt_voxels + smoothing),
                    gt_precision=safe_ratio(binary.gt, binary.voxels + smoothing),
                    mass_accuracy=safe_ratio(positive_gt, positive) if positive > 0 else 0.0,
                    rank_accuracy=self._rank(c, runs, gt_voxels, filt) if peak > 0 else 0.0,
                    pointing_game=self._pointing(ch, runs, top32, gt_voxels) if peak > 0 else 0.0,
                )
            rows.append(row)

        scale = src.scale.astype(np.float64)
        kept = abs_sums * scale
        removed, removed_total = removed_fractions(kept, src.input_abs_sum, filt)
        share, abs_share = shares_from_sums(signed_sums * scale, kept, warn=False)
        per_channel = tuple(ModalityScores(**row, removed_fraction=float(removed[c]), share=float(share[c]),
                                           abs_share=float(abs_share[c])) for c, row in enumerate(rows))
        total = total_row(per_channel, float(np.max(src.channel_max)) if count else 0.0, float(removed_total),
                          float(np.sum(signed_sums * scale)), float(np.sum(kept)))
        return ExplanationScores(filter=filt.label, normalization=src.normalization.value,
                                 lrp_threshold=float(lrp_threshold), input_threshold=refs.input_threshold,
                                 smoothing=float(smoothing), gt_voxels=gt_voxels,
                                 conservation=conservation(src.input_sum, output_relevance_sum),
                                 modalities=per_channel, total=total)

    def _rank(self, c: int, runs: tuple[_Run, ...], k: int, filt: AmplitudeFilter) -> float:
        """Top-|G| accuracy with ties shared out, as ``rank_accuracy_flat`` computes it."""
        if k == 0:
            return 0.0
        ch = self.channels[c]
        threshold = np.float32(self.source.kth_largest(c, k, filt))
        above = _counts_where(ch, runs, threshold, "right", magnitude=False)
        at_least = _counts_where(ch, runs, threshold, "left", magnitude=False)
        n_ties, tied_inside = at_least.voxels - above.voxels, at_least.gt - above.gt
        return float((above.gt + (k - above.voxels) * tied_inside / n_ties) / k)

    @staticmethod
    def _pointing(ch: _Channel, runs: tuple[_Run, ...], top: np.float32, k: int) -> float:
        if k == 0:
            return 0.0
        at_top = _counts_where(ch, runs, top, "left", magnitude=False)
        return float(at_top.gt / at_top.voxels)


def complete_total(scores: ExplanationScores, filtered: FilteredMap, references: ReferenceMasks) -> ExplanationScores:
    """``scores`` of :meth:`BandIndex.score` with the "all" row's channel-summed scores computed from ``filtered``
    (the full filtered map of the same band): then equal to ``score_explanation(filtered, references)``."""
    if references.gt_index is None or scores.total.mass_accuracy is not None:
        return scores
    if filtered.filter.label != scores.filter:
        raise MetricsError(f"The filtered map is of band {filtered.filter.label}, the scores of {scores.filter}.")
    values = np.moveaxis(np.asarray(filtered.normalised), filtered.channel_axis, 0)
    flat = values.reshape(values.shape[0], -1)
    mass, rank, pointing = summed_map_scores(flat, filtered.scale.astype(np.float64), references.gt_index)
    total = replace(scores.total, mass_accuracy=mass, rank_accuracy=rank, pointing_game=pointing)
    return replace(scores, total=total)


def filtered_region(source: NormalisedMap, filt: AmplitudeFilter, channel: int,
                    region: tuple[slice | int, ...]) -> np.ndarray:
    """``source.filtered(filt).normalised[channel][region]`` without filtering the rest of the map (same values)."""
    values = np.asarray(source.normalised)[channel][region]
    if filt.kind is FilterKind.CLAMP and filt.low > 0.0 and source.zero_groups[channel]:
        return np.zeros_like(values)  # a channel without relevance stays zero
    return filt(values)
