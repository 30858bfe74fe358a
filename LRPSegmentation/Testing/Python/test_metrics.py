"""Heatmap scores on hand-built masks and maps, with hand-computed values."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

from LRPSegmentationLib.analysis.filters import normalise_map
from LRPSegmentationLib.analysis.metrics import (
    EmptyMaskWarning,
    MetricsError,
    binarise_input,
    binarise_relevance,
    conservation,
    inclusivity,
    modality_shares,
    mu,
    pointing_game,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
)
from LRPSegmentationLib.analysis.scores import reference_masks, score_explanation


def test_inclusivity_both_directions_and_smoothing():
    a = np.array([1, 1, 1, 0, 0, 0], dtype=bool)
    b = np.array([0, 1, 1, 1, 1, 0], dtype=bool)
    assert inclusivity(a, b) == 0.5  # |a & b| = 2, |b| = 4
    assert inclusivity(b, a) == pytest.approx(2 / 3)  # the reverse direction, a precision
    assert inclusivity(a, b, smoothing=1.0) == pytest.approx(2 / 5)
    assert inclusivity(np.ones(6), b) == 1.0  # an all-ones heatmap is fully inclusive
    with pytest.warns(EmptyMaskWarning, match="mask b is empty"):
        assert inclusivity(a, np.zeros(6)) == 0.0
    with pytest.raises(MetricsError, match="shape"):
        inclusivity(a, b[:5])


def test_binarisations_are_strict_and_relative():
    r = np.array([-4.0, 2.0, 2.5, 0.0, 1.0])
    assert binarise_relevance(r).tolist() == [True, False, True, False, False]  # |R| > 0.5 * 4
    assert binarise_relevance(r, 0.2).tolist() == [True, True, True, False, True]
    assert not binarise_relevance(np.zeros(5)).any()
    x = np.array([0.0, 0.1, 0.11, 1.0, -0.5])
    assert binarise_input(x).tolist() == [False, False, True, True, True]  # |x| > 0.1 * 1
    brain = np.array([1, 1, 1, 0, 1])
    assert binarise_input(x, brain_mask=brain).tolist() == [False, False, True, False, True]


def test_mass_rank_pointing_by_hand():
    r = np.array([3.0, -2.0, 1.0, 0.0, 4.0])
    g = np.array([1, 1, 0, 0, 0], dtype=bool)
    assert relevance_mass_accuracy(r, g) == pytest.approx(3 / 8)  # R+ in G = 3 of 8
    assert relevance_rank_accuracy(r, g) == 0.5  # top-2 = {4, 3}: one in G
    assert pointing_game(r, g) == 0.0  # argmax (4) outside G
    assert pointing_game(r, ~g) == 1.0
    ties = np.array([1.0, 1.0, 1.0, 0.0])
    first = np.array([1, 0, 0, 0], dtype=bool)
    assert relevance_rank_accuracy(ties, first) == pytest.approx(1 / 3)  # expected value over the 3 tied voxels
    assert pointing_game(ties, first) == pytest.approx(1 / 3)
    assert pointing_game(ties, np.array([1, 1, 0, 1])) == pytest.approx(2 / 3)


@pytest.mark.parametrize("ties", [False, True])
def test_rank_accuracy_matches_brute_force_on_large_arrays(ties):
    rng = np.random.default_rng(4)
    values = rng.standard_normal(100_000).astype(np.float32)
    if ties:
        values = np.round(values * 3) / 3
        values[values < 0.5] = 0.0
    truth = np.zeros(values.size, dtype=bool)
    truth[rng.choice(values.size, 3000, replace=False)] = True
    truth[np.argsort(values)[-500:]] = True
    k = int(truth.sum())
    threshold = np.sort(values)[-k]
    above, tied = values > threshold, values == threshold
    expected = (np.sum(above & truth) + (k - above.sum()) * np.sum(tied & truth) / tied.sum()) / k
    assert relevance_rank_accuracy(values, truth) == pytest.approx(expected, rel=1e-12)


def test_conservation_shares_and_mu():
    assert conservation(np.array([1.0, 2.0]), np.array([4.0])) == 0.75
    assert conservation(3.0, 3.0) == 1.0
    with pytest.warns(EmptyMaskWarning, match="Output relevance sums to zero"):
        assert conservation(1.0, np.zeros(3)) == 0.0
    r = np.array([[1.0, 1.0], [3.0, -1.0]])
    share, abs_share = modality_shares(r)
    assert share.tolist() == pytest.approx([0.5, 0.5])
    assert abs_share.tolist() == pytest.approx([1 / 3, 2 / 3])
    assert mu(np.array([1.0, -0.5, 0.5, 0.0])) == 0.25
    assert mu(np.array([0.5, 0.5])) == 1.0  # scale-free
    with pytest.warns(EmptyMaskWarning, match="all zero"):
        assert mu(np.zeros(4)) == 0.0


def _tiny_case():
    """Two channels on a (1, 2, 3) grid; relevance, images, ground truth chosen so every score is hand-computable."""
    relevance = np.array(
        [
            [[[4.0, 3.0, -1.0], [0.0, 1.0, 0.5]]],  # ADC-like channel, max |R| = 4
            [[[0.0, -2.0, 1.0], [0.5, 0.5, 0.0]]],  # second channel, max |R| = 2
        ],
        dtype=np.float32,
    )
    images = np.array(
        [
            [[[1.0, 1.0, 0.0], [0.05, 0.5, 0.0]]],  # binarised (> 0.1 max): [1,1,0 / 0,1,0]
            [[[0.0, 2.0, 2.0], [2.0, 0.0, 0.1]]],  # binarised (> 0.2):     [0,1,1 / 1,0,0]
        ],
        dtype=np.float32,
    )
    truth = np.array([[[1, 1, 0], [0, 0, 1]]], dtype=bool)
    return relevance, images, truth


def test_score_explanation_by_hand():
    relevance, images, truth = _tiny_case()
    scores = score_explanation(relevance, images, truth, modalities=("A", "B"), output_relevance_sum=10.0)
    a, b = scores.modalities
    # channel A: normalised [1, .75, -.25 / 0, .25, .125]; binarised (> .5): [1,1,0 / 0,0,0]
    assert (a.lrp_voxels, a.input_voxels) == (2, 3)
    assert a.input_inclusivity == pytest.approx(2 / 3) and a.input_precision == 1.0
    assert a.gt_inclusivity == pytest.approx(2 / 3) and a.gt_precision == 1.0
    assert a.mass_accuracy == pytest.approx((1 + 0.75 + 0.125) / (1 + 0.75 + 0.25 + 0.125))
    assert a.rank_accuracy == pytest.approx(2 / 3)  # top-3 = {1, .75, .25}; G holds 1 and .75
    assert a.pointing_game == 1.0
    assert a.mu == pytest.approx((1 + 0.75 - 0.25 + 0.25 + 0.125) / 6)
    assert a.channel_max == 4.0 and a.removed_fraction == 0.0
    # channel B: normalised [0, -1, .5 / .25, .25, 0]; binarised: [0,1,0 / 0,0,0]
    assert (b.lrp_voxels, b.input_voxels) == (1, 3)
    assert b.input_inclusivity == pytest.approx(1 / 3) and b.input_precision == 1.0
    assert b.gt_inclusivity == pytest.approx(1 / 3) and b.gt_precision == 1.0
    assert b.mass_accuracy == 0.0  # positive relevance .5, .25, .25 all outside G
    assert b.pointing_game == 0.0
    assert b.rank_accuracy == 0.0  # top-3 = {.5, .25, .25}, none in G
    # shares of the (unnormalised) map: sums 7.5 and 0.0; |R| sums 9.5 and 4.0
    assert (a.share, b.share) == pytest.approx((1.0, 0.0))
    assert (a.abs_share, b.abs_share) == pytest.approx((9.5 / 13.5, 4.0 / 13.5))
    assert scores.conservation == pytest.approx(7.5 / 10.0)
    total = scores.total
    assert total.modality == "all" and total.input_inclusivity == pytest.approx(0.5)
    # summed map [4, 1, 0 / .5, 1.5, .5]: G = {4, 1, .5}
    assert total.mass_accuracy == pytest.approx(5.5 / 7.5)
    assert total.rank_accuracy == pytest.approx(2 / 3)  # top-3 = {4, 1.5, 1}
    assert total.pointing_game == 1.0
    assert scores.gt_voxels == 3


def test_score_explanation_with_filter_matches_filtered_map():
    relevance, images, truth = _tiny_case()
    scores = score_explanation(relevance, images, truth, filt="pass:0.5", modalities=("A", "B"))
    a = scores.modalities[0]
    # channel A after P[0, .5]: [0, 0, -.25 / 0, .25, .125] -> binarised by its own max (.25): |F| > .125
    assert a.lrp_voxels == 2
    assert a.removed_fraction == pytest.approx(1 - (1 + 1 + 0.5) / 9.5)
    assert a.gt_precision == 0.0 and a.gt_inclusivity == 0.0
    assert a.pointing_game == 0.0  # max .25 is at (1, 1), outside G
    assert scores.filter == "pass[0,0.5]"


def test_missing_ground_truth_gives_none_and_rows_are_json_ready():
    relevance, images, _ = _tiny_case()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scores = score_explanation(relevance, images)
    for row in scores.modalities:
        assert row.gt_inclusivity is None and row.mass_accuracy is None and row.pointing_game is None
    assert scores.conservation is None and scores.gt_voxels is None
    rows = scores.to_rows()
    assert [r["modality"] for r in rows] == ["channel0", "channel1", "all"]
    assert len({tuple(r) for r in rows}) == 1  # same columns in every row
    json.dumps(scores.to_dict())
    for row in rows:
        for value in row.values():
            assert not (isinstance(value, float) and math.isnan(value))


def test_empty_masks_give_zero_and_a_warning():
    relevance, images, _ = _tiny_case()
    relevance[1] = 0.0
    images[0] = 0.0
    empty_truth = np.zeros((1, 2, 3), dtype=bool)
    with pytest.warns(EmptyMaskWarning) as caught:
        scores = score_explanation(relevance, images, empty_truth, modalities=("A", "B"))
    message = " ".join(str(w.message) for w in caught).lower()
    assert "ground-truth mask is empty" in message
    assert "filtered relevance of b is all zero" in message
    assert "binarised input a is empty" in message
    a, b = scores.modalities
    assert a.gt_inclusivity == 0.0 and a.rank_accuracy == 0.0 and a.pointing_game == 0.0
    assert a.input_inclusivity == 0.0
    assert b.mu == 0.0 and b.input_precision == 0.0 and b.lrp_voxels == 0
    for row in scores.to_rows():
        assert all(not (isinstance(v, float) and math.isnan(v)) for v in row.values())


def test_cached_paths_match_the_direct_path():
    rng = np.random.default_rng(5)
    relevance = (rng.standard_normal((3, 8, 40, 40)) ** 3).astype(np.float32)
    images = rng.random((3, 8, 40, 40)).astype(np.float32)
    truth = np.zeros((8, 40, 40), dtype=bool)
    truth[2:6, 10:25, 12:30] = True
    brain = np.ones_like(truth)
    brain[:, :3] = False
    references = reference_masks(images, truth, brain_mask=brain)
    cache = normalise_map(relevance, presort=True)
    last = None
    for spec in ["none", "pass:0.2", "pass:0.1,1", "clamp:0.05", "clamp:0.05,1"]:
        direct = score_explanation(relevance, images, truth, filt=spec, brain_mask=brain)
        last = cache.filtered(spec, reuse=last)
        cached = score_explanation(last, references)
        for c, row in enumerate(cached.modalities):  # the fused loop agrees with the one-score functions
            channel = last.normalised[c]
            assert row.mass_accuracy == pytest.approx(relevance_mass_accuracy(channel, truth), rel=1e-5)
            assert row.rank_accuracy == pytest.approx(relevance_rank_accuracy(channel, truth), rel=1e-9)
            assert row.pointing_game == pytest.approx(pointing_game(channel, truth), rel=1e-9)
            assert row.mu == pytest.approx(mu(channel), rel=1e-5)
        for x, y in zip(cached.to_rows(), direct.to_rows()):
            assert x.keys() == y.keys()
            for key in x:
                if isinstance(x[key], (str, type(None))):
                    assert x[key] == y[key], (spec, key)
                else:
                    assert x[key] == pytest.approx(y[key], rel=1e-6, abs=1e-9), (spec, key)


def test_bad_inputs_are_rejected():
    relevance, images, truth = _tiny_case()
    with pytest.raises(MetricsError, match=r"relevance\[0\]"):
        score_explanation(relevance[None], images)
    with pytest.raises(MetricsError, match="image grid"):
        score_explanation(relevance[:, :, :1], images)
    with pytest.raises(MetricsError, match="ground_truth"):
        score_explanation(relevance, images, truth[:, :1])
    with pytest.raises(MetricsError, match="modality names"):
        score_explanation(relevance, images, modalities=("A",))
    with pytest.raises(MetricsError, match="already a FilteredMap"):
        score_explanation(normalise_map(relevance).filtered("pass:0.2"), images, filt="pass:0.4")
