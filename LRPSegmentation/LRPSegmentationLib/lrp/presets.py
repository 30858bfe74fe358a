"""Which rule each layer gets: a :class:`Composite` (by qualified name, by position, by type) and named presets.

Resolution order for a module (first hit wins):
1. ``by_name``: glob patterns on the qualified module name (``"head"``, ``"decoders.*"``); a propagation
   rule (epsilon, z+, alpha-beta, gamma, zB) only matches linear layers, so ``"decoders.*"`` leaves the
   block's activations alone;
2. ``first_layer``: the first linear layer the forward calls (the one that sees the six modalities);
3. ``by_type``: user-given layer types;
4. ``layers``: every other conv / transposed conv / Linear layer;
5. fixed defaults: element-wise activations pass relevance through (:class:`Pass`), instance/group/layer norms
   get :class:`FrozenNorm` (the epsilon rule with frozen statistics, see :mod:`.norms`),
   average pooling and upsampling redistribute proportionally (:class:`Norm`), max pooling, dropout,
   identity and reshapes use the plain gradient (:class:`Gradient`).
Sums and products in forward code (residual additions, attention gates) follow ``sums`` (:mod:`.sums`).
A module with no rule and parameters is an error (the engine names it); one without parameters is treated
as glue code (its operations are checked by the engine).
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from torch import nn

from LRPSegmentationLib.lrp.norms import NORM_TYPES, FrozenNorm
from LRPSegmentationLib.lrp.rules import (
    LINEAR_TYPES,
    AlphaBeta,
    Epsilon,
    Gamma,
    Gradient,
    Norm,
    Pass,
    Rule,
    ZBox,
    ZPlus,
    _LinearRule,
)
from LRPSegmentationLib.lrp.sums import SumRule

ELEMENTWISE_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid,
    nn.Tanh, nn.Softplus, nn.Softsign, nn.ReLU6, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.LogSigmoid,
    nn.LocalResponseNorm,
)
"""Layers whose relevance passes through unchanged (``R_in = R_out``)."""

AVERAGING_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.pooling._AvgPoolNd, nn.modules.pooling._AdaptiveAvgPoolNd, nn.Upsample,
)
"""Parameter-free linear layers: proportional (epsilon-like) redistribution."""

GRADIENT_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd, nn.Identity,
    nn.modules.dropout._DropoutNd, nn.Flatten, nn.Unflatten,
)
"""Layers whose gradient already routes relevance exactly (max pooling: winner-take-all)."""


class PresetError(ValueError):
    """An unknown preset name."""


@dataclass(frozen=True)
class Composite:
    """A mapping from layers to rules (see the module docstring for the resolution order)."""

    name: str
    layers: Rule
    by_name: tuple[tuple[str, Rule], ...] = ()
    first_layer: Rule | None = None
    by_type: tuple[tuple[type[nn.Module] | tuple[type[nn.Module], ...], Rule], ...] = ()
    sums: SumRule = SumRule()

    def rule_for(self, qualified_name: str, module: nn.Module, first_linear: bool) -> Rule | None:
        """The rule of ``module`` or ``None`` when no rule applies (glue code or an unsupported layer)."""
        linear = isinstance(module, LINEAR_TYPES)
        for pattern, rule in self.by_name:
            # A propagation rule (epsilon, z+, ...) named for a block applies to the block's linear layers.
            if fnmatchcase(qualified_name, pattern) and (linear or not isinstance(rule, _LinearRule)):
                return rule
        if first_linear and self.first_layer is not None and isinstance(module, LINEAR_TYPES):
            return self.first_layer
        for types, rule in self.by_type:
            if isinstance(module, types):
                return rule
        if isinstance(module, LINEAR_TYPES):
            return self.layers
        if isinstance(module, ELEMENTWISE_TYPES):
            return Pass()
        if isinstance(module, NORM_TYPES):
            return FrozenNorm()
        if isinstance(module, AVERAGING_TYPES):
            return Norm()
        if isinstance(module, GRADIENT_TYPES):
            return Gradient()
        return None

    def describe(self) -> str:
        """One line for provenance records."""
        parts = [f"layers={self.layers!r}"]
        if self.first_layer is not None:
            parts.append(f"first_layer={self.first_layer!r}")
        parts += [f"{pattern}={rule!r}" for pattern, rule in self.by_name]
        for types, rule in self.by_type:
            names = "|".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
            parts.append(f"{names}={rule!r}")
        parts += [f"norms={FrozenNorm()!r}", f"sums={self.sums!r}"]
        return f"{self.name}: " + ", ".join(parts)


_HEAD = (("head", Epsilon()), ("head.*", Epsilon()))

PRESETS: dict[str, Composite] = {
    # LRP-epsilon everywhere: cheapest (no modified forward); the recommended default (see DEFAULT_PRESET).
    "epsilon": Composite("epsilon", layers=Epsilon()),
    # Epsilon in the body, zB on the first layer with per-modality bounds from the data (dark evidence counts too).
    "epsilon-zb": Composite("epsilon-zb", layers=Epsilon(), first_layer=ZBox()),
    # The paper's eq. (1) on every linear layer, first layer and head included.
    "zplus": Composite("zplus", layers=ZPlus()),
    # z+ in encoder/decoder convs and transposed convs (first layer included), epsilon in the head.
    "epsilon-zplus": Composite("epsilon-zplus", layers=ZPlus(), by_name=_HEAD),
    # Sign-aware z+ (alpha=1, beta=0) for LeakyReLU networks, epsilon in the head.
    "epsilon-alpha1beta0": Composite("epsilon-alpha1beta0", layers=AlphaBeta(1.0, 0.0), by_name=_HEAD),
    # Montavon et al. 2019: epsilon in upper layers (head, decoder, up-convs), gamma in the encoder,
    # zB on the first layer with per-modality bounds from the data.
    "epsilon-gamma-zb": Composite(
        "epsilon-gamma-zb", layers=Gamma(0.25),
        by_name=_HEAD + (("decoders.*", Epsilon()), ("ups.*", Epsilon())), first_layer=ZBox(),
    ),
    # The paper's code: z+ on every conv, bounded rule on the first layer with bounds [0, 1].
    "paper": Composite("paper", layers=ZPlus(), first_layer=ZBox(0.0, 1.0)),
}
"""Named presets. :data:`DEFAULT_PRESET` is the recommended one."""

def get_composite(preset: str | Composite) -> Composite:
    """The composite for a preset name (or the composite itself)."""
    if isinstance(preset, Composite):
        return preset
    try:
        return PRESETS[preset]
    except (KeyError, TypeError):
        raise PresetError(
            f"Unknown LRP preset {preset!r}; choose one of {sorted(PRESETS)} or pass a Composite."
        ) from None
