"""The LRP engine: rules as modified gradients, one forward and one autograd backward per explanation.

How it works (zennit-style, but cheaper):
- the model is canonized (in-place off, BatchNorm folded) into a cached eval-mode copy; the user's model is
  untouched;
- every module with a rule gets a forward pre-hook that hands the module a *detached* input (so the
  layer builds no autograd graph of its own) and a forward hook that joins input and output through a
  custom autograd function. That function computes the rule's state (e.g. the z+ modified forward) in the
  forward pass and the rule's relevance in the backward pass. So ``torch.autograd.grad`` with the start
  relevance as ``grad_outputs`` returns the input relevance in one sweep; layers without a rule (max
  pooling, concatenation, slicing, padding) route relevance by their plain gradient;
- named taps wrap tensors in an identity function whose backward filters the relevance and records sums;
- a ``TorchFunctionMode`` watches every torch call made outside the rule-carrying layers during the
  forward. Sums and products (residual ``+``, ``+=``, ``torch.add``, sigmoid gates) get their own rule node
  per call (:mod:`.sums`); relevance-routing operations (cat, pad with zeros, slicing, reshapes) are allowed;
  anything else on relevance-carrying tensors -- a division, ``F.relu``, a functional conv, ``detach`` --
  raises :class:`UnsupportedModelError` naming the operation and the module whose forward made it.
  This runtime check sees exactly what runs (unlike tracing, which fails on data-dependent Python such
  as ``UNet3D.forward``'s padding). A reused leaf module is explained per call (a tap on it is refused);
  once per model version the explained forward's output is compared with the model's;
- a model returning several outputs (deep supervision) is explained at its full-resolution output.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from LRPSegmentationLib.lrp.canonize import OUTPUT_TOLERANCE, cached_canonical
from LRPSegmentationLib.lrp.convolution import fast_convolutions
from LRPSegmentationLib.lrp.errors import ExplainInputError, UnsupportedModelError
from LRPSegmentationLib.lrp.outputs import full_resolution
from LRPSegmentationLib.lrp.presets import Composite, get_composite
from LRPSegmentationLib.lrp.rules import LINEAR_TYPES, Gradient, Rule, ZBox, keeping_states, states_kept
from LRPSegmentationLib.lrp.sums import relevance_op
from LRPSegmentationLib.lrp.taps import (
    INPUT_TAP,
    Tap,
    TapFilter,
    TapFunction,
    TapRecord,
    available_taps,
    default_taps,
    input_arg_names,
)
from LRPSegmentationLib.options import DEFAULT_PRESET

StartRelevance = torch.Tensor | Callable[[torch.Tensor], torch.Tensor]
"""The relevance put on the logits, or a function of the logits returning it."""

@dataclass
class Explanation:
    """The input relevance of one explanation and how it was obtained."""

    relevance: torch.Tensor
    output: torch.Tensor
    rule_preset: str
    taps: dict[str, TapRecord]
    conservation: float
    rules: dict[str, str] = field(default_factory=dict)
    folded: tuple[str, ...] = ()

    @property
    def start_sum(self) -> float:
        """Sum of the start relevance on the logits."""
        return self.taps["output"].sum_before if "output" in self.taps else float("nan")

# --------------------------------------------------------------------------------------------
# Autograd functions
# --------------------------------------------------------------------------------------------



class _RuleFunction(torch.autograd.Function):
    """Identity on ``output`` in the forward (state computed by the rule); the rule's relevance in the backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, output: torch.Tensor, rule: Rule, module: nn.Module) -> torch.Tensor:
        ctx.rule, ctx.module = rule, module
        ctx.state = rule.forward(module, x, output)
        return output.view_as(output)

    @staticmethod
    def backward(ctx, relevance: torch.Tensor):
        state = ctx.state
        if not states_kept():
            ctx.state = None  # free the rule's tensors as the sweep goes, like saved tensors
        return ctx.rule.backward(ctx.module, state, relevance), None, None, None


# --------------------------------------------------------------------------------------------
# The forward guard
# --------------------------------------------------------------------------------------------

ROUTING_OPS = frozenset({
    "cat", "concat", "concatenate", "pad", "__getitem__", "narrow", "split", "split_with_sizes", "chunk",
    "unbind", "tensor_split", "view", "reshape", "flatten", "unflatten", "permute", "transpose", "contiguous",
    "squeeze", "unsqueeze", "clone", "to", "float", "double", "type_as", "view_as", "reshape_as", "movedim",
    "moveaxis",
})
"""Operations whose gradient routes relevance exactly (allowed in glue code)."""

_ARITHMETIC = {"add", "sub", "mul", "div", "true_divide", "subtract", "multiply", "divide", "sum", "mean", "where",
               "addcmul", "matmul", "bmm", "einsum"}
_FUNCTIONAL_LAYERS = {"relu", "relu_", "leaky_relu", "leaky_relu_", "gelu", "sigmoid", "tanh", "silu", "elu",
                      "selu", "softplus", "hardtanh", "relu6", "mish", "softmax", "log_softmax", "prelu",
                      "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
                      "linear", "batch_norm", "instance_norm", "group_norm", "layer_norm", "max_pool1d",
                      "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d", "interpolate",
                      "upsample", "dropout"}


def _explain_op(name: str) -> str:
    base = name.strip("_")
    if base.startswith(("i", "r")) and base[1:] in _ARITHMETIC:
        base = base[1:]
    if base in _ARITHMETIC:
        return ("divides, reduces or multiplies relevance-carrying tensors; LRP rules exist only for sums "
                "(residual additions), sigmoid-gate products and scaling by constants. Wrap it in a module and "
                "assign a rule, or rewrite the forward")
    if base in _FUNCTIONAL_LAYERS or name in _FUNCTIONAL_LAYERS:
        return ("is a functional layer call, which the engine cannot attach a rule to. Use the module form "
                "(nn.ReLU, nn.LeakyReLU, nn.Conv3d, nn.MaxPool3d, nn.Upsample, ...) with one instance per use")
    if base == "detach":
        return "cuts the relevance path; remove it from the forward"
    return ("is not a relevance-routing operation (allowed in forward code: cat, pad with zeros, slicing, "
            "reshapes). Wrap it in a module and assign a rule by name, or rewrite the forward")


def _tensors(obj: Any) -> Iterable[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            yield from _tensors(item)


class _Guard(TorchFunctionMode):
    def __init__(self, session: "_Session") -> None:
        super().__init__()
        self.session = session

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        s = self.session
        if not s.internal and s.checking() and any(t.requires_grad for t in _tensors(args)):
            s.internal = True
            try:  # a sum or product of relevance-carrying tensors gets its own rule node (see .sums)
                out = relevance_op(getattr(func, "__name__", ""), args, kwargs, s.composite.sums, s.is_gate, s.where())
            finally:
                s.internal = False
            if out is not None:
                return out
        out = func(*args, **kwargs)
        if s.internal or not s.checking():
            return out
        if not any(t.requires_grad for t in _tensors(out)):
            return out
        name = getattr(func, "__name__", repr(func))
        if name in ROUTING_OPS:
            if name == "pad":
                mode = kwargs.get("mode", args[2] if len(args) > 2 else "constant")
                value = kwargs.get("value", args[3] if len(args) > 3 else None)
                amounts = kwargs.get("pad", args[1] if len(args) > 1 else ())
                if any(amounts) and (mode != "constant" or value not in (None, 0, 0.0)):
                    raise UnsupportedModelError(
                        f"{s.where()} pads with mode={mode!r}, value={value!r}; only zero padding routes relevance "
                        "exactly."
                    )
            return out
        raise UnsupportedModelError(f"{s.where()} calls '{name}', which {_explain_op(name)}.")


# --------------------------------------------------------------------------------------------
# One explanation: hooks, taps and bookkeeping
# --------------------------------------------------------------------------------------------


class _Session:
    def __init__(self, module: nn.Module, composite: Composite, bounds: tuple[torch.Tensor, torch.Tensor],
                 tap_filter: TapFilter | None, filtered: set[str], recorded: set[str], signed: set[str],
                 record: bool = True) -> None:
        self.module, self.composite, self.bounds = module, composite, bounds
        self.names = {m: n for n, m in module.named_modules()}
        self.records: dict[str, TapRecord] = {}
        self.record = record  # False: the taps only filter (no sums)
        self.taps = {n: Tap(n, tap_filter if n in filtered else None, self.records, n in signed, record)
                     for n in recorded}
        self.stack: list[nn.Module] = []
        self.calls: dict[nn.Module, int] = {}
        self.pending: dict[nn.Module, tuple[torch.Tensor, Rule]] = {}
        self.rules: dict[str, str] = {}
        self.first_linear_seen = False
        self.gates: dict[int, torch.Tensor] = {}  # Sigmoid module outputs by id (kept alive): gates for products
        self.internal = False
        self.skip_ops: set[nn.Module] = set()  # leaves whose internals are handled (rule or gradient type)
        self.handles: list[Any] = []
        self._check_leaves()

    # -- setup -------------------------------------------------------------------------------
    def _check_leaves(self) -> None:
        for name, m in self.module.named_modules():
            if any(True for _ in m.children()):
                continue
            rule = self.composite.rule_for(name, m, first_linear=isinstance(m, LINEAR_TYPES))
            if rule is not None:
                self.skip_ops.add(m)
                continue
            if any(True for _ in m.parameters(recurse=False)) or isinstance(m, nn.modules.batchnorm._BatchNorm):
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    raise UnsupportedModelError(
                        f"Layer {name!r} ({type(m).__name__}) could not be folded: BatchNorm must directly follow a "
                        "conv or Linear layer in an nn.Sequential and track running statistics."
                    )
                raise UnsupportedModelError(
                    f"Layer {name!r} ({type(m).__name__}) has parameters but no LRP rule. Supported: conv, "
                    "transposed conv, Linear, BatchNorm (folded), element-wise activations, pooling, "
                    "Upsample, Instance/Group/LayerNorm. Assign a rule by name in a Composite if it is safe."
                )

    def install(self) -> None:
        for m in self.names:
            self.handles.append(m.register_forward_pre_hook(self._pre_hook, with_kwargs=True))
            self.handles.append(m.register_forward_hook(self._post_hook))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    # -- guard helpers -----------------------------------------------------------------------
    def is_gate(self, t: torch.Tensor) -> bool:
        return id(t) in self.gates

    def checking(self) -> bool:
        return not self.stack or self.stack[-1] not in self.skip_ops

    def where(self) -> str:
        if not self.stack:
            return "The model's forward"
        m = self.stack[-1]
        name = self.names.get(m, "?")
        owner = repr(name) if name else "the model"
        return f"The forward of {owner} ({type(m).__name__})"

    # -- hooks -------------------------------------------------------------------------------
    def _resolve(self, name: str, m: nn.Module) -> Rule | None:
        first = isinstance(m, LINEAR_TYPES) and not self.first_linear_seen
        if isinstance(m, LINEAR_TYPES):
            self.first_linear_seen = True
        rule = self.composite.rule_for(name, m, first_linear=first)
        if isinstance(rule, ZBox) and rule.low is None:
            rule = replace(rule, low=self.bounds[0], high=self.bounds[1])
        return rule

    def _pre_hook(self, m: nn.Module, args: tuple, kwargs: dict):
        self.internal = True
        try:
            name = self.names[m]
            self.calls[m] = self.calls.get(m, 0) + 1
            if self.calls[m] > 1 and (name in self.taps or any(t.startswith(f"{name}.") for t in self.taps)):
                raise UnsupportedModelError(
                    f"Module {name or '<model>'!r} ({type(m).__name__}) is called {self.calls[m]} times in one "
                    "forward and is a tap; a tap on a reused module instance is ambiguous. Tap another module."
                )
            self.stack.append(m)
            arg_names = input_arg_names(m)
            if arg_names and any(f"{name}.{a}" in self.taps for a in arg_names):
                bound = inspect.signature(m.forward).bind(*args, **kwargs)
                for a in arg_names:
                    tap = self.taps.get(f"{name}.{a}")
                    if tap is not None and isinstance(bound.arguments.get(a), torch.Tensor):
                        bound.arguments[a] = TapFunction.apply(bound.arguments[a], tap)
                args, kwargs = bound.args, bound.kwargs
            if m in self.skip_ops and not any(True for _ in m.children()):
                rule = self._resolve(name, m)
                if rule is not None and not isinstance(rule, Gradient):
                    rule.check(m, name)
                    self.rules[name] = repr(rule)
                    if len(args) != 1 or kwargs or not isinstance(args[0], torch.Tensor):
                        raise UnsupportedModelError(
                            f"Layer {name!r} ({type(m).__name__}) with rule {rule.name!r} must be called with one "
                            "tensor argument."
                        )
                    x = args[0]
                    if x.requires_grad:
                        self.pending[m] = (x, rule)
                        args = (x.detach(),)
            return args, kwargs
        finally:
            self.internal = False

    def _post_hook(self, m: nn.Module, args: tuple, output: Any):
        self.internal = True
        try:
            pending = self.pending.pop(m, None)
            if pending is not None:
                x, rule = pending
                if not isinstance(output, torch.Tensor):
                    raise UnsupportedModelError(f"Layer {self.names[m]!r} must return one tensor.")
                output = _RuleFunction.apply(x, output, rule, m)
            tap = self.taps.get(self.names[m])
            if tap is not None and self.names[m]:
                if not isinstance(output, torch.Tensor):
                    raise ExplainInputError(f"Tap {self.names[m]!r}: the module does not return one tensor.")
                output = TapFunction.apply(output, tap)
            if isinstance(m, nn.Sigmoid) and isinstance(output, torch.Tensor):
                self.gates[id(output)] = output
            self.stack.pop()
            return output
        finally:
            self.internal = False


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------


def _data_bounds(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    dims = [0] + list(range(2, x.ndim))
    return x.amin(dim=dims), x.amax(dim=dims)


def _check_bounds(bounds: tuple[torch.Tensor, torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        low, high = (torch.as_tensor(b, dtype=x.dtype, device=x.device) for b in bounds)
    except (TypeError, ValueError) as err:
        raise ExplainInputError(f"input_bounds must be a pair (low, high) of per-channel tensors: {err}") from None
    low, high = (b.expand(x.shape[1]) if b.ndim == 0 else b for b in (low, high))
    if low.shape != (x.shape[1],) or high.shape != (x.shape[1],):
        raise ExplainInputError(f"input_bounds must have {x.shape[1]} values each (one per channel).")
    if bool((low > high).any()):
        raise ExplainInputError("input_bounds: low must not exceed high.")
    return low, high


def _check_same_output(reference: torch.Tensor, output: torch.Tensor) -> None:
    """Once per model version: the explained forward (sums out of place, rules attached) computes the model's output."""
    scale = max(1.0, float(reference.abs().max())) if reference.numel() else 1.0
    if reference.shape != output.shape or float((reference - output).abs().max()) > OUTPUT_TOLERANCE * scale:
        raise UnsupportedModelError(
            "The explained forward computes another output than the model: its forward relies on an in-place "
            "change (e.g. 'x.add_(y)' as a statement, or an alias read after 'x += y'). Write 'x = x + y'."
        )


def explain(
    model: nn.Module,
    x: torch.Tensor,
    start_relevance: StartRelevance,
    preset: str | Composite = DEFAULT_PRESET,
    *,
    tap_filter: TapFilter | None = None,
    taps: Iterable[str] | None = None,
    input_bounds: tuple[torch.Tensor, torch.Tensor] | None = None,
    record_taps: bool | Iterable[str] = False,
) -> Explanation:
    """Input relevance of ``model`` at ``x`` for the relevance ``start_relevance`` put on the logits.

    ``tap_filter`` is applied at the taps named in ``taps`` (default: :func:`default_taps`, the paper's
    places). Sums before/after are recorded at the filtered taps, at ``output`` (the start relevance) and
    ``input``, and with ``record_taps`` at every default tap too, or at the taps it names (two extra passes over
    each tapped tensor, hence off by default). ``input_bounds`` (per-channel low, high) bound a zB first-layer
    rule that has no bounds of its own; default: the per-channel min and max of ``x``. The model is explained in
    eval mode with BatchNorm folded, on a cached copy.
    """
    return _forward(model, x, start_relevance, preset, tap_filter, taps, input_bounds, record_taps).backward()


def explain_filters(
    model: nn.Module,
    x: torch.Tensor,
    start_relevance: StartRelevance,
    tap_filters: Sequence[TapFilter],
    preset: str | Composite = DEFAULT_PRESET,
    *,
    taps: Iterable[str] | None = None,
    input_bounds: tuple[torch.Tensor, torch.Tensor] | None = None,
    record_sums: bool = True,
) -> list[Explanation]:
    """:func:`explain` once per tap filter (e.g. the in-chain bands of a slider), sharing one forward pass: the
    relevance of every filter comes from its own backward sweep over the same graph, so K filters cost one forward
    and K backward passes instead of K of each. Results equal K separate :func:`explain` calls (``record_sums``
    False: without the sums at the taps, ``taps`` and ``start_sum`` then hold zeros)."""
    filters = list(tap_filters)
    if not filters:
        return []
    switch = _SwitchFilter(filters[0])
    forward = _forward(model, x, start_relevance, preset, switch, taps, input_bounds, False, record_sums)
    results = []
    with keeping_states():
        for k, tap_filter in enumerate(filters):
            switch.current = tap_filter
            results.append(forward.backward(retain=k < len(filters) - 1))
    return results


class _SwitchFilter:
    """The tap filter of the backward sweep running now (:func:`explain_filters`)."""

    def __init__(self, current: TapFilter) -> None:
        self.current = current

    def __call__(self, relevance: torch.Tensor) -> torch.Tensor:
        return self.current(relevance)


@dataclass
class _Forward:
    """The explained forward of one input: the graph that backward sweeps turn into relevance."""

    session: _Session
    x: torch.Tensor
    x_req: torch.Tensor
    output: torch.Tensor
    start: torch.Tensor
    composite: Composite
    folded: tuple[str, ...]
    filtered: set[str]

    def backward(self, retain: bool = False) -> Explanation:
        session, output, start = self.session, self.output, self.start
        session.records.clear()
        Tap("output", None, session.records, record=session.record).apply(start)
        relevance = None
        if output.requires_grad:
            with fast_convolutions():
                (relevance,) = torch.autograd.grad(output, self.x_req, start, allow_unused=True, retain_graph=retain)
        if relevance is None:
            relevance = torch.zeros_like(self.x)
        input_tap = session.taps.get(INPUT_TAP)
        if input_tap is not None:
            relevance = input_tap.apply(relevance)
        for name in session.taps:
            session.records.setdefault(name, TapRecord(name, 0.0, 0.0, 0.0, 0.0, name in self.filtered))
        total = float(start.sum())
        conservation = float(relevance.sum()) / total if total != 0 else float("nan")
        return Explanation(relevance=relevance.detach(), output=output.detach(), rule_preset=self.composite.name,
                           taps=dict(session.records), conservation=conservation, rules=dict(session.rules),
                           folded=self.folded)


def _forward(model, x, start_relevance, preset, tap_filter, taps, input_bounds, record_taps,
             record_sums: bool = True) -> _Forward:
    if not isinstance(model, nn.Module):
        raise ExplainInputError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim < 2:
        raise ExplainInputError("x must be a floating-point tensor shaped (N, C, ...).")
    composite = get_composite(preset)
    available = set(available_taps(model))
    defaults = default_taps(model)
    if taps is None:
        filtered = set(defaults) if tap_filter is not None else set()
    else:
        filtered = set([taps] if isinstance(taps, str) else taps)
        unknown = sorted(filtered - available)
        if unknown:
            raise ExplainInputError(f"Unknown taps {unknown}; the paper's taps for this model are {defaults}.")
        if tap_filter is None and filtered:
            raise ExplainInputError("taps were given without a tap_filter to apply there.")
    bounds = _check_bounds(input_bounds, x) if input_bounds is not None else _data_bounds(x.detach())

    canonical = cached_canonical(model, x.detach())
    extra = set(defaults) if record_taps is True else set(record_taps or ())
    if extra - available:
        raise ExplainInputError(f"Unknown taps to record {sorted(extra - available)}.")
    recorded = filtered | {INPUT_TAP} | extra
    session = _Session(canonical.module, composite, bounds, tap_filter, filtered, recorded, {INPUT_TAP} | extra,
                       record_sums)
    x_req = x.detach().requires_grad_(True)
    session.install()
    try:
        with torch.enable_grad(), _Guard(session), fast_convolutions():
            output = full_resolution(canonical.module(x_req))
    finally:
        session.remove()
    if canonical.reference is not None:
        _check_same_output(canonical.reference, output.detach())
        canonical.reference = None

    start = start_relevance(output.detach()) if callable(start_relevance) else start_relevance
    if not isinstance(start, torch.Tensor) or start.shape != output.shape:
        raise ExplainInputError(
            f"start_relevance must be shaped like the model output {tuple(output.shape)}, got "
            f"{tuple(start.shape) if isinstance(start, torch.Tensor) else type(start).__name__}."
        )
    start = start.detach().to(dtype=output.dtype, device=output.device)
    return _Forward(session, x, x_req, output, start, composite, canonical.folded, filtered)
