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
:func:`~LRPSegmentationLib.analysis.scores.score_explanation` computes all of it for a (C, D, H, W) map in one
pass per channel, fast enough to run
on every move of the Slicer filter slider.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

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
    "dice",
]


class MetricsError(ValueError):
    """Arrays that cannot be scored together (shapes, dimensions, values)."""


class EmptyMaskWarning(UserWarning):
    """A score divided by an empty mask or zero relevance and was set to 0.0."""


def warn_empty(what: str) -> None:
    warnings.warn(f"{what}; the scores that divide by it are set to 0.0.", EmptyMaskWarning, stacklevel=3)


def safe_ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / float(denominator) if denominator != 0 else 0.0


def as_array(value: Any, name: str) -> np.ndarray:
    if hasattr(value, "detach"):  # torch tensor, without importing torch here
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise MetricsError(f"{name} must be numeric or boolean, got dtype {array.dtype}.")
    return array


def check_same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
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
    a, b = as_array(a, "a") != 0, as_array(b, "b") != 0
    check_same_shape(a, b, "a", "b")
    if smoothing < 0:
        raise MetricsError(f"smoothing must be >= 0, got {smoothing}.")
    size = np.count_nonzero(b)
    if size + smoothing == 0:
        warn_empty("Inclusivity: mask b is empty")
        return 0.0
    return np.count_nonzero(a & b) / (size + smoothing)


def binarise_relevance(relevance: Any, threshold: float = 0.5) -> np.ndarray:
    """Paper binarisation of one relevance channel: ``|R| > threshold * max|R|``."""
    relevance = as_array(relevance, "relevance")
    return np.abs(relevance) > threshold * _abs_max(relevance)


def binarise_input(image: Any, threshold: float = 0.1, brain_mask: Any = None) -> np.ndarray:
    """Paper binarisation of one input channel: ``|x| > threshold * max|x|``, AND ``brain_mask`` when given."""
    image = as_array(image, "image")
    mask = np.abs(image) > threshold * _abs_max(image)
    if brain_mask is not None:
        brain = as_array(brain_mask, "brain_mask") != 0
        check_same_shape(brain, image, "brain_mask", "image")
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


def rank_accuracy_flat(values: np.ndarray, inside: np.ndarray, threshold: float | None = None) -> float:
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


def pointing_flat(values: np.ndarray, inside: np.ndarray, top: float) -> float:
    if inside.size == 0:
        return 0.0
    return float(np.count_nonzero(inside == top) / np.count_nonzero(values == top))


def _gt_inputs(relevance: Any, ground_truth: Any) -> tuple[np.ndarray, np.ndarray]:
    relevance = as_array(relevance, "relevance")
    truth = as_array(ground_truth, "ground_truth") != 0
    check_same_shape(relevance, truth, "relevance", "ground_truth")
    if not truth.any():
        warn_empty("Ground-truth mask is empty")
    if not relevance.any():
        warn_empty("Relevance map is all zero")
    return relevance.ravel(), np.flatnonzero(truth)


def relevance_mass_accuracy(relevance: Any, ground_truth: Any) -> float:
    """``sum(R+ inside G) / sum(R+)``: the share of positive relevance that falls on the lesion."""
    values, index = _gt_inputs(relevance, ground_truth)
    positive = float(np.maximum(values, 0).sum())
    return safe_ratio(np.maximum(values[index], 0).sum(), positive) if positive > 0 else 0.0


def relevance_rank_accuracy(relevance: Any, ground_truth: Any) -> float:
    """``|top-K voxels by R inside G| / K`` with ``K = |G|`` (ties shared out by expectation)."""
    values, index = _gt_inputs(relevance, ground_truth)
    if not values.any():
        return 0.0
    return rank_accuracy_flat(values, values[index])


def pointing_game(relevance: Any, ground_truth: Any) -> float:
    """1.0 if the voxel of largest R lies in G, else 0.0; with tied maxima the share of them inside G."""
    values, index = _gt_inputs(relevance, ground_truth)
    if not values.any():
        return 0.0
    return pointing_flat(values, values[index], float(values.max()))


def conservation(input_relevance: Any, output_relevance: Any) -> float:
    """``sum R_input / sum R_output`` (1.0 means LRP conserved relevance); arrays or their sums."""
    total_in = float(as_array(input_relevance, "input_relevance").sum(dtype=np.float64))
    total_out = float(as_array(output_relevance, "output_relevance").sum(dtype=np.float64))
    if total_out == 0:
        warn_empty("Output relevance sums to zero")
        return 0.0
    return total_in / total_out


def modality_shares(relevance: Any, channel_axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``sum R_c / sum R`` and ``sum |R_c| / sum |R|`` (each 0.0 when its denominator is 0)."""
    relevance = np.moveaxis(as_array(relevance, "relevance"), channel_axis, 0)
    flat = relevance.reshape(relevance.shape[0], -1)
    signed = flat.sum(axis=1, dtype=np.float64)
    absolute = np.abs(flat).sum(axis=1, dtype=np.float64)
    return shares_from_sums(signed, absolute, warn=True)


def shares_from_sums(signed: np.ndarray, absolute: np.ndarray, warn: bool) -> tuple[np.ndarray, np.ndarray]:
    total, total_abs = float(signed.sum()), float(absolute.sum())
    if warn and (total == 0 or total_abs == 0):
        warn_empty("Relevance sums to zero over all channels")
    share = signed / total if total != 0 else np.zeros_like(signed)
    abs_share = absolute / total_abs if total_abs != 0 else np.zeros_like(absolute)
    return share, abs_share


def mu(filtered: Any) -> float:
    """The paper's mu for one channel: ``mean(F) / max|F|`` of the filtered map (0.0 for an all-zero map)."""
    filtered = as_array(filtered, "filtered")
    peak = _abs_max(filtered)
    if peak == 0:
        warn_empty("Filtered map is all zero")
        return 0.0
    return float(filtered.mean(dtype=np.float64)) / peak


def dice(mask: Any, reference: Any) -> float:
    """Hard Dice ``2|A and B| / (|A| + |B|)`` of two binary masks (non-zero = inside); two empty masks agree (1.0)."""
    a, b = np.asarray(mask) != 0, np.asarray(reference) != 0
    check_same_shape(a, b, "mask", "reference")
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total
