"""When the model predicts nothing: the default target shows the lesion evidence, with a note, instead of failing
(CLI explain, sweep, demo path, and the Slicer side's live view of the run folder)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from LRPSegmentationLib.data.modalities import MODALITIES
from LRPSegmentationLib.lrp.targets import Target, TargetError
from LRPSegmentationLib.net.predict import predict_case
from LRPSegmentationLib.net.weights import load_model
from LRPSegmentationLib.options import FALSE_NEGATIVE_HINT, NO_LESION_NOTE
from LRPSegmentationLib.pipeline.cli import main
from LRPSegmentationLib.pipeline.outputs import read_note


def run(*args: str) -> int:
    return main([*args, "--device", "cpu", "--progress", "none"])


def test_the_silent_model_predicts_nothing(synthetic_case, silent_model_file):
    assert predict_case(synthetic_case.to_case(), load_model(silent_model_file), "cpu").mask.sum() == 0


def test_default_target_falls_back_to_the_probability_weighted_lesion_logits():
    logits = torch.zeros(1, 2, 2, 3, 3)
    logits[:, 0] = 5.0
    logits[0, 1, 1, 2, 2] = 4.0  # most lesion evidence here, still below background
    start = Target().start_relevance(logits)
    assert Target().note(logits) == NO_LESION_NOTE
    probability = torch.softmax(logits, dim=1)[:, 1]
    torch.testing.assert_close(start[:, 1], logits[:, 1] * probability / probability.max())
    assert start[0, 1, 1, 2, 2] == 4.0 and not start[:, 0].any()
    with pytest.raises(TargetError, match="lesion-logits"):  # explicit choices that need a lesion still say so
        Target("equal").start_relevance(logits)
    logits[0, 1, 1, 2, 2] = 6.0  # now predicted: the usual target, no note
    assert Target().note(logits) is None
    assert int((Target().start_relevance(logits)[:, 1] != 0).sum()) == 1


def test_explain_exits_0_with_the_note_and_finite_maps(synthetic_case_dir, silent_model_file, tmp_path, capsys):
    out = tmp_path / "explain"
    assert run("explain", str(synthetic_case_dir), "--model", str(silent_model_file), "--out", str(out)) == 0
    expected = f"{NO_LESION_NOTE}; {FALSE_NEGATIVE_HINT}"  # the case has a ground truth
    assert expected in capsys.readouterr().err
    assert json.loads((out / "scores.json").read_text())["note"] == expected
    assert json.loads((out / "provenance.json").read_text())["note"] == expected
    assert read_note(out) == expected
    for modality in MODALITIES:
        for filtered in (False, True):
            suffix = "_filtered" if filtered else ""
            array = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"relevance_{modality}{suffix}.nii.gz")))
            assert np.isfinite(array).all()
    raw = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "relevance_ADC.nii.gz")))
    assert np.abs(raw).max() > 0
    # the false-negative target stays offered and works on the same case
    assert run("explain", str(synthetic_case_dir), "--model", str(silent_model_file), "--out",
               str(tmp_path / "fn"), "--target", "false-negative") == 0
    assert read_note(tmp_path / "fn") is None


def test_sweep_runs_and_records_the_note(synthetic_dataset_dir, silent_model_file, tmp_path):
    out = tmp_path / "sweep"
    assert run("sweep", str(synthetic_dataset_dir), "--model", str(silent_model_file), "--out", str(out),
               "--filters", "none;clamp:0.1") == 0
    rows = list(csv.DictReader((out / "sweep.csv").read_text().splitlines()))
    assert rows and all(row["note"].startswith(NO_LESION_NOTE) for row in rows)


def test_a_run_without_a_note_reads_none(tmp_path):
    assert read_note(tmp_path) is None
    (tmp_path / "scores.json").write_text(json.dumps({"note": None}))
    assert read_note(tmp_path) is None
