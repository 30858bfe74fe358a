"""Synthetic ISLES-like cases: determinism, anatomy, lesion physiology, known explanation and file layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from LRPSegmentationLib.data.caseio import find_case_files, load_case
from LRPSegmentationLib.data.modalities import GROUND_TRUTH, MODALITIES
from LRPSegmentationLib.data.synthetic import (
    EXPLANATION_FILE,
    GENERATOR_VERSION,
    MODALITY_WEIGHTS,
    PRESET_GRIDS,
    REGIONS_FILE,
    SyntheticCase,
    dataset_seeds,
    generate_case,
    generate_dataset,
    load_known_explanation,
)

MEDIUM = (12, 64, 64)


def channel(case: SyntheticCase, modality: str) -> np.ndarray:
    return case.images[MODALITIES.index(modality)]


def normal_tissue(case: SyntheticCase) -> np.ndarray:
    """Brain outside the perfusion deficit, without CSF (bright ADC)."""
    adc = channel(case, "ADC")
    return (adc > 0) & (adc < 1500) & ~case.explanation.hypoperfused


def standardised_effect(case: SyntheticCase, modality: str) -> float:
    """|mean(core) - mean(normal tissue)| in units of the normal tissue's standard deviation."""
    image, normal = channel(case, modality), normal_tissue(case)
    return abs(float(image[case.explanation.core].mean() - image[normal].mean())) / float(image[normal].std())


@pytest.fixture(scope="module")
def medium_cases() -> list[SyntheticCase]:
    return [generate_case(seed, shape=MEDIUM) for seed in (11, 12, 13, 14)]


def test_same_seed_same_case_other_seed_other_case() -> None:
    first, again, other = generate_case(5, shape=(8, 32, 32)), generate_case(5, shape=(8, 32, 32)), \
        generate_case(6, shape=(8, 32, 32))
    np.testing.assert_array_equal(first.images, again.images)
    np.testing.assert_array_equal(first.ground_truth, again.ground_truth)
    np.testing.assert_array_equal(first.explanation.hypoperfused, again.explanation.hypoperfused)
    assert first.geometry == again.geometry and first.seed == 5
    assert not np.array_equal(first.images, other.images)


def test_types_shapes_and_geometry(synthetic_case: SyntheticCase) -> None:
    case = synthetic_case
    assert case.images.dtype == np.float32 and case.images.shape == (len(MODALITIES), 8, 32, 32)
    assert case.ground_truth.dtype == np.uint8 and set(np.unique(case.ground_truth)) == {0, 1}
    assert case.geometry.shape == (8, 32, 32)
    assert case.explanation.core.dtype == bool and case.explanation.hypoperfused.dtype == bool
    assert np.isfinite(case.images).all() and (case.images >= 0).all()
    rotated = generate_case(5, shape=(8, 32, 32), direction=np.array([[0, 1, 0], [-1, 0, 0], [0, 0, 1]]))
    assert rotated.geometry.direction == (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="shape"):
        generate_case(1, shape=(2, 8, 8))
    with pytest.raises(ValueError, match="spacing"):
        generate_case(1, shape=(8, 32, 32), spacing=(1.0, -1.0, 5.0))


def test_lesion_lies_in_one_hemisphere_inside_the_brain(medium_cases: list[SyntheticCase]) -> None:
    for case in medium_cases:
        core, hypo = case.explanation.core, case.explanation.hypoperfused
        brain = channel(case, "ADC") > 0
        assert np.array_equal(core, case.ground_truth.astype(bool))
        assert core.any() and not (core & ~hypo).any() and hypo.sum() > 1.3 * core.sum()
        assert not (hypo & ~brain).any()
        assert (case.images[:, ~brain] == 0).all()  # skull-stripped: zero outside the brain
        brain_centre = ndimage.center_of_mass(brain)[2]
        columns = np.flatnonzero(core.any(axis=(0, 1)))
        assert columns.max() < brain_centre or columns.min() > brain_centre
        assert ndimage.label(core)[1] == 1


def test_brain_has_internal_structure(medium_cases: list[SyntheticCase]) -> None:
    case = medium_cases[0]
    adc, rcbf = channel(case, "ADC"), channel(case, "rCBF")
    normal = normal_tissue(case)
    assert ((adc > 2000) & ~case.explanation.hypoperfused).sum() > 0.02 * (adc > 0).sum()  # ventricles, sulci, fissure
    assert np.percentile(rcbf[normal], 90) > 1.4 * np.percentile(rcbf[normal], 10)  # grey/white matter contrast
    d, h, w = adc.shape
    midline = adc[d // 2, h // 4: 3 * h // 4, w // 2 - 2: w // 2 + 2]
    assert (midline > 2000).any()  # interhemispheric fissure


def test_core_and_perfusion_deficit_signals(medium_cases: list[SyntheticCase]) -> None:
    for case in medium_cases:
        core, normal = case.explanation.core, normal_tissue(case)
        penumbra = case.explanation.hypoperfused & ~core
        mean = {m: (float(channel(case, m)[core].mean()), float(channel(case, m)[normal].mean())) for m in MODALITIES}
        assert mean["ADC"][0] < 0.75 * mean["ADC"][1]
        for raised in ("Tmax", "TTP", "MTT"):
            assert mean[raised][0] > mean[raised][1]
            assert channel(case, raised)[penumbra].mean() > mean[raised][1]
        for lowered in ("rCBF", "rCBV"):
            assert mean[lowered][0] < mean[lowered][1]
        # ADC separates the core from the penumbra; the penumbra's ADC stays normal
        assert abs(channel(case, "ADC")[penumbra].mean() - mean["ADC"][1]) < 0.1 * mean["ADC"][1]


def test_modality_signal_strengths_follow_the_known_weights(medium_cases: list[SyntheticCase]) -> None:
    weights = np.array([MODALITY_WEIGHTS[m] for m in MODALITIES])
    assert len(set(weights)) == len(MODALITIES)  # deliberately unequal
    for case in medium_cases:
        effects = np.array([standardised_effect(case, m) for m in MODALITIES])
        order_of_effects, order_of_weights = np.argsort(np.argsort(effects)), np.argsort(np.argsort(weights))
        rank_correlation = np.corrcoef(order_of_effects, order_of_weights)[0, 1]
        assert rank_correlation >= 0.8, dict(zip(MODALITIES, effects.round(2)))
        assert MODALITIES[int(np.argmax(effects))] == "ADC" and MODALITIES[int(np.argmin(effects))] == "rCBV"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_default_grids_look_like_isles(seed: int) -> None:
    case = generate_case(seed)
    presets = {shape: spacing for shape, spacing in PRESET_GRIDS}
    assert case.geometry.shape in presets
    spacing = case.geometry.spacing
    assert spacing[2] > 3 * spacing[0] and abs(spacing[0] - spacing[1]) < 1e-9
    core, normal = case.explanation.core, normal_tissue(case)
    brain = channel(case, "ADC") > 0
    assert 0.008 < core.sum() / brain.sum() < 0.1
    slices = np.flatnonzero(core.any(axis=(1, 2)))
    assert slices.size >= 3
    widest_mm = max((np.ptp(np.flatnonzero(core[s].any(axis=0))) + 1) * spacing[0] for s in slices)
    assert widest_mm >= 10.0
    median = {m: float(np.median(channel(case, m)[normal])) for m in MODALITIES}
    assert 600 < median["ADC"] < 1200 and 250 < np.median(channel(case, "ADC")[core]) < 560
    assert median["Tmax"] < 2.5 and np.median(channel(case, "Tmax")[core]) > 5.0
    # the ground truth is the core alone, so the penumbra survives: visibly hypoperfused, but shifted by well under
    # the half of the core's shift at which the anatomy family's infarct edge lies
    penumbra = case.explanation.hypoperfused & ~core
    for modality in ("Tmax", "rCBF"):
        image = channel(case, modality)
        share = (np.mean(image[penumbra]) - median[modality]) / (np.mean(image[core]) - median[modality])
        assert 0.1 < share < 0.4, (modality, share)
    for modality, top in {"ADC": 4000, "rCBF": 150, "rCBV": 15, "MTT": 20, "Tmax": 20, "TTP": 50}.items():
        assert channel(case, modality).max() <= top


def test_ground_truth_is_visible_in_adc_at_training_resolution() -> None:
    """A plain ADC threshold finds most lesions at the 19x96x96 grid, so a small U-Net can learn them."""
    dice = []
    for seed in range(6):
        case = generate_case(seed, shape=(19, 96, 96))
        adc, truth = channel(case, "ADC"), case.ground_truth.astype(bool)
        found = (adc > 0) & (adc < 0.7 * np.median(adc[adc > 0]))
        dice.append(2 * (found & truth).sum() / (found.sum() + truth.sum()))
    assert np.mean(np.array(dice) >= 0.8) >= 5 / 6, dice


def test_written_case_layout_and_known_explanation(synthetic_case_dir: Path, synthetic_case: SyntheticCase) -> None:
    names = sorted(p.name for p in synthetic_case_dir.iterdir())
    assert EXPLANATION_FILE in names and REGIONS_FILE in names
    isles = [n for n in names if n.startswith(("VSD.", "SMIR."))]
    assert len(isles) == len(MODALITIES) + 1
    assert all(n.startswith("VSD.Brain.XX.O.") for n in isles)  # number 7
    assert len({n.rsplit(".", 1)[1] for n in isles}) == len(isles)  # unique IDs
    info = json.loads((synthetic_case_dir / EXPLANATION_FILE).read_text())
    assert info["seed"] == 7 and info["generator_version"] == GENERATOR_VERSION
    assert info["core_voxels"] == int(synthetic_case.ground_truth.sum())
    assert info["modality_weights"] == MODALITY_WEIGHTS
    known = load_known_explanation(synthetic_case_dir)
    np.testing.assert_array_equal(known.core, synthetic_case.explanation.core)
    np.testing.assert_array_equal(known.hypoperfused, synthetic_case.explanation.hypoperfused)
    assert known.to_json() == synthetic_case.explanation.to_json()
    assert set(find_case_files(synthetic_case_dir)) == {*MODALITIES, GROUND_TRUTH}


def test_dataset_is_seeded_numbered_and_loadable(synthetic_dataset_dir: Path, tmp_path: Path) -> None:
    folders = sorted(p for p in synthetic_dataset_dir.iterdir())
    assert [p.name for p in folders] == ["training_1", "training_2"]
    seeds = [json.loads((f / EXPLANATION_FILE).read_text())["seed"] for f in folders]
    assert seeds == dataset_seeds(2017, 2) and seeds[0] != seeds[1]
    again = generate_dataset(tmp_path, count=1, seed=2017, start=3, shape=(8, 32, 32))
    assert [p.name for p in again] == ["training_3"]
    assert all(p.name.startswith("SMIR.") for p in again[0].iterdir() if p.is_dir())  # SMIR prefix for some numbers
    first, copy = load_case(folders[0]), load_case(again[0])
    np.testing.assert_array_equal(first.images, copy.images)
    assert set(p.name.rsplit(".", 1)[1] for p in folders[0].iterdir() if p.is_dir()).isdisjoint(
        p.name.rsplit(".", 1)[1] for p in again[0].iterdir() if p.is_dir())
    with pytest.raises(ValueError, match="count"):
        generate_dataset(tmp_path, count=0, seed=1)


def test_no_known_explanation_for_other_folders(tmp_path: Path) -> None:
    assert load_known_explanation(tmp_path) is None


def test_existing_case_folders_are_never_overwritten(tmp_path):
    from LRPSegmentationLib.data.synthetic import generate_dataset, write_isles_case

    user_case = tmp_path / "training_2"
    user_case.mkdir()
    (user_case / "my_scan.nii").write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="training_2"):
        generate_dataset(tmp_path, 3, seed=0, shape=(4, 16, 16))
    assert not (tmp_path / "training_1").exists()  # nothing partial
    with pytest.raises(FileExistsError):
        write_isles_case(generate_case(0, shape=(4, 16, 16)), tmp_path, 2, replace_synthetic=True)
    assert (user_case / "my_scan.nii").read_bytes() == b"precious"
    first = write_isles_case(generate_case(0, shape=(4, 16, 16)), tmp_path, 5)
    again = write_isles_case(generate_case(1, shape=(4, 16, 16)), tmp_path, 5, replace_synthetic=True)
    assert first == again
