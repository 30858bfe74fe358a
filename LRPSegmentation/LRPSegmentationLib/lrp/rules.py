"""LRP rules as modified gradients: one small class per rule.

A rule turns the relevance at a layer's output into the relevance at its input. The engine
calls :meth:`Rule.forward` once during the model's forward (to compute and keep whatever the
rule needs, e.g. the modified forward ``z``) and :meth:`Rule.backward` once during the single
autograd backward sweep. So a rule that modifies weights costs one extra (modified) forward of
its layer and no forward at all in the backward sweep.

Linear layers (convolutions, transposed convolutions, ``nn.Linear``) get the propagation rules
(epsilon, z+, alpha-beta, gamma, zB). Element-wise layers get :class:`Pass` (``R_in = R_out``),
averaging layers :class:`Norm` (proportional, epsilon-like). Layers without a rule use the plain
gradient (max-pooling: winner-take-all; concatenation, slicing, padding: exact routing).

Notation: ``x`` layer input, ``W`` weights, ``z`` (modified) layer output, ``R`` relevance at the
output, ``G(W, s)`` the gradient of the layer with weights ``W`` w.r.t. its input, applied to ``s``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from LRPSegmentationLib.lrp.convolution import conv3d_input_grad, transposed_conv3d_input_grad

DEFAULT_EPSILON = 1e-9

_KEEPING = [0]
_DENOMINATORS: dict[tuple[int, float], tuple[torch.Tensor, torch.Tensor]] = {}


@contextmanager
def keeping_states() -> Iterator[None]:
    """Backward passes inside keep the rules' forward states, for several backward sweeps over one forward; the
    stabilised denominators of :func:`_share` are computed once for all sweeps. (A plain counter, not a context
    variable: autograd may run a backward on another thread.)"""
    _KEEPING[0] += 1
    try:
        yield
    finally:
        _KEEPING[0] -= 1
        if not _KEEPING[0]:
            _DENOMINATORS.clear()


def states_kept() -> bool:
    return _KEEPING[0] > 0
"""The paper's stabiliser (Table annex 2)."""

LINEAR_TYPES: tuple[type[nn.Module], ...] = (nn.modules.conv._ConvNd, nn.Linear)
"""Layers the propagation rules (epsilon, z+, alpha-beta, gamma, zB) apply to."""


class RuleError(ValueError):
    """A rule was given bad parameters or assigned to a layer it cannot handle."""


def stabilize(z: torch.Tensor, epsilon: float) -> torch.Tensor:
    """``z + epsilon * sign(z)`` with ``sign(+0) = +1``: the denominator never vanishes and keeps its sign.

    Two element-wise passes (copysign, add); this runs once per layer in every explanation."""
    return torch.copysign(z.new_tensor(epsilon), z).add_(z)


def _share(relevance: torch.Tensor, z: torch.Tensor, epsilon: float) -> torch.Tensor:
    """``relevance / stabilize(z)``, a fresh tensor: one temporary (the denominator, divided in place), or while
    :func:`keeping_states` a product with the reciprocal denominator kept for the next sweeps (one pass each)."""
    if not _KEEPING[0]:
        den = stabilize(z, epsilon)
        return torch.div(relevance, den, out=den)
    key = (id(z), epsilon)
    kept = _DENOMINATORS.get(key)
    if kept is None or kept[0] is not z:
        kept = _DENOMINATORS[key] = (z, stabilize(z, epsilon).reciprocal_())
    return relevance * kept[1]


# --------------------------------------------------------------------------------------------
# The linear layer as a pair (forward with given weights, input gradient with given weights).
# --------------------------------------------------------------------------------------------


def layer_forward(module: nn.Module, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The layer's forward with replaced weight and bias (no autograd graph needed by the callers)."""
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        fn = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[weight.ndim - 2]
        return fn(x, weight, bias, module.stride, module.padding, module.output_padding, module.groups, module.dilation)
    if isinstance(module, nn.modules.conv._ConvNd):
        return module._conv_forward(x, weight, bias)
    if isinstance(module, nn.Linear):
        return F.linear(x, weight, bias)
    raise RuleError(f"{type(module).__name__} is not a linear layer (conv, transposed conv, Linear).")


def layer_input_grad(module: nn.Module, x: torch.Tensor, weight: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Gradient of ``layer_forward(module, x, weight, None)`` w.r.t. ``x``, applied to ``grad`` (one transposed op)."""
    if isinstance(module, nn.Linear):
        return grad @ weight
    conv = isinstance(module, nn.modules.conv._ConvNd)
    if conv and module.padding_mode == "zeros" and not isinstance(module.padding, str):
        transposed = isinstance(module, nn.modules.conv._ConvTransposeNd)
        if isinstance(module, nn.Conv3d):
            fast = conv3d_input_grad(grad, x, weight, module.stride, module.padding, module.dilation, module.groups)
            if fast is not None:
                return fast
        if isinstance(module, nn.ConvTranspose3d):
            fast = transposed_conv3d_input_grad(grad, x, weight, module.stride, module.padding, module.dilation,
                                                module.groups)
            if fast is not None:
                return fast
        return torch.ops.aten.convolution_backward(
            grad, x, weight, None, list(module.stride), list(module.padding), list(module.dilation),
            transposed, list(module.output_padding), module.groups, [True, False, False],
        )[0]
    # Rare layouts (string padding, non-zero padding modes): let autograd transpose the forward.
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        (out,) = torch.autograd.grad(layer_forward(module, xr, weight, None), xr, grad)
    return out


def _bias(module: nn.Module) -> torch.Tensor | None:
    return getattr(module, "bias", None)


# --------------------------------------------------------------------------------------------
# Rules
# --------------------------------------------------------------------------------------------


class Rule(ABC):
    """Relevance propagation through one module: state from the forward, relevance in the backward."""

    name: ClassVar[str] = "rule"

    def check(self, module: nn.Module, qualified_name: str) -> None:
        """Raise :class:`RuleError` if this rule cannot handle ``module``."""

    @abstractmethod
    def forward(self, module: nn.Module, x: torch.Tensor, output: torch.Tensor) -> Any:
        """Called in the model's forward (no autograd); returns what :meth:`backward` needs."""

    @abstractmethod
    def backward(self, module: nn.Module, state: Any, relevance: torch.Tensor) -> torch.Tensor:
        """Relevance at the module input from the relevance at its output."""


class _LinearRule(Rule):
    def check(self, module: nn.Module, qualified_name: str) -> None:
        if not isinstance(module, LINEAR_TYPES):
            raise RuleError(
                f"Rule {self.name!r} needs a conv, transposed conv or Linear layer, but layer {qualified_name!r} is "
                f"{type(module).__name__}; assign it another rule."
            )


@dataclass(frozen=True)
class Epsilon(_LinearRule):
    """LRP-epsilon: ``R_in = x * G(W, R / (z + eps sign z))`` with the layer's own output ``z`` (bias included).

    Costs no extra forward: ``z`` is the layer's output.
    """

    epsilon: float = DEFAULT_EPSILON
    name: ClassVar[str] = "epsilon"

    def forward(self, module, x, output):
        return x, output

    def backward(self, module, state, relevance):
        x, z = state
        return layer_input_grad(module, x, module.weight, _share(relevance, z, self.epsilon)).mul_(x)


@dataclass(frozen=True)
class ZPlus(_LinearRule):
    """z+ as in the paper's eq. (1): positive weights, bias dropped, ``R_in = x * G(W+, R / (x W+))``.

    For non-negative inputs (after ReLU, or min-max scaled images) this is the usual z+ / alpha1-beta0.
    With negative inputs (after LeakyReLU) the denominator can approach zero; use
    :class:`AlphaBeta` ``(1, 0)`` for the sign-aware variant (twice the cost).
    """

    epsilon: float = DEFAULT_EPSILON
    name: ClassVar[str] = "zplus"

    def forward(self, module, x, output):
        w = module.weight.clamp(min=0)
        return x, w, layer_forward(module, x, w, None)

    def backward(self, module, state, relevance):
        x, w, z = state
        return layer_input_grad(module, x, w, _share(relevance, z, self.epsilon)).mul_(x)


@dataclass(frozen=True)
class AlphaBeta(_LinearRule):
    """Alpha-beta with sign-aware inputs (as zennit): positive and negative contributions normalised separately.

    ``z+ = x+ W+ + x- W-`` and ``z- = x+ W- + x- W+`` (bias dropped unless ``use_bias``: then ``b+`` joins
    ``z+`` and ``b-`` joins ``z-``); ``R_in = alpha * share(z+) - beta * share(z-)``. ``alpha - beta = 1``.
    """

    alpha: float = 1.0
    beta: float = 0.0
    epsilon: float = DEFAULT_EPSILON
    use_bias: bool = False
    name: ClassVar[str] = "alphabeta"

    def __post_init__(self) -> None:
        if self.alpha < 0 or self.beta < 0 or abs(self.alpha - self.beta - 1.0) > 1e-12:
            raise RuleError(f"AlphaBeta needs alpha, beta >= 0 and alpha - beta = 1, got {self.alpha}, {self.beta}.")

    def forward(self, module, x, output):
        xp, xn = x.clamp(min=0), x.clamp(max=0)
        has_neg = bool((xn != 0).any())
        wp, wn = module.weight.clamp(min=0), module.weight.clamp(max=0)
        b = _bias(module) if self.use_bias else None
        bp = b.clamp(min=0) if b is not None else None
        bn = b.clamp(max=0) if b is not None else None
        zp = layer_forward(module, xp, wp, bp)
        if has_neg:
            zp = zp + layer_forward(module, xn, wn, None)
        zn = None
        if self.beta != 0:
            zn = layer_forward(module, xp, wn, bn)
            if has_neg:
                zn = zn + layer_forward(module, xn, wp, None)
        return xp, xn if has_neg else None, wp, wn, zp, zn

    def backward(self, module, state, relevance):
        xp, xn, wp, wn, zp, zn = state
        sp = _share(relevance, zp, self.epsilon)
        out = xp * layer_input_grad(module, xp, wp, sp)
        if xn is not None:
            out = out + xn * layer_input_grad(module, xn, wn, sp)
        if self.alpha != 1.0:
            out = self.alpha * out
        if zn is not None:
            sn = _share(relevance, zn, self.epsilon)
            neg = xp * layer_input_grad(module, xp, wn, sn)
            if xn is not None:
                neg = neg + xn * layer_input_grad(module, xn, wp, sn)
            out = out - self.beta * neg
        return out


@dataclass(frozen=True)
class Gamma(_LinearRule):
    """Generalised gamma rule (as zennit): favour positive contributions by ``W + gamma W+``.

    Where the layer output is positive, relevance is shared by ``x+ (W + g W+) + x- (W + g W-)``, where it
    is negative by ``x+ (W + g W-) + x- (W + g W+)``. Bias dropped from the shares unless ``use_bias``.
    For non-negative inputs this needs two modified forwards, otherwise four.
    """

    gamma: float = 0.25
    epsilon: float = DEFAULT_EPSILON
    use_bias: bool = False
    name: ClassVar[str] = "gamma"

    def __post_init__(self) -> None:
        if self.gamma < 0:
            raise RuleError(f"Gamma needs gamma >= 0, got {self.gamma}.")

    def forward(self, module, x, output):
        w, g = module.weight, self.gamma
        wp, wn = w + g * w.clamp(min=0), w + g * w.clamp(max=0)
        b = _bias(module) if self.use_bias else None
        bp = b + g * b.clamp(min=0) if b is not None else None
        bn = b + g * b.clamp(max=0) if b is not None else None
        xp, xn = x.clamp(min=0), x.clamp(max=0)
        has_neg = bool((xn != 0).any())
        z_pos = layer_forward(module, xp, wp, bp)
        z_neg = layer_forward(module, xp, wn, bn)
        if has_neg:
            z_pos = z_pos + layer_forward(module, xn, wn, None)
            z_neg = z_neg + layer_forward(module, xn, wp, None)
        return xp, xn if has_neg else None, wp, wn, z_pos, z_neg, output > 0, output < 0

    def backward(self, module, state, relevance):
        xp, xn, wp, wn, z_pos, z_neg, pos, neg = state
        s_pos = relevance * pos / stabilize(z_pos, self.epsilon)
        s_neg = relevance * neg / stabilize(z_neg, self.epsilon)
        out = xp * (layer_input_grad(module, xp, wp, s_pos) + layer_input_grad(module, xp, wn, s_neg))
        if xn is not None:
            out = out + xn * (layer_input_grad(module, xn, wn, s_pos) + layer_input_grad(module, xn, wp, s_neg))
        return out


@dataclass(frozen=True, eq=False)
class ZBox(_LinearRule):
    """Bounded input rule zB: ``z = x W - l W+ - h W-``, ``R_in = x G(W, s) - l G(W+, s) - h G(W-, s)``.

    ``low``/``high`` are per-channel bounds (shape ``(C,)`` or a scalar). ``None`` means "from the data":
    the engine fills in the per-channel (per-modality) minimum and maximum of the explained input.
    The bias cancels out of ``z`` (as in zennit, where it enters all three terms).
    """

    low: torch.Tensor | float | None = None
    high: torch.Tensor | float | None = None
    epsilon: float = DEFAULT_EPSILON
    name: ClassVar[str] = "zbox"

    def __post_init__(self) -> None:
        if (self.low is None) != (self.high is None):
            raise RuleError("ZBox needs both bounds or neither (neither: per-channel bounds from the data).")

    def _bound(self, value: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(value, dtype=x.dtype, device=x.device)
        if t.ndim == 1:
            if t.numel() != x.shape[1]:
                raise RuleError(f"ZBox bounds have {t.numel()} channels, the layer input has {x.shape[1]}.")
            t = t.reshape((1, -1) + (1,) * (x.ndim - 2))
        return t.expand_as(x)

    def forward(self, module, x, output):
        if self.low is None:
            raise RuleError("ZBox without bounds must be bound to data bounds first (the engine does this).")
        low, high = self._bound(self.low, x), self._bound(self.high, x)
        wp, wn = module.weight.clamp(min=0), module.weight.clamp(max=0)
        z = (layer_forward(module, x, module.weight, None) - layer_forward(module, low, wp, None)
             - layer_forward(module, high, wn, None))
        return x, low, high, wp, wn, z

    def backward(self, module, state, relevance):
        x, low, high, wp, wn, z = state
        s = _share(relevance, z, self.epsilon)
        return (x * layer_input_grad(module, x, module.weight, s) - low * layer_input_grad(module, low, wp, s)
                - high * layer_input_grad(module, high, wn, s))


@dataclass(frozen=True)
class Pass(Rule):
    """Identity: ``R_in = R_out``. For element-wise activations and instance normalisation."""

    name: ClassVar[str] = "pass"

    def forward(self, module, x, output):
        if x.shape != output.shape:
            raise RuleError(f"Pass needs an element-wise layer; {type(module).__name__} changes the shape.")
        return None

    def backward(self, module, state, relevance):
        return relevance


@dataclass(frozen=True)
class Norm(Rule):
    """Proportional redistribution through a parameter-free linear layer (average pooling, upsampling):
    ``R_in = x * grad(R / (z + eps sign z))``; epsilon-like, conserving up to ``eps``."""

    epsilon: float = DEFAULT_EPSILON
    name: ClassVar[str] = "norm"

    def forward(self, module, x, output):
        return x, output

    def backward(self, module, state, relevance):
        x, z = state
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(module.forward(xr), xr, _share(relevance, z, self.epsilon))
        return x * grad


@dataclass(frozen=True)
class Gradient(Rule):
    """The plain gradient (no hook): max-pooling (winner-take-all), dropout/identity, reshapes.

    The engine attaches nothing for this rule; its methods are never called.
    """

    name: ClassVar[str] = "gradient"

    def forward(self, module, x, output):  # pragma: no cover - the engine never calls it
        raise NotImplementedError

    def backward(self, module, state, relevance):  # pragma: no cover
        raise NotImplementedError


RULES: dict[str, type[Rule]] = {
    cls.name: cls for cls in (Epsilon, ZPlus, AlphaBeta, Gamma, ZBox, Pass, Norm, Gradient)  # type: ignore[misc]
}
"""Rule classes by their short name."""
