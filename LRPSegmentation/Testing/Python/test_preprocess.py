"""Resizing to series grids, normalisation, and the exact way back to the native grid."""

import numpy as np
import pytest

from LRPSegmentationLib.analysis.metrics import dice
from LRPSegmentationLib.net.preprocess import (
    SERIES_GRIDS,
    Interpolation,
    PreprocessSpec,
    ResizePreprocessor,
    normalize,
    parse_size,
    prepare_input,
    prepare_label,
    resize,
    to_native,
)
from LRPSegmentationLib.options import IntensityNormalization


def test_minmax_maps_each_channel_to_unit_range_and_constant_to_zero():
    rng = np.random.default_rng(0)
    images = rng.uniform(-5, 3000, (6, 4, 8, 8)).astype(np.float32)
    images[3] = 7.0
    out = normalize(images, IntensityNormalization.MINMAX)
    assert out.dtype == np.float32
    for c in (0, 1, 2, 4, 5):
        assert out[c].min() == 0.0 and out[c].max() == pytest.approx(1.0)
    assert not out[3].any()


def test_zscore_inside_brain_leaves_background_zero():
    rng = np.random.default_rng(1)
    images = np.zeros((6, 4, 8, 8), np.float32)
    images[:, :, 2:6, 2:6] = rng.normal(100, 10, (6, 4, 4, 4))
    out = normalize(images, IntensityNormalization.ZSCORE)
    brain = out[0][:, 2:6, 2:6]
    assert brain.mean() == pytest.approx(0, abs=1e-5) and brain.std() == pytest.approx(1, rel=1e-4)
    assert not out[:, :, :2].any()


def test_parse_size():
    assert parse_size("b") == SERIES_GRIDS["B"] == (19, 96, 96)
    assert parse_size("native") is None
    assert parse_size("24x64x32") == (24, 64, 32)
    with pytest.raises(ValueError, match="DxHxW"):
        parse_size("96x96")
    assert parse_size("0x96x96") == (0, 96, 96)  # every native slice, each 96 x 96
    for text, native_axes in (("0x0x0", True), ("0x96x96", False), ("-1x96x96", True)):
        with pytest.raises(ValueError, match="DxHxW"):
            parse_size(text, allow_native_axes=native_axes)


def test_a_zero_size_keeps_that_axis_native_and_maps_back():
    spec = PreprocessSpec(size=(0, 48, 48))
    assert spec.grid((24, 64, 64)) == (24, 48, 48) and spec.grid((30, 128, 96)) == (30, 48, 48)
    assert not spec.fixed and PreprocessSpec(size=(19, 48, 48)).fixed and not PreprocessSpec(size=None).fixed
    label = np.zeros((24, 64, 64), np.uint8)
    label[5, 10:30, 20:40] = 1  # one slice thick: kept, as thick slabs keep thin lesions
    x = prepare_input(np.random.default_rng(0).random((6, 24, 64, 64), dtype=np.float32) * 1000, spec)
    share = prepare_label(label, spec, partial_volume=True)[0].numpy()
    assert tuple(x.shape) == (1, 6, 24, 48, 48) and share.shape == (24, 48, 48)
    assert share[5].max() == pytest.approx(1.0) and not share[4].any() and not share[6].any()
    back = ResizePreprocessor(spec).to_native(share, label.shape)
    assert back.shape == label.shape and dice(back >= 0.5, label > 0) > 0.95
    assert PreprocessSpec.from_dict(spec.to_dict()) == spec


def test_labels_resize_with_nearest_and_come_back_on_the_native_grid():
    label = np.zeros((24, 256, 256), np.uint8)
    label[8:16, 100:160, 60:120] = 1
    small = resize(label, (19, 96, 96), Interpolation.NEAREST)
    assert set(np.unique(small)) == {0.0, 1.0}
    back = to_native(small, label.shape, Interpolation.NEAREST)
    assert back.shape == label.shape
    overlap = np.logical_and(back > 0, label > 0).sum() / label.sum()
    assert overlap > 0.9


def test_continuous_maps_resize_linearly_per_channel():
    volume = np.linspace(0, 1, 6 * 10 * 20 * 20, dtype=np.float32).reshape(6, 10, 20, 20)
    out = resize(volume, (5, 10, 10), Interpolation.LINEAR)
    assert out.shape == (6, 5, 10, 10) and out.min() >= 0 and out.max() <= 1


def test_prepare_input_and_label_shapes():
    spec = PreprocessSpec(size=(19, 48, 48))
    x = prepare_input(np.random.default_rng(0).random((6, 24, 64, 64), dtype=np.float32) * 1000, spec)
    y = prepare_label(np.ones((24, 64, 64), np.uint8), spec)
    assert tuple(x.shape) == (1, 6, 19, 48, 48) and float(x.max()) <= 1.0
    assert tuple(y.shape) == (1, 19, 48, 48) and int(y.min()) == 1


def test_spec_round_trip():
    spec = PreprocessSpec(size=(19, 48, 48), normalization=IntensityNormalization.ZSCORE)
    assert PreprocessSpec.from_dict(spec.to_dict()) == spec
    assert PreprocessSpec.from_dict(PreprocessSpec(size=None).to_dict()).size is None


@pytest.mark.parametrize("native", [(8, 40, 24), (4, 8, 5), (8, 16, 16)])
def test_relevance_to_native_keeps_each_channels_sum(native):
    from LRPSegmentationLib.net.preprocess import relevance_to_native

    relevance = np.random.default_rng(1).normal(size=(2, 8, 16, 16)).astype(np.float32)
    mapped = relevance_to_native(relevance, native)
    assert mapped.shape == (2, *native)
    np.testing.assert_allclose(mapped.sum(axis=(1, 2, 3)), relevance.sum(axis=(1, 2, 3)), rtol=1e-4, atol=1e-3)
    smooth = relevance_to_native(np.ones((1, 8, 16, 16), np.float32), (8, 40, 24))
    assert np.ptp(smooth[0, :, 2:-2, 2:-2]) < 1e-6  # uniform relevance stays uniform away from the borders
