"""The live view of one explanation in a scene: re-filter the cached map, rewrite the heatmaps and the scores table.

:class:`LiveExplanation` is the one owner of the live-view cache: the raw native-grid relevance (6, D, H, W), its
presorted :class:`~LRPSegmentationLib.analysis.filters.NormalisedMap`, the
:class:`~LRPSegmentationLib.analysis.metrics.ReferenceMasks` of the case, the module's heatmap, segmentation and table
nodes, and the in-chain ("layers") results per filter band, which are computed elsewhere (the Slicer module runs
them in a child process) and handed in with :meth:`LiveExplanation.add_layer_result`.

One slider move is :meth:`LiveExplanation.apply`: re-filter into the previous result's buffers, score, copy the
filtered map into the heatmap voxels in place, overwrite the table values in place. Qt-free; the scene is an
argument (``slicer.mrmlScene`` in Slicer, a plain ``vtkMRMLScene`` in tests).
"""

from __future__ import annotations

import time
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from LRPSegmentationLib.analysis import metrics
from LRPSegmentationLib.analysis.filters import (
    NO_FILTER,
    AmplitudeFilter,
    FilteredMap,
    NormalisedMap,
    RelevanceNormalization,
    normalise_map,
)
from LRPSegmentationLib.analysis.metrics import EmptyMaskWarning
from LRPSegmentationLib.analysis.scores import ExplanationScores, ReferenceMasks, reference_masks, score_explanation
from LRPSegmentationLib.data.caseio import load_case, read_volume
from LRPSegmentationLib.data.geometry import Geometry
from LRPSegmentationLib.data.modalities import MODALITIES
from LRPSegmentationLib.mrml import display, nodes, tables
from LRPSegmentationLib.pipeline.outputs import MASK_FILE, read_note, relevance_file

SCORE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("modality", "Modality"),
    ("input_inclusivity", "D(LRP,x)"),
    ("gt_inclusivity", "D(LRP,y_OT)"),
    ("input_precision", "D(x,LRP)"),
    ("gt_precision", "D(y_OT,LRP)"),
    ("share", "Share"),
    ("abs_share", "|Share|"),
)
"""(score field, table column) of the side-panel table; "Retained" and "Dice" columns follow."""

MIN_WINDOW = 1e-3
"""Smallest half width of the heatmap window (a band ending at 0 would make an empty window)."""


class LiveError(ValueError):
    """A live-view request that cannot be served (wrong shapes, missing run outputs); says what to do."""


def score_rows(scores: ExplanationScores, dice: float | None = None) -> list[dict[str, Any]]:
    """The table rows of ``scores``: one per modality, then "all"; retained relevance = 1 - removed fraction."""
    rows = []
    for row in (*scores.modalities, scores.total):
        values: dict[str, Any] = {label: getattr(row, key) for key, label in SCORE_COLUMNS}
        values["Retained"] = 1.0 - row.removed_fraction
        values["Dice"] = dice
        rows.append(values)
    return rows


def slider_filter(kind: str = "none", alpha: float = 1.0, alpha_low: float = 0.0) -> AmplitudeFilter:
    """The filter the GUI controls describe: ``kind`` none / pass / clamp on the band [alpha_low, alpha].

    A lower bound above ``alpha`` is lowered to ``alpha`` (the two sliders may cross while dragging).
    """
    if str(kind) == "none":
        return NO_FILTER
    return AmplitudeFilter(kind, min(float(alpha_low), float(alpha)), float(alpha))


def band_key(filt: AmplitudeFilter | str | None) -> AmplitudeFilter:
    """The cache key of an in-chain band: the filter with its ends rounded to 1e-3 (slider values drift)."""
    filt = AmplitudeFilter.parse(filt)
    if filt == NO_FILTER:
        return NO_FILTER
    return AmplitudeFilter(filt.kind, round(filt.low, 3), round(filt.high, 3))


def read_relevance(out_dir: Path | str) -> np.ndarray:
    """The raw (6, D, H, W) float32 relevance ``lrpseg explain`` wrote as ``relevance_<MOD>.nii.gz`` in ``out_dir``."""
    out_dir = Path(out_dir)
    missing = [m for m in MODALITIES if not (out_dir / relevance_file(m)).is_file()]
    if missing:
        raise LiveError(f"{out_dir}: no {relevance_file(missing[0])}; run 'lrpseg explain' into this folder first.")
    return np.stack([read_volume(out_dir / relevance_file(m))[0] for m in MODALITIES]).astype(np.float32)


UPDATE_STEPS: tuple[str, ...] = ("filter", "scores", "voxels", "table")
"""The steps of one live update, in order (see :class:`UpdateTiming`)."""


@dataclass(frozen=True)
class UpdateTiming:
    """Seconds spent by the last update per step of :data:`UPDATE_STEPS`: wall clock and CPU time of this process."""

    wall: tuple[float, ...] = (0.0,) * len(UPDATE_STEPS)
    cpu: tuple[float, ...] = (0.0,) * len(UPDATE_STEPS)

    def step(self, name: str, clock: str = "wall") -> float:
        return (self.wall if clock == "wall" else self.cpu)[UPDATE_STEPS.index(name)]

    @property
    def total(self) -> float:
        """Wall seconds of the whole update."""
        return float(sum(self.wall))

    @property
    def total_cpu(self) -> float:
        return float(sum(self.cpu))


def _now() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


class LiveExplanation:
    """One explanation shown in ``scene``: heatmap per modality, prediction/truth outlines, scores table.

    ``relevance`` is the raw final map (6, D, H, W) on the grid of ``images`` (the case's ADC grid) with
    ``geometry``; ``ground_truth`` and ``prediction`` are optional 0/1 masks on that grid. ``backgrounds`` are the
    modality volume nodes shown under the heatmaps (the user's nodes: only referenced, never modified);
    ``reference`` places the outputs next to it in the subject hierarchy (default: the ADC background).
    Re-creating it in the same scene reuses the module's output nodes (found by role), never duplicates them.
    """

    def __init__(self, scene, relevance: np.ndarray, images: np.ndarray, geometry: Geometry, *,
                 ground_truth: np.ndarray | None = None, prediction: np.ndarray | None = None,
                 backgrounds: Mapping[str, Any] | None = None, reference=None,
                 normalization: RelevanceNormalization | str = RelevanceNormalization.PER_CHANNEL,
                 max_layer_results: int = 8, note: str | None = None) -> None:
        relevance = np.asarray(relevance, dtype=np.float32)
        expected = (len(MODALITIES), *geometry.shape)
        for name, array in (("relevance", relevance), ("images", np.asarray(images))):
            if array.shape != expected:
                raise LiveError(f"{name} has shape {array.shape}; expected {expected} (six modalities on the grid).")
        self.scene = scene
        self.note = note  # one line for the panel, e.g. "no lesion predicted: showing lesion evidence"
        self.relevance = relevance
        self.geometry = geometry
        self.normalization = RelevanceNormalization(normalization)
        self.cache: NormalisedMap = normalise_map(relevance, self.normalization, presort=True)
        self.references: ReferenceMasks = reference_masks(images, ground_truth)
        self.backgrounds = dict(backgrounds or {})
        self.reference = reference if reference is not None else self.backgrounds.get("ADC")
        self.dice = None if ground_truth is None or prediction is None else metrics.dice(prediction, ground_truth)
        blank = np.zeros(geometry.shape, np.float32)
        self.heatmaps = {m: display.heatmap_node(scene, blank, geometry, m, half_width=1.0, reference=self.reference)
                         for m in MODALITIES}
        nodes.remove_outputs(scene, [role for role, mask in (("prediction", prediction), ("ground_truth", ground_truth))
                                   if mask is None])  # a stale outline of an earlier run would mislead
        self.segmentation = None if prediction is None else nodes.segmentation_node(
            scene, prediction, geometry, reference=self.reference)
        self.ground_truth_segmentation = None if ground_truth is None else nodes.segmentation_node(
            scene, ground_truth, geometry, "ground_truth", name="Lesion (ground truth)", color=(0.2, 0.9, 0.3),
            reference=self.reference)
        self.table = None
        self.filter: AmplitudeFilter = NO_FILTER
        self.where = "output"
        self.scores: ExplanationScores | None = None
        self.timing = UpdateTiming()
        self.max_layer_results = int(max_layer_results)
        self._layers: OrderedDict[AmplitudeFilter, NormalisedMap] = OrderedDict()
        self._filtered: FilteredMap | None = None
        self._windows: dict[str, float] = {}
        self.apply(NO_FILTER)

    # ----------------------------------------------------------------------------------------- constructors
    @classmethod
    def from_explanation(cls, scene, explanation, backgrounds: Mapping[str, Any] | None = None,
                         reference=None) -> LiveExplanation:
        """From an in-process :class:`~LRPSegmentationLib.pipeline.explain_case.CaseExplanation` (console, tests,
        screenshots)."""
        case = explanation.case
        return cls(scene, explanation.relevance, case.images, case.geometry, ground_truth=case.ground_truth,
                   prediction=explanation.prediction.mask, backgrounds=backgrounds, reference=reference,
                   normalization=explanation.settings.normalization, note=explanation.note)

    @classmethod
    def import_run(cls, scene, request, backgrounds: Mapping[str, Any], current: LiveExplanation | None = None,
                   reference=None) -> LiveExplanation:
        """The outputs of a finished :class:`~LRPSegmentationLib.mrml.job.ExplainRequest` run.

        A run with an in-chain band (``where="layers"`` and a filter) adds that band's map to ``current``, which
        must show the same ``backgrounds``, and returns it; any other run becomes a new live explanation.
        """
        if request.where == "layers" and request.filter != "none":
            if current is None or current.backgrounds != dict(backgrounds):
                raise LiveError("The inputs changed since the explanation was computed: run the explanation again.")
            current.add_layer_result(slider_filter(request.filter, request.alpha, request.alpha_low),
                                     read_relevance(request.out_dir))
            return current
        return cls.from_run_folder(scene, request.out_dir, request.case_dir, backgrounds, reference)

    @classmethod
    def from_run_folder(cls, scene, out_dir: Path | str, case_dir: Path | str,
                        backgrounds: Mapping[str, Any] | None = None, reference=None) -> LiveExplanation:
        """From the folders of a finished ``lrpseg explain`` run: its inputs ``case_dir`` and outputs ``out_dir``."""
        case = load_case(case_dir)
        relevance = read_relevance(out_dir)
        mask_file = Path(out_dir) / MASK_FILE
        prediction = read_volume(mask_file)[0] if mask_file.is_file() else None
        if relevance.shape[1:] != case.geometry.shape:
            raise LiveError(f"The relevance maps in {out_dir} do not match the grid of {case_dir}; run again.")
        return cls(scene, relevance, case.images, case.geometry, ground_truth=case.ground_truth,
                   prediction=prediction, backgrounds=backgrounds, reference=reference, note=read_note(out_dir))

    # --------------------------------------------------------------------------------------------- live path
    def apply(self, filt: AmplitudeFilter | str | None = None) -> ExplanationScores:
        """Filter the final map with ``filt`` (live slider path) and update heatmaps and table in place."""
        filt = AmplitudeFilter.parse(filt)
        start = _now()
        self._filtered = self.cache.filtered(filt, reuse=self._filtered)  # overwrites the previous result
        filtered_at = _now()
        self.filter, self.where = filt, "output"
        self._show(self._filtered, max(filt.high, MIN_WINDOW), start, filtered_at)
        return self.scores

    def add_layer_result(self, filt: AmplitudeFilter | str | None, relevance: np.ndarray) -> None:
        """Keep the raw map of an in-chain run with band ``filt`` (oldest dropped beyond ``max_layer_results``)."""
        relevance = np.asarray(relevance, dtype=np.float32)
        if relevance.shape != self.relevance.shape:
            raise LiveError(f"In-chain relevance of shape {relevance.shape} does not match {self.relevance.shape}.")
        key = band_key(filt)
        self._layers[key] = normalise_map(relevance, self.normalization, presort=True)
        self._layers.move_to_end(key)
        while len(self._layers) > self.max_layer_results:
            self._layers.popitem(last=False)

    def has_layer_result(self, filt: AmplitudeFilter | str | None) -> bool:
        """Whether the in-chain result of band ``filt`` is cached (the unfiltered map always is)."""
        key = band_key(filt)
        return key == NO_FILTER or key in self._layers

    @property
    def layer_bands(self) -> tuple[AmplitudeFilter, ...]:
        """The cached in-chain bands, oldest first."""
        return tuple(self._layers)

    def clear_layer_results(self) -> None:
        self._layers.clear()

    def apply_layers(self, filt: AmplitudeFilter | str | None) -> ExplanationScores | None:
        """Show the cached in-chain result of band ``filt`` (no further filter); None when it is not cached yet."""
        key = band_key(filt)
        cache = self.cache if key == NO_FILTER else self._layers.get(key)
        if cache is None:
            return None
        if key in self._layers:
            self._layers.move_to_end(key)
        start = _now()
        self._filtered = None  # the identity result shares the cache's arrays: never reuse it as a buffer
        filtered = cache.filtered(NO_FILTER)
        self.filter, self.where = key, "layers"
        self._show(filtered, 1.0, start, _now())
        return self.scores

    def _show(self, filtered: FilteredMap, window: float, *marks: tuple[float, float]) -> None:
        with warnings.catch_warnings():  # an empty band is a normal slider position, not a problem to report
            warnings.simplefilter("ignore", EmptyMaskWarning)
            self.scores = score_explanation(filtered, self.references)
        marks += (_now(),)
        for channel, modality in enumerate(MODALITIES):
            same = self._windows.get(modality) == window
            display.update_heatmap(self.heatmaps[modality], filtered.normalised[channel], None if same else window)
            self._windows[modality] = window
        marks += (_now(),)
        rows = score_rows(self.scores, self.dice)
        if self.table is None:
            self.table = tables.scores_table(self.scene, rows, reference=self.reference)
        else:
            tables.update_table_values(self.table, rows)
        marks += (_now(),)
        self.timing = UpdateTiming(*(tuple(b[c] - a[c] for a, b in zip(marks, marks[1:])) for c in (0, 1)))

    # ----------------------------------------------------------------------------------------------- display
    @property
    def rows(self) -> list[dict[str, Any]]:
        """The table's current rows (what the side panel shows)."""
        return tables.table_rows(self.table)

    def show(self, single_view: bool = False, modality: str = "ADC", opacity: float = 0.6,
             outlines: bool = True) -> None:
        """The linked 2x3 layout (or one view of ``modality``) with each heatmap over its background volume."""
        if single_view:
            if modality not in self.heatmaps:
                raise LiveError(f"Unknown modality {modality!r}: use one of {', '.join(MODALITIES)}.")
            display.show_single(self.scene, self.backgrounds.get(modality), self.heatmaps[modality], opacity)
        else:
            display.show_grid(self.scene, self.backgrounds, self.heatmaps, opacity)
        for node in (self.segmentation, self.ground_truth_segmentation):
            if node is not None and node.GetDisplayNode() is not None:
                node.GetDisplayNode().SetVisibility(bool(outlines))
