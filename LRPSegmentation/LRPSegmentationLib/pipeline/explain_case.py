"""One case through the whole flow: model input -> U-Net -> target -> LRP (rules, in-chain filter taps) ->
relevance on the native grid -> final-map filter -> scores. Used by the CLI, the sweep and the Slicer module."""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable

import numpy as np
import torch

from LRPSegmentationLib import __version__
from LRPSegmentationLib.analysis.filters import AmplitudeFilter, filter_map
from LRPSegmentationLib.analysis.scores import ExplanationScores, score_explanation
from LRPSegmentationLib.data.caseio import Case
from LRPSegmentationLib.lrp import explain, get_composite
from LRPSegmentationLib.lrp.taps import tap_filter
from LRPSegmentationLib.lrp.targets import Target
from LRPSegmentationLib.net.devices import resolve_device, run_with_cpu_fallback
from LRPSegmentationLib.net.predict import Prediction, check_modalities, prediction_from_logits
from LRPSegmentationLib.net.preprocess import Interpolation, PreprocessSpec, ResizePreprocessor
from LRPSegmentationLib.net.weights import LoadedModel
from LRPSegmentationLib.options import (
    DEFAULT_PRESET,
    FALSE_NEGATIVE_HINT,
    FilterKind,
    FilterPlacement,
    RelevanceNormalization,
    TargetKind,
)

RELEVANCE_GRID = ("computed on the model grid, mapped to the native grid by the model's preprocessor with "
                  "mass-preserving trilinear resampling (padding cropped; for nnU-Net also un-cropping and "
                  "transposition): each channel keeps its sum, so conservation is the same on both grids")


@dataclass(frozen=True)
class ExplainSettings:
    """Every choice that shapes an explanation; recorded in its provenance."""

    preset: str = DEFAULT_PRESET
    target: Target = field(default_factory=Target)
    filter: AmplitudeFilter = field(default_factory=lambda: AmplitudeFilter.parse(None))
    where: FilterPlacement = FilterPlacement.OUTPUT
    taps: tuple[str, ...] | None = None  # None: the paper's taps (only used with LAYERS)
    normalization: RelevanceNormalization = RelevanceNormalization.PER_CHANNEL

    def describe(self) -> dict[str, Any]:
        return {"preset": self.preset, "rules": get_composite(self.preset).describe(),
                "target": self.target.describe(), "filter": self.filter.describe(), "where": self.where.value,
                "taps": list(self.taps) if self.taps is not None else "paper",
                "normalization": self.normalization.value}


@dataclass
class CaseExplanation:
    """Relevance of one case on its native grid (raw: in-chain filters applied, final-map filter not yet)."""

    case: Case
    relevance: np.ndarray  # float32 (C, D, H, W), native grid, channels in the model's modality order
    prediction: Prediction
    settings: ExplainSettings
    conservation: float  # sum of input relevance / sum of start relevance, on the model grid
    start_relevance_sum: float
    tap_removed: dict[str, float]  # in-chain taps: share of |relevance| each filter removed
    provenance: dict[str, Any]
    note: str | None = None  # one line for the user, e.g. NO_LESION_NOTE when the default target found no lesion

    def filtered(self, filt: AmplitudeFilter | None = None):
        """The final map under ``filt`` (default: the settings' filter when it acts on the output)."""
        if filt is None:
            on_output = self.settings.where == FilterPlacement.OUTPUT
            filt = self.settings.filter if on_output else AmplitudeFilter.parse(None)
        return filter_map(self.relevance, filt, self.settings.normalization)

    def scores(self, filt: AmplitudeFilter | None = None, **options) -> ExplanationScores:
        """Inclusivity and the other heatmap scores of the final map under ``filt`` (see :meth:`filtered`)."""
        options.setdefault("modalities", self.case.modalities)
        return score_explanation(self.filtered(filt), self.case.images, self.case.ground_truth,
                                 output_relevance_sum=self.start_relevance_sum, **options)


def target_on_model_grid(target: Target, case: Case, prep) -> Target:
    """``target`` as the model sees it: masks given on the case's native grid brought to the model grid by the
    model's preprocessor (nearest), and false-positive / false-negative targets scored against this case's own
    ground truth (so one target serves every case of a sweep). ``prep`` may be a :class:`PreprocessSpec`."""
    if isinstance(prep, PreprocessSpec):
        prep = ResizePreprocessor(prep)

    def on_grid(mask: np.ndarray | None) -> np.ndarray | None:
        if mask is None or mask.shape != case.geometry.shape:
            return mask
        return prep.mask_to_model(mask, case.geometry.shape)

    truth = target.ground_truth
    if target.kind in (TargetKind.FALSE_POSITIVE, TargetKind.FALSE_NEGATIVE) and case.ground_truth is not None:
        truth = case.ground_truth
    return replace(target, mask=on_grid(target.mask), ground_truth=on_grid(truth))


def explain_case(case: Case, loaded: LoadedModel, settings: ExplainSettings = ExplainSettings(),
                 device: str | torch.device = "auto",
                 notify: Callable[[str], None] | None = None) -> CaseExplanation:
    """Predict and explain one case; the relevance comes back on the case's native grid."""
    check_modalities(case, loaded)
    prep = loaded.prep()
    x = prep.prepare(case.images, case.geometry.spacing)
    target = target_on_model_grid(settings.target, case, prep)
    in_chain = settings.where == FilterPlacement.LAYERS and settings.filter.kind != FilterKind.NONE
    started = time.perf_counter()

    def run(target_device: torch.device):
        return explain(loaded.model.to(target_device), x.to(target_device), target.start_relevance,
                       settings.preset, tap_filter=tap_filter(settings.filter) if in_chain else None,
                       taps=settings.taps if in_chain else None)

    result, used = run_with_cpu_fallback(run, resolve_device(device), notify)
    prediction = prediction_from_logits(case, result.output, target.lesion_class, str(used), prep,
                                        loaded.contralateral_min_contrast)
    note = target.note(result.output.detach())
    check_note = prediction.check_note(case.geometry.spacing)
    if check_note and settings.target.kind is TargetKind.LESION_LOGITS:
        kept = prep.mask_to_model(prediction.mask, case.geometry.shape)
        if kept.any():  # explain the lesion the check kept, not the regions it removed
            target = Target(TargetKind.MASK, lesion_class=target.lesion_class, mask=kept)
            result, used = run_with_cpu_fallback(run, resolve_device(device), notify)
        else:
            check_note += "; no lesion remains: the heatmap explains what the model predicted there"
    seconds = time.perf_counter() - started
    relevance = prep.to_native(result.relevance.detach()[0].float().cpu(), case.geometry.shape, Interpolation.MASS)
    if note and case.ground_truth is not None and case.ground_truth.any():
        note = f"{note}; {FALSE_NEGATIVE_HINT}"
    note = "; ".join(part for part in (note, check_note) if part) or None
    if note and notify:
        notify(note)
    provenance = {
        "case": case.case_id,
        "note": note,
        "sources": {k: str(v) for k, v in case.sources.items()},
        "model": loaded.describe(),
        "explanation": settings.describe(),
        "explained_target": target.describe(),
        "contralateral_check": None if loaded.contralateral_min_contrast is None else {
            "min_contrast": loaded.contralateral_min_contrast,
            "regions": [asdict(region) for region in prediction.regions]},
        "rules_by_layer": result.rules,
        "batchnorm_folded": list(result.folded),
        "conservation": result.conservation,
        "start_relevance_sum": float(result.start_sum),
        "device": str(used),
        "seconds": round(seconds, 3),
        "versions": {"lrpsegmentation": __version__, "torch": torch.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
        "relevance_grid": RELEVANCE_GRID,
    }
    taps = {name: record.removed_fraction for name, record in result.taps.items() if record.filtered}
    return CaseExplanation(case, relevance.astype(np.float32), prediction, settings, float(result.conservation),
                           float(result.start_sum), taps, provenance, note)
