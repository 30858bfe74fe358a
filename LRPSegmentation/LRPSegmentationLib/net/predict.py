"""Lesion prediction on a case's native grid."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from LRPSegmentationLib.analysis.contralateral import RegionContrast, contralateral_check, left_right_axis
from LRPSegmentationLib.analysis.metrics import dice
from LRPSegmentationLib.data.caseio import Case
from LRPSegmentationLib.net.devices import resolve_device, run_with_cpu_fallback
from LRPSegmentationLib.net.preprocess import Interpolation, to_native
from LRPSegmentationLib.net.weights import LoadedModel


@dataclass
class Prediction:
    """Lesion probability and binary mask on the native grid of ``case_id``."""

    case_id: str
    probability: np.ndarray  # float32 (D, H, W) in [0, 1]
    mask: np.ndarray  # uint8 (D, H, W)
    dice: float | None  # against the case's ground truth, when it has one
    device: str
    regions: tuple[RegionContrast, ...] = ()  # the contralateral check's verdicts (empty: no check)

    @property
    def removed(self) -> list[RegionContrast]:
        """The predicted regions the contralateral check dropped from ``mask``."""
        return [region for region in self.regions if not region.kept]

    def check_note(self, spacing: tuple[float, float, float]) -> str | None:
        """One line on what the contralateral check removed (``spacing`` in mm), or None when it removed nothing."""
        removed = self.removed
        if not removed:
            return None
        volume = sum(region.voxels for region in removed) * float(np.prod(spacing)) / 1000.0
        return (f"contralateral check: removed {len(removed)} predicted region(s) ({volume:.2f} ml) that the other "
                "hemisphere shows as well")


def model_logits(model: torch.nn.Module, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The full-resolution logits (1, C, d, h, w) on the model grid, float32 on the CPU."""
    model.to(device).eval()
    from LRPSegmentationLib.lrp.convolution import fast_convolutions
    from LRPSegmentationLib.lrp.outputs import full_resolution

    with torch.inference_mode(), torch.autocast(device.type, enabled=device.type == "cuda"), fast_convolutions():
        logits = full_resolution(model(x.to(device)))
    return logits.float().cpu()


def lesion_log_odds(logits: torch.Tensor, lesion_class: int = 1) -> np.ndarray:
    """``log(p / (1 - p))`` of the lesion's softmax probability, (d, h, w) float64, from (1, C, d, h, w) logits;
    exact where ``p`` rounds to 0 or 1 (the logit minus the log-sum-exp of the other classes)."""
    logits = torch.as_tensor(logits).detach().double().cpu()[0]
    others = torch.cat([logits[:lesion_class], logits[lesion_class + 1:]])
    return (logits[lesion_class] - torch.logsumexp(others, dim=0)).numpy()


def prediction_from_logits(case: Case, logits: torch.Tensor, lesion_class: int, device: str,
                           preprocessor=None, min_contrast: float | None = None) -> Prediction:
    """Map model-grid logits (1, C, d, h, w) onto the case's native grid, threshold the lesion probability at 0.5,
    apply the contralateral check when ``min_contrast`` is given, and score it. A preprocessor with
    ``log_odds_to_native`` (nnU-Net's: it resamples logits) gets the lesion log-odds; others resize the probability
    (``to_native``, default a plain resize)."""
    from scipy.special import expit

    logits = torch.as_tensor(logits).detach().float().cpu()
    if hasattr(preprocessor, "log_odds_to_native"):
        native = expit(preprocessor.log_odds_to_native(lesion_log_odds(logits, lesion_class), case.geometry.shape))
    else:
        probability = torch.softmax(logits, dim=1)[0, lesion_class].numpy()
        back = preprocessor.to_native if preprocessor is not None else to_native
        native = np.clip(back(probability, case.geometry.shape, Interpolation.LINEAR), 0.0, 1.0)
    mask = (native >= 0.5).astype(np.uint8)
    regions = []
    if min_contrast is not None:
        mask, regions = contralateral_check(mask, case.images, case.modalities,
                                            left_right_axis(case.geometry.direction), min_contrast)
    score = dice(mask, case.ground_truth) if case.ground_truth is not None else None
    return Prediction(case.case_id, native.astype(np.float32), mask, score, device, tuple(regions))


def predict_case(case: Case, loaded: LoadedModel, device: str | torch.device = "auto",
                 notify: Callable[[str], None] | None = None) -> Prediction:
    """Run the model on a case and map the result back onto the case's native grid."""
    check_modalities(case, loaded)
    prep = loaded.prep()
    x = prep.prepare(case.images, case.geometry.spacing)
    logits, used = run_with_cpu_fallback(lambda d: model_logits(loaded.model, x, d), resolve_device(device), notify)
    return prediction_from_logits(case, logits, loaded.lesion_class, str(used), prep,
                                  loaded.contralateral_min_contrast)


class ModalityMismatchError(ValueError):
    """The case's channels are not the model's input modalities."""


def check_modalities(case: Case, loaded: LoadedModel) -> None:
    """Refuse a case whose modality list differs from the model's (the channels would be fed in the wrong order)."""
    have, want = tuple(getattr(case, "modalities", ())), loaded.modalities
    if have and have != want:
        raise ModalityMismatchError(
            f"Case {case.case_id} has the modalities {', '.join(have)} but the model expects {', '.join(want)}; "
            "load the case with the model's modality list."
        )
