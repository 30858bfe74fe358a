"""BatchNorm folding: an explanation-ready copy of a model (the user's model is never modified).

``conv -> BatchNorm`` (consecutive in an ``nn.Sequential``) becomes one conv with
``W' = W * s``, ``b' = (b - mean) * s + beta``, ``s = gamma / sqrt(var + eps)``, and the BatchNorm an
``nn.Identity``. The copy is in eval mode (running statistics) with parameters frozen; its outputs are
checked against the unfolded eval copy. Copies are cached per model object and parameter version.
"""

from __future__ import annotations

import copy
import weakref
from dataclasses import dataclass

import torch
from torch import nn

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


def canonize(model: nn.Module, example: torch.Tensor | None = None) -> CanonicalModel:
    """A deep copy of ``model`` in eval mode with every ``conv -> BatchNorm`` pair of a Sequential folded.

    With an ``example`` input, the folded copy's output is checked against the unfolded eval copy's.
    """
    module = copy.deepcopy(model).eval()
    module.requires_grad_(False)
    reference = None
    if example is not None:
        with torch.no_grad():
            reference = module(example)
    folded: list[str] = []
    for parent_name, parent in module.named_modules():
        if type(parent).forward is not nn.Sequential.forward:
            continue
        names = list(parent._modules)
        for prev, cur in zip(names, names[1:]):
            norm, layer = parent._modules[cur], parent._modules[prev]
            if isinstance(norm, nn.modules.batchnorm._BatchNorm) and _foldable(layer):
                if not norm.track_running_stats:
                    continue  # uses batch statistics even in eval mode; the engine reports it
                fold_batchnorm(layer, norm)
                setattr(parent, cur, nn.Identity())
                folded.append(f"{parent_name}.{cur}" if parent_name else cur)
    if reference is not None and folded:
        with torch.no_grad():
            check_outputs(reference, module(example))
    return CanonicalModel(module, tuple(folded), verified=reference is not None)


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
