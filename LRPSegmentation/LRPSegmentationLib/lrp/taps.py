"""Taps: the named places inside the relevance chain where relevance is recorded and, optionally, filtered.

A tap wraps a tensor of the forward pass in an identity autograd function whose backward sees the relevance
arriving there. :func:`default_taps` names the paper's places (its Figure 2 green boxes); :func:`tap_filter`
is the paper's amplitude filter for a whole tensor (the final-map filters on arrays are in
:mod:`LRPSegmentationLib.analysis.filters`).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from LRPSegmentationLib.analysis.filters import AmplitudeFilter, FilterError
from LRPSegmentationLib.lrp.errors import ExplainInputError
from LRPSegmentationLib.options import FilterKind

TapFilter = Callable[[torch.Tensor], torch.Tensor]
"""A filter applied to the whole relevance tensor at a tap; returns a tensor of the same shape."""

INPUT_TAP = "input"
"""The tap on the model input: the relevance the explanation returns."""


@dataclass(frozen=True)
class TapRecord:
    """Relevance at one tap, before and after its filter (equal where no filter was applied).

    Signed sums are NaN at taps that were only filtered, not asked to be recorded (``record_taps``)."""

    name: str
    sum_before: float
    sum_after: float
    abs_before: float
    abs_after: float
    filtered: bool

    @property
    def removed_fraction(self) -> float:
        """Share of the absolute relevance the filter removed (0 without a filter or without relevance)."""
        return 0.0 if self.abs_before == 0 else 1.0 - self.abs_after / self.abs_before




# --------------------------------------------------------------------------------------------
# Tap names
# --------------------------------------------------------------------------------------------


def input_arg_names(module: nn.Module) -> list[str]:
    try:
        params = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError):
        return []
    names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return names if len(names) >= 2 else []


def available_taps(model: nn.Module) -> list[str]:
    """Every tap name: each submodule's output, ``<module>.<argument>`` for multi-input modules, ``input``."""
    names: list[str] = []
    for name, module in model.named_modules():
        if not name:
            continue
        names.append(name)
        names += [f"{name}.{arg}" for arg in input_arg_names(module)]
    return names + [INPUT_TAP]


def default_taps(model: nn.Module) -> list[str]:
    """The paper's tap places (its Figure 2 green boxes), in backward order, named by the tensor the relevance
    sits on: the head's output (the start relevance after the final activation), each decoder block's output
    (the input of the head or of a transposed conv), each concatenation as a whole (a decoder block's input) and
    its two parts, the deepest encoder's output (the first transposed conv's input), and the input. Not the
    encoders that feed a max-pool (the paper never filters right after a max-pool) nor the transposed convs'
    outputs (the same tensors as the concatenations' up parts: filtering both would filter twice).
    For models without the U-Net layout, just ``input``."""
    taps: list[str] = []
    if isinstance(getattr(model, "head", None), nn.Module):
        taps.append("head")
    decoders, concats, encoders = (getattr(model, group, None) for group in ("decoders", "concats", "encoders"))
    if isinstance(decoders, nn.ModuleList):
        taps += [f"decoders.{k}" for k in range(len(decoders))]
    if isinstance(concats, nn.ModuleList):
        for k in range(len(concats)):
            taps += [f"concats.{k}"] + [f"concats.{k}.{a}" for a in input_arg_names(concats[k])]
    if isinstance(encoders, nn.ModuleList) and len(encoders):
        taps.append(f"encoders.{len(encoders) - 1}")
    return taps + [INPUT_TAP]



class Tap:
    """One tap: applies the filter (if any) and records |relevance| before/after; signed sums only where asked
    (``signed``), since every reduction is one more pass over the tensor."""

    def __init__(self, name: str, filter_fn: TapFilter | None, records: dict[str, TapRecord],
                 signed: bool = True, record: bool = True) -> None:
        self.name, self.filter_fn, self.records, self.signed = name, filter_fn, records, signed
        self.record = record  # False: filter only (no sums: a band grid needs none)

    def apply(self, relevance: torch.Tensor) -> torch.Tensor:
        if not self.record:
            return relevance if self.filter_fn is None else self.filter_fn(relevance).to(relevance.dtype)
        before = float(relevance.sum()) if self.signed else math.nan
        abs_before = float(torch.linalg.vector_norm(relevance, 1))
        out = relevance
        if self.filter_fn is not None:
            out = self.filter_fn(relevance)
            if not isinstance(out, torch.Tensor) or out.shape != relevance.shape:
                raise ExplainInputError(f"The tap filter must return a tensor shaped {tuple(relevance.shape)}.")
            out = out.to(relevance.dtype)
        after = before if out is relevance or not self.signed else float(out.sum())
        abs_after = abs_before if out is relevance else float(torch.linalg.vector_norm(out, 1))
        self.records[self.name] = TapRecord(self.name, before, after, abs_before, abs_after, self.filter_fn is not None)
        return out


class TapFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: torch.Tensor, tap: Tap) -> torch.Tensor:
        ctx.tap = tap
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx, relevance: torch.Tensor):
        return ctx.tap.apply(relevance), None


def tap_filter(filt: AmplitudeFilter | str | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """A filter for inside the LRP chain: normalise by max |R| over the whole tensor, filter, multiply back.

    The amplitude is restored, so only the shape of the relevance changes. An all-zero tensor, and every tensor
    under the identity filter, is returned unchanged (the same object). The input is never modified.
    """
    filt = AmplitudeFilter.parse(filt)

    def apply(relevance: torch.Tensor) -> torch.Tensor:
        if filt.kind is FilterKind.NONE:
            return relevance
        smallest, largest = torch.aminmax(relevance)
        peak = max(-float(smallest), float(largest))
        if not math.isfinite(peak):
            raise FilterError("relevance inside the LRP chain contains NaN or infinite values; cannot filter it.")
        if peak == 0.0:
            return relevance
        # Same as normalising by the peak, filtering and multiplying back, with the band scaled instead: a band
        # test and at most two element-wise passes over the tensor (this runs at every tap of every explanation).
        low, high = filt.low * peak, filt.high * peak
        if filt.kind is FilterKind.PASS:
            if filt.low == 0.0:  # r - hardshrink(r, a2) keeps |r| <= a2 and zeroes the rest: two fused passes
                return relevance - torch.nn.functional.hardshrink(relevance, high)
            magnitude = relevance.abs()
            keep = magnitude <= high
            if filt.low > 0.0:
                keep &= magnitude >= low
            return relevance * keep
        if filt.low == 0.0:
            return relevance.clamp(-high, high)
        signed = relevance + 0.0  # -0.0 -> +0.0: zeros become +a1
        return signed.abs().clamp(low, high).copysign(signed)

    apply.filter = filt  # type: ignore[attr-defined]  # so an engine can record which filter a tap applied
    return apply
