"""The generator families beyond the procedural one (MNI152 anatomy with territorial strokes, and the held-out
ellipsoid family), domain randomisation, and the per-family evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from LRPSegmentationLib.analysis.evaluation import markdown_table, score_case, size_class, summarise
from LRPSegmentationLib.analysis.metrics import dice
from LRPSegmentationLib.data.lesions import INFARCT_GRADE
from LRPSegmentationLib.data.modalities import MODALITIES
from LRPSegmentationLib.data.randomise import randomise_sample
from LRPSegmentationLib.data.synthetic import FAMILIES, generate_case, load_known_explanation, write_isles_case
from LRPSegmentationLib.options import GENERATOR_FAMILIES
from LRPSegmentationLib.pipeline.cli import main

SMALL = (19, 64, 64)


def channel(case, modality: str) -> np.ndarray:
    return case.images[MODALITIES.index(modality)]


def test_family_names_agree():
    assert GENERATOR_FAMILIES == FAMILIES
    with pytest.raises(ValueError, match="family"):
        generate_case(1, family="cartoon")


@pytest.fixture(scope="module")
def anatomy_cases():
    pytest.importorskip("nilearn", reason="the anatomy family needs the 'anatomy' extra (nilearn)")
    from LRPSegmentationLib.data.families import generate_anatomy_case

    return [generate_anatomy_case(seed, shape=SMALL, territory=t) for seed, t in ((1, "mca"), (2, "lacunar"))]


def test_anatomy_cases_are_seeded_brains_on_thick_slab_grids(anatomy_cases):
    again = generate_case(1, family="anatomy")
    np.testing.assert_array_equal(again.images, generate_case(1, family="anatomy").images)
    depth, height, width = again.geometry.shape
    assert 19 <= depth <= 30 and 128 <= height == width <= 256 and 5.0 <= again.geometry.spacing[2] <= 7.0
    brain = channel(again, "ADC") > 0
    brain_ml = brain.sum() * np.prod(again.geometry.spacing) / 1000
    assert 600 < brain_ml < 2000, brain_ml  # a slab through a real brain


def test_stroke_physiology_core_inside_infarct_inside_deficit(anatomy_cases):
    large, lacune = anatomy_cases
    assert large.territories == ("mca",) and lacune.territories == ("lacunar",)
    voxel_ml = np.prod(large.geometry.spacing) / 1000
    assert large.ground_truth.sum() * voxel_ml > 5 > lacune.ground_truth.sum() * voxel_ml > 0
    for case in anatomy_cases:
        truth, deficit = case.ground_truth.astype(bool), case.explanation.hypoperfused
        assert deficit[truth].all() and deficit.sum() > truth.sum()
        # the deficit's grade (what infarct_ceiling.py thresholds): 0-1, zero outside the deficit, highest inside
        # the infarct
        assert case.severity.min() >= 0 and case.severity.max() <= 1 and not case.severity[~deficit].any()
        assert case.severity[truth].mean() > case.severity[deficit & ~truth].mean()
        # the maps determine the ground truth: the infarct edge lies at one deficit grade in every lesion
        assert dice(case.severity > INFARCT_GRADE, truth) > 0.95
        normal = (channel(case, "ADC") > 400) & (channel(case, "ADC") < 1200) & ~deficit
        # the diffusion core (part of the final infarct) has a lowered ADC
        assert np.percentile(channel(case, "ADC")[truth], 10) < 0.85 * np.median(channel(case, "ADC")[normal])
        penumbra = deficit & ~truth
        assert channel(case, "Tmax")[truth].mean() > channel(case, "Tmax")[penumbra].mean() > \
            channel(case, "Tmax")[normal].mean() + 2
    # textbook values in normal tissue: CBF in ml/100 g/min (grey ~55, white ~22, scaled per site), MTT in s
    cbf, mtt = channel(large, "rCBF"), channel(large, "MTT")
    normal = (channel(large, "ADC") > 400) & (channel(large, "ADC") < 1200) & ~large.explanation.hypoperfused
    assert 2 < np.median(mtt[normal]) < 9 and np.median(cbf[normal]) > 5


def test_some_cases_are_healthy():
    from LRPSegmentationLib.data.families import generate_ellipsoid_case

    truths = [generate_ellipsoid_case(seed, shape=(12, 48, 48)).ground_truth.any() for seed in range(12)]
    assert not all(truths) and any(truths)


def test_ellipsoid_cases_write_their_family(tmp_path):
    case = generate_case(4, family="ellipsoid", shape=(12, 48, 48))
    assert case.ground_truth.any() and case.family == "ellipsoid"
    folder = write_isles_case(case, tmp_path, 1)
    assert json.loads((folder / "explanation.json").read_text())["family"] == "ellipsoid"
    known = load_known_explanation(folder)
    np.testing.assert_array_equal(known.core, case.ground_truth.astype(bool))


def test_randomised_views_keep_the_label_with_the_geometry():
    case = generate_case(4, shape=(12, 48, 48))
    x = case.images / case.images.reshape(6, -1).max(axis=1)[:, None, None, None]
    y = case.ground_truth.astype(np.int64)
    views = [randomise_sample(np.random.default_rng(seed), x, y) for seed in range(8)]
    again = randomise_sample(np.random.default_rng(0), x, y)
    np.testing.assert_array_equal(views[0][0], again[0])
    flipped = 0
    for view, label in views:
        assert view.shape == x.shape and view.dtype == np.float32 and label.shape == y.shape
        assert not np.allclose(view, x)
        mirrored = np.array_equal(label, y[..., ::-1]) or np.array_equal(label > 0, (y[..., ::-1] > 0) & (label > 0))
        flipped += bool(mirrored and not np.array_equal(label, y))
        assert (view[:, ~np.any(x != 0, axis=0) & ~np.any(x[..., ::-1] != 0, axis=0)] == 0).all()
    assert 0 < flipped < len(views)


def test_evaluation_counts_lesions_sizes_and_healthy_false_positives():
    images = np.ones((6, 4, 20, 20), np.float32)
    truth = np.zeros((4, 20, 20), bool)
    truth[1:3, 2:6, 2:6] = True  # 32 voxels
    truth[1, 15:17, 15:17] = True  # 4 voxels, missed
    mask = np.zeros_like(truth)
    mask[1:3, 2:6, 2:5] = True
    record = score_case("a", "f", mask, truth, images, voxel_ml=0.2)
    assert record.lesions == [(pytest.approx(6.4), True), (pytest.approx(0.8), False)]
    assert record.dice == pytest.approx(2 * 24 / (24 + 36)) and record.size_class == "5-30 ml"
    healthy = score_case("b", "f", mask, np.zeros_like(truth), images, voxel_ml=0.2)
    assert healthy.healthy and healthy.dice is None and healthy.predicted_ml == pytest.approx(4.8)
    summary = summarise([record, healthy])
    group = summary["families"]["f"]
    assert group["detection_rate"] == 0.5 and group["by_size"]["<5 ml"]["detection_rate"] == 0.0
    assert group["healthy_false_positive_share_max"] == pytest.approx(24 / 1600)
    assert size_class(4.99) == "<5 ml" and size_class(30) == ">=30 ml"
    assert "| f | 2 (1) |" in markdown_table(summary)


def test_evaluate_reports_each_family(tiny_model_file, capsys):
    assert main(["evaluate", "--model", str(tiny_model_file), "--synthetic", "2", "--family", "ellipsoid",
                 "--family", "procedural", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert list(report["by_family"]) == ["ellipsoid", "procedural"] and report["all"]["cases"] == 4
    assert "| ellipsoid |" in captured.err


def test_synth_writes_the_chosen_family(tmp_path, capsys):
    assert main(["synth", str(tmp_path), "--family", "ellipsoid", "--count", "1", "--shape", "12x48x48"]) == 0
    assert "ellipsoid" in capsys.readouterr().out
    assert json.loads((tmp_path / "training_1" / "explanation.json").read_text())["family"] == "ellipsoid"


def test_tissue_contrast_options_change_only_the_tissue_values(tmp_path, capsys):
    pytest.importorskip("nilearn", reason="the anatomy family needs the 'anatomy' extra (nilearn)")
    from LRPSegmentationLib.data.caseio import load_case
    from LRPSegmentationLib.data.perfusion import TissueContrast
    from LRPSegmentationLib.data.synthetic import dataset_seeds

    textbook = generate_case(3, family="anatomy", shape=SMALL)
    np.testing.assert_array_equal(generate_case(3, family="anatomy", shape=SMALL, contrast=TissueContrast()).images,
                                  textbook.images)
    seed = dataset_seeds(7, 1)[0]
    plain = generate_case(seed, family="anatomy", shape=SMALL)
    brain = plain.images[0] > 0
    for number, (flag, value, field) in enumerate((("--tissue-jitter", "0.4", "jitter"),
                                                    ("--white-contrast", "2.5", "white_gain")), start=1):
        # one seed, other tissue values: the same anatomy and lesion, other grey/white/CSF values
        assert main(["synth", str(tmp_path), "--family", "anatomy", "--count", "1", "--seed", "7", "--start",
                     str(number), "--shape", "19x64x64", flag, value]) == 0
        info = json.loads((tmp_path / f"training_{number}" / "explanation.json").read_text())
        assert info["tissue_contrast"][field] == float(value)
        varied = load_case(tmp_path / f"training_{number}")
        np.testing.assert_array_equal(varied.ground_truth, plain.ground_truth)
        np.testing.assert_array_equal(varied.images[0] > 0, brain)
        ratios = np.median(varied.images[:, brain], axis=1) / np.median(plain.images[:, brain], axis=1)
        assert np.abs(np.log(ratios)).max() > 0.05, ratios
    # a stronger white-matter contrast moves white matter's rCBF further below grey matter's (per-site scales
    # differ between the two draws, so compare the spread within each case)
    gained = generate_case(seed, family="anatomy", shape=SMALL, contrast=TissueContrast(white_gain=3.0))
    healthy = brain & ~plain.explanation.hypoperfused

    def low_to_high(case) -> float:
        cbf = case.images[MODALITIES.index("rCBF")][healthy]
        return float(np.percentile(cbf, 20) / np.percentile(cbf, 80))

    assert low_to_high(gained) < 0.8 * low_to_high(plain), (low_to_high(gained), low_to_high(plain))
    # the other families have no tissue values to vary, and out-of-range values are refused; nothing written
    assert main(["synth", str(tmp_path / "e"), "--family", "ellipsoid", "--tissue-jitter", "0.3"]) == 2
    assert "anatomy" in capsys.readouterr().err
    assert main(["synth", str(tmp_path / "e"), "--family", "anatomy", "--white-contrast", "0.5"]) == 2
    assert "[1, 4]" in capsys.readouterr().err and not (tmp_path / "e").exists()
