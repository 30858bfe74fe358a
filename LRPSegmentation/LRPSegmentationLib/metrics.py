"""Scores of a relevance map: the paper's inclusivity coefficients and common heatmap localisation scores.

Definitions (H a binarised heatmap, X a binarised input, G the ground-truth lesion, R a relevance map):

- inclusivity ``D(a, b) = |a AND b| / (|b| + smoothing)`` (a recall of b); the reverse ``D(b, a)`` is a precision.
- binarisations (paper): relevance ``|R_c| > 0.5 * max|R_c|``; input ``|x_c| > 0.1 * max|x_c|`` (optionally AND a
  brain mask). Written as products, not quotients, so they hold for all-zero arrays (giving empty masks).
- relevance mass accuracy ``sum(R+ in G) / sum(R+)``; relevance rank accuracy ``|top-K by R in G| / K`` with
  ``K = |G|``; pointing game ``[argmax R in G]``. Ties (common after pass and clamp filters) are shared out as
  the expected value under random tie-breaking, so both scores are well defined and order-independent (the
  pointing game is then the fraction of maximal voxels that lie in G).
- conservation ``sum R_input / sum R_output``; share ``sum R_c / sum R`` (and of |R|); the paper's
  ``mu_c = mean(F_c) / max|F_c|`` of the filtered map F.

Every ratio over an empty set is 0.0 with an :class:`EmptyMaskWarning` naming the mask; nothing returns NaN.
:func:`score_explanation` computes all of it for a (C, D, H, W) map in one pass per channel, fast enough to run
on every move of the Slicer filter slider.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from LRPSegmentationLib.lrp.filters import AmplitudeFilter, FilteredMap, NormalisedMap, Normalization, filter_map
from LRPSegmentationLib.modalities import MODALITIES

__all__ = [
    "MetricsError",
    "EmptyMaskWarning",
    "inclusivity",
    "binarise_relevance",
    "binarise_input",
    "relevance_mass_accuracy",
    "relevance_rank_accuracy",
    "pointing_game",
    "conservation",
    "modality_shares",
    "mu",
    "ReferenceMasks",
    "reference_masks",
    "ModalityScores",
    "ExplanationScores",
    "score_explanation",
]


class MetricsError(ValueError):
    """Arrays that cannot be scored together (shapes, dimensions, values)."""


class EmptyMaskWarning(UserWarning):
    """A score divided by an empty mask or zero relevance and was set to 0.0."""


def _warn_empty(what: str) -> None:
    warnings.warn(f"{what}; the scores that divide by it are set to 0.0.", EmptyMaskWarning, stacklevel=3)


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / float(denominator) if denominator != 0 else 0.0


def _as_array(value: Any, name: str) -> np.ndarray:
    if hasattr(value, "detach"):  # torch tensor, without importing torch here
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise MetricsError(f"{name} must be numeric or boolean, got dtype {array.dtype}.")
    return array


def _same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise MetricsError(f"{name_a} has shape {a.shape} but {name_b} has shape {b.shape}; put both on one grid.")


def _abs_max(values: np.ndarray) -> float:
    if values.size == 0:
        return 0.0
    top, bottom = float(values.max()), float(values.min())
    if not (np.isfinite(top) and np.isfinite(bottom)):
        raise MetricsError("Array contains NaN or infinite values; cannot score it.")
    return max(top, -bottom)


# ----------------------------------------------------------------------------------------------------------------
# Single scores on plain arrays (public; each warns on its own empty masks)


def inclusivity(a: Any, b: Any, smoothing: float = 0.0) -> float:
    """``D(a, b) = |a AND b| / (|b| + smoothing)``: the share of b covered by a; ``inclusivity(b, a)`` reverses it."""
    a, b = _as_array(a, "a") != 0, _as_array(b, "b") != 0
    _same_shape(a, b, "a", "b")
    if smoothing < 0:
        raise MetricsError(f"smoothing must be >= 0, got {smoothing}.")
    size = np.count_nonzero(b)
    if size + smoothing == 0:
        _warn_empty("Inclusivity: mask b is empty")
        return 0.0
    return np.count_nonzero(a & b) / (size + smoothing)


def binarise_relevance(relevance: Any, threshold: float = 0.5) -> np.ndarray:
    """Paper binarisation of one relevance channel: ``|R| > threshold * max|R|``."""
    relevance = _as_array(relevance, "relevance")
    return np.abs(relevance) > threshold * _abs_max(relevance)


def binarise_input(image: Any, threshold: float = 0.1, brain_mask: Any = None) -> np.ndarray:
    """Paper binarisation of one input channel: ``|x| > threshold * max|x|``, AND ``brain_mask`` when given."""
    image = _as_array(image, "image")
    mask = np.abs(image) > threshold * _abs_max(image)
    if brain_mask is not None:
        brain = _as_array(brain_mask, "brain_mask") != 0
        _same_shape(brain, image, "brain_mask", "image")
        mask &= brain
    return mask


def _kth_largest(values: np.ndarray, k: int) -> float:
    """The k-th largest of a 1-D array (1 <= k <= size), exactly.

    Avoids partitioning the whole array (slow, and very slow with the many ties filters create): a strided sample
    gives a value safely below the k-th largest, only the values above it are kept, and ties at it end the search.
    """
    while True:
        n = values.size
        if k >= n:
            return float(values.min())
        if n <= max(32768, 8 * k):
            return float(np.partition(values, n - k)[n - k])
        sample = values[:: n // 8192]
        m = sample.size
        rank = m - 1 - min(m - 1, int(np.ceil(2.0 * k * m / n)) + 16)
        guess = np.sort(sample)[rank]
        greater = values > guess
        n_greater = int(np.count_nonzero(greater))
        if n_greater < k:
            if n_greater + np.count_nonzero(values == guess) >= k:
                return float(guess)
            return float(np.partition(values, n - k)[n - k])  # unlucky sample: guess above the k-th largest
        if n_greater > n // 2:  # the sample did not narrow the search: finish directly
            return float(np.partition(values, n - k)[n - k])
        values = values[greater]


def _rank_accuracy_flat(values: np.ndarray, inside: np.ndarray, threshold: float | None = None) -> float:
    """Top-|G| accuracy; ``values`` is 1-D, ``inside`` the values at the |G| voxels of G; ``threshold`` the
    |G|-th largest value if already known."""
    k = inside.size
    if k == 0:
        return 0.0
    if threshold is None:
        threshold = _kth_largest(values, k)
    n_above = np.count_nonzero(values > threshold)
    n_ties = np.count_nonzero(values == threshold)
    hits = np.count_nonzero(inside > threshold)
    tied_inside = np.count_nonzero(inside == threshold)
    return float((hits + (k - n_above) * tied_inside / n_ties) / k)


def _pointing_flat(values: np.ndarray, inside: np.ndarray, top: float) -> float:
    if inside.size == 0:
        return 0.0
    return float(np.count_nonzero(inside == top) / np.count_nonzero(values == top))


def _gt_inputs(relevance: Any, ground_truth: Any) -> tuple[np.ndarray, np.ndarray]:
    relevance = _as_array(relevance, "relevance")
    truth = _as_array(ground_truth, "ground_truth") != 0
    _same_shape(relevance, truth, "relevance", "ground_truth")
    if not truth.any():
        _warn_empty("Ground-truth mask is empty")
    if not relevance.any():
        _warn_empty("Relevance map is all zero")
    return relevance.ravel(), np.flatnonzero(truth)


def relevance_mass_accuracy(relevance: Any, ground_truth: Any) -> float:
    """``sum(R+ inside G) / sum(R+)``: the share of positive relevance that falls on the lesion."""
    values, index = _gt_inputs(relevance, ground_truth)
    positive = float(np.maximum(values, 0).sum())
    return _ratio(np.maximum(values[index], 0).sum(), positive) if positive > 0 else 0.0


def relevance_rank_accuracy(relevance: Any, ground_truth: Any) -> float:
    """``|top-K voxels by R inside G| / K`` with ``K = |G|`` (ties shared out by expectation)."""
    values, index = _gt_inputs(relevance, ground_truth)
    if not values.any():
        return 0.0
    return _rank_accuracy_flat(values, values[index])


def pointing_game(relevance: Any, ground_truth: Any) -> float:
    """1.0 if the voxel of largest R lies in G, else 0.0; with tied maxima the share of them inside G."""
    values, index = _gt_inputs(relevance, ground_truth)
    if not values.any():
        return 0.0
    return _pointing_flat(values, values[index], float(values.max()))


def conservation(input_relevance: Any, output_relevance: Any) -> float:
    """``sum R_input / sum R_output`` (1.0 means LRP conserved relevance); arrays or their sums."""
    total_in = float(_as_array(input_relevance, "input_relevance").sum(dtype=np.float64))
    total_out = float(_as_array(output_relevance, "output_relevance").sum(dtype=np.float64))
    if total_out == 0:
        _warn_empty("Output relevance sums to zero")
        return 0.0
    return total_in / total_out


def modality_shares(relevance: Any, channel_axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``sum R_c / sum R`` and ``sum |R_c| / sum |R|`` (each 0.0 when its denominator is 0)."""
    relevance = np.moveaxis(_as_array(relevance, "relevance"), channel_axis, 0)
    flat = relevance.reshape(relevance.shape[0], -1)
    signed = flat.sum(axis=1, dtype=np.float64)
    absolute = np.abs(flat).sum(axis=1, dtype=np.float64)
    return _shares(signed, absolute, warn=True)


def _shares(signed: np.ndarray, absolute: np.ndarray, warn: bool) -> tuple[np.ndarray, np.ndarray]:
    total, total_abs = float(signed.sum()), float(absolute.sum())
    if warn and (total == 0 or total_abs == 0):
        _warn_empty("Relevance sums to zero over all channels")
    share = signed / total if total != 0 else np.zeros_like(signed)
    abs_share = absolute / total_abs if total_abs != 0 else np.zeros_like(absolute)
    return share, abs_share


def mu(filtered: Any) -> float:
    """The paper's mu for one channel: ``mean(F) / max|F|`` of the filtered map (0.0 for an all-zero map)."""
    filtered = _as_array(filtered, "filtered")
    peak = _abs_max(filtered)
    if peak == 0:
        _warn_empty("Filtered map is all zero")
        return 0.0
    return float(filtered.mean(dtype=np.float64)) / peak


# ----------------------------------------------------------------------------------------------------------------
# Everything at once


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
    images = _as_array(images, "images")
    if images.ndim != 4:
        raise MetricsError(f"images must be (channels, D, H, W), got shape {images.shape}.")
    if not 0.0 <= input_threshold < 1.0:
        raise MetricsError(f"input_threshold must lie in [0, 1), got {input_threshold}.")
    brain = None
    if brain_mask is not None:
        brain = _as_array(brain_mask, "brain_mask") != 0
        _same_shape(brain, images[0], "brain_mask", "one image channel")
    masks = np.empty(images.shape, dtype=bool)
    for c in range(images.shape[0]):
        masks[c] = binarise_input(images[c], input_threshold, brain)
    truth, index = None, None
    if ground_truth is not None:
        truth = _as_array(ground_truth, "ground_truth") != 0
        _same_shape(truth, images[0], "ground_truth", "one image channel")
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


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def score_explanation(
    relevance: Any,
    images: Any,
    ground_truth: Any = None,
    *,
    filt: AmplitudeFilter | str | None = None,
    normalization: Normalization | str = Normalization.PER_CHANNEL,
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
        if filt is not None or Normalization(normalization) is not Normalization.PER_CHANNEL:
            raise MetricsError("relevance is already a FilteredMap: leave filt and normalization unset.")
        filtered = relevance
    elif isinstance(relevance, NormalisedMap):
        filtered = relevance.filtered(filt)
    else:
        relevance = _as_array(relevance, "relevance")
        if relevance.ndim != 4:
            raise MetricsError(
                f"relevance must be (channels, D, H, W), got shape {relevance.shape}; for a batch pass relevance[0]."
            )
        filtered = filter_map(relevance, filt, normalization, channel_axis=0)
    values = np.moveaxis(_as_array(filtered.normalised, "filtered relevance"), filtered.channel_axis, 0)
    magnitudes = np.moveaxis(_as_array(filtered.magnitude, "filtered magnitude"), filtered.channel_axis, 0)
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
        signed_sums[c] = float(v.sum())
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
            "input_inclusivity": _ratio(n_both, n_input + smoothing),
            "input_precision": _ratio(n_both, n_lrp + smoothing),
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
                gt_inclusivity=_ratio(n_lrp_gt, gt_voxels + smoothing),
                gt_precision=_ratio(n_lrp_gt, n_lrp + smoothing),
                mass_accuracy=_ratio(np.maximum(inside, 0.0).sum(), positive) if positive > 0 else 0.0,
                rank_accuracy=_rank_accuracy_flat(v, inside, known) if peak > 0 else 0.0,
                pointing_game=_pointing_flat(v, inside, float(v.max())) if peak > 0 else 0.0,
            )
        else:
            row.update(gt_inclusivity=None, gt_precision=None, mass_accuracy=None, rank_accuracy=None,
                       pointing_game=None)
        rows.append(row)

    scale = filtered.scale.astype(np.float64)
    share, abs_share = _shares(signed_sums * scale, abs_sums * scale, warn=False)
    if float(np.sum(abs_sums * scale)) == 0:
        empty.append("filtered relevance is all zero in every channel")
    per_channel = []
    for c, row in enumerate(rows):
        row.update(share=float(share[c]), abs_share=float(abs_share[c]))
        per_channel.append(ModalityScores(**row))

    total_mass = total_rank = total_pointing = None
    if has_gt:
        summed = np.einsum("c,cn->n", scale.astype(flat.dtype), flat)
        inside = summed[index]
        top = float(summed.max())
        any_relevance = bool(top != 0 or summed.min() != 0)
        positive = float(np.maximum(summed, 0.0, out=buffer).sum())
        total_mass = _ratio(np.maximum(inside, 0.0).sum(), positive) if positive > 0 else 0.0
        total_rank = _rank_accuracy_flat(summed, inside) if any_relevance else 0.0
        total_pointing = _pointing_flat(summed, inside, top) if any_relevance else 0.0

    conservation_value = None
    if output_relevance_sum is not None:
        if output_relevance_sum == 0:
            empty.append("output relevance sums to zero")
            conservation_value = 0.0
        else:
            conservation_value = float(np.sum(filtered.input_sum)) / float(output_relevance_sum)

    total = ModalityScores(
        modality="all",
        channel_max=float(np.max(filtered.channel_max)) if channels else 0.0,
        removed_fraction=float(filtered.removed_fraction_total),
        lrp_voxels=sum(r.lrp_voxels for r in per_channel),
        input_voxels=sum(r.input_voxels for r in per_channel),
        input_inclusivity=_mean([r.input_inclusivity for r in per_channel]) or 0.0,
        input_precision=_mean([r.input_precision for r in per_channel]) or 0.0,
        gt_inclusivity=_mean([r.gt_inclusivity for r in per_channel]),
        gt_precision=_mean([r.gt_precision for r in per_channel]),
        mass_accuracy=total_mass,
        rank_accuracy=total_rank,
        pointing_game=total_pointing,
        share=1.0 if float(np.sum(signed_sums * scale)) != 0 else 0.0,
        abs_share=1.0 if float(np.sum(abs_sums * scale)) != 0 else 0.0,
        mu=_mean([r.mu for r in per_channel]) or 0.0,
    )
    if empty:
        message = "; ".join(dict.fromkeys(empty))
        _warn_empty(message[0].upper() + message[1:])
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
