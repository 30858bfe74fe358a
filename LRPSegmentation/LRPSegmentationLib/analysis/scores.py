"""All scores of one (filtered) map at once: per modality and for the whole map, against the case's references.

:class:`ReferenceMasks` (binarised inputs and ground truth) depend on the images only and are computed once per
case; :func:`score_explanation` then scores a map in one pass per channel, fast enough for every move of the
Slicer filter slider. The single scores are defined in :mod:`LRPSegmentationLib.analysis.metrics`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from LRPSegmentationLib.analysis.filters import (
    AmplitudeFilter,
    FilteredMap,
    NormalisedMap,
    RelevanceNormalization,
    filter_map,
)
from LRPSegmentationLib.analysis.metrics import (
    MetricsError,
    as_array,
    binarise_input,
    check_same_shape,
    pointing_flat,
    rank_accuracy_flat,
    safe_ratio,
    shares_from_sums,
    warn_empty,
)
from LRPSegmentationLib.data.modalities import MODALITIES


@dataclass(frozen=True, eq=False)
class ReferenceMasks:
    """The binarised inputs and ground truth a map is scored against (depend on the images only: compute once).

    ``input_masks`` (C, D, H, W) bool; ``ground_truth`` (D, H, W) bool or None; ``gt_index`` its flat indices;
    ``input_counts`` the voxels of each input mask.
    """

    input_masks: np.ndarray
    ground_truth: np.ndarray | None
    gt_index: np.ndarray | None
    input_threshold: float
    brain_masked: bool
    input_counts: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.input_counts:
            object.__setattr__(self, "input_counts", tuple(int(np.count_nonzero(m)) for m in self.input_masks))

    @property
    def shape(self) -> tuple[int, ...]:
        return self.input_masks.shape


def reference_masks(
    images: Any, ground_truth: Any = None, *, input_threshold: float = 0.1, brain_mask: Any = None
) -> ReferenceMasks:
    """Binarise (C, D, H, W) images channel by channel (``|x_c| > t * max|x_c|``, AND brain mask) and index the GT."""
    images = as_array(images, "images")
    if images.ndim != 4:
        raise MetricsError(f"images must be (channels, D, H, W), got shape {images.shape}.")
    if not 0.0 <= input_threshold < 1.0:
        raise MetricsError(f"input_threshold must lie in [0, 1), got {input_threshold}.")
    brain = None
    if brain_mask is not None:
        brain = as_array(brain_mask, "brain_mask") != 0
        check_same_shape(brain, images[0], "brain_mask", "one image channel")
    masks = np.empty(images.shape, dtype=bool)
    for c in range(images.shape[0]):
        masks[c] = binarise_input(images[c], input_threshold, brain)
    truth, index = None, None
    if ground_truth is not None:
        truth = as_array(ground_truth, "ground_truth") != 0
        check_same_shape(truth, images[0], "ground_truth", "one image channel")
        index = np.flatnonzero(truth)
    return ReferenceMasks(masks, truth, index, float(input_threshold), brain is not None)


@dataclass(frozen=True)
class ModalityScores:
    """Scores of one channel (or, with ``modality == "all"``, of the whole map: see :class:`ExplanationScores`).

    ``*_inclusivity`` = D(LRP, ref) (share of ref covered), ``*_precision`` = D(ref, LRP) (share of LRP on ref).
    GT-based fields are None when no ground truth was given.
    """

    modality: str
    channel_max: float
    removed_fraction: float
    lrp_voxels: int
    input_voxels: int
    input_inclusivity: float
    input_precision: float
    gt_inclusivity: float | None
    gt_precision: float | None
    mass_accuracy: float | None
    rank_accuracy: float | None
    pointing_game: float | None
    share: float
    abs_share: float
    mu: float


@dataclass(frozen=True)
class ExplanationScores:
    """Scores of a relevance map under one filter: a row per modality plus ``total``.

    ``total`` (modality "all"): channel_max and removed_fraction over the whole map; inclusivities, precisions
    and mu are means over channels (the paper's bold means); mass/rank accuracy and the pointing game are on the
    channel-summed map (amplitudes restored); voxel counts are sums. ``conservation`` is sum of the unfiltered
    map over ``output_relevance_sum`` (None when that was not given).
    """

    filter: str
    normalization: str
    lrp_threshold: float
    input_threshold: float
    smoothing: float
    gt_voxels: int | None
    conservation: float | None
    modalities: tuple[ModalityScores, ...]
    total: ModalityScores

    def to_rows(self) -> list[dict[str, Any]]:
        """Tidy rows (one per modality, then the "all" row), each with the run-wide columns repeated."""
        common = {
            "filter": self.filter,
            "normalization": self.normalization,
            "lrp_threshold": self.lrp_threshold,
            "input_threshold": self.input_threshold,
            "smoothing": self.smoothing,
            "gt_voxels": self.gt_voxels,
            "conservation": self.conservation,
        }
        return [{**common, **asdict(row)} for row in (*self.modalities, self.total)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready nested dict."""
        result = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("modalities", "total")}
        result["modalities"] = [asdict(row) for row in self.modalities]
        result["total"] = asdict(self.total)
        return result

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ExplanationScores:
        """The inverse of :meth:`to_dict` (scores read back from JSON, e.g. a band grid's ``bands.json``)."""
        common = {k: v for k, v in values.items() if k not in ("modalities", "total")}
        return cls(**common, modalities=tuple(ModalityScores(**row) for row in values["modalities"]),
                   total=ModalityScores(**values["total"]))


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def summed_map_scores(flat: np.ndarray, scale: np.ndarray, index: np.ndarray,
                      buffer: np.ndarray | None = None) -> tuple[float, float, float]:
    """(mass accuracy, rank accuracy, pointing game) of the channel-summed map ``sum_c scale_c * flat_c``.

    ``flat`` is the filtered normalised map (C, N), ``index`` the flat ground-truth indices. The "all" row's
    localisation scores: the only scores that need a pass over the whole map for every filter.
    """
    summed = np.einsum("c,cn->n", np.asarray(scale, dtype=np.float64).astype(flat.dtype), flat)
    buffer = np.empty_like(summed) if buffer is None else buffer
    inside = summed[index]
    top = float(summed.max())
    any_relevance = bool(top != 0 or summed.min() != 0)
    positive = float(np.maximum(summed, 0.0, out=buffer).sum())
    mass = safe_ratio(np.maximum(inside, 0.0).sum(), positive) if positive > 0 else 0.0
    rank = rank_accuracy_flat(summed, inside) if any_relevance else 0.0
    pointing = pointing_flat(summed, inside, top) if any_relevance else 0.0
    return mass, rank, pointing


def total_row(per_channel, channel_max: float, removed_fraction: float, signed_total: float, abs_total: float,
              mass_accuracy: float | None = None, rank_accuracy: float | None = None,
              pointing_game: float | None = None) -> ModalityScores:
    """The "all" row: counts summed, inclusivities and mu averaged over the channels, shares of the whole map."""
    return ModalityScores(
        modality="all", channel_max=channel_max, removed_fraction=removed_fraction,
        lrp_voxels=sum(r.lrp_voxels for r in per_channel), input_voxels=sum(r.input_voxels for r in per_channel),
        input_inclusivity=_mean([r.input_inclusivity for r in per_channel]) or 0.0,
        input_precision=_mean([r.input_precision for r in per_channel]) or 0.0,
        gt_inclusivity=_mean([r.gt_inclusivity for r in per_channel]),
        gt_precision=_mean([r.gt_precision for r in per_channel]),
        mass_accuracy=mass_accuracy, rank_accuracy=rank_accuracy, pointing_game=pointing_game,
        share=1.0 if signed_total != 0 else 0.0, abs_share=1.0 if abs_total != 0 else 0.0,
        mu=_mean([r.mu for r in per_channel]) or 0.0,
    )


def conservation(input_sum, output_relevance_sum: float | None) -> float | None:
    """Sum of the unfiltered map over the start relevance's sum (None without one; 0.0 when that sum is 0)."""
    if output_relevance_sum is None:
        return None
    return 0.0 if output_relevance_sum == 0 else float(np.sum(input_sum)) / float(output_relevance_sum)


def score_explanation(
    relevance: Any,
    images: Any,
    ground_truth: Any = None,
    *,
    filt: AmplitudeFilter | str | None = None,
    normalization: RelevanceNormalization | str = RelevanceNormalization.PER_CHANNEL,
    lrp_threshold: float = 0.5,
    input_threshold: float = 0.1,
    brain_mask: Any = None,
    smoothing: float = 0.0,
    output_relevance_sum: float | None = None,
    modalities: tuple[str, ...] | None = None,
) -> ExplanationScores:
    """Filter a final (C, D, H, W) relevance map and compute every score per channel and in total.

    ``relevance`` is the unfiltered map (numpy or torch), or an already :class:`FilteredMap` (then ``filt`` and
    ``normalization`` must be left at their defaults). ``images`` are the (C, D, H, W) inputs on the same grid,
    or :class:`ReferenceMasks` from :func:`reference_masks` (then ``ground_truth``, ``brain_mask`` and
    ``input_threshold`` come from it): precompute those once for live re-scoring.
    """
    if not 0.0 <= lrp_threshold < 1.0:
        raise MetricsError(f"lrp_threshold must lie in [0, 1), got {lrp_threshold}.")
    if smoothing < 0:
        raise MetricsError(f"smoothing must be >= 0, got {smoothing}.")
    if isinstance(relevance, FilteredMap):
        if filt is not None or RelevanceNormalization(normalization) is not RelevanceNormalization.PER_CHANNEL:
            raise MetricsError("relevance is already a FilteredMap: leave filt and normalization unset.")
        filtered = relevance
    elif isinstance(relevance, NormalisedMap):
        filtered = relevance.filtered(filt)
    else:
        relevance = as_array(relevance, "relevance")
        if relevance.ndim != 4:
            raise MetricsError(
                f"relevance must be (channels, D, H, W), got shape {relevance.shape}; for a batch pass relevance[0]."
            )
        filtered = filter_map(relevance, filt, normalization, channel_axis=0)
    values = np.moveaxis(as_array(filtered.normalised, "filtered relevance"), filtered.channel_axis, 0)
    magnitudes = np.moveaxis(as_array(filtered.magnitude, "filtered magnitude"), filtered.channel_axis, 0)
    if values.ndim != 4:
        raise MetricsError(f"relevance must be (channels, D, H, W), got shape {values.shape}.")

    if isinstance(images, ReferenceMasks):
        if ground_truth is not None or brain_mask is not None:
            raise MetricsError("images are ReferenceMasks: give ground_truth and brain_mask to reference_masks().")
        references = images
    else:
        references = reference_masks(images, ground_truth, input_threshold=input_threshold, brain_mask=brain_mask)
    if references.shape != values.shape:
        raise MetricsError(
            f"relevance has shape {values.shape} but the images have shape {references.shape}; "
            "map the relevance back to the image grid first."
        )
    channels = values.shape[0]
    names = tuple(modalities) if modalities is not None else (
        MODALITIES if channels == len(MODALITIES) else tuple(f"channel{c}" for c in range(channels))
    )
    if len(names) != channels:
        raise MetricsError(f"{len(names)} modality names given for {channels} channels.")

    flat = values.reshape(channels, -1)
    flat_magnitude = magnitudes.reshape(channels, -1)
    inputs = references.input_masks.reshape(channels, -1)
    index = references.gt_index
    has_gt = index is not None
    gt_voxels = int(index.size) if has_gt else None
    empty: list[str] = []
    if has_gt and gt_voxels == 0:
        empty.append("ground-truth mask is empty")

    buffer = np.empty(flat.shape[1], dtype=flat.dtype)
    binary = np.empty(flat.shape[1], dtype=bool)
    overlap = np.empty(flat.shape[1], dtype=bool)
    abs_sums = np.asarray(filtered.filtered_abs_sum, dtype=np.float64)
    rows: list[dict[str, Any]] = []
    signed_sums = np.empty(channels)
    for c in range(channels):
        v, magnitude = flat[c], flat_magnitude[c]
        peak = float(magnitude.max())
        np.greater(magnitude, lrp_threshold * peak, out=binary)
        n_lrp = int(np.count_nonzero(binary))
        n_input = references.input_counts[c]
        n_both = int(np.count_nonzero(np.logical_and(binary, inputs[c], out=overlap)))
        signed_sums[c] = float(v.sum(dtype=np.float64))  # float64: exact enough for shares of cancelling sums
        if peak == 0:
            empty.append(f"filtered relevance of {names[c]} is all zero")
        if n_input == 0:
            empty.append(f"binarised input {names[c]} is empty")
        row: dict[str, Any] = {
            "modality": names[c],
            "channel_max": float(filtered.channel_max[c]),
            "removed_fraction": float(filtered.removed_fraction[c]),
            "lrp_voxels": n_lrp,
            "input_voxels": n_input,
            "input_inclusivity": safe_ratio(n_both, n_input + smoothing),
            "input_precision": safe_ratio(n_both, n_lrp + smoothing),
            "mu": float(signed_sums[c] / v.size / peak) if peak > 0 else 0.0,
        }
        if has_gt:
            inside = v[index]
            n_lrp_gt = int(np.count_nonzero(binary[index]))
            positive = 0.5 * (signed_sums[c] + abs_sums[c])  # sum of F+ without another pass ...
            if positive < 1e-3 * abs_sums[c]:  # ... unless cancellation would make it inexact
                positive = float(np.maximum(v, 0.0, out=buffer).sum())
            known = filtered.source.kth_largest(c, gt_voxels, filtered.filter) if (
                filtered.source is not None and 0 < gt_voxels) else None
            row.update(
                gt_inclusivity=safe_ratio(n_lrp_gt, gt_voxels + smoothing),
                gt_precision=safe_ratio(n_lrp_gt, n_lrp + smoothing),
                mass_accuracy=(safe_ratio(np.maximum(inside, 0.0).sum(dtype=np.float64), positive)
                               if positive > 0 else 0.0),
                rank_accuracy=rank_accuracy_flat(v, inside, known) if peak > 0 else 0.0,
                pointing_game=pointing_flat(v, inside, float(v.max())) if peak > 0 else 0.0,
            )
        else:
            row.update(gt_inclusivity=None, gt_precision=None, mass_accuracy=None, rank_accuracy=None,
                       pointing_game=None)
        rows.append(row)

    scale = filtered.scale.astype(np.float64)
    share, abs_share = shares_from_sums(signed_sums * scale, abs_sums * scale, warn=False)
    if float(np.sum(abs_sums * scale)) == 0:
        empty.append("filtered relevance is all zero in every channel")
    per_channel = []
    for c, row in enumerate(rows):
        row.update(share=float(share[c]), abs_share=float(abs_share[c]))
        per_channel.append(ModalityScores(**row))

    total_mass = total_rank = total_pointing = None
    if has_gt:
        total_mass, total_rank, total_pointing = summed_map_scores(flat, scale, index, buffer)

    if output_relevance_sum == 0:
        empty.append("output relevance sums to zero")
    conservation_value = conservation(filtered.input_sum, output_relevance_sum)

    total = total_row(per_channel, float(np.max(filtered.channel_max)) if channels else 0.0,
                      float(filtered.removed_fraction_total), float(np.sum(signed_sums * scale)),
                      float(np.sum(abs_sums * scale)), total_mass, total_rank, total_pointing)
    if empty:
        message = "; ".join(dict.fromkeys(empty))
        warn_empty(message[0].upper() + message[1:])
    return ExplanationScores(
        filter=filtered.filter.label,
        normalization=filtered.normalization.value,
        lrp_threshold=float(lrp_threshold),
        input_threshold=references.input_threshold,
        smoothing=float(smoothing),
        gt_voxels=gt_voxels,
        conservation=conservation_value,
        modalities=tuple(per_channel),
        total=total,
    )
