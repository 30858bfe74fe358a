"""In-chain bands in batches (LRPSegmentationLib.lrp.bands): each band equals its own single-band explanation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from LRPSegmentationLib.analysis.filters import AmplitudeFilter, paper_filters
from LRPSegmentationLib.lrp import explain
from LRPSegmentationLib.lrp.bands import band_grid, explain_bands
from LRPSegmentationLib.lrp.errors import ExplainInputError
from LRPSegmentationLib.lrp.taps import tap_filter
from LRPSegmentationLib.lrp.targets import Target
from LRPSegmentationLib.net.preprocess import PreprocessSpec, prepare_input
from LRPSegmentationLib.net.weights import load_model

BANDS = (AmplitudeFilter.pass_band(0.1, 1.0), AmplitudeFilter.clamp_band(0.3), AmplitudeFilter())
"""Not clamp with low > 0: it turns every zero into +low at every tap, so the last-bit differences between a batched
and a single convolution decide which relevance is exactly zero, and the results diverge (the instability the
paper reports for these filters)."""


@pytest.fixture(scope="module")
def model_and_input(synthetic_case, tiny_model_file):
    loaded = load_model(tiny_model_file)
    x = prepare_input(synthetic_case.images, PreprocessSpec.from_dict(loaded.info.preprocess))
    return loaded.model, x, Target("probability").start_relevance


def test_each_band_equals_its_own_explanation(model_and_input):
    model, x, start = model_and_input
    batched = explain_bands(model, x, start, BANDS, chunk=2)  # two forward passes, one of them for one band
    assert batched.shape == (len(BANDS), *x.shape[1:])
    for k, band in enumerate(BANDS):
        single = explain(model, x, start, tap_filter=tap_filter(band) if band.kind.value != "none" else None)
        peak = float(single.relevance.abs().max())
        torch.testing.assert_close(batched[k : k + 1], single.relevance, rtol=1e-4, atol=1e-5 * peak)
    assert not torch.allclose(batched[0], batched[1])  # the bands differ


def test_band_grid():
    grid = band_grid(0.05)
    assert set(paper_filters()) <= set(grid) and len(grid) == len(set(grid))
    assert AmplitudeFilter.pass_band(0.35) in grid and AmplitudeFilter.clamp_band(1.0) in grid
    with pytest.raises(ExplainInputError, match="step"):
        band_grid(0.0)


def test_cli_writes_bands_compactly_and_they_read_back(synthetic_case_dir, tiny_model_file, tmp_path, capsys):
    from LRPSegmentationLib.data.caseio import load_case
    from LRPSegmentationLib.options import FilterPlacement
    from LRPSegmentationLib.pipeline.band_files import BANDS_FILE, BandFileError, read_bands
    from LRPSegmentationLib.pipeline.cli import main as cli_main
    from LRPSegmentationLib.pipeline.explain_case import ExplainSettings, explain_case

    out = tmp_path / "bands"
    common = ["--model", str(tiny_model_file), "--target", "probability", "--device", "cpu", "--progress", "none"]
    assert cli_main(["bands", str(synthetic_case_dir), "--out", str(out), "--bands", "pass:0.1,1;clamp:0.3",
                     "--chunk", "1", *common]) == 0
    case = load_case(synthetic_case_dir)
    bands = read_bands(out / BANDS_FILE, case.geometry.shape)
    assert list(bands) == [AmplitudeFilter.pass_band(0.1, 1.0), AmplitudeFilter.clamp_band(0.3)]
    for band, relevance in bands.items():
        settings = ExplainSettings(target=Target("probability"), filter=band, where=FilterPlacement.LAYERS)
        alone = explain_case(case, load_model(tiny_model_file), settings, "cpu").relevance
        peak = np.abs(alone).reshape(6, -1).max(axis=1)[:, None, None, None]
        np.testing.assert_allclose(relevance / peak, alone / peak, atol=2e-3)  # float16 of the normalised map
    assert (out / "bands.json").is_file()
    assert cli_main(["bands", str(synthetic_case_dir), "--out", str(out), "--chunk", "0", "--overwrite",
                     *common]) == 2
    assert cli_main(["bands", str(synthetic_case_dir), "--out", str(tmp_path / "b2"), "--bands", "band:7",
                     *common]) == 2
    assert "Cannot read filter" in capsys.readouterr().err
    with pytest.raises(BandFileError, match="grid"):
        read_bands(out / BANDS_FILE, (1, 2, 3))
