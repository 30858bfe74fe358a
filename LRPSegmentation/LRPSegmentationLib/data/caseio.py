"""Reading cases (the model's modalities + optional ground truth) onto one grid, and writing volumes.

Layouts: ISLES 2017 (``<P>.Brain.XX.O.MR_<MOD>.<ID>/...``), ISLES 2022 BIDS (``sub-strokecaseNNNN/ses-NNNN/dwi/
..._dwi.nii.gz``, ``..._adc.nii.gz``, ``anat/..._FLAIR.nii.gz``, the mask in the dataset's ``derivatives/
sub-strokecaseNNNN/ses-NNNN/..._msk.nii.gz``) and flat folders whose file names contain the modality
(``ADC.nii.gz``, ``case_Tmax.nrrd``, ``dwi.nii.gz``). The modality list comes from the model (default: the six
ISLES 2017 maps of our U-Net).

The first modality's grid (ADC for our U-Net) is the reference grid of a case: every other modality and the
ground truth are brought onto it
(linear / nearest-neighbour resampling) so that a :class:`Case` is one (6, D, H, W) array plus one geometry.
Every problem a user can cause (missing, duplicate, unreadable, 4-D, non-overlapping files) raises
:class:`CaseError`, whose message names the file and says what to do.
"""

from __future__ import annotations

import gzip
import re
import warnings
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from LRPSegmentationLib.data.geometry import Geometry
from LRPSegmentationLib.data.modalities import GROUND_TRUTH, MODALITIES, canonical_modality, isles_modality

SUPPORTED_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
"""File name endings read and written by this module (matched case-insensitively)."""

_GROUND_TRUTH_ALIASES = {"ot", "gt", "msk"}
_MAX_DEPTH = 3  # sub-strokecaseNNNN/ses-NNNN/dwi/<file>
_NAME_TOKEN = re.compile(r"[A-Za-z0-9]+")


class CaseError(ValueError):
    """A case cannot be read as given; the message names the file or folder and what to do."""


@dataclass
class Case:
    """One case on its reference grid: raw intensities of the model's modalities and, when known, the lesion mask."""

    case_id: str
    images: np.ndarray  # float32 (C, D, H, W) in ``modalities`` order
    geometry: Geometry  # of the first modality's grid
    ground_truth: np.ndarray | None = None  # uint8 (D, H, W), 0/1
    sources: dict[str, Path] = field(default_factory=dict)  # modality (and "OT") -> file read
    modalities: tuple[str, ...] = MODALITIES

    def modality(self, name: str) -> np.ndarray:
        """The (D, H, W) image of one modality (name matched case-insensitively)."""
        return self.images[self.modalities.index(canonical_modality(name, self.modalities))]


# ----------------------------------------------------------------------------------------------- file names

def supported_suffix(path: Path | str) -> str | None:
    """The supported ending of ``path`` (e.g. ``.nii.gz``), or None when the format is not one this module reads."""
    name = Path(path).name.lower()
    for suffix in SUPPORTED_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return None


def _stem(path: Path) -> str:
    suffix = supported_suffix(path) or path.suffix
    return path.name[: len(path.name) - len(suffix)] if suffix else path.name


def _flat_modality(path: Path, modalities: tuple[str, ...] = MODALITIES) -> str | None:
    """Modality named by a plain file name such as ``ADC.nii.gz``, ``case_Tmax.nrrd`` or ``ot.mha``."""
    found: set[str] = set()
    for token in _NAME_TOKEN.findall(_stem(path)):
        lowered = token.lower()
        if lowered in _GROUND_TRUTH_ALIASES:
            found.add(GROUND_TRUTH)
            continue
        for modality in modalities:
            if lowered == modality.lower():
                found.add(modality)
    if len(found) > 1:
        raise CaseError(
            f"File name {path} names several modalities ({', '.join(sorted(found))}); rename it so that it names one."
        )
    return found.pop() if found else None


def _modality_of(path: Path, in_subfolder: bool, modalities: tuple[str, ...] = MODALITIES) -> str | None:
    if supported_suffix(path) is None or path.name.startswith("."):
        return None
    modality = isles_modality(path.name)
    if modality is None and in_subfolder:
        modality = isles_modality(path.parent.name)
    if modality is not None and modality != GROUND_TRUTH and modality not in modalities:
        return None
    if modality is None and not re.search(r"\.MR_|\.OT\.", path.name + path.parent.name):
        modality = _flat_modality(path, modalities)
    return modality


def _files_under(folder: Path, depth: int) -> list[tuple[Path, bool]]:
    """(file, inside a sub-folder) for the files up to ``depth`` folders down, hidden entries skipped."""
    found: list[tuple[Path, bool]] = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir() and depth > 0:
            found.extend((path, True) for path, _ in _files_under(entry, depth - 1))
        elif entry.is_file():
            found.append((entry, False))
    return found


def _derivatives_mask(folder: Path) -> list[tuple[Path, bool]]:
    """ISLES 2022: the lesion mask of ``<root>/sub-X`` lives in ``<root>/derivatives/sub-X/...``."""
    for case_root in (folder, folder.parent):  # the subject folder, or one of its session folders
        derivatives = case_root.parent / "derivatives" / case_root.name
        if case_root.name.startswith("sub-") and derivatives.is_dir():
            return [(p, True) for p, _ in _files_under(derivatives, _MAX_DEPTH)]
    return []


def find_case_files(folder: Path | str, modalities: tuple[str, ...] = MODALITIES) -> dict[str, Path]:
    """Map each of ``modalities`` (and ``"OT"`` when present) to its file in a case folder.

    Understands the ISLES 2017 layout (``<P>.Brain.XX.O.MR_<MOD>.<ID>/<same>.nii``, ground truth in
    ``<P>.Brain.XX.O.OT.<ID>/``), the ISLES 2022 BIDS layout (module docstring) and flat folders whose file names
    contain the modality (``ADC.nii.gz``, ``case_Tmax.nrrd``). 4DPWI and unrelated files are ignored. Raises
    CaseError when a modality is missing or found twice.
    """
    modalities = tuple(modalities)
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise CaseError(f"Case folder {folder} does not exist; give the folder holding the case's modality files.")
    if not folder.is_dir():
        raise CaseError(
            f"{folder} is a file, not a case folder; give the folder holding the modality files "
            f"or a mapping modality -> file."
        )
    subjects = [p.name for p in folder.iterdir() if p.is_dir() and p.name.startswith("sub-")]
    if subjects and not folder.name.startswith("sub-"):
        raise CaseError(f"{folder} is a dataset root in the ISLES 2022 layout ({len(subjects)} sub-* folders); give "
                        f"one case folder such as {folder / sorted(subjects)[0]}.")
    candidates = _files_under(folder, _MAX_DEPTH) + _derivatives_mask(folder)

    found: dict[str, Path] = {}
    for path, in_subfolder in candidates:
        modality = _modality_of(path, in_subfolder, modalities)
        if modality is None:
            continue
        if modality in found:
            raise CaseError(
                f"Two files for {modality} in case folder {folder}: {found[modality]} and {path}; "
                f"remove or rename one of them."
            )
        found[modality] = path

    missing = [m for m in modalities if m not in found]
    if missing:
        listing = ", ".join(f"{m} ({p.relative_to(folder) if p.is_relative_to(folder) else p})"
                            for m, p in found.items()) or "none"
        raise CaseError(
            f"Case folder {folder} lacks {', '.join(missing)} (found: {listing}). Each of "
            f"{', '.join(modalities)} needs one file named after it (ISLES layout or e.g. {modalities[0]}.nii.gz)."
        )
    return {m: found[m] for m in (*modalities, GROUND_TRUTH) if m in found}


# ------------------------------------------------------------------------------------------------ reading

_NIFTI_FLOATS = {16: "f4", 64: "f8"}


def _nifti_nonfinite(path: Path) -> int:
    """Check a NIfTI file's length against its header; return its count of NaN/Inf voxels.

    ITK silently reads truncated NIfTI files and turns NaN into 0, so both are checked on the raw bytes here.
    """
    try:
        if path.name.lower().endswith(".gz"):
            with gzip.open(path, "rb") as stream:
                data = stream.read()
        else:
            data = path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:
        raise CaseError(f"File {path} is corrupt or truncated ({error}); export it again.") from None
    if len(data) < 348:
        raise CaseError(f"File {path} is truncated ({len(data)} bytes, shorter than a NIfTI header); export it again.")
    for endian in ("<", ">"):
        sizeof_hdr = int(np.frombuffer(data, f"{endian}i4", 1, 0)[0])
        if sizeof_hdr == 348:  # NIfTI-1
            dims = np.frombuffer(data, f"{endian}i2", 8, 40).astype(np.int64)
            datatype, bitpix = (int(v) for v in np.frombuffer(data, f"{endian}i2", 2, 70))
            offset = int(np.frombuffer(data, f"{endian}f4", 1, 108)[0])
            break
        if sizeof_hdr == 540 and len(data) >= 540:  # NIfTI-2
            dims = np.frombuffer(data, f"{endian}i8", 8, 16)
            datatype, bitpix = (int(v) for v in np.frombuffer(data, f"{endian}i2", 2, 12))
            offset = int(np.frombuffer(data, f"{endian}i8", 1, 168)[0])
            break
    else:
        return 0  # not a NIfTI header: the reader will say what is wrong
    count = int(np.prod(dims[1 : 1 + int(np.clip(dims[0], 1, 7))]))
    expected = max(offset, 348) + count * max(bitpix, 0) // 8
    if len(data) < expected:
        raise CaseError(
            f"File {path} is truncated: its header promises {expected} bytes of image, the file holds "
            f"{len(data)}; copy or export it again."
        )
    if datatype not in _NIFTI_FLOATS:
        return 0
    values = np.frombuffer(data, f"{endian}{_NIFTI_FLOATS[datatype]}", count, offset)
    return int(count - np.count_nonzero(np.isfinite(values)))


def _read_image(path: Path | str, name: str = "") -> sitk.Image:
    """Read one scalar 3-D image, turning every failure into a CaseError that names the file.

    NaN/Inf voxels are replaced by 0 with a warning that counts them and names ``name`` and the file.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise CaseError(f"File {path} does not exist; check the path.")
    if not path.is_file():
        raise CaseError(f"{path} is not a file; give an image file ({', '.join(SUPPORTED_SUFFIXES)}).")
    suffix = supported_suffix(path)
    if suffix is None:
        raise CaseError(
            f"File {path} has an unsupported format; convert it to one of {', '.join(SUPPORTED_SUFFIXES)}."
        )
    if path.stat().st_size == 0:
        raise CaseError(f"File {path} is empty (0 bytes); copy or export it again.")
    nonfinite = _nifti_nonfinite(path) if suffix in (".nii", ".nii.gz") else 0
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        reason = lines[-1] if lines else "unknown reason"
        raise CaseError(
            f"File {path} cannot be read as an image (corrupt, truncated or mislabelled); "
            f"export it again. Reader said: {reason[:300]}"
        ) from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise CaseError(
            f"File {path} holds a vector image ({image.GetNumberOfComponentsPerPixel()} components per voxel); "
            f"give a scalar 3-D map."
        )
    size = image.GetSize()
    if image.GetDimension() == 4 and size[3] == 1:
        image = sitk.Extract(image, (*size[:3], 0), (0, 0, 0, 0))
    elif image.GetDimension() != 3:
        raise CaseError(
            f"File {path} is a {image.GetDimension()}-D image of size {size}; give a 3-D volume "
            f"(for a 4-D series such as 4DPWI, use the derived parameter maps instead)."
        )
    if 0 in image.GetSize():
        raise CaseError(f"File {path} holds an empty image (size {image.GetSize()}); export it again.")
    if image.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        array = sitk.GetArrayFromImage(image)
        bad = ~np.isfinite(array)
        nonfinite = max(nonfinite, int(bad.sum()))
        if bad.any():
            array[bad] = 0
            cleaned = sitk.GetImageFromArray(array)
            cleaned.CopyInformation(image)
            image = cleaned
    if nonfinite:
        warnings.warn(
            f"{name + ' file' if name else 'File'} {path} has {nonfinite} NaN/Inf voxel(s); replaced by 0.",
            stacklevel=3,
        )
    return image


def read_volume(path: Path | str) -> tuple[np.ndarray, Geometry]:
    """Read a scalar 3-D image as a (D, H, W) array (the file's voxel type) and its geometry.

    NaN/Inf voxels become 0 with a warning; every read problem raises CaseError naming the file.
    """
    image = _read_image(path)
    return sitk.GetArrayFromImage(image), Geometry.from_image(image)


def _physical_corners(image: sitk.Image) -> np.ndarray:
    size = image.GetSize()
    corners = []
    for i in (-0.5, size[0] - 0.5):
        for j in (-0.5, size[1] - 0.5):
            for k in (-0.5, size[2] - 0.5):
                corners.append(image.TransformContinuousIndexToPhysicalPoint((i, j, k)))
    return np.asarray(corners)


def _overlaps(image: sitk.Image, reference: sitk.Image) -> bool:
    """Whether the extent of ``image`` meets that of ``reference`` (bounding box in reference index space)."""
    points = [reference.TransformPhysicalPointToContinuousIndex(tuple(p)) for p in _physical_corners(image)]
    low, high = np.min(points, axis=0), np.max(points, axis=0)
    size = np.asarray(reference.GetSize(), dtype=float)
    return bool(np.all(high > -0.5) and np.all(low < size - 0.5))


def _onto_grid(image: sitk.Image, reference: sitk.Image, path: Path, name: str, nearest: bool) -> sitk.Image:
    """Return ``image`` on the grid of ``reference``, resampling (with a warning) when the grids differ."""
    own, target = Geometry.from_image(image), Geometry.from_image(reference)
    if own.matches(target):
        image = sitk.Image(image)
        target.apply_to(image)  # remove sub-tolerance header noise
        return image
    if not _overlaps(image, reference):
        raise CaseError(
            f"{name} file {path} does not overlap the ADC grid in space (its origin {own.origin}, size "
            f"{own.shape[::-1]}; ADC origin {target.origin}, size {target.shape[::-1]}); "
            f"co-register it with the ADC map first."
        )
    warnings.warn(
        f"{name} file {path} lies on another grid than ADC (size {own.shape[::-1]}, spacing "
        f"{tuple(round(s, 4) for s in own.spacing)}); resampled onto the ADC grid "
        f"({'nearest neighbour' if nearest else 'linear'}).",
        stacklevel=3,
    )
    interpolator = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    return sitk.Resample(image, reference, sitk.Transform(), interpolator, 0.0, sitk.sitkFloat32)


def _as_sources(source: Path | str | Mapping[str, Path | str],
                modalities: tuple[str, ...] = MODALITIES) -> tuple[dict[str, Path], str]:
    if isinstance(source, Mapping):
        files: dict[str, Path] = {}
        for key, value in source.items():
            try:
                modality = canonical_modality(str(key), modalities)
            except ValueError as error:
                raise CaseError(str(error)) from None
            if modality in files:
                raise CaseError(f"Modality {modality} is given twice ({files[modality]} and {value}); give it once.")
            if not isinstance(value, (str, PathLike)):
                raise CaseError(f"The file given for {modality} is {value!r}; give a path (str or Path).")
            files[modality] = Path(value).expanduser()
        missing = [m for m in modalities if m not in files]
        if missing:
            raise CaseError(
                f"The modality mapping lacks {', '.join(missing)} (given: {', '.join(files) or 'none'}); "
                f"give a file for each of {', '.join(modalities)}."
            )
        parents = {p.parent for p in files.values()}
        case_id = parents.pop().name if len(parents) == 1 else files[modalities[0]].parent.name
        return files, case_id or "case"
    folder = Path(source).expanduser()
    return find_case_files(folder, modalities), folder.resolve().name or "case"


def load_case(
    source: Path | str | Mapping[str, Path | str],
    *,
    ground_truth: Path | str | None = None,
    case_id: str | None = None,
    modalities: tuple[str, ...] | list[str] = MODALITIES,
) -> Case:
    """Read a case folder (ISLES 2017, ISLES 2022 or flat layout) or a mapping modality -> file onto the grid of
    the first of ``modalities`` (the model's input list; default the six ISLES 2017 maps, ADC first).

    ``ground_truth`` (a file) overrides an ``OT`` file found in the folder or mapping. Other modalities on a
    different grid are resampled linearly (with a warning), the ground truth with nearest neighbour; NaN/Inf
    voxels become 0 (with a warning); ground-truth labels other than 0 become 1.
    """
    modalities = tuple(modalities)
    files, default_id = _as_sources(source, modalities)
    if ground_truth is not None:
        files[GROUND_TRUTH] = Path(ground_truth).expanduser()

    reference = _read_image(files[modalities[0]], modalities[0])
    geometry = Geometry.from_image(reference)
    images = np.empty((len(modalities), *geometry.shape), dtype=np.float32)
    for channel, modality in enumerate(modalities):
        path = files[modality]
        if channel == 0:
            image = reference
        else:
            image = _onto_grid(_read_image(path, modality), reference, path, modality, False)
        images[channel] = sitk.GetArrayFromImage(image)

    mask = None
    if GROUND_TRUTH in files:
        path = files[GROUND_TRUTH]
        image = _onto_grid(_read_image(path, "Ground-truth"), reference, path, "Ground-truth", True)
        array = sitk.GetArrayFromImage(image)
        values = np.unique(array)
        if np.any((values != 0) & (values != 1)):
            shown = ", ".join(f"{v:g}" for v in values[:8]) + (", ..." if len(values) > 8 else "")
            warnings.warn(
                f"Ground-truth file {path} holds values other than 0/1 ({shown}); every nonzero voxel is taken "
                f"as lesion.",
                stacklevel=2,
            )
        mask = (array != 0).astype(np.uint8)

    return Case(
        case_id=case_id or default_id,
        images=images,
        geometry=geometry,
        ground_truth=mask,
        sources={m: files[m] for m in (*modalities, GROUND_TRUTH) if m in files},
        modalities=modalities,
    )


# ------------------------------------------------------------------------------------------------ writing

def write_volume(array: np.ndarray, geometry: Geometry, path: Path | str) -> Path:
    """Write a (D, H, W) array with ``geometry`` as NIfTI, NRRD or MetaImage (chosen by the file ending).

    Parent folders are created; float64 is stored as float32 and bool as uint8.
    """
    path = Path(path).expanduser()
    suffix = supported_suffix(path)
    if suffix is None:
        raise CaseError(f"Cannot write {path}: use one of the endings {', '.join(SUPPORTED_SUFFIXES)}.")
    array = np.asarray(array)
    if array.ndim != 3 or tuple(array.shape) != tuple(geometry.shape):
        raise ValueError(f"Cannot write {path}: array shape {array.shape} does not match grid shape {geometry.shape}.")
    if array.dtype == np.float64 or array.dtype == np.float16:
        array = array.astype(np.float32)
    elif array.dtype == np.bool_:
        array = array.astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = geometry.to_image(array)
    try:
        sitk.WriteImage(image, str(path), useCompression=suffix in (".nii.gz", ".nrrd", ".mha"))
    except RuntimeError as error:
        raise CaseError(f"Cannot write {path}: {str(error).strip().splitlines()[-1][:300]}") from None
    return path
