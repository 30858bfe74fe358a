"""Stroke lesions as they are: foci in vascular territories (MNI space), a diffusion core inside a larger
perfusion deficit, and the final infarct (the ISLES 2017 ground truth) = the core plus part of the penumbra.

Each focus is an irregular blob around a point drawn in its territory. A field ``q`` (distance from the focus
centre in units of the final-infarct radius, roughened by smooth noise) defines three nested regions: the
core (``q < core``, what diffusion shows), the final infarct (``q < 1``: core plus the part of the penumbra that
did not survive) and the perfusion deficit (``q < reach``). ``severity`` (1 at the centre, 0 at the deficit's
edge) grades the perfusion changes (:mod:`.perfusion`). The penumbra that infarcts is the deeper part: the infarct
edge lies at the grade :data:`INFARCT_GRADE` in every lesion, as when no reperfusion saves it, so the acute maps
determine the ground truth. Lesions stay in parenchyma and in their hemisphere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from LRPSegmentationLib.data.anatomy import WarpedAnatomy
from LRPSegmentationLib.data.fields import smooth_noise

INFARCT_GRADE = 0.4
"""Perfusion deficit grade at the final infarct's edge: penumbra graded higher does not survive."""


@dataclass(frozen=True)
class Territory:
    """An arterial territory as an ellipsoid in MNI mm (right hemisphere; mirrored for the left)."""

    centre: tuple[float, float, float]
    radii: tuple[float, float, float]
    volume_ml: tuple[float, float]  # range of the final infarct volume of one focus
    foci: tuple[int, int] = (1, 1)  # range of the number of foci
    reach: tuple[float, float] = (1.3, 2.0)  # perfusion deficit radius / final infarct radius


TERRITORIES: dict[str, Territory] = {
    "mca": Territory((40.0, -12.0, 16.0), (20.0, 42.0, 30.0), (25.0, 160.0), reach=(1.15, 1.5)),
    "mca-branch": Territory((42.0, -12.0, 18.0), (20.0, 40.0, 28.0), (4.0, 40.0)),
    "aca": Territory((9.0, 18.0, 38.0), (7.0, 38.0, 22.0), (4.0, 35.0)),
    "pca": Territory((16.0, -74.0, 4.0), (14.0, 20.0, 16.0), (4.0, 40.0)),
    "lacunar": Territory((20.0, -6.0, 8.0), (9.0, 14.0, 12.0), (0.3, 2.5), reach=(1.1, 1.4)),
    "watershed": Territory((27.0, -12.0, 28.0), (6.0, 34.0, 8.0), (0.4, 3.0), foci=(3, 5), reach=(1.4, 2.2)),
    "embolic": Territory((44.0, -15.0, 20.0), (18.0, 40.0, 28.0), (0.4, 12.0), foci=(2, 4)),
}
"""Territories, a little simplified: middle (whole and branch), anterior and posterior cerebral artery, lacunar
(lenticulostriate/thalamic perforators), internal watershed (a chain of small foci along the corona radiata)
and embolic showers (several small cortical foci)."""

TERRITORY_WEIGHTS: dict[str, float] = {"mca": 0.2, "mca-branch": 0.22, "aca": 0.08, "pca": 0.12, "lacunar": 0.16,
                                       "watershed": 0.1, "embolic": 0.12}
"""How often each territory is drawn for a lesion case."""


@dataclass
class LesionMaps:
    """Nested lesion regions on the case grid and the graded perfusion severity."""

    core: np.ndarray  # bool: diffusion-restricted infarct core
    infarct: np.ndarray  # bool: final infarct = ground truth (contains the core)
    deficit: np.ndarray  # bool: perfusion deficit (contains the infarct)
    severity: np.ndarray  # float32 in [0, 1]: perfusion severity, 0 outside the deficit
    core_weight: np.ndarray  # float32 in [0, 1]: diffusion restriction (soft core)
    territories: tuple[str, ...]

    @classmethod
    def healthy(cls, shape: tuple[int, int, int]) -> "LesionMaps":
        empty = np.zeros(shape, bool)
        return cls(empty, empty.copy(), empty.copy(), np.zeros(shape, np.float32), np.zeros(shape, np.float32), ())


def _grade(q: np.ndarray, reach: np.ndarray) -> np.ndarray:
    """Deficit grade of the distance field ``q``: 1 at the centre, :data:`INFARCT_GRADE` at the infarct edge
    (``q = 1``), 0 at the deficit's edge (``q = reach``), linear in between."""
    inner = 1.0 - (1.0 - INFARCT_GRADE) * q
    outer = INFARCT_GRADE * (reach - q) / np.maximum(reach - 1.0, 1e-6)
    return np.clip(np.where(q < 1.0, inner, outer), 0.0, 1.0)


def _focus_centre(rng: np.random.Generator, territory: Territory, side: float, anatomy: WarpedAnatomy,
                  allowed: np.ndarray) -> np.ndarray | None:
    """A parenchyma voxel's MNI point inside the territory ellipsoid (None when the slab misses it)."""
    centre = np.array(territory.centre) * np.array([side, 1.0, 1.0])
    inside = np.sum(((anatomy.mni - centre[:, None, None, None]) / np.array(territory.radii)[:, None, None, None])
                    ** 2, axis=0) < 1.0
    candidates = np.flatnonzero(inside & allowed)
    if candidates.size == 0:
        return None
    return anatomy.mni.reshape(3, -1)[:, int(rng.choice(candidates))]


def draw_lesions(rng: np.random.Generator, anatomy: WarpedAnatomy, spacing: tuple[float, float, float],
                 territory: str | None = None) -> LesionMaps:
    """Foci in one territory (drawn by :data:`TERRITORY_WEIGHTS` when None), one hemisphere; healthy when the
    slab misses the territory after 10 tries (rare)."""
    shape = anatomy.grey.shape
    voxel_ml = float(np.prod(spacing)) / 1000.0
    names = list(TERRITORY_WEIGHTS)
    for _attempt in range(10):
        name = territory or names[int(rng.choice(len(names), p=np.array(list(TERRITORY_WEIGHTS.values()))))]
        spec = TERRITORIES[name]
        side = float(rng.choice((-1.0, 1.0)))
        allowed = anatomy.tissue & (anatomy.mni[0] * side > 2.0)
        q = np.full(shape, np.inf, np.float32)
        core_cut = np.zeros(shape, np.float32)
        reach = np.zeros(shape, np.float32)
        for _focus in range(int(rng.integers(spec.foci[0], spec.foci[1] + 1))):
            centre = _focus_centre(rng, spec, side, anatomy, allowed)
            if centre is None:
                continue
            volume = float(np.exp(rng.uniform(np.log(spec.volume_ml[0]), np.log(spec.volume_ml[1]))))
            radius = (3.0 * volume * 1000.0 / (4.0 * np.pi)) ** (1.0 / 3.0)
            stretch = rng.uniform(0.75, 1.3, 3)
            stretch /= np.prod(stretch) ** (1.0 / 3.0)
            distance = np.sqrt(np.sum(((anatomy.mni - centre[:, None, None, None])
                                       / (radius * stretch)[:, None, None, None]) ** 2, axis=0))
            rough = 1.0 + rng.uniform(0.15, 0.35) * smooth_noise(rng, shape, (4, 8, 8))
            focus = distance * np.clip(rough, 0.4, None)
            closer = focus < q
            q = np.where(closer, focus, q)
            core_cut = np.where(closer, rng.uniform(0.55, 0.85), core_cut)
            reach = np.where(closer, rng.uniform(*spec.reach), reach)
        infarct = (q < 1.0) & allowed
        if infarct.sum() * voxel_ml < 0.1 or not infarct.any():
            continue
        deficit = ((q < reach) & (anatomy.brain) & (anatomy.mni[0] * side > 0.0)) | infarct
        core = (q < core_cut) & allowed
        if not core.any():  # a tiny lesion: its centre voxel still shows on diffusion
            core = infarct & (q <= q[infarct].min())
        severity = np.where(deficit, _grade(q, reach), 0.0)
        core_weight = np.clip((core_cut - q) / 0.15 + 0.6, 0.0, 1.0) * (q < core_cut + 0.1) * allowed
        return LesionMaps(core, infarct | core, deficit, severity.astype(np.float32),
                          np.maximum(core_weight, core * 0.85).astype(np.float32), (name,))
    return LesionMaps.healthy(shape)
