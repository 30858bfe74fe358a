"""lrpseg explain / sweep end to end on real files, and the bundled model's explanations on synthetic cases
whose lesion signal is known."""

import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from LRPSegmentationLib.analysis.filters import AmplitudeFilter
from LRPSegmentationLib.data.modalities import MODALITIES
from LRPSegmentationLib.data.synthetic import evaluation_families, generate_case
from LRPSegmentationLib.lrp.targets import Target
from LRPSegmentationLib.net.weights import load_model
from LRPSegmentationLib.options import FilterPlacement
from LRPSegmentationLib.pipeline.cli import main
from LRPSegmentationLib.pipeline.explain_case import ExplainSettings, explain_case


def run(*args: str) -> int:
    return main([*args, "--device", "cpu", "--progress", "none"])


def test_explain_writes_every_output_on_the_native_grid(synthetic_case_dir, tiny_model_file, tmp_path):
    out = tmp_path / "explain"
    assert run("explain", str(synthetic_case_dir), "--model", str(tiny_model_file), "--out", str(out),
               "--target", "probability", "--filter", "clamp", "--alpha", "0.2") == 0
    adc = sitk.ReadImage(str(next(synthetic_case_dir.glob("*MR_ADC*/*.nii"))))
    for modality in MODALITIES:
        raw = sitk.ReadImage(str(out / f"relevance_{modality}.nii.gz"))
        filtered = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"relevance_{modality}_filtered.nii.gz")))
        assert raw.GetSize() == adc.GetSize() and np.allclose(raw.GetDirection(), adc.GetDirection())
        assert np.allclose(raw.GetOrigin(), adc.GetOrigin(), atol=1e-4)
        assert np.abs(filtered).max() <= 0.2 + 1e-6  # clamp [0, 0.2] on the normalised map
    scores = json.loads((out / "scores.json").read_text())
    assert [m["modality"] for m in scores["modalities"]] == list(MODALITIES)
    assert scores["filter"] == "clamp[0,0.2]" and scores["gt_voxels"] > 0
    rows = list(csv.DictReader((out / "scores.csv").read_text().splitlines()))
    assert len(rows) == 7 and rows[-1]["modality"] == "all"
    provenance = json.loads((out / "provenance.json").read_text())
    assert len(provenance["model"]["sha256"]) == 64
    assert provenance["explanation"]["target"]["kind"] == "probability"
    assert provenance["explanation"]["filter"]["label"] == "clamp[0,0.2]"
    assert provenance["versions"]["torch"] == torch.__version__
    assert (out / "preview.png").stat().st_size > 10_000


def test_filter_inside_the_chain_changes_the_map_and_reports_removal(synthetic_case, tiny_model_file):
    case = synthetic_case.to_case("c")
    loaded = load_model(tiny_model_file)
    plain = explain_case(case, loaded, ExplainSettings(target=Target("whole-output")), "cpu")
    chained = explain_case(case, loaded, ExplainSettings(target=Target("whole-output"),
                                                         filter=AmplitudeFilter.pass_band(0.2),
                                                         where=FilterPlacement.LAYERS), "cpu")
    assert not np.allclose(plain.relevance, chained.relevance)
    assert chained.tap_removed and all(0.0 <= v <= 1.0 for v in chained.tap_removed.values())
    assert not plain.tap_removed


def test_bad_explain_options_are_explained(synthetic_case_dir, tiny_model_file, tmp_path, capsys):
    assert run("explain", str(synthetic_case_dir), "--model", str(tiny_model_file), "--out", str(tmp_path / "o"),
               "--filter", "pass", "--alpha", "1.5") == 2
    assert "0 <= low <= high <= 1" in capsys.readouterr().err
    assert run("explain", str(synthetic_case_dir), "--model", str(tiny_model_file), "--out", str(tmp_path / "o"),
               "--target", "voxel") == 2
    assert "voxel" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_sweep_writes_a_tidy_table_plots_and_a_sweet_spot(synthetic_dataset_dir, tiny_model_file, tmp_path):
    out = tmp_path / "sweep"
    assert run("sweep", str(synthetic_dataset_dir), "--model", str(tiny_model_file), "--out", str(out),
               "--target", "probability", "--filters", "none;pass:0.2;pass:0.1,1;clamp:0.1") == 0
    rows = list(csv.DictReader((out / "sweep.csv").read_text().splitlines()))
    assert len(rows) == 2 * 4 * 7
    assert {r["filter"] for r in rows} == {"none", "pass[0,0.2]", "pass[0.1,1]", "clamp[0,0.1]"}
    assert {r["case"] for r in rows} == {"training_1", "training_2"}
    spot = json.loads((out / "sweet_spot.json").read_text())
    assert "criterion" in spot and set(spot["sweet_spot"]) <= {"pass", "clamp"}
    for name in ("fig3_inclusivity.png", "fig5_mu.png"):
        assert (out / "plots" / name).stat().st_size > 10_000
    examples = sorted(p.name for p in (out / "plots" / "examples").iterdir())  # radiological previews, first case
    assert examples == ["tiny_training_1_none.png", "tiny_training_1_pass_0-0.2.png"]


EXPLAINED_SEEDS = {"procedural": (91001, 91002), "anatomy": (427199543,), "ellipsoid": (75022183,)}
"""Fresh cases of each family (never in training) for the bundled model's explanation check."""


@pytest.mark.parametrize("family", evaluation_families())
def test_bundled_model_relevance_follows_the_known_explanation(family):
    """On fresh synthetic cases of each family, with the default rules, the lesion's evidence lies in the known
    lesion territory; on the procedural family (whose generator sets the modality weights) the modalities that carry
    the most lesion signal (ADC, Tmax) carry the most relevance, well over the weakest (rCBF, rCBV)."""
    loaded = load_model()
    for seed in EXPLAINED_SEEDS[family]:
        synthetic = generate_case(seed, family=family)
        result = explain_case(synthetic.to_case(), loaded, ExplainSettings(), "cpu")
        assert result.note is None  # a lesion was predicted
        positive = np.clip(result.relevance.sum(axis=0), 0, None)
        region = synthetic.explanation.hypoperfused
        inside = positive[region].sum() / positive.sum()
        assert inside > 0.5 and inside > 10 * region.mean(), (inside, region.mean())
        if family == "procedural":
            share = dict(zip(MODALITIES, np.abs(result.relevance).reshape(6, -1).sum(axis=1)))
            assert set(sorted(share, key=share.get)[-2:]) == {"ADC", "Tmax"}, share
            assert share["ADC"] + share["Tmax"] > 1.5 * (share["rCBF"] + share["rCBV"]), share


def test_native_grid_masks_and_each_cases_ground_truth_reach_the_model_grid(synthetic_case_dir, synthetic_dataset_dir,
                                                                            tiny_model_file, tmp_path):
    """The case grid (8x32x32) differs from the model grid (8x16x16): ground truth and user masks are resized."""
    assert run("explain", str(synthetic_case_dir), "--model", str(tiny_model_file), "--out", str(tmp_path / "fn"),
               "--target", "false-negative") == 0
    truth = next(synthetic_case_dir.glob("*.OT.*/*.nii"))
    assert run("explain", str(synthetic_case_dir), "--model", str(tiny_model_file), "--out", str(tmp_path / "m"),
               "--target", "mask", "--mask", str(truth)) == 0
    provenance = json.loads((tmp_path / "m" / "provenance.json").read_text())
    assert provenance["explanation"]["target"]["kind"] == "mask"


def test_a_sweep_explains_each_case_against_its_own_ground_truth(synthetic_dataset_dir, tiny_model_file, tmp_path):
    """The false-negative target of every case of a sweep is that case's missed lesion: its sweep rows equal those
    of explaining the case alone (a sweep that reused the first case's ground truth would differ on the second)."""
    assert run("sweep", str(synthetic_dataset_dir), "--model", str(tiny_model_file), "--out", str(tmp_path / "s"),
               "--target", "false-negative", "--filters", "none") == 0
    lines = (tmp_path / "s" / "sweep.csv").read_text().splitlines()
    swept = {(r["case"], r["modality"]): r for r in csv.DictReader(lines)}
    for case_dir in sorted(synthetic_dataset_dir.iterdir()):
        out = tmp_path / case_dir.name
        assert run("explain", str(case_dir), "--model", str(tiny_model_file), "--out", str(out),
                   "--target", "false-negative") == 0
        for alone in csv.DictReader((out / "scores.csv").read_text().splitlines()):
            row = swept[(case_dir.name, alone["modality"])]
            for column in ("share", "abs_share", "input_inclusivity", "gt_inclusivity"):
                assert float(row[column]) == pytest.approx(float(alone[column]), rel=1e-5, abs=1e-9), column
