"""LRP for element-wise sums and products in forward code: residual additions, gates, constant scales.

The engine's forward guard calls :func:`relevance_op` for every ``+``, ``-``, ``*`` (and their in-place and
``torch.add``/``torch.sub``/``torch.mul`` forms) on relevance-carrying tensors. Each call becomes its own autograd
node, so relevance is split exactly once per use of the operation (a ``Sum`` module reused for every residual of a
network, as in zennit's issue #236, cannot double it).

Rules:
- **Sum** ``z = a + alpha * b`` (a residual addition): proportional split with a stabiliser,
  ``R_a = a * R / (z + eps sign z)``, ``R_b = alpha * b * R / (z + eps sign z)`` -- the epsilon rule applied to
  the sum (zennit's ``Norm`` rule on its ``Sum`` layer). A summand without relevance path (a constant) absorbs its
  share, like a bias. Subtraction is the sum with ``alpha = -1``. Conserving up to ``eps`` when every summand
  carries relevance.
- **Scale** ``z = c * a`` with a constant ``c`` (no relevance path): ``R_a = R`` (the epsilon rule on a
  one-input linear map is the identity).
- **Gate** ``z = a * g`` where ``g`` is the output of a ``Sigmoid`` module (attention gates such as MONAI's
  ``AttentionBlock``): signal-take-all, ``R_a = R``, ``R_g = 0`` (Arras et al. 2017 for multiplicative gates):
  the gate decides how much passes, the signal is what passes. Any other product of two relevance-carrying
  tensors is refused.
In-place forms (``out += residual``, which reaches torch as ``add_``) are computed out of place: ``x += y`` rebinds
``x`` to the result, which is what the forward code sees. A forward that relies on the in-place change itself
(``x.add_(y)`` as a statement, or an alias of ``x`` read later) computes something else; the engine compares its
forward with the model's once per model version and refuses such models (:func:`check_same_output`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from LRPSegmentationLib.lrp.errors import UnsupportedModelError
from LRPSegmentationLib.lrp.rules import DEFAULT_EPSILON, _share, states_kept

SUM_OPS = frozenset({"add", "__add__", "__radd__", "__iadd__", "add_", "sub", "subtract", "__sub__", "__rsub__",
                     "__isub__", "sub_"})
MUL_OPS = frozenset({"mul", "multiply", "__mul__", "__rmul__", "__imul__", "mul_"})


@dataclass(frozen=True)
class SumRule:
    """Proportional split of a sum's relevance over its summands, stabilised by ``epsilon`` (module docstring)."""

    epsilon: float = DEFAULT_EPSILON
    name = "sum"


def _reduce_to(t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    return t if t.shape == shape else t.sum_to_size(shape)


class _SumFunction(torch.autograd.Function):
    """``a + alpha * b`` forward; proportional relevance split backward."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, alpha: float, epsilon: float) -> torch.Tensor:
        tb = b if alpha == 1 else alpha * b
        z = a + tb
        ctx.state = (a, tb, z, alpha, epsilon)
        return z

    @staticmethod
    def backward(ctx, relevance: torch.Tensor):
        a, tb, z, _, epsilon = ctx.state
        if not states_kept():
            ctx.state = None
        s = _share(relevance, z, epsilon)
        ra = _reduce_to(a * s, a.shape) if ctx.needs_input_grad[0] else None
        rb = _reduce_to(tb * s, tb.shape) if ctx.needs_input_grad[1] else None
        return ra, rb, None, None


class _ScaleFunction(torch.autograd.Function):
    """``a * c`` forward (``c`` constant or a gate); the relevance passes to ``a`` unchanged."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        ctx.shape = a.shape
        return a * c

    @staticmethod
    def backward(ctx, relevance: torch.Tensor):
        return _reduce_to(relevance, ctx.shape), None


def _carries(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.requires_grad


def relevance_op(name: str, args: tuple, kwargs: dict, rule: SumRule, is_gate, where: str) -> torch.Tensor | None:
    """The result of the sum/product ``name(*args, **kwargs)`` with its LRP rule attached, or ``None`` when
    ``name`` is not such an operation. ``is_gate(t)`` tells whether ``t`` is a Sigmoid module's output."""
    if name not in SUM_OPS and name not in MUL_OPS:
        return None
    if len(args) != 2 or set(kwargs) - {"alpha"}:
        raise UnsupportedModelError(f"{where} calls '{name}' with arguments the engine does not explain "
                                    f"({len(args)} operands, keywords {sorted(kwargs)}); use 'a + b' or 'a * b'.")
    a, b = args
    if name.startswith("__r"):  # reflected: b (op) a
        a, b = b, a
    if name in MUL_OPS:
        return _product(a, b, is_gate, where)
    alpha = float(kwargs.get("alpha", 1.0))
    if "sub" in name:
        alpha = -alpha
    return _SumFunction.apply(_as_tensor(a, b), _as_tensor(b, a), alpha, rule.epsilon)


def _as_tensor(value: Any, like: torch.Tensor) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    return torch.as_tensor(value, dtype=like.dtype, device=like.device)


def _product(a: Any, b: Any, is_gate, where: str) -> torch.Tensor:
    if _carries(a) and _carries(b):
        gate_a, gate_b = is_gate(a), is_gate(b)
        if gate_a == gate_b:
            raise UnsupportedModelError(
                f"{where} multiplies two relevance-carrying tensors, neither (or both) the output of a Sigmoid gate; "
                "LRP has no rule for such products. Only signal * sigmoid-gate products (attention gates) and "
                "products with constants are explained."
            )
        signal, gate = (b, a) if gate_a else (a, b)
        return _ScaleFunction.apply(signal, gate.detach())
    signal, const = (a, b) if _carries(a) else (b, a)
    return _ScaleFunction.apply(signal, _as_tensor(const, signal))
