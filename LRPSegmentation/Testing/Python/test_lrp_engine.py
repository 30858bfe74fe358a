"""The LRP engine: conservation, equality with zennit, BatchNorm folding, clear errors, filter taps."""

from __future__ import annotations

import copy

import pytest
import torch
import zennit_reference as zr
from torch import nn
from torch.nn import functional as F

from LRPSegmentationLib.lrp import (
    PRESETS,
    AlphaBeta,
    Composite,
    Epsilon,
    ExplainInputError,
    Gamma,
    PresetError,
    UnsupportedModelError,
    ZBox,
    canonize,
    default_taps,
    explain,
)
from LRPSegmentationLib.lrp.canonize import cached_canonical
from LRPSegmentationLib.net.model import UNet3D, UNetConfig

SHAPE = (1, 6, 8, 16, 16)


def _randomize_batchnorm(model: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm3d):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)


def tiny_unet(seed: int = 0, *, slope: float = 0.2, paper_head: bool = False, dtype=torch.float64) -> UNet3D:
    torch.manual_seed(seed)
    model = UNet3D(UNetConfig(base_width=3, levels=3, negative_slope=slope, paper_head=paper_head))
    _randomize_batchnorm(model, seed)
    return model.to(dtype).eval()


def bias_free_unet(seed: int = 0) -> UNet3D:
    """The project's U-Net without biases and without BatchNorm: relevance is conserved exactly."""
    model = tiny_unet(seed)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.BatchNorm3d):
                setattr(parent, name, nn.Identity())
            elif isinstance(child, (nn.Conv3d, nn.ConvTranspose3d)) and child.bias is not None:
                child.bias = None
    return model


def _input(seed: int = 1, shape=SHAPE, dtype=torch.float64) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _start(out: torch.Tensor) -> torch.Tensor:
    """Relevance on the lesion logit only (a typical target), of mixed sign."""
    start = torch.zeros_like(out)
    start[:, 1] = out[:, 1]
    return start


# ---------------------------------------------------------------------------------------------
# Conservation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["epsilon", "zplus", "epsilon-alpha1beta0"])
def test_relevance_is_conserved_in_a_bias_free_unet(preset):
    model = bias_free_unet()
    x = _input(shape=(1, 6, 7, 13, 14))  # not a multiple of 4: exercises the padding and the crop
    start = _start if preset == "epsilon" else (lambda out: out.abs())
    e = explain(model, x, start, preset, record_taps=["head", "encoders.0", "encoders.2"] + [
        f"{group}.{k}{part}" for k in range(2) for group, part in
        (("decoders", ""), ("concats", ".skip"), ("concats", ".up"), ("ups", ""))])
    assert e.conservation == pytest.approx(1.0, rel=1e-4)
    total = e.taps["output"].sum_before
    sums = {name: record.sum_before for name, record in e.taps.items()}
    close = {"abs": 1e-4 * abs(total)}
    for name in ("head", "decoders.0", "encoders.0", "input"):  # cuts through the whole network
        assert sums[name] == pytest.approx(total, **close), name
    for k in range(2):
        # a concatenation splits relevance exactly into its two parts ...
        parts = sums[f"concats.{k}.skip"] + sums[f"concats.{k}.up"]
        assert parts == pytest.approx(sums[f"decoders.{k}"], **close)
        # ... and the up part is what the up-conv and the deeper decoder/encoder received
        assert sums[f"ups.{k}"] == pytest.approx(sums[f"concats.{k}.up"], rel=1e-9)
        deeper = f"decoders.{k + 1}" if k + 1 < 2 else "encoders.2"
        assert sums[deeper] == pytest.approx(sums[f"ups.{k}"], **close)


# ---------------------------------------------------------------------------------------------
# Equality with zennit (float64)
# ---------------------------------------------------------------------------------------------


def _compare(model, x, preset, linear_rule, first_rule=None, **kwargs):
    # zennit's merged BatchNorm keeps its eps (a 1/sqrt(1 + eps) factor per layer); eps = 0 makes both exact.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm3d):
            m.eps = 0.0
    e = explain(model, x, _start, preset, **kwargs)
    ref = zr.zennit_relevance(copy.deepcopy(model), x, _start(e.output), linear_rule, first_rule)
    scale = ref.abs().max()
    assert scale > 0
    torch.testing.assert_close(e.relevance, ref, rtol=1e-6, atol=1e-9 * float(scale))


def test_epsilon_matches_zennit_with_batchnorm_folded():
    _compare(tiny_unet(2), _input(), "epsilon", lambda name: zr.Epsilon(epsilon=1e-9))


def test_zplus_matches_zennit():
    # The paper's z+ (x W+ on the raw, signed input; bias dropped), built from zennit's own parts.
    _compare(tiny_unet(3), _input(), "zplus", lambda name: zr.paper_zplus(1e-9))


def test_zplus_is_zennit_zplus_for_non_negative_inputs():
    # Bias-free convs on non-negative inputs: the paper's z+ and zennit's sign-aware ZPlus coincide.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(6, 4, 3, padding=1, bias=False), nn.ReLU(), nn.Conv3d(4, 2, 1, bias=False))
    _compare(model.double(), _input(), "zplus", lambda name: zr.ZPlus(stabilizer=1e-9, zero_params="bias"))


def test_epsilon_zplus_preset_matches_zennit_composite():
    model = tiny_unet(4)

    def rule(name):
        return zr.Epsilon(epsilon=1e-9) if name.startswith("head") else zr.paper_zplus(1e-9)

    _compare(model, _input(), "epsilon-zplus", rule)


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (AlphaBeta(1.0, 0.0), lambda: zr.ZPlus(stabilizer=1e-9, zero_params="bias")),
        (AlphaBeta(2.0, 1.0), lambda: zr.AlphaBeta(2.0, 1.0, stabilizer=1e-9, zero_params="bias")),
        (Gamma(0.25), lambda: zr.Gamma(0.25, stabilizer=1e-9, zero_params="bias")),
    ],
    ids=["alpha1beta0", "alpha2beta1", "gamma"],
)
def test_sign_aware_rules_match_zennit_on_leaky_relu_unet(ours, theirs):
    _compare(tiny_unet(5), _input(), Composite("test", layers=ours), lambda name: theirs())


def test_zbox_first_layer_matches_zennit():
    x = _input()
    low, high = x.amin(dim=(0, 2, 3, 4)), x.amax(dim=(0, 2, 3, 4))
    first = zr.ZBox(low.view(1, -1, 1, 1, 1), high.view(1, -1, 1, 1, 1), stabilizer=1e-9)
    composite = Composite("test", layers=Epsilon(), first_layer=ZBox())  # bounds from the data
    _compare(tiny_unet(6), x, composite, lambda name: zr.Epsilon(epsilon=1e-9), first)


# ---------------------------------------------------------------------------------------------
# BatchNorm folding and caching
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("paper_head", [False, True])
def test_batchnorm_folding_keeps_outputs_and_leaves_the_model_alone(paper_head):
    model = tiny_unet(7, paper_head=paper_head, dtype=torch.float32).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = _input(dtype=torch.float32)
    canonical = canonize(model, x)
    assert not any(isinstance(m, nn.BatchNorm3d) for m in canonical.module.modules())
    assert len(canonical.folded) == 2 * (3 + 2) + (1 if paper_head else 0)  # two per double-conv block (+ head)
    with torch.no_grad():
        ref = copy.deepcopy(model).eval()(x)
        out = canonical.module(x)
    assert float((ref - out).abs().max()) <= 1e-5 * max(1.0, float(ref.abs().max()))
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_transposed_conv_with_groups_folds_exactly():
    torch.manual_seed(0)
    seq = nn.Sequential(nn.ConvTranspose3d(4, 6, kernel_size=2, stride=2, groups=2), nn.BatchNorm3d(6))
    _randomize_batchnorm(seq, 1)
    seq.eval()
    x = torch.randn(1, 4, 3, 3, 3)
    canonical = canonize(seq, x)
    assert canonical.folded == ("1",)
    with torch.no_grad():
        torch.testing.assert_close(canonical.module(x), seq(x), rtol=0, atol=1e-5)


def test_canonical_copy_is_cached_until_a_parameter_changes():
    model = tiny_unet(8)
    x = _input()
    first = cached_canonical(model, x)
    assert cached_canonical(model, x) is first
    e1 = explain(model, x, _start, "epsilon")
    with torch.no_grad():
        model.head[0].weight.mul_(2.0)
    assert cached_canonical(model, x) is not first
    e2 = explain(model, x, _start, "epsilon")
    assert not torch.allclose(e1.output, e2.output)


# ---------------------------------------------------------------------------------------------
# Clear errors for models the engine cannot handle
# ---------------------------------------------------------------------------------------------


class _Division(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.act, self.conv2 = nn.Conv3d(2, 2, 3, padding=1), nn.ReLU(), nn.Conv3d(2, 2, 3, padding=1)

    def forward(self, x):
        return x / self.conv2(self.act(self.conv1(x)))


class _Reused(nn.Module):
    """One activation instance used twice (as MONAI's DynUNet and SegResNet blocks do)."""

    def __init__(self, shared: bool = True) -> None:
        super().__init__()
        self.conv1, self.conv2, self.conv3 = (nn.Conv3d(2, 2, 3, padding=1) for _ in range(3))
        self.act = nn.LeakyReLU(0.1)
        self.act2 = self.act if shared else nn.LeakyReLU(0.1)

    def forward(self, x):
        return self.conv3(self.act2(self.conv2(self.act(self.conv1(x)))))


def test_a_reused_module_instance_is_explained_per_use():
    torch.manual_seed(0)
    shared, separate = _Reused().double(), _Reused(shared=False).double()
    separate.load_state_dict(shared.state_dict())
    x = _input(shape=(1, 2, 4, 4, 4))
    e_shared, e_separate = explain(shared, x, lambda out: out), explain(separate, x, lambda out: out)
    torch.testing.assert_close(e_shared.relevance, e_separate.relevance, rtol=0, atol=0)
    with pytest.raises(UnsupportedModelError, match="called 2 times in one forward and is a tap"):
        explain(shared, x, lambda out: out, record_taps=["act"])


class _Functional(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv3d(2, 2, 3, padding=1), nn.Conv3d(2, 2, 3, padding=1)

    def forward(self, x):
        return self.conv2(F.relu(self.conv1(x)))


class _Scale(nn.Module):
    """A leaf layer with a parameter the engine has no rule for."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return x * self.scale


class _CustomLayerNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), _Scale(), nn.ReLU())

    def forward(self, x):
        return self.block(x)


@pytest.mark.parametrize(
    ("net", "words"),
    [
        (_Division, ["'div'", "divides"]),
        (_Functional, ["'relu'", "nn.ReLU"]),
        (_CustomLayerNet, ["'block.1'", "_Scale", "no LRP rule"]),
        (lambda: nn.Sequential(nn.BatchNorm3d(2), nn.Conv3d(2, 2, 1)), ["'0'", "could not be folded"]),
    ],
    ids=["division", "functional", "unsupported-layer", "unfoldable-bn"],
)
def test_unsupported_models_raise_naming_the_layer(net, words):
    x = torch.rand(1, 2, 4, 4, 4)
    with pytest.raises(UnsupportedModelError) as info:
        explain(net(), x, lambda out: out)
    for word in words:
        assert word in str(info.value)


def test_bad_arguments_raise():
    model, x = tiny_unet(9), _input()
    with pytest.raises(ExplainInputError, match="shaped like the model output"):
        explain(model, x, torch.ones(1, 2, 3, 3, 3, dtype=torch.float64))
    with pytest.raises(ExplainInputError, match="Unknown taps"):
        explain(model, x, _start, tap_filter=lambda r: r, taps=["decoders.7"])
    with pytest.raises(PresetError, match="epsilon-zplus"):
        explain(model, x, _start, "no-such-preset")
    with pytest.raises(ExplainInputError, match="6 values"):
        explain(model, x, _start, "epsilon-gamma-zb", input_bounds=(torch.zeros(3), torch.ones(3)))


# ---------------------------------------------------------------------------------------------
# Filter taps
# ---------------------------------------------------------------------------------------------


def _keep_large(relevance: torch.Tensor) -> torch.Tensor:
    """A pass filter on the whole tensor: keep entries above 20% of the global max |R|."""
    return relevance * (relevance.abs() >= 0.2 * relevance.abs().max())


def test_taps_filter_only_where_selected_and_record_sums():
    model, x = tiny_unet(10), _input()
    assert set(explain(model, x, _start).taps) == {"output", "input"}
    plain = explain(model, x, _start, record_taps=True)
    assert set(default_taps(model)) <= set(plain.taps)
    assert not any(r.filtered for r in plain.taps.values())
    assert all(r.removed_fraction == 0 for r in plain.taps.values())

    seen: list[tuple[int, ...]] = []

    def recording_filter(relevance):
        seen.append(tuple(relevance.shape))
        return _keep_large(relevance)

    e = explain(model, x, _start, tap_filter=recording_filter, taps=["decoders.0", "concats.1.skip"], record_taps=True)
    assert len(seen) == 2 and seen[0][1] == 6  # the whole tensor (all channels) of decoders.0 (width 2 * 3)
    assert {n for n, r in e.taps.items() if r.filtered} == {"decoders.0", "concats.1.skip"}
    for name in ("decoders.0", "concats.1.skip"):
        assert 0 < e.taps[name].removed_fraction < 1
    assert e.taps["head"].sum_before == pytest.approx(plain.taps["head"].sum_before)
    assert not torch.allclose(e.relevance, plain.relevance)

    identity = explain(model, x, _start, tap_filter=lambda r: r.clone())  # all default taps filtered
    assert all(identity.taps[n].filtered for n in default_taps(model))
    torch.testing.assert_close(identity.relevance, plain.relevance)

    final = explain(model, x, _start, tap_filter=_keep_large, taps=["input"])
    torch.testing.assert_close(final.relevance, _keep_large(plain.relevance))


def test_default_preset_first_layer_is_input_dependent():
    """A flat first layer would give an all-zero modality relevance; the default gives it none."""
    model, x = tiny_unet(11), _input()
    x[:, 2] = 0.0
    e = explain(model, x, lambda out: out.abs())
    shares = e.relevance.sum(dim=(0, 2, 3, 4))
    assert float(shares[2]) == 0.0
    assert bool((shares[[0, 1, 3, 4, 5]].abs() > 0).all())


def test_every_preset_runs_on_the_project_unet():
    model, x = tiny_unet(12, dtype=torch.float32), _input(dtype=torch.float32, shape=(1, 6, 5, 9, 12))
    for name in PRESETS:
        e = explain(model, x, _start, name)
        assert e.relevance.shape == x.shape and torch.isfinite(e.relevance).all(), name
        assert e.rule_preset == name and e.rules
