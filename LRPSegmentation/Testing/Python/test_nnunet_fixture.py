"""An nnU-Net v2 results folder written by nnU-Net's own code, through our loader, predictor and ``lrpseg explain``.

``fixtures/nnunet/`` was made by ``fixtures/make_nnunet_fixture.py`` (nnU-Net 2.8.1 planned, preprocessed and
trained it on tiny synthetic DWI/ADC/FLAIR cases; its ``nnUNetPredictor`` predicted the held-out case on another,
anisotropic grid). The saved nnU-Net predictions make the comparison real without nnunetv2 installed; the last
test runs nnU-Net's predictor live when ``nnunetv2`` is importable (``make test-nnunet``).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from LRPSegmentationLib.analysis.metrics import dice
from LRPSegmentationLib.data.caseio import load_case, read_volume
from LRPSegmentationLib.net.nnunet import centred_pads, load_checkpoint
from LRPSegmentationLib.net.nnunet_resampling import Resampling, resample, separate_axis
from LRPSegmentationLib.net.predict import lesion_log_odds, predict_case
from LRPSegmentationLib.net.weights import load_model
from LRPSegmentationLib.pipeline.cli import main

pytest.importorskip("dynamic_network_architectures.architectures.unet")

FIXTURE = Path(__file__).parent / "fixtures" / "nnunet"
MODEL = FIXTURE / "nnUNetTrainer__nnUNetPlans__3d_fullres"
CASE = FIXTURE / "case"
MIN_DICE = 0.99


@pytest.fixture(scope="module")
def ours():
    loaded = load_model(MODEL)
    case = load_case(CASE, modalities=loaded.modalities)
    return loaded, case, predict_case(case, loaded, "cpu")


def _reference(name: str) -> np.ndarray:
    return read_volume(CASE / f"{name}.nii.gz")[0]


def test_the_folder_is_nnunets_own(ours):
    loaded, case, _ = ours
    checkpoint = load_checkpoint(MODEL / "fold_0" / "checkpoint_final.pth")  # weights_only=True, as load_model
    assert {"network_weights", "optimizer_state", "init_args", "trainer_name",
            "inference_allowed_mirroring_axes"} <= set(checkpoint)
    assert checkpoint["trainer_name"] == "nnUNetTrainer" and checkpoint["init_args"]["configuration"] == "3d_fullres"
    plans = json.loads((MODEL / "plans.json").read_text())
    assert plans["configurations"]["3d_fullres"]["resampling_fn_data_kwargs"]["order"] == 3
    assert loaded.kind == "nnunet" and loaded.modalities == ("DWI", "ADC", "FLAIR")
    assert case.geometry.spacing != tuple(plans["configurations"]["3d_fullres"]["spacing"][::-1])  # resampled


def test_our_prediction_matches_nnunets_predictor(ours):
    _, case, prediction = ours
    reference = _reference("nnunet_prediction")  # nnUNetPredictor, mirroring off: the one forward LRP explains
    assert reference.shape == prediction.mask.shape and reference.sum() > 500  # a real lesion, not two empty maps
    assert dice(reference > 0, case.ground_truth > 0) > 0.6  # the trained model finds the lesion
    assert dice(prediction.mask > 0, reference > 0) >= MIN_DICE
    # nnU-Net's default test-time mirroring averages 8 flips: close, but not the network's single forward
    assert dice(prediction.mask > 0, _reference("nnunet_prediction_mirroring") > 0) >= 0.95


def test_resampling_and_padding_follow_nnunets_rules():
    cubic = Resampling(3, 0)
    assert separate_axis(cubic, (6.5, 2.0, 2.0), (7.8, 4.6, 4.6)) == 0  # the source grid is anisotropic (> 3x)
    assert separate_axis(cubic, (7.8, 4.6, 4.6), (6.5, 2.0, 2.0)) == 0  # the target grid is
    assert separate_axis(cubic, (3.0, 2.0, 2.0), (2.0, 2.0, 2.0)) is None
    assert separate_axis(Resampling(3, 0, True), (1.0, 1.0, 2.0), (1.0, 1.0, 1.0)) == 2
    slices = np.arange(6, dtype=np.float32)[:, None, None] * np.ones((6, 8, 8), dtype=np.float32)
    out = resample(slices[None], (9, 12, 12), (6.5, 2.0, 2.0), (4.0, 1.5, 1.5), cubic)[0]
    assert set(np.unique(out)) <= set(range(6)) and np.ptp(out[4]) == 0  # nearest along z, cubic in-plane
    np.testing.assert_array_equal(resample(slices[None], (6, 8, 8), (6.5, 2, 2), (4, 1, 1), cubic)[0], slices)
    # where nnU-Net's predictor pads a (12, 42, 35) case for its (16, 48, 40) patch
    assert centred_pads((12, 42, 35), (16, 48, 40), (4, 8, 8)) == [(2, 2), (3, 3), (2, 3)]
    assert centred_pads((20, 50, 40), (16, 48, 40), (4, 8, 8)) == [(0, 0), (3, 3), (0, 0)]


def test_lesion_log_odds_stay_exact_where_the_probability_saturates():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [50.0, -3.0, 0.0, -60.0], [0.0, 0.0, np.log(2.0), 0.0]])
    odds = lesion_log_odds(logits[None, :, :, None, None].float(), lesion_class=1)[:, 0, 0]
    # against log(e^l1 / (e^l0 + e^l2)); float32 softmax gives p = 1.0 (log-odds inf) at 50
    np.testing.assert_allclose(odds, [50.0 - np.log(2.0), -3.0 - np.log(2.0), -np.log(3.0), -60.0 - np.log(2.0)],
                               rtol=1e-6)


def test_a_case_larger_than_the_patch_is_flagged(ours):
    loaded, case, _ = ours
    prep = loaded.prep()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prep.prepare(case.images, case.geometry.spacing)  # fits one patch: as nnU-Net, no warning
    big = np.ones((3, 16, 64, 64), dtype=np.float32)  # at the target spacing: (16, 64, 64) > patch (16, 48, 40)
    with pytest.warns(UserWarning, match="exceeds nnU-Net's patch"):
        x = prep.prepare(big, tuple(prep.spacing[::-1]))
    assert tuple(x.shape[2:]) == (16, 64, 64)


def test_lrpseg_explain_runs_end_to_end_on_it(tmp_path, capsys):
    out = tmp_path / "explain"
    assert main(["explain", str(CASE), "--model", str(MODEL), "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "conservation" in printed.out + printed.err
    case_shape = read_volume(CASE / "DWI.nii.gz")[0].shape
    for modality in ("DWI", "ADC", "FLAIR"):
        relevance = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"relevance_{modality}.nii.gz")))
        assert relevance.shape == case_shape and np.isfinite(relevance).all() and np.abs(relevance).sum() > 0
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["model"]["kind"] == "nnunet" and np.isfinite(provenance["conservation"])


def test_nnunets_predictor_live_agrees_with_ours(ours):
    pytest.importorskip("nnunetv2", reason="nnunetv2 is not installed: `make test-nnunet` runs this test")
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    _, _, prediction = ours
    predictor = nnUNetPredictor(use_mirroring=False, device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(MODEL), use_folds=(0,), checkpoint_name="checkpoint_final.pth")
    images, properties = SimpleITKIO().read_images([str(CASE / f"{m}.nii.gz") for m in ("DWI", "ADC", "FLAIR")])
    theirs = predictor.predict_single_npy_array(images, properties)
    assert dice(prediction.mask > 0, theirs > 0) >= MIN_DICE
    assert dice(theirs > 0, _reference("nnunet_prediction") > 0) > 0.999  # the committed reference is reproducible
