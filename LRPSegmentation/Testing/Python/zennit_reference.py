"""Test-only reference: zennit 0.5.1 relevance for the same network (zennit is installed with --no-deps).

zennit imports ``torchvision.models.resnet`` at import time only to define ResNet canonizers. torchvision
is not installed (and must not be), so a minimal stand-in with the two block classes is put into
``sys.modules`` before ``import zennit``. Nothing else from torchvision is used.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable

import torch
from torch import nn


def _install_torchvision_stand_in() -> None:
    if "torchvision" in sys.modules:
        return
    tv = types.ModuleType("torchvision")
    models = types.ModuleType("torchvision.models")
    resnet = types.ModuleType("torchvision.models.resnet")

    class Bottleneck(nn.Module):  # stand-in: only used by zennit for isinstance checks
        pass

    class BasicBlock(nn.Module):
        pass

    resnet.Bottleneck, resnet.BasicBlock = Bottleneck, BasicBlock
    tv.models, models.resnet = models, resnet
    sys.modules.update({"torchvision": tv, "torchvision.models": models, "torchvision.models.resnet": resnet})


_install_torchvision_stand_in()

import zennit  # noqa: E402  (after the stand-in)
from zennit.canonizers import SequentialMergeBatchNorm  # noqa: E402
from zennit.core import BasicHook, Composite, Stabilizer  # noqa: E402
from zennit.layer import Sum  # noqa: E402
from zennit.rules import AlphaBeta, ClampMod, Epsilon, Gamma, Norm, Pass, ZBox, ZPlus  # noqa: E402

__all__ = ["zennit", "zennit_relevance", "paper_zplus", "AlphaBeta", "Epsilon", "Gamma", "Norm", "Pass", "Sum", "ZBox",
           "ZPlus"]


def paper_zplus(stabilizer: float) -> BasicHook:
    """The paper's eq. (1) in zennit's terms: positive weights on the raw (signed) input, bias dropped.

    (zennit's own ZPlus is the sign-aware alpha=1, beta=0 variant; both agree for non-negative inputs.)
    """
    stabilize = Stabilizer.ensure(stabilizer)
    return BasicHook(
        input_modifiers=[lambda input: input],
        param_modifiers=[ClampMod(min=0.0, zero_params=["bias"])],
        output_modifiers=[lambda output: output],
        gradient_mapper=lambda out_grad, outputs: out_grad / stabilize(outputs[0]),
        reducer=lambda inputs, gradients: inputs[0] * gradients[0],
    )

ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.modules.instancenorm._InstanceNorm, nn.GroupNorm, nn.LayerNorm)
"""Pass (identity) in zennit: element-wise activations and the input-statistics norms (as the engine)."""
LINEAR = (nn.Conv3d, nn.ConvTranspose3d)


def zennit_relevance(
    model: nn.Module,
    x: torch.Tensor,
    start: torch.Tensor,
    linear_rule: Callable[[str], object],
    first_rule: object | None = None,
    sum_rule: object | None = None,
) -> torch.Tensor:
    """Input relevance by zennit: ``linear_rule(name)`` on conv layers (``first_rule`` on the first one),
    Pass on activations and norms, ``sum_rule`` on zennit ``Sum`` layers, BatchNorm merged by zennit's own
    canonizer. ``model`` must be in eval mode."""
    first_name = next(name for name, m in model.named_modules() if isinstance(m, LINEAR))

    def module_map(ctx, name, module):
        if isinstance(module, LINEAR):
            return first_rule if (first_rule is not None and name == first_name) else linear_rule(name)
        if isinstance(module, ACTIVATIONS):
            return Pass()
        if isinstance(module, Sum) and sum_rule is not None:
            return sum_rule
        return None

    composite = Composite(module_map=module_map, canonizers=[SequentialMergeBatchNorm()])
    xr = x.detach().clone().requires_grad_(True)
    with composite.context(model):
        out = model(xr)
        (relevance,) = torch.autograd.grad(out, xr, start)
    return relevance
