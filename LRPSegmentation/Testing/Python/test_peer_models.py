"""Loading networks researchers bring: a MONAI network (JSON + weights) and an nnU-Net v2 trained-model folder,
run on a three-modality (DWI/ADC/FLAIR) case in the ISLES 2022 layout through predict, explain, sweep and info.

The nnU-Net folder is the one nnU-Net v2 itself planned and trained (``fixtures/make_nnunet_fixture.py``; its
comparison with nnU-Net's predictor is in ``test_nnunet_fixture.py``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from LRPSegmentationLib.data.caseio import CaseError, find_case_files, load_case
from LRPSegmentationLib.data.modalities import ISLES2022_MODALITIES
from LRPSegmentationLib.net.nnunet import NnunetPreprocessor, load_checkpoint
from LRPSegmentationLib.net.weights import WeightsError, load_model
from LRPSegmentationLib.pipeline.cli import main

monai_nets = pytest.importorskip("monai.networks.nets")
dna_unet = pytest.importorskip("dynamic_network_architectures.architectures.unet")

SHAPE = (8, 24, 24)  # (D, H, W) of DWI and ADC; FLAIR is on a finer in-plane grid
SPACING = (1.5, 1.5, 3.0)  # ITK (x, y, z)


def _write(array: np.ndarray, spacing, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))


def _images(seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, s) for s in SHAPE], indexing="ij")
    brain = (z ** 2 + y ** 2 + x ** 2) < 0.8
    lesion = ((z - 0.1) ** 2 + (y - 0.3) ** 2 + (x + 0.2) ** 2) < 0.08
    noise = rng.normal(0, 0.05, SHAPE)
    dwi = brain * (1.0 + 2.0 * lesion + noise)
    adc = brain * (1.5 - 1.0 * lesion + noise)
    return {"DWI": dwi, "ADC": adc}, lesion.astype(np.uint8)


@pytest.fixture(scope="module")
def isles2022_root(tmp_path_factory) -> Path:
    """An ISLES 2022 dataset root with one case (BIDS layout, mask in derivatives, FLAIR on another grid)."""
    root = tmp_path_factory.mktemp("isles2022")
    images, lesion = _images()
    sub, ses = "sub-strokecase0001", "ses-0001"
    base = root / sub / ses
    _write(images["DWI"], SPACING, base / "dwi" / f"{sub}_{ses}_dwi.nii.gz")
    _write(images["ADC"], SPACING, base / "dwi" / f"{sub}_{ses}_adc.nii.gz")
    (base / "dwi" / f"{sub}_{ses}_dwi.json").write_text("{}")  # BIDS sidecars are ignored
    flair = np.repeat(np.repeat(images["DWI"] * 0.8 + 0.2 * (images["DWI"] > 0), 2, axis=1), 2, axis=2)
    _write(flair, (0.75, 0.75, 3.0), base / "anat" / f"{sub}_{ses}_FLAIR.nii.gz")
    _write(lesion, SPACING, root / "derivatives" / sub / ses / f"{sub}_{ses}_msk.nii.gz")
    return root


def test_isles2022_layout_is_read_with_the_models_modality_list(isles2022_root):
    case_dir = isles2022_root / "sub-strokecase0001"
    files = find_case_files(case_dir, ISLES2022_MODALITIES)
    assert [files[m].name.split("_")[-1] for m in ISLES2022_MODALITIES] == ["dwi.nii.gz", "adc.nii.gz",
                                                                           "FLAIR.nii.gz"]
    assert "derivatives" in str(files["OT"])
    case = load_case(case_dir, modalities=ISLES2022_MODALITIES)
    assert case.images.shape == (3, *SHAPE) and case.modalities == ISLES2022_MODALITIES
    assert case.ground_truth is not None and case.ground_truth.sum() > 0
    assert float(case.modality("flair").max()) > 0  # resampled onto the DWI grid
    with pytest.raises(CaseError, match="lacks MTT, rCBF"):  # our U-Net's six maps are not there
        find_case_files(case_dir)
    with pytest.raises(CaseError, match="dataset root in the ISLES 2022 layout"):
        find_case_files(isles2022_root, ISLES2022_MODALITIES)


def test_flat_dwi_adc_flair_folder(tmp_path):
    images, lesion = _images(1)
    for name, array in (("dwi", images["DWI"]), ("ADC", images["ADC"]), ("flair", images["DWI"]), ("gt", lesion)):
        _write(array, SPACING, tmp_path / f"{name}.nii.gz")
    case = load_case(tmp_path, modalities=ISLES2022_MODALITIES)
    assert case.images.shape[0] == 3 and case.ground_truth.sum() == lesion.sum()


# ------------------------------------------------------------------------------------------ nnU-Net v2 folder

NNUNET_FOLDER = Path(__file__).parent / "fixtures" / "nnunet" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
"""Written by nnU-Net v2 itself (fixtures/make_nnunet_fixture.py); read-only: tests that change it copy it first."""


def _copy_nnunet_folder(root: Path, checkpoint_extra: dict | None = None) -> Path:
    folder = root / NNUNET_FOLDER.name
    shutil.copytree(NNUNET_FOLDER, folder)
    if checkpoint_extra:
        path = folder / "fold_0" / "checkpoint_final.pth"
        torch.save({**load_checkpoint(path), **checkpoint_extra}, path)
    return folder


@pytest.fixture(scope="module")
def nnunet_folder() -> Path:
    return NNUNET_FOLDER


def test_nnunet_folder_loads_the_network_of_its_plans(nnunet_folder):
    loaded = load_model(nnunet_folder)
    assert loaded.kind == "nnunet" and loaded.modalities == ("DWI", "ADC", "FLAIR")
    assert type(loaded.model).__name__ == "PlainConvUNet" and loaded.model.decoder.deep_supervision is False
    config = json.loads((nnunet_folder / "plans.json").read_text())["configurations"]["3d_fullres"]
    assert loaded.prep().multiple == (4, 8, 8) and loaded.prep().patch_size == tuple(config["patch_size"])
    ops = {"conv_op": torch.nn.Conv3d, "norm_op": torch.nn.InstanceNorm3d, "dropout_op": None,
           "nonlin": torch.nn.LeakyReLU}
    network = dna_unet.PlainConvUNet(input_channels=3, num_classes=2, deep_supervision=False,
                                     **{**config["architecture"]["arch_kwargs"], **ops})
    network.load_state_dict(load_checkpoint(nnunet_folder / "fold_0" / "checkpoint_final.pth")["network_weights"])
    x = torch.rand(1, 3, 16, 48, 40)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), network.eval()(x))
    assert load_model(nnunet_folder / "fold_0").sha256 == loaded.sha256  # the fold folder works too


def test_nnunet_checkpoint_needing_more_than_weights_is_refused(tmp_path):
    folder = _copy_nnunet_folder(tmp_path, {"trainer_object": Path("/tmp")})  # a pickled Python object
    with pytest.raises(WeightsError, match="weights_only=True"):
        load_model(folder)


def test_nnunet_preprocessing_transposes_crops_and_maps_back():
    prep = NnunetPreprocessor(transpose_forward=(2, 0, 1), spacing=(1.0, 2.0, 1.0),
                              schemes=("ZScoreNormalization", "NoNormalization"), use_mask=(True, False),
                              intensity=({}, {}), multiple=(4, 4, 4))
    rng = np.random.default_rng(0)
    images = np.zeros((2, 6, 10, 12), dtype=np.float32)
    images[:, 1:5, 2:9, 3:11] = rng.random((2, 4, 7, 8)) + 1.0
    # ITK spacing (x, y, z) = (1, 1, 2): array axes (z, y, x) = (2, 1, 1); transposed (x, z, y) = (1, 2, 1)
    x = prep.prepare(images, (1.0, 1.0, 2.0))
    assert tuple(x.shape) == (1, 2, 8, 4, 8)  # cropped (8, 4, 7) -> padded to multiples of 4
    inside = x[0, 0, :8, :4, :7]
    assert abs(float(inside.mean())) < 1e-5 and abs(float(inside.std(unbiased=False)) - 1.0) < 1e-3
    torch.testing.assert_close(x[0, 1, :8, :4, :7], torch.from_numpy(images[1, 1:5, 2:9, 3:11].transpose(2, 0, 1)))
    mask = np.zeros(images.shape[1:], dtype=bool)
    mask[2:4, 3:6, 4:9] = True
    on_model = prep.mask_to_model(mask, images.shape[1:])
    assert on_model.shape == tuple(x.shape[2:]) and on_model.sum() == mask.sum()
    back = prep.to_native(on_model.astype(np.float32), images.shape[1:])
    np.testing.assert_array_equal(back > 0.5, mask)


def test_nnunet_model_predicts_explains_and_sweeps_an_isles2022_case(nnunet_folder, isles2022_root, tmp_path,
                                                                    capsys):
    folder = nnunet_folder
    case_dir = str(isles2022_root / "sub-strokecase0001")
    assert main(["predict", case_dir, "--model", str(folder), "--out", str(tmp_path / "p"), "--progress", "none"]) == 0
    assert (tmp_path / "p" / "prediction.json").is_file()
    assert main(["explain", case_dir, "--model", str(folder), "--out", str(tmp_path / "e"), "--progress", "none",
                 "--target", "whole-output"]) == 0
    for modality in ISLES2022_MODALITIES:
        relevance = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "e" / f"relevance_{modality}.nii.gz")))
        assert relevance.shape == SHAPE and np.isfinite(relevance).all() and np.abs(relevance).sum() > 0
    scores = json.loads((tmp_path / "e" / "scores.json").read_text())
    assert [row["modality"] for row in scores["modalities"]] == list(ISLES2022_MODALITIES)
    provenance = json.loads((tmp_path / "e" / "provenance.json").read_text())
    assert provenance["model"]["kind"] == "nnunet" and abs(provenance["conservation"]) > 0
    assert main(["sweep", str(isles2022_root), "--model", str(folder), "--out", str(tmp_path / "s"),
                 "--progress", "none", "--target", "whole-output", "--filters", "none;clamp:0.2"]) == 0
    rows = (tmp_path / "s" / "sweep.csv").read_text()
    assert "FLAIR" in rows and ",sub-strokecase0001," in rows
    capsys.readouterr()
    assert main(["info", str(folder), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["modalities"] == list(ISLES2022_MODALITIES) and info["network"] == "PlainConvUNet"


def test_a_case_with_other_modalities_than_the_model_is_refused(nnunet_folder, synthetic_case_dir, tmp_path,
                                                                capsys):
    folder = nnunet_folder
    assert main(["predict", str(synthetic_case_dir), "--model", str(folder), "--out", str(tmp_path / "p"),
                 "--progress", "none"]) == 2
    assert "lacks DWI" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- MONAI network

def _monai_description(tmp_path: Path, weights_name: str) -> tuple[Path, torch.nn.Module]:
    args = {"spatial_dims": 3, "in_channels": 3, "out_channels": 2, "kernel_size": [3, 3, 3],
            "strides": [1, 2, 2], "upsample_kernel_size": [2, 2], "filters": [4, 8, 16], "res_block": True}
    torch.manual_seed(1)
    model = monai_nets.DynUNet(**args).eval()
    if weights_name.endswith(".safetensors"):
        from safetensors.torch import save_model  # DynUNet shares tensors between two attribute paths

        save_model(model, str(tmp_path / weights_name))
    else:
        torch.save({"state_dict": model.state_dict()}, tmp_path / weights_name)
    description = {"format": "lrpseg-monai", "class": "DynUNet", "args": args, "weights": weights_name,
                   "modalities": list(ISLES2022_MODALITIES),
                   "preprocess": {"size": [8, 24, 24], "normalization": "zscore"}, "pad_multiple": 4}
    path = tmp_path / "model.json"
    path.write_text(json.dumps(description))
    return path, model


@pytest.mark.parametrize("weights", ["weights.safetensors", "weights.pt"])
def test_monai_description_loads_the_network_with_its_weights(tmp_path, weights):
    path, model = _monai_description(tmp_path, weights)
    loaded = load_model(path)
    assert loaded.kind == "monai" and loaded.modalities == ISLES2022_MODALITIES
    x = torch.rand(1, 3, 8, 24, 24)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), model(x))


def test_monai_route_refuses_pickled_models_and_unknown_classes(tmp_path):
    path, model = _monai_description(tmp_path, "weights.pt")
    torch.save(model, tmp_path / "weights.pt")  # the whole pickled module, not a state dict
    with pytest.raises(WeightsError, match="weights_only=True"):
        load_model(path)
    description = json.loads(path.read_text())
    path.write_text(json.dumps({**description, "class": "os.system"}))
    with pytest.raises(WeightsError, match="has no class 'os.system'"):
        load_model(path)


def test_monai_model_explains_a_flat_case_from_the_cli(tmp_path):
    path, _ = _monai_description(tmp_path, "weights.safetensors")
    images, lesion = _images(2)
    case_dir = tmp_path / "case"
    for name, array in (("DWI", images["DWI"]), ("ADC", images["ADC"]), ("FLAIR", images["DWI"]), ("OT", lesion)):
        _write(array, SPACING, case_dir / f"{name}.nii.gz")
    assert main(["explain", str(case_dir), "--model", str(path), "--out", str(tmp_path / "e"), "--progress", "none",
                 "--target", "probability"]) == 0
    provenance = json.loads((tmp_path / "e" / "provenance.json").read_text())
    assert provenance["model"]["kind"] == "monai" and (tmp_path / "e" / "relevance_FLAIR.nii.gz").is_file()
