"""The LRP engine on networks researchers train: MONAI and nnU-Net v2 (dynamic-network-architectures) classes.

Real classes with random weights at small sizes. For each: it explains, conserves relevance on a bias-free copy,
leaves the user's model (in-place flags included) untouched, and runs the start-relevance targets; networks
without sums and gates match zennit, sums and gates match zennit's ``Sum``/``Norm`` or an own reference.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import zennit_reference as zr
from torch import nn

from LRPSegmentationLib.lrp import Composite, Epsilon, Pass, UnsupportedModelError, explain
from LRPSegmentationLib.lrp.canonize import turn_off_inplace
from LRPSegmentationLib.lrp.norms import NORM_TYPES
from LRPSegmentationLib.lrp.targets import Target, predicted_lesion
from LRPSegmentationLib.options import TargetKind

monai_nets = pytest.importorskip("monai.networks.nets")
dna_unet = pytest.importorskip("dynamic_network_architectures.architectures.unet")

SHAPE = (1, 2, 16, 16, 16)
SHAPES = {"BasicUNet": (1, 2, 16, 16, 32)}
"""Input shapes: small; BasicUNet halves four times and its InstanceNorm needs more than one voxel there."""


def _dna_kwargs() -> dict:
    return dict(input_channels=2, n_stages=3, features_per_stage=[4, 8, 16], conv_op=nn.Conv3d, kernel_sizes=3,
                strides=[1, 2, 2], num_classes=2, conv_bias=True, norm_op=nn.InstanceNorm3d,
                norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True})


NETWORKS = {
    "BasicUNet": lambda: monai_nets.BasicUNet(3, 2, 2, features=(4, 4, 8, 8, 16, 4)),
    "UNet-residual": lambda: monai_nets.UNet(3, 2, 2, channels=(4, 8, 16), strides=(2, 2), num_res_units=2),
    "DynUNet": lambda: monai_nets.DynUNet(3, 2, 2, kernel_size=[3, 3, 3], strides=[1, 2, 2],
                                          upsample_kernel_size=[2, 2], filters=[4, 8, 16]),
    "DynUNet-res": lambda: monai_nets.DynUNet(3, 2, 2, kernel_size=[3, 3, 3], strides=[1, 2, 2],
                                              upsample_kernel_size=[2, 2], filters=[4, 8, 16], res_block=True),
    "SegResNet": lambda: monai_nets.SegResNet(3, 8, 2, 2, blocks_down=(1, 2), blocks_up=(1,),
                                              norm=("group", {"num_groups": 4})),
    "AttentionUnet": lambda: monai_nets.AttentionUnet(3, 2, 2, channels=(4, 8, 16), strides=(2, 2)),
    "PlainConvUNet": lambda: dna_unet.PlainConvUNet(**_dna_kwargs(), n_conv_per_stage=2, n_conv_per_stage_decoder=2),
    "ResidualEncoderUNet": lambda: dna_unet.ResidualEncoderUNet(**_dna_kwargs(), n_blocks_per_stage=[1, 2, 2],
                                                                n_conv_per_stage_decoder=1),
}
NO_SUMS = ("BasicUNet", "DynUNet", "PlainConvUNet")
"""Networks without residual additions or gates: zennit with the same rules is a full reference."""
EPS_PASS = Composite("epsilon-pass-norms", layers=Epsilon(), by_type=((NORM_TYPES, Pass()),))
"""Epsilon with the identity rule on norms: zennit's rules (its Pass on norms; the default FrozenNorm has no
zennit counterpart and has its own reference below)."""


def _build(name: str, seed: int = 0, dtype=torch.float64) -> nn.Module:
    torch.manual_seed(seed)
    model = NETWORKS[name]().to(dtype).eval()
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():  # non-trivial norm parameters and running statistics
        if isinstance(m, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)) and m.weight is not None:
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.weight.shape, generator=g, dtype=dtype) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g, dtype=dtype) * 0.2)
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g, dtype=dtype) * 0.3)
            m.running_var.copy_(torch.rand(m.num_features, generator=g, dtype=dtype) + 0.5)
    return model


def _bias_free(model: nn.Module) -> nn.Module:
    """A copy with every bias and shift zero (conv, norm, BatchNorm statistics): relevance is conserved."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(getattr(m, "bias", None), torch.Tensor):
                m.bias.zero_()
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.zero_()
    return model


def _input(seed: int = 1, dtype=torch.float64, name: str = "") -> torch.Tensor:
    return torch.rand(SHAPES.get(name, SHAPE), generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _inplace_flags(model: nn.Module) -> list[bool]:
    return [m.inplace for m in model.modules() if isinstance(getattr(m, "inplace", None), bool)]


@pytest.mark.parametrize("name", list(NETWORKS))
def test_peer_network_explains_and_conserves_on_a_bias_free_copy(name):
    model = _bias_free(_build(name))
    flags, state = _inplace_flags(model), {k: v.clone() for k, v in model.state_dict().items()}
    x = _input(name=name)
    e = explain(model, x, lambda out: out.abs(), "epsilon")
    assert e.relevance.shape == x.shape and torch.isfinite(e.relevance).all()
    assert e.conservation == pytest.approx(1.0, abs=1e-3)
    with torch.no_grad():
        torch.testing.assert_close(e.output, model(x))  # the explained forward computes the model's output
    assert _inplace_flags(model) == flags  # the user's model keeps its in-place activations
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("name", NO_SUMS)
def test_peer_network_without_sums_matches_zennit(name):
    model = _build(name, seed=2)
    x = _input(name=name)

    def start(out):
        return out * (out[:, 1:2] > out[:, 0:1])

    e = explain(model, x, start, EPS_PASS)
    reference = copy.deepcopy(model)
    turn_off_inplace(reference)  # zennit cannot explain in-place activations either
    ref = zr.zennit_relevance(reference, x, start(e.output), lambda n: zr.Epsilon(epsilon=1e-9))
    torch.testing.assert_close(e.relevance, ref, rtol=1e-6, atol=1e-9 * float(ref.abs().max()))


class _ResidualNet(nn.Module):
    """nnU-Net's BasicBlockD written out (conv-norm-act, conv-norm, ``+ skip``, act) with an optional zennit Sum."""

    def __init__(self, zennit_sum: bool = False) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.InstanceNorm3d(4, affine=True), nn.LeakyReLU())
        self.conv1 = nn.Sequential(nn.Conv3d(4, 4, 3, padding=1), nn.InstanceNorm3d(4), nn.PReLU())
        self.conv2 = nn.Sequential(nn.Conv3d(4, 4, 3, padding=1), nn.InstanceNorm3d(4, affine=True))
        self.skip = nn.Conv3d(4, 4, 1)
        self.act = nn.LeakyReLU()
        self.head = nn.Conv3d(4, 2, 1)
        self.sum = zr.Sum() if zennit_sum else None

    def forward(self, x):
        x = self.stem(x)
        out, residual = self.conv2(self.conv1(x)), self.skip(x)
        if self.sum is not None:
            out = self.sum(torch.stack([out, residual], dim=-1))
        else:
            out += residual
        return self.head(self.act(out))


def test_residual_sum_matches_zennit_sum_layer_and_splits_once_per_use():
    torch.manual_seed(4)
    ours = _ResidualNet().double().eval()
    theirs = _ResidualNet(zennit_sum=True).double().eval()
    theirs.load_state_dict(ours.state_dict())
    x = _input()
    e = explain(ours, x, lambda out: out, EPS_PASS, record_taps=["conv2", "skip", "act"])
    ref = zr.zennit_relevance(theirs, x, e.output, lambda n: zr.Epsilon(epsilon=1e-9), sum_rule=zr.Norm(1e-9))
    torch.testing.assert_close(e.relevance, ref, rtol=1e-6, atol=1e-9 * float(ref.abs().max()))
    # the two summands share exactly the relevance at the sum (none doubled)
    parts = e.taps["conv2"].sum_before + e.taps["skip"].sum_before
    assert parts == pytest.approx(e.taps["act"].sum_before, rel=1e-6)


def _frozen_norm_reference(norm: nn.Module, x: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    """The epsilon rule on ``norm`` with its std frozen, by autograd (independent of the engine's closed form)."""
    xr = x.clone().requires_grad_(True)
    if isinstance(norm, nn.GroupNorm):
        grouped = xr.reshape(x.shape[0], norm.num_groups, -1)
        std = grouped.detach().var(dim=-1, unbiased=False, keepdim=True).add(norm.eps).sqrt()
        centred = ((grouped - grouped.mean(dim=-1, keepdim=True)) / std).reshape(x.shape)
        scaled = centred * norm.weight.reshape(1, -1, 1, 1, 1)
    elif isinstance(norm, nn.LayerNorm):
        dims = tuple(range(x.ndim - len(norm.normalized_shape), x.ndim))
        std = xr.detach().var(dim=dims, unbiased=False, keepdim=True).add(norm.eps).sqrt()
        scaled = (xr - xr.mean(dim=dims, keepdim=True)) / std * norm.weight
    else:
        dims = tuple(range(2, x.ndim))
        std = xr.detach().var(dim=dims, unbiased=False, keepdim=True).add(norm.eps).sqrt()
        scaled = (xr - xr.mean(dim=dims, keepdim=True)) / std
        if norm.weight is not None:
            scaled = scaled * norm.weight.reshape(1, -1, 1, 1, 1)
    with torch.no_grad():
        y = norm(x)
    (grad,) = torch.autograd.grad(scaled, xr, relevance / (y + 1e-9 * torch.where(y >= 0, 1.0, -1.0)))
    return x * grad


@pytest.mark.parametrize("norm", [
    lambda: nn.InstanceNorm3d(4, affine=True), lambda: nn.InstanceNorm3d(4), lambda: nn.GroupNorm(2, 4),
    lambda: nn.LayerNorm([4, 4, 4]),
], ids=["instance-affine", "instance", "group", "layer"])
def test_frozen_norm_rule_matches_an_autograd_reference_and_conserves_without_shift(norm):
    torch.manual_seed(8)
    layer = norm().double()
    if getattr(layer, "weight", None) is not None:
        with torch.no_grad():
            layer.weight.uniform_(0.5, 1.5)
            layer.bias.uniform_(-0.3, 0.3)
    model = nn.Sequential(layer).eval()
    x = torch.randn(1, 4, 4, 4, 4, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    e = explain(model, x, lambda out: out.abs(), "epsilon")  # (a norm's outputs sum to ~0: start from |y|)
    expected = _frozen_norm_reference(layer, x, e.output.abs())
    torch.testing.assert_close(e.relevance, expected, rtol=1e-9, atol=1e-12)
    shifted = getattr(layer, "bias", None) is not None
    assert (abs(e.conservation - 1.0) > 1e-6) == shifted  # beta absorbs relevance like a bias; without it conserved


def test_attention_gate_gets_no_relevance_and_the_signal_all():
    model = _bias_free(_build("AttentionUnet", seed=5))
    gates = [n for n, m in model.named_modules() if isinstance(m, nn.Sigmoid)]
    signals = [n.rsplit(".", 1)[0] for n in gates]  # ... .psi.2 (Sigmoid) -> ... .psi
    x = _input()
    e = explain(model, x, lambda out: out.abs(), "epsilon", record_taps=gates)
    assert gates and all(e.taps[g].abs_before == 0.0 for g in gates), signals
    assert e.conservation == pytest.approx(1.0, abs=1e-3)


class _Product(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv3d(2, 2, 1), nn.Conv3d(2, 2, 1)

    def forward(self, x):
        return self.a(x) * self.b(x)


class _DiscardedInplace(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv3d(2, 2, 1), nn.Conv3d(2, 2, 1)

    def forward(self, x):
        out = self.a(x) * 1.0
        out.add_(self.b(x))  # the result is discarded: relies on the in-place change
        return out


@pytest.mark.parametrize(("net", "words"), [
    (_Product, ["multiplies two relevance-carrying tensors", "Sigmoid"]),
    (_DiscardedInplace, ["in-place", "x = x + y"]),
], ids=["product", "discarded-inplace"])
def test_unexplainable_arithmetic_is_refused_in_one_sentence(net, words):
    with pytest.raises(UnsupportedModelError) as info:
        explain(net(), torch.rand(1, 2, 4, 4, 4), lambda out: out)
    for word in words:
        assert word in str(info.value)


def test_deep_supervision_explains_the_full_resolution_output():
    torch.manual_seed(6)
    model = dna_unet.PlainConvUNet(**_dna_kwargs(), n_conv_per_stage=1, n_conv_per_stage_decoder=1,
                                   deep_supervision=True).double().eval()
    x = _input()
    with torch.no_grad():
        outputs = model(x)
    assert isinstance(outputs, (list, tuple)) and len(outputs) > 1
    e = explain(model, x, lambda out: out, "epsilon")
    assert e.output.shape == (1, 2) + SHAPE[2:]
    torch.testing.assert_close(e.output, outputs[0])


@pytest.mark.parametrize("name", ["DynUNet-res", "ResidualEncoderUNet"])
def test_start_relevance_targets_on_peer_networks(name):
    model = _build(name, seed=7, dtype=torch.float32)
    x = _input(dtype=torch.float32)
    with torch.no_grad():
        logits = model(x)
    predicted = predicted_lesion(logits)[0].numpy()
    assert predicted.any() and not predicted.all()
    mask = np.zeros(SHAPE[2:], dtype=bool)
    mask[4:8, 4:8, 4:8] = True
    voxel = tuple(int(v) for v in np.argwhere(predicted)[0])
    targets = [Target(kind) for kind in (TargetKind.LESION_LOGITS, TargetKind.PROBABILITY, TargetKind.EQUAL,
                                         TargetKind.WHOLE_OUTPUT, TargetKind.CONTRASTIVE, TargetKind.COMPONENT)]
    targets += [Target(TargetKind.MASK, mask=mask), Target(TargetKind.VOXEL, voxel=voxel),
                Target(TargetKind.FALSE_POSITIVE, ground_truth=mask), Target(TargetKind.FALSE_NEGATIVE,
                                                                             ground_truth=mask | predicted)]
    maps = []
    for target in targets:
        e = explain(model, x, target.start_relevance, Composite("eps", layers=Epsilon(1e-6)))
        assert torch.isfinite(e.relevance).all() and e.relevance.abs().sum() > 0, target.kind
        maps.append(e.relevance)
    assert not torch.allclose(maps[0], maps[1])  # different targets explain different things


@pytest.mark.parametrize("name", ["UNet-residual", "SegResNet", "ResidualEncoderUNet"])
def test_filters_sharing_one_forward_equal_separate_explanations(name):
    """explain_filters (the band grid's one forward, one backward sweep per band) on networks with residual sums
    and norms, whose rule states must survive the earlier sweeps, equals explaining each band alone."""
    from LRPSegmentationLib.lrp.engine import explain_filters
    from LRPSegmentationLib.lrp.taps import tap_filter

    model, x = _build(name), _input(name=name)
    filters = [tap_filter("pass:0.3"), tap_filter("clamp:0.1"), tap_filter(None)]
    shared = explain_filters(model, x, lambda out: out, filters, taps=["input"])
    for tap, result in zip(filters, shared, strict=True):
        alone = explain(model, x, lambda out: out, tap_filter=tap, taps=["input"])
        torch.testing.assert_close(result.relevance, alone.relevance, rtol=1e-9, atol=1e-12)
    assert not torch.allclose(shared[0].relevance, shared[2].relevance)
