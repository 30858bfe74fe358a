"""Pass and clamp filters, final-map filtering and in-chain taps, on hand-built arrays."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from LRPSegmentationLib.analysis.filters import (
    NO_FILTER,
    PAPER_CLAMP_GRID,
    PAPER_PASS_GRID,
    AmplitudeFilter,
    FilterError,
    NormalisedMap,
    compact_map,
    filter_map,
    normalise_map,
    paper_filters,
)
from LRPSegmentationLib.lrp.taps import tap_filter
from LRPSegmentationLib.options import FilterKind, RelevanceNormalization

# exactly representable in float32, so band edges are tested exactly
VALUES = [-1.0, -0.5, -0.25, -0.125, 0.0, 0.0625, 0.125, 0.25, 0.75, 1.0]


def _as(kind: str, values: list[float]):
    return torch.tensor(values, dtype=torch.float32) if kind == "torch" else np.array(values, dtype=np.float32)


def _list(x) -> list[float]:
    return [float(v) for v in (x.tolist())]


@pytest.mark.parametrize("lib", ["numpy", "torch"])
@pytest.mark.parametrize(
    ("filt", "expected"),
    [
        (AmplitudeFilter.pass_band(0.25), [0, 0, -0.25, -0.125, 0, 0.0625, 0.125, 0.25, 0, 0]),
        (AmplitudeFilter.pass_band(0.125, 0.5), [0, -0.5, -0.25, -0.125, 0, 0, 0.125, 0.25, 0, 0]),
        (AmplitudeFilter.pass_band(0.5, 1.0), [-1, -0.5, 0, 0, 0, 0, 0, 0, 0.75, 1]),
        (AmplitudeFilter.clamp_band(0.25), [-0.25, -0.25, -0.25, -0.125, 0, 0.0625, 0.125, 0.25, 0.25, 0.25]),
        # clamp with low > 0: magnitudes below low are lifted to low by sign; zero becomes +low
        (AmplitudeFilter.clamp_band(0.125, 0.5), [-0.5, -0.5, -0.25, -0.125, 0.125, 0.125, 0.125, 0.25, 0.5, 0.5]),
        (NO_FILTER, VALUES),
    ],
)
def test_filter_semantics(lib, filt, expected):
    data = _as(lib, VALUES)
    before = _list(data)
    out = filt(data)
    assert type(out) is type(data)
    assert out.dtype == data.dtype
    assert _list(out) == pytest.approx(expected, abs=0)
    assert _list(data) == before  # input untouched
    assert out is not data


@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_clamp_negative_zero_becomes_plus_low(lib):
    out = AmplitudeFilter.clamp_band(0.25, 1.0)(_as(lib, [-0.0, 0.0]))
    assert _list(out) == [0.25, 0.25]
    assert not np.signbit(np.asarray(_list(out))).any()


def test_filter_validation_and_parsing():
    assert AmplitudeFilter.pass_band(0.2) == AmplitudeFilter(FilterKind.PASS, 0.0, 0.2)
    assert AmplitudeFilter("clamp", 0.0, 0.1).kind is FilterKind.CLAMP
    for bad in [(0.5, 0.2), (-0.1, 0.5), (0.0, 1.5), (float("nan"), 0.5)]:
        with pytest.raises(FilterError, match="0 <= low <= high <= 1"):
            AmplitudeFilter(FilterKind.PASS, *bad)
    with pytest.raises(ValueError, match="Unknown filter kind"):
        AmplitudeFilter("bandstop", 0.0, 0.5)
    assert AmplitudeFilter.parse("pass:0.2") == AmplitudeFilter.pass_band(0.2)
    assert AmplitudeFilter.parse("clamp [0.05, 1]") == AmplitudeFilter.clamp_band(0.05, 1.0)
    assert AmplitudeFilter.parse(None) is NO_FILTER
    label = AmplitudeFilter.pass_band(0.1, 1.0).label
    assert label == "pass[0.1,1]" and AmplitudeFilter.parse(label) == AmplitudeFilter.pass_band(0.1, 1.0)
    with pytest.raises(FilterError, match="needs a band"):
        AmplitudeFilter.parse("pass")
    with pytest.raises(FilterError, match="Cannot read filter"):
        AmplitudeFilter.parse("pass:abc")


def test_paper_grids():
    assert PAPER_PASS_GRID == (
        (0, 0.05), (0, 0.1), (0, 0.2), (0, 0.4), (0, 0.6), (0.05, 1), (0.1, 1), (0.2, 1), (0.4, 1), (0.6, 1)
    )
    assert PAPER_CLAMP_GRID == ((0, 0.05), (0, 0.1), (0, 0.2), (0, 0.4), (0, 0.6))
    filters = paper_filters()
    assert len(filters) == 15 and len({f.label for f in filters}) == 15
    assert [f.kind for f in filters].count(FilterKind.CLAMP) == 5


def _two_channels() -> np.ndarray:
    # channel 0: max |R| = 4; channel 1: max |R| = 1
    return np.array([[4.0, 2.0, -1.0, 1.0], [1.0, -0.5, 0.25, 0.0]], dtype=np.float32)


def test_filter_map_per_channel_vs_global():
    r = _two_channels()
    per = filter_map(r, "pass:0.5")
    assert per.channel_max.tolist() == [4.0, 1.0]
    assert per.scale.tolist() == [4.0, 1.0]
    assert per.normalised.tolist() == [[0, 0.5, -0.25, 0.25], [0, -0.5, 0.25, 0]]
    # kept |R|: channel 0 (2 + 1 + 1) of 8; channel 1 (0.5 + 0.25) of 1.75
    assert per.removed_fraction.tolist() == pytest.approx([0.5, 1 - 0.75 / 1.75])
    assert per.removed_fraction_total == pytest.approx(1 - (4 + 0.75) / (8 + 1.75))
    assert per.relevance.tolist() == [[0, 2, -1, 1], [0, -0.5, 0.25, 0]]

    glob = filter_map(r, "pass:0.5", RelevanceNormalization.GLOBAL)
    assert glob.channel_max.tolist() == [4.0, 1.0]
    assert glob.scale.tolist() == [4.0, 4.0]
    assert glob.normalised.tolist() == [[0, 0.5, -0.25, 0.25], [0.25, -0.125, 0.0625, 0]]
    assert glob.removed_fraction.tolist() == pytest.approx([0.5, 0.0])
    assert per.normalised.dtype == np.float32


def test_filter_map_without_filter_removes_nothing_and_keeps_input():
    r = _two_channels()
    before = r.copy()
    fm = filter_map(r)
    assert fm.removed_fraction.tolist() == [0.0, 0.0] and fm.removed_fraction_total == 0.0
    assert np.abs(fm.normalised).max(axis=1).tolist() == [1.0, 1.0]
    assert np.array_equal(r, before)
    assert fm.input_sum.tolist() == pytest.approx([6.0, 0.75])


def test_clamp_with_low_adds_relevance_and_zero_channel_stays_zero():
    r = np.array([[2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    fm = filter_map(r, AmplitudeFilter.clamp_band(0.25, 1.0))
    assert fm.normalised.tolist() == [[1.0, 0.25, 0.25, 0.25], [0, 0, 0, 0]]
    assert fm.removed_fraction.tolist() == pytest.approx([1 - 1.75, 0.0])  # negative: relevance was added
    assert np.isfinite(fm.removed_fraction).all()
    assert fm.channel_max.tolist() == [2.0, 0.0]


def test_filter_map_channel_axis_and_torch():
    r = np.random.default_rng(1).standard_normal((2, 3, 4, 5)).astype(np.float32)
    expected = filter_map(np.moveaxis(r, 1, 0), "clamp:0.1,0.5")
    moved = filter_map(r, "clamp:0.1,0.5", channel_axis=1)
    assert moved.normalised.shape == r.shape
    assert np.array_equal(np.moveaxis(moved.normalised, 1, 0), expected.normalised)
    assert np.allclose(moved.removed_fraction, expected.removed_fraction)
    as_torch = filter_map(torch.from_numpy(r), "clamp:0.1,0.5", channel_axis=1)
    assert isinstance(as_torch.normalised, torch.Tensor)
    assert np.array_equal(as_torch.normalised.numpy(), moved.normalised)
    assert np.allclose(as_torch.removed_fraction, moved.removed_fraction)


def test_filter_map_rejects_nan_and_bad_arguments():
    r = _two_channels()
    r[1, 2] = np.nan
    with pytest.raises(FilterError, match="NaN"):
        filter_map(r)
    with pytest.raises(FilterError, match="channel_axis"):
        filter_map(_two_channels(), channel_axis=3)
    with pytest.raises(FilterError, match="normalization"):
        filter_map(_two_channels(), normalization="per-voxel")
    with pytest.raises(FilterError, match="numpy array or a torch tensor"):
        filter_map([[1.0, 2.0]])


def test_cached_map_refilter_and_reuse():
    r = np.random.default_rng(2).standard_normal((3, 6, 7, 8)).astype(np.float32)
    cache = normalise_map(r)
    assert not cache.normalised.flags.writeable
    last = None
    for spec in ["pass:0.2", "none", "clamp:0.05", "pass:0.1,1", "clamp:0.2,0.6", "pass:0.4"]:
        fresh = filter_map(r, spec)
        last = cache.filtered(spec, reuse=last)
        assert np.array_equal(last.normalised, fresh.normalised)
        assert np.array_equal(last.magnitude, np.abs(fresh.normalised))
        assert np.allclose(last.removed_fraction, fresh.removed_fraction)
    assert np.array_equal(cache.normalised, filter_map(r).normalised)  # the cache itself never changes


@pytest.mark.parametrize("spec", ["none", "pass:0.2", "pass:0.1,1", "pass:0.5,0.5", "clamp:0.05", "clamp:0.05,1"])
def test_presorted_kth_largest_matches_the_filtered_map(spec):
    rng = np.random.default_rng(3)
    r = np.round(rng.standard_normal((2, 5, 6, 7)) * 4) / 4  # many ties
    r[1] = 0.0  # an all-zero channel
    r = r.astype(np.float32)
    cache = normalise_map(r, presort=True)
    fm = cache.filtered(spec)
    for c in range(2):
        ordered = np.sort(fm.normalised[c].ravel())[::-1]
        for k in [1, 2, 17, 100, ordered.size]:
            assert cache.kth_largest(c, k, fm.filter) == float(ordered[k - 1])
    assert normalise_map(r).kth_largest(0, 1, fm.filter) is None


def test_tap_filter_restores_amplitude_over_the_whole_tensor():
    r = torch.tensor([[8.0, -4.0, 2.0], [1.0, 0.5, 0.0]])
    before = r.clone()
    assert tap_filter("pass:0.5")(r).tolist() == [[0.0, -4.0, 2.0], [1.0, 0.5, 0.0]]
    assert tap_filter("clamp:0.25")(r).tolist() == [[2.0, -2.0, 2.0], [1.0, 0.5, 0.0]]
    assert tap_filter("pass:0.5,1")(r).tolist() == [[8.0, -4.0, 0.0], [0.0, 0.0, 0.0]]
    assert torch.equal(r, before)
    zeros = torch.zeros(2, 3)
    assert tap_filter("clamp:0.1,1")(zeros) is zeros
    assert tap_filter(None)(r) is r
    assert tap_filter("clamp:0.1").filter == AmplitudeFilter.clamp_band(0.1)
    with pytest.raises(FilterError, match="NaN"):
        tap_filter("pass:0.5")(torch.tensor([1.0, float("nan")]))


@pytest.mark.parametrize("normalization", list(RelevanceNormalization))
def test_a_compact_map_reads_back_as_normalise_map_gives_it(normalization):
    """compact_map (float16 / per-channel peak) and NormalisedMap.from_compact: the map normalise_map makes of the
    stored values, without a pass over the raw map; an all-zero channel stays zero."""
    rng = np.random.default_rng(5)
    relevance = (rng.normal(size=(3, 4, 5, 6)) * np.array([1.0, 1e-3, 0.0])[:, None, None, None]).astype(np.float32)
    values, peak = compact_map(relevance)
    assert values.dtype == np.float16 and peak.tolist() == pytest.approx(np.abs(relevance).max(axis=(1, 2, 3)))
    got = NormalisedMap.from_compact(values, peak, normalization)
    expected = normalise_map(values.astype(np.float32) * peak[:, None, None, None], normalization)
    np.testing.assert_allclose(got.normalised, expected.normalised, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got.magnitude, expected.magnitude, rtol=1e-6, atol=1e-7)
    for name in ("scale", "channel_max", "input_sum", "input_abs_sum"):
        np.testing.assert_allclose(getattr(got, name), getattr(expected, name), rtol=1e-5, atol=1e-9)
    np.testing.assert_array_equal(got.zero_groups, expected.zero_groups)
    assert not got.normalised.flags.writeable
