"""The slider's band scores (analysis.band_scores) equal score_explanation on the full filtered map."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from LRPSegmentationLib.analysis.band_scores import BandIndex, complete_total, filtered_region
from LRPSegmentationLib.analysis.filters import AmplitudeFilter, normalise_map, paper_filters
from LRPSegmentationLib.analysis.metrics import EmptyMaskWarning, MetricsError
from LRPSegmentationLib.analysis.scores import reference_masks, score_explanation

SHAPE = (6, 5, 12, 14)
EDGE_BANDS = [
    AmplitudeFilter(), AmplitudeFilter.pass_band(0.0, 0.0), AmplitudeFilter.pass_band(1.0, 1.0),
    AmplitudeFilter.pass_band(0.0, 1.0), AmplitudeFilter.clamp_band(0.0, 0.0), AmplitudeFilter.clamp_band(1.0, 1.0),
    AmplitudeFilter.clamp_band(0.0, 1.0), AmplitudeFilter.clamp_band(0.3, 0.3), AmplitudeFilter.pass_band(0.25, 0.75),
    AmplitudeFilter.clamp_band(0.25, 0.75), AmplitudeFilter.pass_band(1 / 3), AmplitudeFilter.clamp_band(1 / 3, 2 / 3),
]
BANDS = EDGE_BANDS + list(paper_filters())
EXACT = ("modality", "channel_max", "lrp_voxels", "input_voxels", "input_inclusivity", "input_precision",
         "gt_inclusivity", "gt_precision", "rank_accuracy", "pointing_game")
"""Fields made of counts (and the channel maximum): equal to the last bit; the others are sums (float32 rounding)."""


def random_map(seed: int) -> np.ndarray:
    """Relevance with the awkward cases: ties (quantised), an all-zero channel, exact zeros and -0.0, one sign only."""
    rng = np.random.default_rng(seed)
    r = (rng.standard_normal(SHAPE) + 0.4).astype(np.float32)
    r[1] = np.round(r[1] * 3) / 3
    r[2] = 0.0
    r[3][np.abs(r[3]) < 0.6] = 0.0
    r[3][0] = -0.0
    r[4] = np.abs(r[4])
    r[5] = -np.round(np.abs(r[5]) * 2) / 2
    return r


def assert_same_scores(got, want):
    assert (got.filter, got.normalization, got.gt_voxels) == (want.filter, want.normalization, want.gt_voxels)
    for g, w in zip((*got.modalities, got.total), (*want.modalities, want.total), strict=True):
        for key, expected in vars(w).items():
            actual = getattr(g, key)
            if expected is None or key in EXACT:
                assert actual == expected, (w.modality, key)
            else:
                assert math.isclose(actual, expected, rel_tol=1e-9, abs_tol=1e-12), (w.modality, key, actual, expected)


def reference(source, filt, refs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmptyMaskWarning)
        filtered = source.filtered(filt)
        return filtered, score_explanation(filtered, refs)


@pytest.mark.parametrize("normalization", ["per-channel", "global"])
@pytest.mark.parametrize("seed", [0, 1])
def test_every_band_scores_as_the_full_recomputation(seed, normalization):
    rng = np.random.default_rng(100 + seed)
    truth = rng.random(SHAPE[1:]) < 0.08
    images = rng.random(SHAPE).astype(np.float32)
    images[2] = 0.0  # an empty input mask
    refs = reference_masks(images, truth)
    index = BandIndex.build(normalise_map(random_map(seed), normalization), refs)
    for filt in BANDS:
        filtered, want = reference(index.source, filt, refs)
        fast = index.score(filt)
        assert fast.total.mass_accuracy is None  # the summed-map scores wait for the full map
        assert_same_scores(complete_total(fast, filtered, refs), want)


@pytest.mark.parametrize("truth", ["empty", "none", "everywhere"])
def test_reference_masks_edge_cases(truth):
    rng = np.random.default_rng(5)
    mask = {"empty": np.zeros(SHAPE[1:], bool), "none": None, "everywhere": np.ones(SHAPE[1:], bool)}[truth]
    refs = reference_masks(rng.random(SHAPE).astype(np.float32), mask)
    index = BandIndex.build(normalise_map(random_map(3)), refs)
    for filt in EDGE_BANDS:
        filtered, want = reference(index.source, filt, refs)
        assert_same_scores(complete_total(index.score(filt), filtered, refs), want)


def test_thresholds_and_smoothing_are_honoured():
    rng = np.random.default_rng(9)
    refs = reference_masks(rng.random(SHAPE).astype(np.float32), rng.random(SHAPE[1:]) < 0.1)
    index = BandIndex.build(normalise_map(random_map(4)), refs)
    filt = AmplitudeFilter.pass_band(0.1, 0.9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmptyMaskWarning)
        want = score_explanation(index.source.filtered(filt), refs, lrp_threshold=0.2, smoothing=1.0)
    got = complete_total(index.score(filt, lrp_threshold=0.2, smoothing=1.0), index.source.filtered(filt), refs)
    assert_same_scores(got, want)
    with pytest.raises(MetricsError, match="lrp_threshold"):
        index.score(filt, lrp_threshold=1.0)
    with pytest.raises(MetricsError, match="band"):
        complete_total(index.score(filt), index.source.filtered(None), refs)


@pytest.mark.parametrize("filt", EDGE_BANDS, ids=lambda f: f.label)
def test_filtered_region_is_the_full_filter_on_that_region(filt):
    source = normalise_map(random_map(2))
    full = source.filtered(filt).normalised
    for channel in range(SHAPE[0]):
        for region in ((2,), (slice(None), 7), (slice(None), slice(None), 0)):
            np.testing.assert_array_equal(filtered_region(source, filt, channel, region), full[channel][region])
