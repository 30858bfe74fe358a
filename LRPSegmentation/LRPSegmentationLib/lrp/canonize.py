"""An explanation-ready copy of a model (the user's model is never modified): in-place off, BatchNorm folded.

- In-place activations (``ReLU(inplace=True)``, ``LeakyReLU(inplace=True)``, in-place dropout) would overwrite
  tensors a rule's backward needs; on the copy every module's ``inplace`` flag is turned off (same outputs).
- ``conv -> BatchNorm`` (consecutive in execution order through nested plain ``nn.Sequential`` containers, e.g.
  MONAI's ``Convolution(conv, ADN(norm, dropout, act))``) becomes one conv with ``W' = W * s``,
  ``b' = (b - mean) * s + beta``, ``s = gamma / sqrt(var + eps)``, and the BatchNorm an ``nn.Identity``.
The copy is in eval mode (running statistics) with parameters frozen; its outputs are checked against the
unfolded eval copy. Copies are cached per model object and parameter version.
"""

from __future__ import annotations

import copy
import weakref
from dataclasses import dataclass, field

import torch
from torch import nn

from LRPSegmentationLib.lrp.outputs import full_resolution

OUTPUT_TOLERANCE = 1e-5
"""Largest allowed output change from folding, relative to max(1, max|output|)."""


class CanonizationError(ValueError):
    """BatchNorm folding failed or changed the model's outputs."""


@dataclass
class CanonicalModel:
    """A folded eval-mode copy of a model and the names of the BatchNorm layers folded away."""

    module: nn.Module
    folded: tuple[str, ...]
    verified: bool = False
    inplace_off: tuple[str, ...] = ()
    reference: torch.Tensor | None = field(default=None, repr=False)
    """The unfolded copy's output on the example, until the engine has compared its own forward with it."""


def _foldable(module: nn.Module) -> bool:
    return isinstance(module, (nn.modules.conv._ConvNd, nn.Linear))


def fold_batchnorm(layer: nn.Module, norm: nn.modules.batchnorm._BatchNorm) -> None:
    """Fold ``norm`` (eval mode, running statistics) into the conv/Linear ``layer`` in place."""
    if norm.running_mean is None or norm.running_var is None:
        raise CanonizationError(f"{type(norm).__name__} without running statistics cannot be folded.")
    with torch.no_grad():
        scale = norm.running_var.add(norm.eps).rsqrt()
        if norm.weight is not None:
            scale = scale * norm.weight
        shift = -norm.running_mean * scale
        if norm.bias is not None:
            shift = shift + norm.bias
        weight = layer.weight
        if isinstance(layer, nn.modules.conv._ConvTransposeNd):
            # weight (in, out/groups, *k): output channel g*(out/groups)+j lives at [g-block, j].
            g = layer.groups
            w = weight.view(g, weight.shape[0] // g, weight.shape[1], *weight.shape[2:])
            w.mul_(scale.view(g, 1, weight.shape[1], *([1] * (weight.ndim - 2))))
        else:
            weight.mul_(scale.view(-1, *([1] * (weight.ndim - 1))))
        if layer.bias is None:
            layer.bias = nn.Parameter(shift.clone(), requires_grad=False)
        else:
            layer.bias.mul_(scale).add_(shift)


def _plain_sequential(module: nn.Module) -> bool:
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def _leaves_in_order(parent: nn.Module, prefix: str) -> list[tuple[nn.Module, str, str, nn.Module]]:
    """``(container, child name, qualified name, module)`` of a plain Sequential's children in execution order,
    descending into nested plain Sequentials (their children run in order too)."""
    leaves = []
    for child_name, child in parent._modules.items():
        qualified = f"{prefix}.{child_name}" if prefix else child_name
        if child is not None and _plain_sequential(child):
            leaves += _leaves_in_order(child, qualified)
        else:
            leaves.append((parent, child_name, qualified, child))
    return leaves


def turn_off_inplace(module: nn.Module) -> tuple[str, ...]:
    """Set every submodule's boolean ``inplace`` flag to False (in place on ``module``); the names changed."""
    changed = []
    for name, m in module.named_modules():
        if getattr(m, "inplace", None) is True:
            m.inplace = False
            changed.append(name)
    return tuple(changed)


def canonize(model: nn.Module, example: torch.Tensor | None = None) -> CanonicalModel:
    """A deep copy of ``model`` in eval mode, in-place off, with every ``conv -> BatchNorm`` pair folded.

    With an ``example`` input, the folded copy's output is checked against the unfolded eval copy's.
    """
    module = copy.deepcopy(model).eval()
    module.requires_grad_(False)
    inplace_off = turn_off_inplace(module)
    reference = None
    if example is not None:
        with torch.no_grad():
            reference = full_resolution(module(example))
    folded: list[str] = []
    inner = {id(c) for m in module.modules() if _plain_sequential(m) for c in m.children() if _plain_sequential(c)}
    for parent_name, parent in module.named_modules():
        if not _plain_sequential(parent) or id(parent) in inner:
            continue  # outermost plain Sequentials only: nested ones are walked through
        leaves = _leaves_in_order(parent, parent_name)
        for (_, _, _, layer), (container, child_name, qualified, norm) in zip(leaves, leaves[1:]):
            if isinstance(norm, nn.modules.batchnorm._BatchNorm) and _foldable(layer):
                if not norm.track_running_stats:
                    continue  # uses batch statistics even in eval mode; the engine reports it
                fold_batchnorm(layer, norm)
                setattr(container, child_name, nn.Identity())
                folded.append(qualified)
    if reference is not None and folded:
        with torch.no_grad():
            check_outputs(reference, full_resolution(module(example)))
    return CanonicalModel(module, tuple(folded), verified=reference is not None, inplace_off=inplace_off,
                          reference=reference)


def check_outputs(reference: torch.Tensor, folded: torch.Tensor) -> None:
    """Raise :class:`CanonizationError` unless the folded model reproduces the reference output."""
    scale = max(1.0, float(reference.abs().max())) if reference.numel() else 1.0
    err = float((reference - folded).abs().max()) if reference.numel() else 0.0
    if err > OUTPUT_TOLERANCE * scale:
        raise CanonizationError(
            f"BatchNorm folding changed the model output by {err:.3g} (allowed {OUTPUT_TOLERANCE * scale:.3g}); "
            "does a Sequential subclass reorder its layers?"
        )


def _version_key(model: nn.Module) -> tuple:
    tensors = list(model.parameters()) + [b for b in model.buffers() if b is not None]
    return tuple((id(t), t.data_ptr(), t._version, t.dtype, t.device) for t in tensors)


_CACHE: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, CanonicalModel]]" = weakref.WeakKeyDictionary()


def cached_canonical(model: nn.Module, example: torch.Tensor | None = None) -> CanonicalModel:
    """The canonical copy of ``model``, rebuilt (and checked on ``example``) only when a parameter or buffer
    changed (in place or replaced)."""
    key = _version_key(model)
    hit = _CACHE.get(model)
    if hit is not None and hit[0] == key:
        return hit[1]
    canonical = canonize(model, example)
    _CACHE[model] = (key, canonical)
    return canonical


def clear_cache() -> None:
    """Forget all cached canonical copies."""
    _CACHE.clear()
