"""Textbook perfusion and diffusion physiology per tissue, and the six maps of a case with a stroke lesion.

Normal values (adult, CT/MR perfusion and DWI literature; each case jitters each by 10% by default, and
:class:`TissueContrast` widens that):
grey matter CBF 55 ml/100 g/min, CBV 4.2 ml/100 g, white matter CBF 22, CBV 2.2; MTT = 60 * CBV / CBF
(central volume principle: about 4.6 s in grey, 6 s in white matter); Tmax under 2 s; TTP = bolus arrival
(12-22 s) + 5-7 s; ADC 820 (grey), 720 (white), 3000 (CSF) x 1e-6 mm^2/s. In a stroke, the core has ADC
lowered by 30-45% and CBF below ~30% of normal; the penumbra has CBF reduced, CBV normal or slightly raised
(autoregulation), MTT, Tmax (over 6 s) and TTP prolonged. ``rCBF``/``rCBV`` are written in the units above.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from LRPSegmentationLib.data.anatomy import WarpedAnatomy
from LRPSegmentationLib.data.fields import smooth_noise
from LRPSegmentationLib.data.lesions import LesionMaps
from LRPSegmentationLib.data.modalities import MODALITIES

NORMAL_VALUES: dict[str, tuple[float, float, float]] = {
    "ADC": (820.0, 720.0, 3000.0),  # 1e-6 mm^2/s: grey, white, CSF
    "rCBF": (55.0, 22.0, 3.0),  # ml/100 g/min
    "rCBV": (4.2, 2.2, 0.3),  # ml/100 g
    "Tmax": (0.6, 1.0, 1.5),  # s
    "TTP": (5.0, 6.5, 7.0),  # s after bolus arrival
}
"""(grey matter, white matter, CSF) of the maps set directly; MTT follows from CBV / CBF."""


@dataclass(frozen=True)
class TissueContrast:
    """How far a case's tissue values may stray from :data:`NORMAL_VALUES`, per map (the SynthSeg idea).

    ``jitter``: each tissue's value is scaled by its own factor from 1 +- jitter. ``white_gain``: white matter's
    ratio to grey matter is raised to a power drawn from [1, white_gain], so that white matter differs further in
    the direction it already differs (lower ADC, CBF, CBV; longer Tmax, TTP): healthy tissue that looks more like
    a faint lesion. The default draws nothing extra, so that default cases keep their arrays.
    """

    jitter: float = 0.1
    white_gain: float = 1.0

    def __post_init__(self):
        if not 0.0 <= self.jitter < 0.9:
            raise ValueError(f"The tissue jitter must be at least 0 and below 0.9, got {self.jitter}.")
        if not 1.0 <= self.white_gain <= 4.0:
            raise ValueError(f"The white-matter contrast gain must lie in [1, 4], got {self.white_gain}.")


NOISE_SD: dict[str, float] = {"ADC": 35.0, "MTT": 0.8, "rCBF": 6.0, "rCBV": 0.45, "Tmax": 0.6, "TTP": 1.0}
UPPER: dict[str, float] = {"ADC": 4000.0, "MTT": 24.0, "rCBF": 150.0, "rCBV": 15.0, "Tmax": 30.0, "TTP": 60.0}


def render_maps(rng: np.random.Generator, anatomy: WarpedAnatomy, lesion: LesionMaps,
                contrast: TissueContrast = TissueContrast()) -> np.ndarray:
    """(6, D, H, W) float32 maps in MODALITIES order, zero outside the brain (skull-stripped like ISLES), with
    each tissue's values drawn as ``contrast`` says."""
    shape = anatomy.grey.shape
    fractions = (anatomy.grey, anatomy.white, anatomy.csf)
    total = np.maximum(sum(fractions), 1e-6)

    def tissue_mix(modality: str) -> np.ndarray:
        values = np.array(NORMAL_VALUES[modality]) * rng.uniform(1.0 - contrast.jitter, 1.0 + contrast.jitter, 3)
        if contrast.white_gain > 1.0:
            values[1] = values[0] * (values[1] / values[0]) ** rng.uniform(1.0, contrast.white_gain)
        mixed = sum(f * v for f, v in zip(fractions, values)) / total
        return mixed * (1.0 + 0.04 * smooth_noise(rng, shape, (4, 10, 10)))

    adc, cbf, cbv = tissue_mix("ADC"), tissue_mix("rCBF"), tissue_mix("rCBV")
    tmax, ttp = tissue_mix("Tmax"), tissue_mix("TTP") + rng.uniform(12.0, 22.0)
    # cortical vessels: sparse bright CBF/CBV spots where grey matter meets CSF
    vessels = (anatomy.csf > 0.2) & (anatomy.grey > 0.2) & (rng.random(shape) < 0.04)
    cbf, cbv = cbf * (1 + 1.5 * vessels), cbv * (1 + 2.0 * vessels)

    severity, parenchyma = lesion.severity, (anatomy.grey + anatomy.white) / total
    if lesion.deficit.any():
        drop = rng.uniform(0.3, 0.45)
        adc = adc * (1.0 - drop * lesion.core_weight * parenchyma)
        cbf = cbf * (1.0 - rng.uniform(0.6, 0.9) * severity ** 0.8)
        cbv = cbv * np.clip(1.0 + 0.3 * severity - rng.uniform(0.6, 0.9) * severity ** 2, 0.1, None)
        delay = severity ** 0.6
        tmax = tmax + rng.uniform(8.0, 16.0) * delay
        ttp = ttp + rng.uniform(6.0, 14.0) * delay
    mtt = 60.0 * cbv / np.maximum(cbf, 1.0)

    maps = {"ADC": adc, "MTT": mtt, "rCBF": cbf, "rCBV": cbv, "Tmax": tmax, "TTP": ttp}
    brain = anatomy.brain
    images = np.zeros((len(MODALITIES), *shape), np.float32)
    for channel, modality in enumerate(MODALITIES):
        noisy = maps[modality] + rng.standard_normal(shape, dtype=np.float32) * NOISE_SD[modality]
        noisy = np.abs(noisy) if modality == "Tmax" else np.clip(noisy, 0.0, None)
        images[channel] = np.where(brain, np.minimum(noisy, UPPER[modality]), 0.0)
    return images
