"""Lesion prediction on a case's native grid."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

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


def lesion_probability(model: torch.nn.Module, x: torch.Tensor, device: torch.device,
                       lesion_class: int = 1) -> np.ndarray:
    """Softmax lesion probability on the model grid, (d, h, w) float32 on the CPU."""
    model.to(device).eval()
    from LRPSegmentationLib.lrp.convolution import fast_convolutions
    from LRPSegmentationLib.lrp.outputs import full_resolution

    with torch.inference_mode(), torch.autocast(device.type, enabled=device.type == "cuda"), fast_convolutions():
        logits = full_resolution(model(x.to(device)))
    return torch.softmax(logits.float(), dim=1)[0, lesion_class].cpu().numpy()


def prediction_from_probability(case: Case, probability: np.ndarray, device: str,
                                preprocessor=None) -> Prediction:
    """Map a model-grid lesion probability onto the case's native grid (through ``preprocessor``, default a plain
    resize), threshold it and score it."""
    if preprocessor is not None:
        native = np.clip(preprocessor.to_native(probability, case.geometry.shape, Interpolation.LINEAR), 0.0, 1.0)
    else:
        native = np.clip(to_native(probability, case.geometry.shape, Interpolation.LINEAR), 0.0, 1.0)
    mask = (native >= 0.5).astype(np.uint8)
    score = dice(mask, case.ground_truth) if case.ground_truth is not None else None
    return Prediction(case.case_id, native.astype(np.float32), mask, score, device)


def predict_case(case: Case, loaded: LoadedModel, device: str | torch.device = "auto",
                 notify: Callable[[str], None] | None = None) -> Prediction:
    """Run the model on a case and map the result back onto the case's native grid."""
    check_modalities(case, loaded)
    prep = loaded.prep()
    x = prep.prepare(case.images, case.geometry.spacing)
    probability, used = run_with_cpu_fallback(
        lambda d: lesion_probability(loaded.model, x, d, loaded.lesion_class), resolve_device(device), notify)
    return prediction_from_probability(case, probability, str(used), prep)


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
