"""Amplitude filters on normalised relevance: the paper's pass and clamp filters (its Figure 2 green boxes).

A filter sees relevance divided by its largest magnitude, so values lie in [-1, 1], and acts on the magnitude
while keeping the sign:

- pass ``P[a1, a2]`` keeps values with ``a1 <= |r| <= a2`` and zeroes the rest (both ends inclusive);
- clamp ``C[a1, a2]`` clips magnitudes into ``[a1, a2]``: ``|r| > a2 -> sign(r) * a2`` and ``|r| < a1 ->
  sign(r) * a1``. Zeros have no sign; as in the paper's code they become ``+a1`` (so with ``a1 > 0`` every
  zero turns into a small positive value, which the paper calls unstable). A normalisation group that is
  entirely zero (max |R| = 0) is left unchanged instead, because it has no scale to normalise by.

A single ``alpha`` means ``[0, alpha]`` (the paper's convention). The same code runs on numpy arrays (the live
Slicer slider, float32 (6, 19, 192, 192)) and on torch tensors of any device (the taps inside the LRP chain):
only operations both libraries share are used, through the tiny :class:`_Ops` shim.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from LRPSegmentationLib.options import FilterKind, RelevanceNormalization, choose

__all__ = [
    "AmplitudeFilter",
    "FilterError",
    "NormalisedMap",
    "FilteredMap",
    "normalise_map",
    "NO_FILTER",
    "PAPER_PASS_GRID",
    "PAPER_CLAMP_GRID",
    "paper_filters",
    "filter_map",
]


class FilterError(ValueError):
    """A filter specification or a relevance array that cannot be filtered."""


PAPER_PASS_GRID: tuple[tuple[float, float], ...] = (
    (0.0, 0.05), (0.0, 0.1), (0.0, 0.2), (0.0, 0.4), (0.0, 0.6),
    (0.05, 1.0), (0.1, 1.0), (0.2, 1.0), (0.4, 1.0), (0.6, 1.0),
)
"""Pass bands swept in the paper (Figures 3 and 5)."""

PAPER_CLAMP_GRID: tuple[tuple[float, float], ...] = ((0.0, 0.05), (0.0, 0.1), (0.0, 0.2), (0.0, 0.4), (0.0, 0.6))
"""Clamp bands swept in the paper (Figure 3, Figure annex 2)."""

_NUMBER = r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
_SPEC = re.compile(rf"^\s*(none|pass|clamp)\s*:?\s*(?:\[?\s*{_NUMBER}\s*(?:[,\s]\s*{_NUMBER})?\s*\]?)?\s*$", re.I)


@dataclass(frozen=True)
class AmplitudeFilter:
    """A pass or clamp filter on the band ``[low, high]`` of normalised magnitudes (``0 <= low <= high <= 1``).

    Call it on normalised relevance (values in [-1, 1], numpy or torch) to get the filtered values; the input is
    never modified. ``kind`` may also be given as its string value ("pass", "clamp", "none").
    """

    kind: FilterKind = FilterKind.NONE
    low: float = 0.0
    high: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", choose(FilterKind, self.kind, "filter kind", FilterError))
        low, high = float(self.low), float(self.high)
        if not (math.isfinite(low) and math.isfinite(high) and 0.0 <= low <= high <= 1.0):
            raise FilterError(
                f"Filter band [{self.low}, {self.high}] is invalid: the band is on normalised magnitudes, so it needs "
                "0 <= low <= high <= 1 (a single alpha means [0, alpha])."
            )
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    @classmethod
    def pass_band(cls, low: float, high: float | None = None) -> AmplitudeFilter:
        """Pass filter ``P[low, high]``; ``pass_band(alpha)`` is the paper's ``P_alpha = P[0, alpha]``."""
        return cls(FilterKind.PASS, *((0.0, low) if high is None else (low, high)))

    @classmethod
    def clamp_band(cls, low: float, high: float | None = None) -> AmplitudeFilter:
        """Clamp filter ``C[low, high]``; ``clamp_band(alpha)`` is the paper's ``C_alpha = C[0, alpha]``."""
        return cls(FilterKind.CLAMP, *((0.0, low) if high is None else (low, high)))

    @classmethod
    def parse(cls, spec: str | AmplitudeFilter | None) -> AmplitudeFilter:
        """Read "none", "pass:0.2", "pass:0.1,1", "clamp [0.05, 1]" or a label such as "pass[0,0.2]"."""
        if spec is None:
            return NO_FILTER
        if isinstance(spec, AmplitudeFilter):
            return spec
        match = _SPEC.match(str(spec))
        if match is None:
            raise FilterError(
                f"Cannot read filter {spec!r}: write 'none', 'pass:ALPHA', 'pass:LOW,HIGH', 'clamp:ALPHA' or "
                "'clamp:LOW,HIGH' with numbers in [0, 1]."
            )
        kind = FilterKind(match.group(1).lower())
        if kind is FilterKind.NONE:
            return NO_FILTER
        if match.group(2) is None:
            raise FilterError(f"Filter {spec!r} needs a band: e.g. '{kind.value}:0.2' or '{kind.value}:0.1,1'.")
        try:
            numbers = [float(g) for g in match.group(2, 3) if g is not None]
        except ValueError:
            raise FilterError(f"Filter {spec!r} has a band that is not numeric.") from None
        return cls(kind, *((0.0, numbers[0]) if len(numbers) == 1 else numbers))

    @property
    def label(self) -> str:
        """Short stable name for tables and file names, e.g. ``pass[0,0.2]`` or ``none``."""
        if self.kind is FilterKind.NONE:
            return "none"
        return f"{self.kind.value}[{self.low:g},{self.high:g}]"

    def describe(self) -> dict[str, Any]:
        """JSON-ready description (for provenance)."""
        return {"kind": self.kind.value, "low": self.low, "high": self.high, "label": self.label}

    def __call__(self, normalised: Any) -> Any:
        """Filtered copy of normalised relevance (numpy array or torch tensor; same type, dtype and device)."""
        ops = _ops(normalised)
        if self.kind is FilterKind.NONE:
            return ops.copy(normalised)
        return _band(normalised, abs(normalised), self, ops, need_magnitude=False)[0]


NO_FILTER = AmplitudeFilter(FilterKind.NONE)
"""The identity filter."""


def paper_filters() -> tuple[AmplitudeFilter, ...]:
    """The paper's full sweep: every pass band, then every clamp band."""
    return tuple(AmplitudeFilter(FilterKind.PASS, lo, hi) for lo, hi in PAPER_PASS_GRID) + tuple(
        AmplitudeFilter(FilterKind.CLAMP, lo, hi) for lo, hi in PAPER_CLAMP_GRID
    )


class _Ops:
    """The few operations numpy and torch spell differently (everything else is shared syntax).

    The torch flavour imports torch only when a tensor arrives, so this module (and the live slider over it)
    imports without torch.
    """

    def __init__(self, is_torch: bool) -> None:
        self.is_torch = is_torch

    def copy(self, x: Any) -> Any:
        return x.clone() if self.is_torch else x.copy()

    def amax(self, x: Any, axes: tuple[int, ...]) -> Any:
        return x.amax(dim=axes) if self.is_torch else x.max(axis=axes)

    def amin(self, x: Any, axes: tuple[int, ...]) -> Any:
        return x.amin(dim=axes) if self.is_torch else x.min(axis=axes)

    def sum(self, x: Any, axes: tuple[int, ...]) -> np.ndarray:
        """Per-channel sums as float64 numpy (accumulated in float64 for numpy, in the tensor's dtype for torch)."""
        total = x.sum(dim=axes) if self.is_torch else x.sum(axis=axes, dtype=np.float64)
        return self.to_numpy(total)

    def signed(self, magnitude: Any, like: Any) -> Any:
        """``magnitude`` with the sign of ``like``; zeros of either sign count as positive."""
        if self.is_torch:
            return magnitude.copysign(like + 0.0)  # -0.0 + 0.0 == +0.0
        out = like + like.dtype.type(0.0)
        return np.copysign(magnitude, out, out=out)

    def per_channel(self, values: np.ndarray, like: Any) -> Any:
        """A (C,) numpy vector shaped (C, 1, 1, ...) to broadcast against channel-first ``like``."""
        shaped = values.reshape((-1,) + (1,) * (like.ndim - 1))
        if self.is_torch:
            return like.new_tensor(shaped)
        return shaped.astype(like.dtype, copy=False)

    def index(self, mask: np.ndarray, like: Any) -> Any:
        return like.new_tensor(mask, dtype=bool) if self.is_torch else mask

    def to_numpy(self, x: Any) -> np.ndarray:
        return x.detach().cpu().double().numpy() if self.is_torch else np.asarray(x, dtype=np.float64)

    def moveaxis(self, x: Any, source: int, dest: int) -> Any:
        return x.movedim(source, dest) if self.is_torch else np.moveaxis(x, source, dest)


_NUMPY_OPS = _Ops(is_torch=False)
_TORCH_OPS = _Ops(is_torch=True)


def _ops(x: Any) -> _Ops:
    if isinstance(x, np.ndarray):
        return _NUMPY_OPS
    torch = sys.modules.get("torch")  # a tensor can only exist once torch is imported: never import it here
    if torch is not None and isinstance(x, torch.Tensor):
        return _TORCH_OPS
    raise FilterError(f"Relevance must be a numpy array or a torch tensor, got {type(x).__name__}.")


def _band(
    normalised: Any,
    magnitude: Any,
    filt: AmplitudeFilter,
    ops: _Ops,
    need_magnitude: bool = True,
    out: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[Any, Any]:
    """The filter itself: ``(F, |F|)`` from normalised values and their magnitudes (inputs are not modified).

    Both results are new arrays (or ``out``, two numpy buffers to write into), except for the identity filter,
    which returns its inputs. ``|F|`` is None when ``need_magnitude`` is False.
    """
    if filt.kind is FilterKind.NONE:
        return normalised, magnitude
    values_out, magnitude_out = out if out is not None else (None, None)
    if filt.kind is FilterKind.PASS:
        keep = magnitude <= filt.high
        if filt.low > 0.0:
            keep &= magnitude >= filt.low
        if out is not None:
            return np.multiply(normalised, keep, out=values_out), np.multiply(magnitude, keep, out=magnitude_out)
        return normalised * keep, (magnitude * keep if need_magnitude else None)
    if filt.low == 0.0:  # clamp [0, a2]: a plain symmetric clip keeps signs and zeros
        if out is not None:
            return (np.clip(normalised, -filt.high, filt.high, out=values_out),
                    np.clip(magnitude, 0.0, filt.high, out=magnitude_out))
        return normalised.clip(-filt.high, filt.high), (magnitude.clip(0.0, filt.high) if need_magnitude else None)
    # clamp [a1, a2]: clip magnitudes, restore signs; zeros of either sign become +a1 (as in the paper's code)
    if out is not None:
        clipped = np.clip(magnitude, filt.low, filt.high, out=magnitude_out)
        np.add(normalised, normalised.dtype.type(0.0), out=values_out)  # -0.0 -> +0.0
        return np.copysign(clipped, values_out, out=values_out), clipped
    clipped = magnitude.clip(filt.low, filt.high)
    return ops.signed(clipped, normalised), clipped


def _as_float(relevance: Any, what: str) -> Any:
    ops = _ops(relevance)
    if ops.is_torch:
        return relevance if relevance.is_floating_point() else relevance.float()
    if relevance.dtype.kind == "f":
        return relevance
    if relevance.dtype.kind in "iub":
        return relevance.astype(np.float32)
    raise FilterError(f"{what} must hold real numbers, got dtype {relevance.dtype}.")


def _moved_back(x: Any, channel_axis: int) -> Any:
    return _ops(x).moveaxis(x, 0, channel_axis) if channel_axis else x


@dataclass(frozen=True, eq=False)
class FilteredMap:
    """A final relevance map after normalisation and filtering, with the numbers needed to undo or judge it.

    ``normalised`` is the filtered map divided by ``scale`` (values in [-1, 1]; same array type and dtype as the
    input, channel axis where it was); ``magnitude`` is ``|normalised|``. Treat both as read-only (with the
    identity filter they are the normalised map's own arrays). ``channel_max`` is max |R_c| of the unfiltered map
    per channel; ``scale`` the divisor used per channel (``channel_max``, or the map's max |R| for every channel
    with global normalisation; 1 where it was 0). ``input_sum`` is sum R_c of the unfiltered map.

    ``removed_fraction[c] = 1 - sum|F_c| * scale_c / sum|R_c|``: the share of absolute relevance the filter took
    away (0 for no filter and for an all-zero channel; negative when a clamp with low > 0 added relevance by
    lifting small values to low). ``removed_fraction_total`` is the same over all channels together.
    ``filtered_abs_sum`` is sum |F_c| of ``normalised`` per channel; ``source`` the map it was filtered from.
    """

    normalised: Any
    magnitude: Any = field(repr=False)
    scale: np.ndarray
    channel_max: np.ndarray
    input_sum: np.ndarray
    filtered_abs_sum: np.ndarray
    removed_fraction: np.ndarray
    removed_fraction_total: float
    filter: AmplitudeFilter
    normalization: RelevanceNormalization
    channel_axis: int = 0
    source: NormalisedMap | None = field(default=None, repr=False)

    @property
    def relevance(self) -> Any:
        """The filtered map with its amplitude restored (``normalised * scale``), a new array."""
        ops = _ops(self.normalised)
        values = ops.moveaxis(self.normalised, self.channel_axis, 0)
        return _moved_back(values * ops.per_channel(self.scale, values), self.channel_axis)

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary (no arrays)."""
        return {
            "filter": self.filter.describe(),
            "normalization": self.normalization.value,
            "channel_max": [float(v) for v in self.channel_max],
            "removed_fraction": [float(v) for v in self.removed_fraction],
            "removed_fraction_total": float(self.removed_fraction_total),
        }


@dataclass(frozen=True, eq=False)
class NormalisedMap:
    """A final map divided by its max magnitude (per channel or global): the cache the live filter slider re-filters.

    ``normalised`` and ``magnitude`` (= |normalised|) are channel-first and read-only for numpy input. Build it
    with :func:`normalise_map`; :meth:`filtered` applies one filter without touching the cache.
    """

    normalised: Any
    magnitude: Any = field(repr=False)
    scale: np.ndarray
    channel_max: np.ndarray
    input_sum: np.ndarray
    input_abs_sum: np.ndarray
    zero_groups: np.ndarray
    normalization: RelevanceNormalization
    channel_axis: int = 0
    sorted_values: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def from_compact(cls, values: np.ndarray, peak: np.ndarray,
                     normalization: RelevanceNormalization = RelevanceNormalization.PER_CHANNEL,
                     sums: tuple[np.ndarray, np.ndarray] | None = None) -> NormalisedMap:
        """The map of (C, ...) ``values`` stored divided by their per-channel ``peak`` (see :func:`compact_map`):
        what :func:`normalise_map` gives for ``values * peak``, to float rounding. Per channel the stored values are
        used as they are (float16 stays float16: no conversion pass); ``sums`` (:func:`compact_sums`) saves the two
        passes that sum them."""
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
        return cls(normalised=normalised, magnitude=magnitude, scale=scale, channel_max=peak,
                   input_sum=np.asarray(signed, dtype=np.float64) * scale,
                   input_abs_sum=np.asarray(absolute, dtype=np.float64) * scale,
                   zero_groups=zero, normalization=normalization)

    def _buffers(self, reuse: FilteredMap | None) -> tuple[np.ndarray, np.ndarray] | None:
        if reuse is None or reuse.source is not self or _ops(self.normalised).is_torch:
            return None
        values = np.moveaxis(reuse.normalised, reuse.channel_axis, 0)
        magnitude = np.moveaxis(reuse.magnitude, reuse.channel_axis, 0)
        if values is self.normalised or magnitude is self.magnitude or values.base is self.normalised or not (
            values.flags.writeable and magnitude.flags.writeable
        ):
            return None  # an identity-filter result shares the cache's own (read-only) arrays
        return values, magnitude

    def kth_largest(self, channel: int, k: int, filt: AmplitudeFilter) -> float | None:
        """The k-th largest value (1 <= k <= voxels) of channel ``channel`` after ``filt``, from ``sorted_values``.

        O(log n) instead of a selection over the whole filtered channel; None when the map was not presorted.
        """
        if self.sorted_values is None:
            return None
        s = self.sorted_values[channel]
        n = s.size
        if not 1 <= k <= n:
            raise FilterError(f"k = {k} is outside 1..{n}.")
        if filt.kind is FilterKind.CLAMP and filt.low > 0.0 and self.zero_groups[channel]:
            return 0.0  # an all-zero channel stays zero
        if filt.kind is not FilterKind.PASS:
            # the identity and the clamp are monotone non-decreasing maps: they keep the order of the values
            value = s[n - k : n - k + 1]
            return float(_band(value, abs(value), filt, _NUMPY_OPS, need_magnitude=False)[0][0])
        # pass: the filtered values are the kept positives, zeros (everything dropped), and the kept negatives
        low, high, zero = s.dtype.type(filt.low), s.dtype.type(filt.high), s.dtype.type(0.0)
        pos_lo = max(int(np.searchsorted(s, low, "left")), int(np.searchsorted(s, zero, "right")))
        pos_hi = int(np.searchsorted(s, high, "right"))
        neg_lo = int(np.searchsorted(s, -high, "left"))
        neg_hi = min(int(np.searchsorted(s, -low, "right")), int(np.searchsorted(s, zero, "left")))
        n_pos, n_neg = max(0, pos_hi - pos_lo), max(0, neg_hi - neg_lo)
        if k <= n_pos:
            return float(s[pos_hi - k])
        if k <= n - n_neg:
            return 0.0
        return float(s[neg_hi - (k - (n - n_neg))])

    def filtered(self, filt: AmplitudeFilter | str | None = None, reuse: FilteredMap | None = None) -> FilteredMap:
        """Apply ``filt`` to the normalised map and account for the relevance it removed.

        ``reuse``: an earlier result of this map whose arrays may be overwritten (numpy only; it becomes invalid).
        This saves allocating two volumes per call, which matters on every move of the live slider.
        """
        filt = AmplitudeFilter.parse(filt)
        ops = _ops(self.normalised)
        values, magnitude = _band(self.normalised, self.magnitude, filt, ops, out=self._buffers(reuse))
        if filt.kind is FilterKind.CLAMP and filt.low > 0.0 and self.zero_groups.any():
            index = ops.index(self.zero_groups, values)
            values[index] = 0.0  # a group without relevance has no scale to normalise by: it stays zero
            magnitude[index] = 0.0
        if filt.kind is FilterKind.NONE:
            abs_sum = self.input_abs_sum / self.scale
        else:
            abs_sum = ops.sum(magnitude, tuple(range(1, magnitude.ndim)))
        removed, removed_total = removed_fractions(abs_sum * self.scale, self.input_abs_sum, filt)
        return FilteredMap(
            normalised=_moved_back(values, self.channel_axis),
            magnitude=_moved_back(magnitude, self.channel_axis),
            scale=self.scale,
            channel_max=self.channel_max,
            input_sum=self.input_sum,
            filtered_abs_sum=abs_sum,
            removed_fraction=removed,
            removed_fraction_total=removed_total,
            filter=filt,
            normalization=self.normalization,
            channel_axis=self.channel_axis,
            source=self,
        )


def removed_fractions(kept: np.ndarray, input_abs_sum: np.ndarray,
                      filt: AmplitudeFilter) -> tuple[np.ndarray, float]:
    """Per channel and in total, the share of absolute relevance a filter took away: ``1 - kept / input`` (0 for
    the identity and for a channel without relevance; negative when a clamp lifted small values)."""
    if filt.kind is FilterKind.NONE:
        return np.zeros_like(input_abs_sum, dtype=np.float64), 0.0
    safe = np.where(input_abs_sum > 0, input_abs_sum, 1.0)
    removed = np.where(input_abs_sum > 0, 1.0 - kept / safe, 0.0)
    total_in = float(input_abs_sum.sum())
    return removed, (1.0 - float(kept.sum()) / total_in if total_in > 0 else 0.0)


def normalise_map(
    relevance: Any,
    normalization: RelevanceNormalization | str = RelevanceNormalization.PER_CHANNEL,
    channel_axis: int = 0,
    presort: bool = False,
) -> NormalisedMap:
    """Divide a final map by max |R_c| per channel (or by max |R| globally), keeping what filtering needs.

    ``relevance`` (numpy or torch, with a channel axis) is not modified. A channel (or, globally, a map) that is
    entirely zero stays zero. NaN or infinite relevance raises FilterError. ``presort`` also keeps every channel's
    values sorted (a one-off sort, about 20 ms per 19x192x192 channel) so that rank scores of every later filter
    need no selection over the volume: use it for a map that the live slider will re-filter many times.
    """
    normalization = choose(RelevanceNormalization, normalization, "normalization", FilterError)
    ops = _ops(relevance)
    relevance = _as_float(relevance, "relevance")
    if relevance.ndim < 2:
        raise FilterError(f"relevance needs a channel axis and spatial axes, got shape {tuple(relevance.shape)}.")
    if not -relevance.ndim <= channel_axis < relevance.ndim:
        raise FilterError(
            f"channel_axis {channel_axis} is out of range for relevance of shape {tuple(relevance.shape)}."
        )
    channel_axis %= relevance.ndim
    r = ops.moveaxis(relevance, channel_axis, 0)
    axes = tuple(range(1, r.ndim))

    rmax, rmin = ops.to_numpy(ops.amax(r, axes)), ops.to_numpy(ops.amin(r, axes))
    if not (np.all(np.isfinite(rmax)) and np.all(np.isfinite(rmin))):
        raise FilterError("relevance contains NaN or infinite values; check the LRP run (e.g. epsilon too small).")
    channel_max = np.maximum(rmax, -rmin)
    if normalization is RelevanceNormalization.GLOBAL:
        scale = np.full_like(channel_max, channel_max.max())
    else:
        scale = channel_max.copy()
    zero = scale == 0.0
    scale[zero] = 1.0
    normalised = r / ops.per_channel(scale, r)  # a division, so the largest magnitude is exactly 1
    magnitude = abs(normalised)
    if not ops.is_torch:
        normalised.setflags(write=False)
        magnitude.setflags(write=False)
    sorted_values = None
    if presort:
        plain = normalised.detach().cpu().numpy() if ops.is_torch else normalised  # same dtype as the map
        sorted_values = np.sort(plain.reshape(plain.shape[0], -1), axis=1)
        sorted_values.setflags(write=False)
    return NormalisedMap(
        normalised=normalised,
        magnitude=magnitude,
        scale=scale,
        channel_max=channel_max,
        input_sum=ops.sum(normalised, axes) * scale,
        input_abs_sum=ops.sum(magnitude, axes) * scale,
        zero_groups=zero,
        normalization=normalization,
        channel_axis=channel_axis,
        sorted_values=sorted_values,
    )


def compact_sums(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel sums of ``values`` and of ``|values|`` (float64), for :meth:`NormalisedMap.from_compact`."""
    axes = tuple(range(1, np.ndim(values)))
    return (np.sum(values, axis=axes, dtype=np.float64), np.sum(np.abs(values), axis=axes, dtype=np.float64))


def compact_map(relevance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values / per-channel max |values| as float16, that max as float32) of a channel-first map: half the memory
    of float32, for maps kept to be shown later (:meth:`NormalisedMap.from_compact`)."""
    relevance = np.asarray(relevance, dtype=np.float32)
    peak = np.abs(relevance).reshape(relevance.shape[0], -1).max(axis=1).astype(np.float32)
    safe = np.where(peak > 0, peak, 1.0).astype(np.float32)
    return (relevance / safe[(...,) + (None,) * (relevance.ndim - 1)]).astype(np.float16), peak


def filter_map(
    relevance: Any,
    filt: AmplitudeFilter | str | None = None,
    normalization: RelevanceNormalization | str = RelevanceNormalization.PER_CHANNEL,
    channel_axis: int = 0,
) -> FilteredMap:
    """Normalise a final relevance map (by max |R_c| per channel, or globally), filter it, and report what was removed.

    ``relevance`` is a numpy array or torch tensor with a channel axis (e.g. (C, D, H, W)), or a cached
    :class:`NormalisedMap` (then ``normalization`` and ``channel_axis`` are its own). It is not modified.
    """
    if not isinstance(relevance, NormalisedMap):
        relevance = normalise_map(relevance, normalization, channel_axis)
    return relevance.filtered(filt)
