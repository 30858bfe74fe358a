"""Seeded synthetic ISLES-like cases whose lesion signal is known, for tests, demos and scoring heatmaps.

A case is a skull-stripped brain-like volume (two hemispheres split by a midline fissure, ventricles, cortex,
deep grey matter, white matter, a smooth bias field) with one MCA-like wedge lesion in one hemisphere: an
infarct core (the ground truth, ADC drop) inside a larger hypoperfused region (Tmax/TTP/MTT raised,
rCBF/rCBV lowered). How strongly each modality shows the core is set by :data:`MODALITY_WEIGHTS`: the shift
of modality ``m`` in the core is ``weight[m] * contrast * sd[m]``, where ``sd[m]`` is the measured spread of that
map in brain tissue and ``contrast`` one number per case, so the weights are the modalities' relative
standardised lesion contrasts. The core is what ADC shows; the perfusion maps also show the penumbra, more mildly
(:data:`PENUMBRA_LEVEL`): the penumbra of this family survives.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from LRPSegmentationLib import options
from LRPSegmentationLib.data.caseio import Case, CaseError, read_volume, write_volume
from LRPSegmentationLib.data.fields import coordinates as _coordinates
from LRPSegmentationLib.data.fields import largest_component as _largest_component
from LRPSegmentationLib.data.fields import smooth_noise as _smooth_noise
from LRPSegmentationLib.data.fields import top_fraction as _top_fraction
from LRPSegmentationLib.data.geometry import Geometry
from LRPSegmentationLib.data.modalities import GROUND_TRUTH, MODALITIES

if TYPE_CHECKING:
    from LRPSegmentationLib.data.perfusion import TissueContrast

GENERATOR_VERSION = "4"
"""Bumped whenever the same seed would give different arrays (2: the anatomy and ellipsoid families; 3: the
anatomy family's infarct edge at a fixed deficit grade; 4: the procedural family's penumbra milder than an
infarcting one, its masks and other arrays as before)."""

FAMILIES: tuple[str, ...] = options.GENERATOR_FAMILIES
"""Generator families: ``procedural`` (this module; no extra dependency), ``anatomy`` (MNI152 tissue maps,
vascular territories, healthy cases; needs nilearn) and ``ellipsoid`` (simple, made differently; held out of the
bundled model's training). See :mod:`LRPSegmentationLib.data.families`."""


def evaluation_families(requested: list[str] | None = None) -> list[str]:
    """The families to evaluate: ``requested`` (checked), or every family that can be generated here."""
    from LRPSegmentationLib.data.anatomy import anatomy_available

    if requested:
        unknown = [f for f in requested if f not in FAMILIES]
        if unknown:
            raise ValueError(f"Unknown generator family {unknown[0]!r}: use one of {', '.join(FAMILIES)}.")
        return list(dict.fromkeys(requested))
    return [f for f in FAMILIES if f != "anatomy" or anatomy_available()]


def default_family() -> str:
    """``anatomy`` where nilearn is installed, else ``procedural``."""
    from LRPSegmentationLib.data.anatomy import anatomy_available

    return "anatomy" if anatomy_available() else "procedural"

PENUMBRA_LEVEL = 0.35
"""Mean perfusion shift of the procedural penumbra as a share of the core's (0.2-0.5 across it). Its ground truth
is the core alone, so the penumbra must look like tissue that survives: in the anatomy family the infarct edge lies
where the shift is about half the centre's (0.4 ** 0.8 for rCBF, 0.4 ** 0.6 for Tmax), the surviving deficit
below it. Generator versions 1-3 used 0.75 (0.55-0.95): the same shift the anatomy family labels infarct."""

MODALITY_WEIGHTS: dict[str, float] = {"ADC": 1.0, "MTT": 0.5, "rCBF": 0.3, "rCBV": 0.2, "Tmax": 0.8, "TTP": 0.7}
"""Relative standardised contrast of the infarct core in each modality (deliberately unequal)."""

PRESET_GRIDS: tuple[tuple[tuple[int, int, int], tuple[float, float, float]], ...] = (
    ((19, 192, 192), (1.2, 1.2, 6.5)),
    ((24, 256, 256), (0.9, 0.9, 5.0)),
    ((25, 128, 128), (1.8, 1.8, 5.0)),
    ((30, 192, 192), (1.2, 1.2, 4.2)),
)
"""(shape (D, H, W), ITK spacing (x, y, z) mm) of grids seen in ISLES 2017; drawn from when no shape is given."""

EXPLANATION_FILE = "explanation.json"
REGIONS_FILE = "explanation_regions.nii.gz"

_CSF, _GM, _WM, _DEEP = 1, 2, 3, 4
# normal tissue values (CSF, GM, WM, deep GM) and noise sd of each map
_TISSUE = {
    "ADC": ((2900.0, 820.0, 740.0, 780.0), 30.0),
    "MTT": ((6.0, 4.0, 4.8, 4.2), 0.9),
    "rCBF": ((6.0, 48.0, 30.0, 45.0), 5.0),
    "rCBV": ((0.8, 3.8, 2.5, 3.6), 0.4),
    "Tmax": ((2.0, 0.5, 0.9, 0.5), 1.6),
    "TTP": ((20.0, 16.0, 17.5, 16.0), 1.6),
}
_RAISED = {"MTT", "Tmax", "TTP"}
_UPPER = {"ADC": 4000.0, "MTT": 20.0, "rCBF": 150.0, "rCBV": 15.0, "Tmax": 20.0, "TTP": 50.0}


@dataclass
class KnownExplanation:
    """Where and in which modalities the lesion signal lies: the reference for scoring relevance maps."""

    modality_weights: dict[str, float]
    core: np.ndarray  # bool (D, H, W): infarct core == ground truth
    hypoperfused: np.ndarray  # bool (D, H, W): perfusion deficit, contains the core

    def regions(self) -> np.ndarray:
        """uint8 label map: 0 background, 1 hypoperfused only, 2 core."""
        labels = self.hypoperfused.astype(np.uint8)
        labels[self.core] = 2
        return labels

    def to_json(self) -> dict:
        return {
            "modality_weights": {m: float(self.modality_weights[m]) for m in MODALITIES},
            "core_voxels": int(self.core.sum()),
            "hypoperfused_voxels": int(self.hypoperfused.sum()),
        }


@dataclass
class SyntheticCase:
    """One generated case: images (6, D, H, W) float32 in MODALITIES order, ground truth (D, H, W) uint8."""

    images: np.ndarray
    ground_truth: np.ndarray
    geometry: Geometry
    explanation: KnownExplanation
    seed: int
    family: str = "procedural"
    territories: tuple[str, ...] = ()
    severity: np.ndarray | None = None  # float32 (D, H, W), 0-1: the perfusion deficit's grade (anatomy family)
    tissue_contrast: TissueContrast | None = None  # anatomy family: how its tissue values were drawn

    def to_case(self, case_id: str | None = None) -> Case:
        """The images and ground truth as a :class:`~.caseio.Case` (what the pipeline takes), without files."""
        return Case(case_id or f"synthetic-{self.seed}", self.images, self.geometry, self.ground_truth)


# ------------------------------------------------------------------------------------------------ numerics

def _anatomy(rng: np.random.Generator, shape: tuple[int, int, int]):
    """Tissue labels (0 background, CSF, GM, WM, deep GM), brain-relative coordinates and the midline."""
    z, y, x = _coordinates(shape)
    cx, cy, cz = rng.uniform(-0.03, 0.03), rng.uniform(-0.04, 0.04), rng.uniform(-0.05, 0.05)
    ax, ay, az = rng.uniform(0.66, 0.74), rng.uniform(0.80, 0.88), rng.uniform(0.86, 0.96)
    u, v, w = (x - cx) / ax, (y - cy) / ay, (z - cz) / az
    # narrower towards the skull base and the vertex; slightly egg-shaped (wider posteriorly)
    taper = 1.0 + 0.18 * np.clip(-w, 0, None) ** 2 + 0.08 * v
    radius = np.sqrt((u * taper) ** 2 + v**2 + w**2)
    radius = radius * (1.0 + 0.035 * _smooth_noise(rng, shape, (3, 5, 5)))
    brain = radius < 1.0

    gyri = _smooth_noise(rng, shape, (max(3, shape[0] // 3), 14, 14))
    labels = np.zeros(shape, dtype=np.uint8)
    labels[brain] = _WM
    cortex = brain & (radius > 0.86 + 0.05 * gyri)
    labels[cortex] = _GM
    folds = _smooth_noise(rng, shape, (max(3, shape[0] // 2), 24, 24))
    sulci = brain & (radius > 0.84 + 0.04 * gyri) & (np.abs(folds) < 0.12)  # zero lines of a field: curved sulci
    labels[sulci] = _CSF
    for side in (-1.0, 1.0):
        deep = ((u - side * 0.30) / 0.14) ** 2 + ((v + 0.02) / 0.22) ** 2 + ((w + 0.12) / 0.28) ** 2 < 1.0
        labels[brain & deep] = _DEEP
        # lateral ventricle: body plus frontal horn, bending towards the midline anteriorly
        bend = 0.05 * np.clip(v + 0.1, 0, None)
        ventricle = ((u - side * (0.13 - bend)) / 0.08) ** 2 + ((v - 0.05) / 0.42) ** 2 + ((w - 0.12) / 0.22) ** 2
        labels[brain & (ventricle < 1.0)] = _CSF
    fissure_width = max(0.012, 1.2 / shape[2]) / ax
    callosum = (np.abs(v) < 0.5) & (w > -0.35) & (w < 0.35)
    fissure = brain & (np.abs(u) < fissure_width) & ~callosum & (radius > 0.25)
    labels[fissure] = _CSF
    return labels, (u, v, w)


def _lesion(rng: np.random.Generator, labels: np.ndarray, coords, easy: bool):
    """Core and hypoperfused masks of an MCA-like wedge in one hemisphere."""
    u, v, w = coords
    shape = labels.shape
    tissue = labels >= _GM
    brain_voxels = int((labels > 0).sum())
    for _attempt in range(20):
        side = rng.choice((-1.0, 1.0))
        apex_u, apex_v, apex_w = side * 0.22, rng.uniform(-0.2, 0.2), rng.uniform(-0.35, 0.3)
        heading = np.deg2rad(rng.uniform(-35.0, 35.0))
        half_angle = np.deg2rad(rng.uniform(22.0, 42.0))
        depth = rng.uniform(0.28, 0.5)
        du, dv = u - apex_u, v - apex_v
        angle = np.arctan2(dv, du * side) - heading
        angle = (angle + np.pi) % (2 * np.pi) - np.pi
        reach = np.sqrt(du**2 + dv**2)
        score = (
            -((angle / half_angle) ** 2)
            - ((w - apex_w) / depth) ** 2
            - ((reach - 0.5) / 0.38) ** 2
            + 0.7 * _smooth_noise(rng, shape, (max(3, shape[0] // 4), 9, 9))
        )
        allowed = tissue & (u * side > 0.03)
        fraction = rng.uniform(0.025, 0.07) if easy else rng.uniform(0.012, 0.025)
        core = _largest_component(_top_fraction(score, allowed, round(fraction * brain_voxels)))
        core = ndimage.binary_closing(core, structure=np.ones((1, 3, 3), bool)) & allowed
        ratio = rng.uniform(1.8, 3.2)
        hypo = _top_fraction(score, allowed, round(ratio * core.sum())) | core
        hypo = _largest_component(ndimage.binary_closing(hypo, structure=np.ones((1, 3, 3), bool)) & allowed) | core
        slices = np.flatnonzero(core.any(axis=(1, 2)))
        widest = max(np.ptp(np.flatnonzero(core[s].any(axis=0))) + 1 for s in slices) if slices.size else 0
        if slices.size >= min(3, max(1, shape[0] // 3)) and widest >= max(2, shape[2] // 20):
            return core, hypo
    raise ValueError(f"Could not place a lesion in a grid of shape {shape}; use a larger shape (e.g. (8, 32, 32)).")


def _default_grid(rng: np.random.Generator, shape, spacing):
    if shape is None:
        shape, preset_spacing = PRESET_GRIDS[int(rng.integers(len(PRESET_GRIDS)))]
        if spacing is None:
            jitter = rng.uniform(0.97, 1.03)
            spacing = (preset_spacing[0] * jitter, preset_spacing[1] * jitter, preset_spacing[2])
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 4 or min(shape[1:]) < 16:
        raise ValueError(f"shape must be (D, H, W) with D >= 4 and H, W >= 16, got {shape}.")
    if spacing is None:  # a field of view of about 220 x 220 x 125 mm
        spacing = (220.0 / shape[2], 220.0 / shape[1], max(1.0, 125.0 / shape[0]))
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must be three positive numbers (x, y, z) in mm, got {spacing}.")
    return shape, spacing


def generate_case(
    seed: int,
    shape: tuple[int, int, int] | None = None,
    spacing: tuple[float, float, float] | None = None,
    direction=None,
    family: str = "procedural",
    contrast: TissueContrast | None = None,
) -> SyntheticCase:
    """Generate one seeded case (same seed and arguments -> identical arrays).

    ``shape`` is (D, H, W) (None: drawn from :data:`PRESET_GRIDS`, or the family's own grids); ``spacing`` is
    ITK (x, y, z) in mm; ``direction`` a 3x3 direction-cosine matrix (row-major, 9 numbers or 3x3), identity when
    None (procedural family only); ``family`` one of :data:`FAMILIES`; ``contrast`` (anatomy family only) how far the
    tissue values stray from the textbook ones (None: by 10%).
    """
    if contrast is not None and family != "anatomy":
        raise ValueError(f"Tissue contrast options are for the 'anatomy' family only, not {family!r}.")
    if family != "procedural":
        from LRPSegmentationLib.data import families

        if family not in FAMILIES:
            raise ValueError(f"Unknown generator family {family!r}: use one of {', '.join(FAMILIES)}.")
        if direction is not None:
            raise ValueError(f"The {family} family draws its own head pose; direction is for 'procedural' only.")
        if family == "anatomy":
            return families.generate_anatomy_case(seed, shape=shape, spacing=spacing, contrast=contrast)
        return families.generate_ellipsoid_case(seed, shape=shape, spacing=spacing)
    rng = np.random.default_rng(int(seed))
    shape, spacing = _default_grid(rng, shape, spacing)
    matrix = np.eye(3) if direction is None else np.asarray(direction, dtype=float).reshape(3, 3)
    size = np.array(shape[::-1], dtype=float)
    centre_offset = rng.uniform(-5.0, 5.0, 3)
    origin = centre_offset - matrix @ ((size - 1) / 2 * np.asarray(spacing))
    geometry = Geometry(shape=shape, spacing=spacing, origin=tuple(float(o) for o in origin),
                        direction=tuple(float(d) for d in matrix.ravel()))

    easy = rng.random() < 0.85
    labels, coords = _anatomy(rng, shape)
    core, hypo = _lesion(rng, labels, coords, easy)
    brain = labels > 0

    # soft lesion weights: sharp-ish but not aliased edges, heterogeneous penumbra
    sigma = (0.3, 0.8, 0.8)
    core_weight = np.clip(ndimage.gaussian_filter(core.astype(np.float32), sigma) * 1.6 - 0.3, 0, 1)
    core_weight = np.maximum(core_weight, core * 0.85)
    penumbra = np.clip(ndimage.gaussian_filter(hypo.astype(np.float32), sigma) * 1.6 - 0.3, 0, 1)
    penumbra = penumbra * (1.0 - core_weight)
    # a penumbra that survives, as the ground truth (the core alone) says: see PENUMBRA_LEVEL
    penumbra_level = np.clip(PENUMBRA_LEVEL + 0.08 * _smooth_noise(rng, shape, (3, 6, 6)), 0.2, 0.5)
    contrast = rng.uniform(7.5, 9.5) if easy else rng.uniform(5.0, 6.0)

    tissue = labels >= _GM
    bias = 1.0 + 0.04 * _smooth_noise(rng, shape, (2, 3, 3))
    images = np.zeros((len(MODALITIES), *shape), dtype=np.float32)
    for channel, modality in enumerate(MODALITIES):
        values, noise_sd = _TISSUE[modality]
        base = np.zeros(shape, dtype=np.float32)
        for label, value in zip((_CSF, _GM, _WM, _DEEP), values):
            base[labels == label] = value
        base *= bias * (1.0 + 0.03 * _smooth_noise(rng, shape, (4, 12, 12)))
        noise = rng.standard_normal(shape, dtype=np.float32) * np.float32(noise_sd)

        def finish(clean: np.ndarray) -> np.ndarray:
            image = np.abs(clean + noise) if modality == "Tmax" else np.clip(clean + noise, 0, None)
            return np.minimum(image, _UPPER[modality])

        # the core shift, in units of this map's spread in normal tissue, is weight * contrast
        normal = finish(base)[tissue]
        shift = MODALITY_WEIGHTS[modality] * contrast * float(normal.std())
        if modality in _RAISED:  # measured from the mean of the finished map (|.| lifts Tmax near 0)
            shift += float(normal.mean() - base[tissue].mean())
        if modality == "ADC":
            base = base - core_weight * shift
        elif modality in _RAISED:
            base = base + (core_weight + penumbra * penumbra_level) * shift
        else:  # lowered maps: multiplicative, so that values stay positive
            normal_mean = float(base[tissue & ~hypo].mean())
            drop = np.clip((core_weight + penumbra * penumbra_level) * shift / normal_mean, 0, 0.9)
            base = base * (1.0 - drop)
        image = finish(base)
        image[~brain] = 0.0
        images[channel] = image

    explanation = KnownExplanation(modality_weights=dict(MODALITY_WEIGHTS), core=core, hypoperfused=hypo)
    return SyntheticCase(images=images, ground_truth=core.astype(np.uint8), geometry=geometry,
                         explanation=explanation, seed=int(seed))


# ------------------------------------------------------------------------------------------------ files

def _isles_name(number: int, token: str, index: int) -> str:
    prefix = "SMIR" if number % 3 == 0 else "VSD"
    file_id = 100000 + 97 * number * 10 + index  # unique per file within a dataset
    return f"{prefix}.Brain.XX.O.{token}.{file_id}"


def write_isles_case(case: SyntheticCase, root: Path | str, number: int, replace_synthetic: bool = False) -> Path:
    """Write ``root/training_<number>/`` in the ISLES 2017 layout, plus the known explanation.

    Extras (``explanation.json``, ``explanation_regions.nii.gz``) lie beside the ISLES folders; case readers
    ignore them. An existing non-empty folder is never overwritten, except a synthetic one (it holds
    ``explanation.json``) when ``replace_synthetic`` is set.
    """
    folder = Path(root).expanduser() / f"training_{int(number)}"
    if folder.is_dir() and any(folder.iterdir()):
        if not (replace_synthetic and (folder / EXPLANATION_FILE).is_file()):
            raise FileExistsError(f"{folder} already exists and is not empty; choose another folder or another "
                                  "case number (lrpseg synth --start N).")
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for index, modality in enumerate(MODALITIES):
        name = _isles_name(number, f"MR_{modality}", index)
        write_volume(case.images[index], case.geometry, folder / name / f"{name}.nii")
    name = _isles_name(number, GROUND_TRUTH, len(MODALITIES))
    write_volume(case.ground_truth.astype(np.uint8), case.geometry, folder / name / f"{name}.nii")
    write_volume(case.explanation.regions(), case.geometry, folder / REGIONS_FILE)
    info = {
        "generator": "LRPSegmentationLib.data.synthetic",
        "generator_version": GENERATOR_VERSION,
        "seed": case.seed,
        "family": case.family,
        "territories": list(case.territories),
        **({"tissue_contrast": asdict(case.tissue_contrast)} if case.tissue_contrast is not None else {}),
        "number": int(number),
        "geometry": case.geometry.to_dict(),
        **case.explanation.to_json(),
    }
    (folder / EXPLANATION_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return folder


def dataset_seeds(seed: int, count: int) -> list[int]:
    """The per-case seeds that :func:`generate_dataset` derives from one dataset seed."""
    return [int(s) for s in np.random.SeedSequence(int(seed)).generate_state(int(count), dtype=np.uint32)]


def generate_dataset(root: Path | str, count: int, seed: int, start: int = 1, shape=None,
                     family: str = "procedural", contrast: TissueContrast | None = None) -> list[Path]:
    """Write ``count`` cases ``training_<start>`` ... into ``root``; returns the case folders."""
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}.")
    root_dir = Path(root).expanduser()
    taken = [f"training_{start + i}" for i in range(count) if (root_dir / f"training_{start + i}").exists()]
    if taken:  # check all before writing any, so that a refusal leaves no partial dataset
        raise FileExistsError(f"{root} already holds {', '.join(taken[:3])}{' ...' if len(taken) > 3 else ''}; "
                              "choose another folder or another first number (lrpseg synth --start N).")
    return [
        write_isles_case(generate_case(case_seed, shape=shape, family=family, contrast=contrast), root,
                         start + offset)
        for offset, case_seed in enumerate(dataset_seeds(seed, count))
    ]


def load_known_explanation(case_folder: Path | str) -> KnownExplanation | None:
    """The known explanation written beside a synthetic case, or None for a case without one (e.g. real ISLES)."""
    folder = Path(case_folder).expanduser()
    info_path = folder / EXPLANATION_FILE
    if not info_path.is_file():
        return None
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
        weights = {m: float(info["modality_weights"][m]) for m in MODALITIES}
    except (ValueError, KeyError, TypeError) as error:
        raise CaseError(f"{info_path} is not a valid explanation file ({error}); generate the case again.") from None
    regions, _geometry = read_volume(folder / REGIONS_FILE)
    return KnownExplanation(modality_weights=weights, core=regions == 2, hypoperfused=regions >= 1)
