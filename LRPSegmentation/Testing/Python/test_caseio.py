"""Case I/O: geometry round trips, folder layouts and mappings, and a clear error for every bad input."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from LRPSegmentationLib.data.caseio import Case, CaseError, find_case_files, load_case, read_volume, write_volume
from LRPSegmentationLib.data.geometry import Geometry
from LRPSegmentationLib.data.modalities import GROUND_TRUTH, MODALITIES
from LRPSegmentationLib.data.synthetic import SyntheticCase, generate_case, write_isles_case


def rotation(ax: float, ay: float, az: float) -> tuple[float, ...]:
    """Row-major direction matrix of rotations about x, y and z (degrees)."""
    a, b, c = np.deg2rad([ax, ay, az])
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return tuple(float(v) for v in (rz @ ry @ rx).ravel())


ROTATED = Geometry(shape=(24, 256, 256), spacing=(0.9, 0.9, 6.5), origin=(-118.3, -97.25, -61.7),
                   direction=rotation(12.0, -21.0, 33.0))
FORMATS = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


def assert_same_geometry(actual: Geometry, expected: Geometry) -> None:
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual.spacing, expected.spacing, rtol=1e-6)
    np.testing.assert_allclose(actual.origin, expected.origin, rtol=0, atol=1e-4)  # NIfTI stores float32
    np.testing.assert_allclose(actual.direction, expected.direction, rtol=0, atol=1e-6)


def small_geometry(**changes) -> Geometry:
    values = dict(shape=(6, 20, 24), spacing=(1.5, 1.5, 5.0), origin=(-18.0, -15.0, -12.5))
    values.update(changes)
    return Geometry(**values)


def write_flat_case(folder: Path, geometry: Geometry, seed: int = 0, names: dict[str, str] | None = None) -> dict:
    """Six random modality maps (+ a 0/1 ground truth) as flat files; returns modality -> array."""
    rng = np.random.default_rng(seed)
    names = names or {m: f"{m}.nii.gz" for m in (*MODALITIES, GROUND_TRUTH)}
    arrays = {}
    for modality, name in names.items():
        if modality == GROUND_TRUTH:
            array = (rng.random(geometry.shape) > 0.8).astype(np.uint8)
        else:
            array = rng.uniform(0, 1000, geometry.shape).astype(np.float32)
        write_volume(array, geometry, folder / name)
        arrays[modality] = array
    return arrays


# ------------------------------------------------------------------------------------------- round trips

@pytest.mark.parametrize("suffix", FORMATS)
def test_write_read_keeps_rotated_256x256x24_geometry_and_values(tmp_path: Path, suffix: str) -> None:
    array = np.random.default_rng(1).normal(700.0, 200.0, ROTATED.shape)  # float64 on purpose
    path = write_volume(array, ROTATED, tmp_path / "deep" / f"adc{suffix}")
    assert path.is_file()
    values, geometry = read_volume(path)
    assert values.dtype == np.float32
    np.testing.assert_array_equal(values, array.astype(np.float32))
    assert_same_geometry(geometry, ROTATED)


def test_isles_case_with_rotated_grid_round_trips_through_load_case(tmp_path: Path) -> None:
    generated = generate_case(3, shape=ROTATED.shape, spacing=ROTATED.spacing, direction=ROTATED.direction)
    folder = write_isles_case(generated, tmp_path, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one grid: no resampling warning
        case = load_case(folder)
    assert isinstance(case, Case)
    assert case.images.dtype == np.float32 and case.images.shape == (6, *ROTATED.shape)
    np.testing.assert_array_equal(case.images, generated.images)
    np.testing.assert_array_equal(case.ground_truth, generated.ground_truth)
    assert_same_geometry(case.geometry, generated.geometry)
    np.testing.assert_allclose(case.geometry.direction, ROTATED.direction, atol=1e-6)


def test_write_volume_types_and_bad_arguments(tmp_path: Path) -> None:
    geometry = small_geometry()
    mask = np.zeros(geometry.shape, dtype=bool)
    mask[2, 3:5, 4:9] = True
    values, _ = read_volume(write_volume(mask, geometry, tmp_path / "mask.nrrd"))
    assert values.dtype == np.uint8 and values.sum() == mask.sum()
    with pytest.raises(CaseError, match=r"mask\.png"):
        write_volume(mask, geometry, tmp_path / "mask.png")
    with pytest.raises(ValueError, match="does not match"):
        write_volume(mask[:-1], geometry, tmp_path / "mask.nii")


# ------------------------------------------------------------------------------------------- layouts

def test_isles_layout_is_read_and_extras_are_ignored(synthetic_case_dir: Path, synthetic_case: SyntheticCase) -> None:
    files = find_case_files(synthetic_case_dir)
    assert list(files) == [*MODALITIES, GROUND_TRUTH]
    for modality, path in files.items():
        token = f"MR_{modality}" if modality != GROUND_TRUTH else "OT"
        assert f".{token}." in path.name and path.parent.name == path.name[: -len(".nii")]
    case = load_case(synthetic_case_dir)
    assert case.case_id == "training_7"
    assert case.sources == files
    np.testing.assert_array_equal(case.images, synthetic_case.images)
    np.testing.assert_array_equal(case.ground_truth, synthetic_case.ground_truth)
    assert case.ground_truth.dtype == np.uint8
    np.testing.assert_array_equal(case.modality("tmax"), synthetic_case.images[MODALITIES.index("Tmax")])


def test_4dpwi_folder_is_ignored(tmp_path: Path, synthetic_case_dir: Path) -> None:
    folder = shutil.copytree(synthetic_case_dir, tmp_path / "training_7")
    series = sitk.JoinSeries([sitk.Image(8, 6, 4, sitk.sitkFloat32)] * 3)
    pwi = folder / "VSD.Brain.XX.O.MR_4DPWI.999" / "VSD.Brain.XX.O.MR_4DPWI.999.nii"
    pwi.parent.mkdir()
    sitk.WriteImage(series, str(pwi))
    assert pwi not in find_case_files(folder).values()
    assert load_case(folder).images.shape[0] == len(MODALITIES)


def test_flat_folder_with_mixed_formats_and_names(tmp_path: Path) -> None:
    geometry = small_geometry()
    names = {"ADC": "ADC.nii.gz", "MTT": "case12_mtt.mha", "rCBF": "rCBF.nrrd", "rCBV": "p-rcbv.nhdr",
             "Tmax": "case_Tmax.mhd", "TTP": "TTP.nii", GROUND_TRUTH: "case_OT.nii.gz"}
    arrays = write_flat_case(tmp_path / "flat", geometry, names=names)
    (tmp_path / "flat" / "notes.txt").write_text("not an image")
    case = load_case(tmp_path / "flat", case_id="patient 12")
    assert case.case_id == "patient 12"
    for channel, modality in enumerate(MODALITIES):
        np.testing.assert_array_equal(case.images[channel], arrays[modality])
        assert case.sources[modality].name == names[modality]
    np.testing.assert_array_equal(case.ground_truth, arrays[GROUND_TRUTH])


def test_mapping_input_case_insensitive_keys_and_ground_truth_argument(tmp_path: Path) -> None:
    geometry = small_geometry()
    arrays = write_flat_case(tmp_path, geometry)
    mapping = {m.upper(): str(tmp_path / f"{m}.nii.gz") for m in MODALITIES}
    case = load_case(mapping, ground_truth=tmp_path / "OT.nii.gz")
    np.testing.assert_array_equal(case.images[MODALITIES.index("rCBV")], arrays["rCBV"])
    np.testing.assert_array_equal(case.ground_truth, arrays[GROUND_TRUTH])
    assert case.case_id == tmp_path.name
    no_truth = load_case({m: tmp_path / f"{m}.nii.gz" for m in MODALITIES})
    assert no_truth.ground_truth is None and GROUND_TRUTH not in no_truth.sources


# ------------------------------------------------------------------------------------------- bad input

def test_missing_modality_lists_missing_and_found(tmp_path: Path) -> None:
    write_flat_case(tmp_path, small_geometry())
    (tmp_path / "Tmax.nii.gz").unlink()
    (tmp_path / "rCBF.nii.gz").unlink()
    with pytest.raises(CaseError) as raised:
        load_case(tmp_path)
    message = str(raised.value)
    assert "lacks rCBF, Tmax" in message and "ADC.nii.gz" in message and str(tmp_path) in message


def test_mapping_errors(tmp_path: Path) -> None:
    write_flat_case(tmp_path, small_geometry())
    mapping = {m: tmp_path / f"{m}.nii.gz" for m in MODALITIES}
    with pytest.raises(CaseError, match="lacks TTP"):
        load_case({k: v for k, v in mapping.items() if k != "TTP"})
    with pytest.raises(CaseError, match="Unknown modality 'FLAIR'"):
        load_case({**mapping, "FLAIR": tmp_path / "ADC.nii.gz"})
    with pytest.raises(CaseError, match="given twice"):
        load_case({**mapping, "adc": tmp_path / "MTT.nii.gz"})
    with pytest.raises(CaseError, match="does not exist"):
        load_case({**mapping, "Tmax": tmp_path / "nowhere.nii"})
    with pytest.raises(CaseError, match="given for MTT is None"):
        load_case({**mapping, "MTT": None})
    (tmp_path / "adc.png").write_bytes(b"\x89PNG")
    with pytest.raises(CaseError, match=r"adc\.png has an unsupported format"):
        load_case({**mapping, "ADC": tmp_path / "adc.png"})


def test_duplicate_modality_names_both_files(tmp_path: Path) -> None:
    geometry = small_geometry()
    write_flat_case(tmp_path, geometry)
    write_volume(np.zeros(geometry.shape, np.float32), geometry, tmp_path / "adc_copy.nrrd")
    with pytest.raises(CaseError, match="Two files for ADC") as raised:
        find_case_files(tmp_path)
    assert "ADC.nii.gz" in str(raised.value) and "adc_copy.nrrd" in str(raised.value)


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(CaseError, match="does not exist"):
        load_case(tmp_path / "missing")
    (tmp_path / "ADC.nii").write_bytes(b"")
    with pytest.raises(CaseError, match="is a file, not a case folder"):
        load_case(tmp_path / "ADC.nii")


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "truncated_gz"])
def test_unreadable_files_name_the_file(tmp_path: Path, damage: str) -> None:
    write_flat_case(tmp_path, small_geometry())
    if damage == "truncated_gz":
        target = tmp_path / "Tmax.nii.gz"
        target.write_bytes(target.read_bytes()[:200])
    else:
        (tmp_path / "Tmax.nii.gz").unlink()
        target = tmp_path / "Tmax.nii"
        write_volume(np.ones((6, 20, 24), np.float32), small_geometry(), target)
        data = target.read_bytes()
        target.write_bytes({"truncated": data[: len(data) // 3], "garbage": b"\x00not an image" * 40,
                            "empty": b""}[damage])
    with pytest.raises(CaseError) as raised:
        load_case(tmp_path)
    assert str(target) in str(raised.value)
    assert raised.value.__cause__ is None  # no chained SimpleITK traceback


def test_four_d_and_vector_images_are_refused(tmp_path: Path) -> None:
    geometry = small_geometry()
    write_flat_case(tmp_path, geometry)
    (tmp_path / "ADC.nii.gz").unlink()
    series = sitk.JoinSeries([geometry.to_image(np.zeros(geometry.shape, np.float32))] * 2)
    sitk.WriteImage(series, str(tmp_path / "ADC.nii.gz"))
    with pytest.raises(CaseError, match=r"ADC\.nii\.gz is a 4-D image"):
        load_case(tmp_path)
    vector = sitk.Compose([geometry.to_image(np.zeros(geometry.shape, np.float32))] * 3)
    sitk.WriteImage(vector, str(tmp_path / "ADC.nii.gz"))
    with pytest.raises(CaseError, match="vector image"):
        load_case(tmp_path)


def test_four_d_image_with_one_volume_is_read_as_3d(tmp_path: Path) -> None:
    geometry = small_geometry()
    array = np.arange(np.prod(geometry.shape), dtype=np.float32).reshape(geometry.shape)
    sitk.WriteImage(sitk.JoinSeries([geometry.to_image(array)]), str(tmp_path / "one.nii"))
    values, read = read_volume(tmp_path / "one.nii")
    np.testing.assert_array_equal(values, array)
    assert read.shape == geometry.shape


def test_non_overlapping_grid_is_refused(tmp_path: Path) -> None:
    geometry = small_geometry()
    write_flat_case(tmp_path, geometry)
    far = small_geometry(origin=(500.0, -15.0, -12.5))
    write_volume(np.ones(geometry.shape, np.float32), far, tmp_path / "Tmax.nii.gz")
    with pytest.raises(CaseError, match=r"Tmax file .*Tmax\.nii\.gz does not overlap"):
        load_case(tmp_path)


def test_other_grid_is_resampled_with_warning(tmp_path: Path) -> None:
    geometry = small_geometry()
    arrays = write_flat_case(tmp_path, geometry)
    # a linear ramp along x on a coarser grid that covers the same extent: linear resampling reproduces it
    coarse = Geometry(shape=(3, 10, 12), spacing=(3.0, 3.0, 10.0), origin=(-17.25, -14.25, -10.0))
    x = coarse.origin[0] + coarse.spacing[0] * np.arange(12, dtype=np.float32)
    write_volume(np.broadcast_to(x, coarse.shape) + 100.0, coarse, tmp_path / "rCBV.nii.gz")
    truth = np.zeros(coarse.shape, np.uint8)
    truth[1, 4:7, 5:8] = 1
    write_volume(truth, coarse, tmp_path / "OT.nii.gz")
    with pytest.warns(UserWarning) as record:
        case = load_case(tmp_path)
    messages = [str(w.message) for w in record]
    assert any("rCBV" in m and "rCBV.nii.gz" in m and "linear" in m for m in messages)
    assert any("Ground-truth" in m and "OT.nii.gz" in m and "nearest" in m for m in messages)
    assert case.geometry == geometry and case.images.shape == (6, *geometry.shape)
    fine_x = geometry.origin[0] + geometry.spacing[0] * np.arange(geometry.shape[2])
    inside = (fine_x >= x[0]) & (fine_x <= x[-1])
    channel = case.images[MODALITIES.index("rCBV")]
    np.testing.assert_allclose(channel[2, 8][inside], fine_x[inside] + 100.0, atol=1e-3)
    np.testing.assert_array_equal(case.images[0], arrays["ADC"])
    assert set(np.unique(case.ground_truth)) == {0, 1}
    assert 0 < case.ground_truth.sum() < case.ground_truth.size / 4


def test_nan_voxels_are_zeroed_with_a_counting_warning(tmp_path: Path) -> None:
    geometry = small_geometry()
    arrays = write_flat_case(tmp_path, geometry)
    rcbf = arrays["rCBF"].copy()
    rcbf[1, 2, 3:8] = np.nan
    rcbf[3, 4, 5] = np.inf
    write_volume(rcbf, geometry, tmp_path / "rCBF.nii.gz")
    with pytest.warns(UserWarning, match=r"rCBF file .*rCBF\.nii\.gz has 6 NaN/Inf"):
        case = load_case(tmp_path)
    channel = case.images[MODALITIES.index("rCBF")]
    assert np.isfinite(case.images).all()
    assert (channel[1, 2, 3:8] == 0).all() and channel[3, 4, 5] == 0


def test_ground_truth_labels_above_one_become_one_with_warning(tmp_path: Path) -> None:
    geometry = small_geometry()
    write_flat_case(tmp_path, geometry)
    labels = np.zeros(geometry.shape, np.uint8)
    labels[2, 5:9, 5:9] = 1
    labels[3, 5:9, 5:9] = 2
    write_volume(labels, geometry, tmp_path / "OT.nii.gz")
    with pytest.warns(UserWarning, match=r"OT\.nii\.gz holds values other than 0/1 \(0, 1, 2\)"):
        case = load_case(tmp_path)
    np.testing.assert_array_equal(case.ground_truth, (labels > 0).astype(np.uint8))
