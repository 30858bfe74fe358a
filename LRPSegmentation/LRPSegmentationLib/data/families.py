"""The synthetic generator families beyond the procedural one, and the shared per-case bookkeeping.

- ``anatomy``: MNI152 tissue maps warped onto thick-slab ISLES grids (:mod:`.anatomy`), strokes in vascular
  territories (:mod:`.lesions`), textbook physiology (:mod:`.perfusion`), site variation (:mod:`.randomise`);
  about 12% of the cases are healthy. Needs ``nilearn`` (the ``anatomy`` extra).
- ``ellipsoid``: deliberately simple and made differently: an ellipsoidal head, ellipsoidal ventricles and
  one or two ellipsoidal lesions with an obvious signal in every map, a milder perfusion halo around them
  (different value conventions: perfusion in percent of normal). Kept out of training, it tests whether a model
  holds on a style it has never seen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from LRPSegmentationLib.data.geometry import Geometry
from LRPSegmentationLib.data.modalities import MODALITIES

if TYPE_CHECKING:
    from LRPSegmentationLib.data.perfusion import TissueContrast

HEALTHY_FRACTION = 0.12
"""Share of healthy (no lesion) cases in the anatomy and ellipsoid families."""


def measured_weights(images: np.ndarray, core: np.ndarray, normal: np.ndarray) -> dict[str, float]:
    """Each map's standardised lesion contrast |mean(core) - mean(normal)| / sd(normal), relative to the largest."""
    if not core.any() or not normal.any():
        return {m: 0.0 for m in MODALITIES}
    effects = [abs(float(c[core].mean() - c[normal].mean())) / (float(c[normal].std()) + 1e-6) for c in images]
    top = max(effects) or 1.0
    return {m: round(e / top, 3) for m, e in zip(MODALITIES, effects)}


def _geometry(rng: np.random.Generator, shape, spacing) -> Geometry:
    size = np.array(shape[::-1], dtype=float)
    origin = rng.uniform(-5.0, 5.0, 3) - (size - 1) / 2 * np.asarray(spacing)
    return Geometry(shape=tuple(int(s) for s in shape), spacing=tuple(float(s) for s in spacing),
                    origin=tuple(float(o) for o in origin), direction=tuple(float(d) for d in np.eye(3).ravel()))


def generate_anatomy_case(seed: int, shape=None, spacing=None, territory: str | None = None,
                          contrast: TissueContrast | None = None):
    """One ``anatomy`` family case (see the module docstring); ``territory`` forces a lesion territory;
    ``contrast`` widens the per-tissue values (None: the textbook ones, jittered by 10%)."""
    from LRPSegmentationLib.data.anatomy import draw_slab_grid, warp_anatomy
    from LRPSegmentationLib.data.lesions import LesionMaps, draw_lesions
    from LRPSegmentationLib.data.perfusion import TissueContrast, render_maps
    from LRPSegmentationLib.data.randomise import scanner_variation
    from LRPSegmentationLib.data.synthetic import KnownExplanation, SyntheticCase

    rng = np.random.default_rng([int(seed), 1])
    drawn_shape, drawn_spacing = draw_slab_grid(rng)
    shape = tuple(int(s) for s in (shape or drawn_shape))
    spacing = tuple(float(s) for s in (spacing or (drawn_spacing if shape == drawn_shape else
                                                   (220.0 / shape[2], 220.0 / shape[1], 130.0 / shape[0]))))
    anatomy = warp_anatomy(rng, shape, spacing)
    healthy = territory is None and rng.random() < HEALTHY_FRACTION
    lesion = LesionMaps.healthy(shape) if healthy else draw_lesions(rng, anatomy, spacing, territory)
    contrast = contrast or TissueContrast()
    images = render_maps(rng, anatomy, lesion, contrast)
    images = scanner_variation(rng, images, anatomy.brain)
    normal = anatomy.tissue & ~lesion.deficit
    explanation = KnownExplanation(measured_weights(images, lesion.infarct, normal), lesion.infarct,
                                   lesion.deficit)
    case = SyntheticCase(images, lesion.infarct.astype(np.uint8), _geometry(rng, shape, spacing), explanation,
                         int(seed), family="anatomy")
    case.territories, case.severity, case.tissue_contrast = lesion.territories, lesion.severity, contrast
    return case


def _ellipsoid(z, y, x, centre, radii) -> np.ndarray:
    return ((z - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 + ((x - centre[2]) / radii[2]) ** 2


def generate_ellipsoid_case(seed: int, shape=None, spacing=None):
    """One ``ellipsoid`` family case (see the module docstring)."""
    from LRPSegmentationLib.data.synthetic import KnownExplanation, SyntheticCase

    rng = np.random.default_rng([int(seed), 2])
    shape = tuple(int(s) for s in (shape or (int(rng.integers(16, 32)),) + (int(rng.choice((112, 144, 200))),) * 2))
    spacing = tuple(float(s) for s in (spacing or (210.0 / shape[2], 210.0 / shape[1], 130.0 / shape[0])))
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n, dtype=np.float32) for n in shape], indexing="ij")
    head = _ellipsoid(z, y, x, (rng.uniform(-0.1, 0.1), 0, 0), (rng.uniform(0.85, 1.0), rng.uniform(0.75, 0.85),
                                                               rng.uniform(0.62, 0.72)))
    brain = head < 1.0
    white = head < rng.uniform(0.45, 0.65)
    ventricles = np.zeros(shape, bool)
    for side in (-1, 1):
        ventricles |= _ellipsoid(z, y, x, (0.1, 0.0, side * 0.12), (0.3, 0.35, 0.07)) < 1.0
    lesion = np.zeros(shape, bool)
    deficit = np.zeros(shape, bool)
    if rng.random() >= HEALTHY_FRACTION:
        for _focus in range(int(rng.integers(1, 3))):
            side = rng.choice((-1.0, 1.0))
            centre = (rng.uniform(-0.4, 0.5), rng.uniform(-0.5, 0.5), side * rng.uniform(0.25, 0.45))
            radii = np.array([rng.uniform(0.12, 0.45), rng.uniform(0.06, 0.25), rng.uniform(0.06, 0.22)])
            lesion |= (_ellipsoid(z, y, x, centre, radii) < 1.0) & brain & ~ventricles
            deficit |= (_ellipsoid(z, y, x, centre, radii * 1.5) < 1.0) & brain & ~ventricles
    lesion = lesion & (x * np.sign(x + 1e-6) > 0.04)
    deficit |= lesion
    # (grey, white, CSF) per map; perfusion in percent of normal grey matter
    values = {"ADC": (850, 750, 2800), "MTT": (100, 120, 60), "rCBF": (100, 45, 5), "rCBV": (100, 55, 8),
              "Tmax": (1.0, 1.5, 0.5), "TTP": (100, 108, 90)}
    # in the lesion every map shows it; in the halo (the rest of the deficit) the perfusion maps mildly
    change = {"ADC": 0.6, "MTT": 1.8, "rCBF": 0.35, "rCBV": 0.6, "Tmax": 8.0, "TTP": 1.25}
    halo_change = {"ADC": 1.0, "MTT": 1.3, "rCBF": 0.75, "rCBV": 1.0, "Tmax": 3.0, "TTP": 1.08}
    images = np.zeros((len(MODALITIES), *shape), np.float32)
    for channel, modality in enumerate(MODALITIES):
        grey, wm, csf = (v * rng.uniform(0.9, 1.1) for v in values[modality])
        image = np.where(ventricles, csf, np.where(white, wm, grey)).astype(np.float32)
        factor, halo = change[modality], halo_change[modality]
        if modality == "Tmax":
            image = image + rng.uniform(0.8, 1.2) * np.where(lesion, factor, halo * deficit)
        else:
            image = image * np.where(lesion, factor, np.where(deficit, halo, 1.0))
        image = ndimage.gaussian_filter(image, (0.3, 0.8, 0.8))
        image = image * (1 + 0.05 * rng.standard_normal(shape, dtype=np.float32))
        images[channel] = np.where(brain, np.clip(image, 0, None), 0.0)
    normal = brain & ~ventricles & ~deficit
    explanation = KnownExplanation(measured_weights(images, lesion, normal), lesion, deficit)
    return SyntheticCase(images, lesion.astype(np.uint8), _geometry(rng, shape, spacing), explanation, int(seed),
                         family="ellipsoid")
