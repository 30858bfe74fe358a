"""Normalisation layers whose statistics come from the input: InstanceNorm, GroupNorm, LayerNorm.

``y = gamma * (x - mean(x)) / std(x) + beta`` is not linear in ``x``. The default rule, :class:`FrozenNorm`, is
the epsilon rule on the layer with its **standard deviation frozen** (treated as a constant, as for LayerNorm in
Ali et al. 2022): the centring ``x - mean(x)`` is then linear and kept, ``beta`` acts as a bias.
``R_in = x * J^T (R / (y + eps sign y))`` with ``J^T s = (gamma s - mean_group(gamma s)) / std``. It conserves
relevance exactly when ``beta = 0`` (``beta`` absorbs its share like any bias) and gives the layer input
relevance in proportion to the input, so the layer before it (usually a conv) sees a relevance consistent with its
own output. What it means for the explanation: a voxel's normalised activation owes its value to the voxel *and*
(through the mean) to every other voxel of its group; that competition is credited. The identity rule
(:class:`~LRPSegmentationLib.lrp.rules.Pass`, ``R_in = R_out``, zennit's choice) ignores the rescaling: the conv
before the norm then divides relevance by outputs up to ``1/std`` times smaller than the normalised values it was
computed from, and relevance explodes with alternating signs through deep InstanceNorm networks (on nnU-Net's
``PlainConvUNet`` the total |R| grows ~10x per layer). Pass stays available by type in a :class:`Composite`.
Norms with running statistics in eval mode are affine: frozen statistics make the rule the epsilon rule of that
affine map (the running mean a bias). BatchNorm after a conv is folded instead (:mod:`.canonize`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from LRPSegmentationLib.lrp.rules import DEFAULT_EPSILON, Rule, RuleError, _share

NORM_TYPES: tuple[type[nn.Module], ...] = (nn.modules.instancenorm._InstanceNorm, nn.GroupNorm, nn.LayerNorm)
"""Input-statistics normalisations: :class:`FrozenNorm` by default."""


def _groups(module: nn.Module, x: torch.Tensor) -> tuple[int, bool]:
    """(number of leading elements per group row, whether the statistics come from the input)."""
    if isinstance(module, nn.modules.instancenorm._InstanceNorm):
        from_input = module.training or not module.track_running_stats or module.running_mean is None
        return x.shape[0] * x.shape[1], from_input
    if isinstance(module, nn.GroupNorm):
        return x.shape[0] * module.num_groups, True
    if isinstance(module, nn.LayerNorm):
        return math.prod(x.shape[: x.ndim - len(module.normalized_shape)]), True
    raise RuleError(f"FrozenNorm needs InstanceNorm, GroupNorm or LayerNorm, got {type(module).__name__}.")


def _gamma(module: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    weight = getattr(module, "weight", None)
    if weight is None:
        return None
    if isinstance(module, nn.LayerNorm):
        return weight
    return weight.reshape((1, -1) + (1,) * (x.ndim - 2))


@dataclass(frozen=True)
class FrozenNorm(Rule):
    """Epsilon rule on a normalisation layer with its standard deviation frozen (module docstring)."""

    epsilon: float = DEFAULT_EPSILON
    name: ClassVar[str] = "frozen-norm"

    def check(self, module: nn.Module, qualified_name: str) -> None:
        if not isinstance(module, NORM_TYPES):
            raise RuleError(
                f"Rule 'frozen-norm' needs a norm layer, but {qualified_name!r} is {type(module).__name__}."
            )

    def forward(self, module, x, output):
        rows, from_input = _groups(module, x)
        if from_input:
            var = x.reshape(rows, -1).var(dim=1, unbiased=False, keepdim=True)
        else:  # eval mode with running statistics: per-channel constants
            ones = [1] * (x.ndim - 2)
            var = module.running_var.reshape(1, -1, *ones).expand(x.shape[0], -1, *ones).reshape(rows, 1)
        inv_std = var.add(module.eps).rsqrt()
        return x, output, inv_std, from_input

    def backward(self, module, state, relevance):
        x, y, inv_std, from_input = state
        s = _share(relevance, y, self.epsilon)  # a fresh tensor: the steps below work in place
        gamma = _gamma(module, x)
        if gamma is not None:
            s.mul_(gamma)
        rows = inv_std.shape[0]
        g = s.reshape(rows, -1)
        if from_input:
            g.sub_(g.mean(dim=1, keepdim=True))
        return g.mul_(inv_std).reshape(x.shape).mul_(x)
