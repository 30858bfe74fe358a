"""The live view of one explanation in a scene: re-filter the cached map, rewrite the heatmaps and the scores table.

:class:`LiveExplanation` is the one owner of the live-view cache: the raw native-grid relevance (C, D, H, W; one
channel per modality of the model), its presorted :class:`~LRPSegmentationLib.analysis.filters.NormalisedMap`, the
:class:`~LRPSegmentationLib.analysis.metrics.ReferenceMasks` of the case, the module's heatmap, segmentation and table
nodes, and the in-chain ("layers") results per filter band, which are computed elsewhere (the Slicer module runs
them in a child process) and handed in with :meth:`LiveExplanation.add_layer_result`.

One slider move is :meth:`LiveExplanation.apply`: every score of the band from the map's
:class:`~LRPSegmentationLib.analysis.band_scores.BandIndex` (binary searches, no pass over the map), the filtered band
written as colour codes into the overlay slices the views show (see :mod:`~LRPSegmentationLib.mrml.display`), the
table values overwritten in place. The heatmap values and the overlay voxels off screen follow in
:meth:`LiveExplanation.flush` (call it before saving or reading the heatmaps; :func:`observe` does it on a scene
save and writes newly shown slices after a scroll; the panel calls it once the slider rests). Qt-free; the scene
is an argument (``slicer.mrmlScene`` in Slicer, a plain ``vtkMRMLScene`` in tests).
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from LRPSegmentationLib.analysis import metrics
from LRPSegmentationLib.analysis.band_scores import BandIndex, complete_total, filtered_region
from LRPSegmentationLib.analysis.compact import compact_sums, normalised_from_compact
from LRPSegmentationLib.analysis.filters import (
    NO_FILTER,
    AmplitudeFilter,
    FilteredMap,
    NormalisedMap,
    RelevanceNormalization,
    normalise_map,
)
from LRPSegmentationLib.analysis.scores import ExplanationScores, ReferenceMasks, reference_masks
from LRPSegmentationLib.data.caseio import load_case, read_volume
from LRPSegmentationLib.data.geometry import Geometry
from LRPSegmentationLib.data.modalities import MODALITIES
from LRPSegmentationLib.mrml import case as case_nodes
from LRPSegmentationLib.mrml import display, nodes, tables
from LRPSegmentationLib.pipeline.outputs import MASK_FILE, read_note, read_provenance, read_relevance

INPUT_REFERENCE = "LRPSegmentationInput"
TRUTH_REFERENCE = "LRPSegmentationTruth"
SETTINGS_ATTRIBUTE = "LRPSegmentation.Settings"

MIN_WINDOW = 1e-3
"""Smallest half width of the heatmap window (a band ending at 0 would make an empty window)."""


class LiveError(ValueError):
    """A live-view request that cannot be served (wrong shapes, missing run outputs); says what to do."""


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


UPDATE_STEPS: tuple[str, ...] = ("scores", "voxels", "table")
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

    ``relevance``: the raw final map (C, D, H, W) of the C ``modalities`` (default our U-Net's six) on the grid of
    ``images`` (its first modality's), ``geometry``; ``ground_truth`` and ``prediction``: optional 0/1 masks on it.
    ``backgrounds``: the modality volume nodes shown under the heatmaps (the user's: only referenced, never modified);
    ``output_relevance_sum`` (``start_relevance_sum`` in provenance.json) makes the table show conservation;
    ``reference`` places the outputs next to it in the subject hierarchy (default: the first modality's background).
    Re-creating it in the same scene reuses the module's output nodes (found by role), never duplicates them.
    """

    def __init__(self, scene, relevance: np.ndarray, images: np.ndarray, geometry: Geometry, *,
                 ground_truth: np.ndarray | None = None, prediction: np.ndarray | None = None,
                 backgrounds: Mapping[str, Any] | None = None, reference=None,
                 normalization: RelevanceNormalization | str = RelevanceNormalization.PER_CHANNEL,
                 max_layer_results: int = 8, output_relevance_sum: float | None = None,
                 note: str | None = None, modalities: Sequence[str] = MODALITIES) -> None:
        relevance = np.asarray(relevance, dtype=np.float32)
        self.modalities, expected = tuple(modalities), (len(modalities), *geometry.shape)
        for name, array in (("relevance", relevance), ("images", np.asarray(images))):
            if array.shape != expected:
                raise LiveError(f"{name} has shape {array.shape}; expected {expected} ({', '.join(modalities)}).")
        self.scene = scene
        self.note = note  # one line for the panel, e.g. "no lesion predicted: showing lesion evidence"
        self.relevance = relevance
        self.geometry = geometry
        self.output_relevance_sum = None if output_relevance_sum is None else float(output_relevance_sum)
        self.normalization = RelevanceNormalization(normalization)
        self.references: ReferenceMasks = reference_masks(images, ground_truth)
        self.index = BandIndex.build(normalise_map(relevance, self.normalization), self.references, self.modalities)
        self.cache: NormalisedMap = self.index.source
        self.backgrounds = dict(backgrounds or {})
        self.reference = reference if reference is not None else self.backgrounds.get(self.modalities[0])
        self.dice = None if ground_truth is None or prediction is None else metrics.dice(prediction, ground_truth)
        blank = np.zeros(geometry.shape, np.float32)
        self.heatmaps = {m: display.heatmap_node(scene, blank, geometry, m, half_width=1.0, reference=self.reference)
                         for m in self.modalities}
        self.overlays = {m: display.overlay_node(scene, self.heatmaps[m], geometry, m) for m in self.modalities}
        self.raw_nodes = self._keep_raw(relevance)
        nodes.remove_outputs(scene, [role for role, mask in (("prediction", prediction), ("ground_truth", ground_truth))
                                   if mask is None] + nodes.other_modality_roles(scene, self.modalities))  # stale
        self.segmentation = None if prediction is None else nodes.segmentation_node(
            scene, prediction, geometry, reference=self.reference)
        self.ground_truth_segmentation = None if ground_truth is None else nodes.segmentation_node(
            scene, ground_truth, geometry, "ground_truth", name="Lesion (ground truth)", color=(0.2, 0.9, 0.3),
            reference=self.reference)
        self.table = None
        self.filter: AmplitudeFilter = NO_FILTER
        self.where = "output"
        self.timing = UpdateTiming()
        self.max_layer_results = int(max_layer_results)
        self._layers: OrderedDict[AmplitudeFilter, BandIndex] = OrderedDict()
        self._pinned: set[AmplitudeFilter] = set()
        self._exact: dict[AmplitudeFilter, ExplanationScores] = {}  # float32 scores of float16-stored bands
        self._sources: dict[AmplitudeFilter, tuple[Callable[[], tuple[np.ndarray, np.ndarray]],
                                                   ExplanationScores | None]] = {}
        self._compact: dict[AmplitudeFilter, tuple] = {}  # offered bands read so far: values, peak, sums
        self._ras_to_ijk = np.linalg.inv(nodes.ijk_to_ras(geometry))
        self._filtered: FilteredMap | None = None  # reuse buffers of the final map's full filtered copies
        self._map: FilteredMap | None = None  # the full filtered map of what is shown, once made
        self._scores: ExplanationScores | None = None
        self._stale, self._written = False, set()
        self._window = 1.0  # half width of the colour window of the band shown
        self.apply(NO_FILTER)
        self.flush()

    # ----------------------------------------------------------------------------------------- constructors
    @classmethod
    def from_explanation(cls, scene, explanation, backgrounds: Mapping[str, Any] | None = None,
                         reference=None) -> LiveExplanation:
        """From an in-process :class:`~LRPSegmentationLib.pipeline.explain_case.CaseExplanation` (console, tests,
        screenshots)."""
        case = explanation.case
        return cls(scene, explanation.relevance, case.images, case.geometry, ground_truth=case.ground_truth,
                   prediction=explanation.prediction.mask, backgrounds=backgrounds, reference=reference,
                   normalization=explanation.settings.normalization, modalities=case.modalities,
                   output_relevance_sum=explanation.start_relevance_sum, note=explanation.note)

    @classmethod
    def import_run(cls, scene, request, backgrounds: Mapping[str, Any], current: LiveExplanation | None = None,
                   reference=None, ground_truth_node=None, settings: Mapping[str, Any] | None = None
                   ) -> LiveExplanation:
        """The outputs of a finished :class:`~LRPSegmentationLib.mrml.job.ExplainRequest` run.

        A run with an in-chain band (``where="layers"`` and a filter) adds that band's map to ``current``, which
        must show the same ``backgrounds``, and returns it; any other run becomes a new live explanation, which
        remembers in the scene its inputs (``backgrounds``, ``ground_truth_node``; their modalities) and ``settings``.
        """
        if request.where == "layers" and request.filter != "none":
            if current is None or current.backgrounds != dict(backgrounds):
                raise LiveError("The inputs changed since the explanation was computed: run the explanation again.")
            current.add_layer_result(slider_filter(request.filter, request.alpha, request.alpha_low),
                                     read_relevance(request.out_dir, current.modalities))
            return current
        live = cls.from_run_folder(scene, request.out_dir, request.case_dir, backgrounds, reference, tuple(backgrounds))
        live.remember(ground_truth_node, settings)
        return live

    @classmethod
    def from_run_folder(cls, scene, out_dir: Path | str, case_dir: Path | str,
                        backgrounds: Mapping[str, Any] | None = None, reference=None,
                        modalities: Sequence[str] | None = None) -> LiveExplanation:
        """From a finished ``lrpseg explain`` run's ``case_dir`` and ``out_dir`` (``modalities``: its model's)."""
        modalities = tuple(modalities or read_provenance(out_dir).get("model", {}).get("modalities") or MODALITIES)
        case = load_case(case_dir, modalities=modalities)
        relevance = read_relevance(out_dir, modalities)
        mask_file = Path(out_dir) / MASK_FILE
        prediction = read_volume(mask_file)[0] if mask_file.is_file() else None
        if relevance.shape[1:] != case.geometry.shape:
            raise LiveError(f"The relevance maps in {out_dir} do not match the grid of {case_dir}; run again.")
        return cls(scene, relevance, case.images, case.geometry, ground_truth=case.ground_truth,
                   prediction=prediction, backgrounds=backgrounds, reference=reference, modalities=modalities,
                   output_relevance_sum=read_provenance(out_dir).get("start_relevance_sum"), note=read_note(out_dir))

    @classmethod
    def from_scene(cls, scene) -> LiveExplanation | None:
        """Rebuild the live view of a saved scene from the module's nodes (None when the scene has no result).

        The raw relevance was kept as volume nodes, which reference the inputs they explain; the images and the
        ground truth are read back from those inputs exactly as the run read them.
        """
        modalities = nodes.saved_modalities(scene)
        raw = {m: nodes.output_node(scene, f"{nodes.RAW_ROLE}{m}", "vtkMRMLScalarVolumeNode") for m in modalities}
        if any(node is None for node in raw.values()):
            return None
        anchor = raw[modalities[0]]
        backgrounds = {m: anchor.GetNodeReference(f"{INPUT_REFERENCE}{m}") for m in modalities}
        if any(node is None for node in backgrounds.values()):
            raise LiveError("The scene's explanation lost its input volumes: load them again and run again.")
        truth_node = anchor.GetNodeReference(TRUTH_REFERENCE)
        case = case_nodes.case_from_nodes(backgrounds, truth_node, modalities=modalities)
        relevance = np.stack([nodes.array_from_node(raw[m]) for m in modalities]).astype(np.float32)
        if relevance.shape[1:] != case.geometry.shape:
            raise LiveError("The scene's relevance does not match its input volumes' grid: run again.")
        segmentation = nodes.output_node(scene, "prediction", "vtkMRMLSegmentationNode")
        prediction = None if segmentation is None else nodes.segmentation_mask(segmentation, anchor)
        live = cls(scene, relevance, case.images, case.geometry, ground_truth=case.ground_truth,
                   prediction=prediction, backgrounds=backgrounds, modalities=modalities)
        live.remember(truth_node, live.settings_in_scene(anchor))
        return live

    def _keep_raw(self, relevance: np.ndarray) -> dict[str, Any]:
        """The raw map as volume nodes (saved with the scene: the slider works again after a reload)."""
        kept = {}
        for channel, modality in enumerate(self.modalities):
            node = nodes.owned_output(self.scene, "vtkMRMLScalarVolumeNode", f"{nodes.RAW_ROLE}{modality}",
                                      f"Raw relevance {modality}")
            kept[modality] = nodes.volume_node(self.scene, relevance[channel], self.geometry, node.GetName(),
                                               node=node)
            kept[modality].GetDisplayNode().SetVisibility(False)
            nodes.place_next_to(self.scene, node, self.reference, "LRPSegmentation raw relevance")
        for modality, background in self.backgrounds.items():
            if background is not None:
                kept[self.modalities[0]].SetNodeReferenceID(f"{INPUT_REFERENCE}{modality}", background.GetID())
        kept[self.modalities[0]].SetAttribute(nodes.MODALITIES_ATTRIBUTE, json.dumps(list(self.modalities)))
        return kept

    def remember(self, ground_truth_node=None, settings: Mapping[str, Any] | None = None) -> None:
        """Record the ground-truth node and the run settings with the raw relevance (they are saved with it)."""
        anchor = self.raw_nodes[self.modalities[0]]
        anchor.SetNodeReferenceID(TRUTH_REFERENCE, None if ground_truth_node is None else ground_truth_node.GetID())
        anchor.SetAttribute(SETTINGS_ATTRIBUTE, json.dumps(dict(settings or {}), default=str))

    @staticmethod
    def settings_in_scene(anchor) -> dict[str, Any]:
        return json.loads(anchor.GetAttribute(SETTINGS_ATTRIBUTE) or "{}")

    @property
    def inputs_in_scene(self) -> tuple[dict[str, Any], Any, dict[str, Any]]:
        """(input volumes, ground-truth node, run settings) as remembered in the scene."""
        anchor = self.raw_nodes[self.modalities[0]]
        return (dict(self.backgrounds), anchor.GetNodeReference(TRUTH_REFERENCE), self.settings_in_scene(anchor))

    # --------------------------------------------------------------------------------------------- live path
    def apply(self, filt: AmplitudeFilter | str | None = None) -> ExplanationScores:
        """Filter the final map with ``filt`` (live slider path): scores, table and the voxels on screen at once.

        The other voxels follow in :meth:`flush` (before a save, a screenshot, a scroll: see :func:`observe`).
        Returns the scores; the "all" row's channel-summed scores are filled in when :attr:`scores` is read.
        """
        filt = AmplitudeFilter.parse(filt)
        self._show(self.index, filt, max(filt.high, MIN_WINDOW), filt, "output")
        return self._band_scores

    def add_layer_result(self, filt: AmplitudeFilter | str | None, relevance: np.ndarray,
                         pinned: bool = False, scores: ExplanationScores | None = None) -> None:
        """Keep the raw map of an in-chain run with band ``filt``: the oldest on-demand bands are dropped beyond
        ``max_layer_results``; ``pinned`` bands (a precomputed grid) are never dropped. ``scores``: those of the
        unfiltered map computed from float32 (a grid stored as float16 keeps them), shown instead of rescoring."""
        relevance = np.asarray(relevance, dtype=np.float32)
        if relevance.shape != self.relevance.shape:
            raise LiveError(f"In-chain relevance of shape {relevance.shape} does not match {self.relevance.shape}.")
        self._keep_layer(band_key(filt), BandIndex.build(normalise_map(relevance, self.normalization),
                                                         self.references, self.modalities), pinned, scores)

    def _keep_layer(self, key: AmplitudeFilter, index: BandIndex, pinned: bool,
                    scores: ExplanationScores | None) -> None:
        self._layers[key] = index
        self._layers.move_to_end(key)
        if pinned:
            self._pinned.add(key)
        self._exact.pop(key, None)
        if scores is not None:
            self._exact[key] = scores
        dropped = [band for band in self._layers if band not in self._pinned]
        for band in dropped[:max(len(dropped) - self.max_layer_results, 0)]:
            del self._layers[band]
            self._exact.pop(band, None)

    def add_layer_source(self, filt: AmplitudeFilter | str | None,
                         load: Callable[[], tuple[np.ndarray, np.ndarray]],
                         scores: ExplanationScores | None = None) -> None:
        """Offer the in-chain band ``filt`` without reading it (a precomputed grid on disk): ``load()`` returns its
        map in compact form (float16 / per-channel peak, peak: ``analysis.compact.compact_map``). It is read by
        :meth:`prefetch_layers` (a few per poll) or when the slider first shows it; with its float32 ``scores``
        it is shown without a sort (at most ``max_layer_results`` indexed at once besides the pinned ones)."""
        self._sources[band_key(filt)] = (load, scores)

    def prefetch_layers(self, seconds: float = 0.05) -> int:
        """Read offered bands into memory (compact, float16) for up to about ``seconds``; returns how many are
        left to read."""
        started = time.perf_counter()
        left = [key for key in self._sources if key not in self._compact]
        while left and time.perf_counter() - started < seconds:
            key = left.pop(0)
            values, peak = self._sources[key][0]()
            self._compact[key] = (values, peak, compact_sums(values))
        return len(left)

    def has_layer_result(self, filt: AmplitudeFilter | str | None) -> bool:
        """Whether the in-chain result of band ``filt`` is cached or offered (the unfiltered map always is)."""
        key = band_key(filt)
        return key == NO_FILTER or key in self._layers or key in self._sources

    @property
    def layer_bands(self) -> tuple[AmplitudeFilter, ...]:
        """The in-chain bands cached (oldest first) or offered."""
        return tuple(dict.fromkeys([*self._layers, *self._sources]))

    @property
    def loaded_bands(self) -> tuple[AmplitudeFilter, ...]:
        """The in-chain bands held in memory (indexed), oldest first."""
        return tuple(self._layers)

    def clear_layer_results(self) -> None:
        self._layers.clear()
        self._pinned.clear()
        self._exact.clear()
        self._sources.clear()
        self._compact.clear()

    def nearest_layer_band(self, filt: AmplitudeFilter | str | None) -> AmplitudeFilter | None:
        """The in-chain band (cached or offered) of ``filt``'s kind closest to it (ends compared), or None."""
        key = band_key(filt)
        if key == NO_FILTER or key in self._layers or key in self._sources:
            return key
        same = [band for band in self.layer_bands if band.kind is key.kind]
        return min(same, key=lambda b: (abs(b.high - key.high) + abs(b.low - key.low), b.high, b.low), default=None)

    def apply_layers(self, filt: AmplitudeFilter | str | None, nearest: bool = False) -> ExplanationScores | None:
        """Show the cached in-chain result of band ``filt`` (no further filter); None when it is not cached yet.

        ``nearest``: show the closest cached band of that kind instead (a precomputed grid read by the slider).
        """
        key = self.nearest_layer_band(filt) if nearest else band_key(filt)
        if key is None:
            return None
        if key not in self._layers and key in self._sources:
            load, scores = self._sources[key]
            values, peak, *sums = self._compact.get(key) or load()
            source = normalised_from_compact(values, peak, self.normalization, *sums)
            if source.normalised.shape != self.relevance.shape:
                raise LiveError(f"In-chain band {key.label} has shape {source.normalised.shape}, not "
                                f"{self.relevance.shape}: compute the bands again.")
            index = (BandIndex.build if scores is None else BandIndex.display_only)(source, self.references,
                                                                                     self.modalities)
            self._keep_layer(key, index, False, scores)
        index = self.index if key == NO_FILTER else self._layers.get(key)
        if index is None:
            return None
        if key in self._layers:
            self._layers.move_to_end(key)
        self._show(index, NO_FILTER, 1.0, key, "layers", self._exact.get(key))
        return self._band_scores

    @property
    def scores(self) -> ExplanationScores:
        """All scores of what is shown, equal to ``score_explanation`` of the full filtered map (the "all" row's
        channel-summed scores are computed here, once per band, from the whole filtered map)."""
        if self._scores is None:
            self._scores = complete_total(self._band_scores, self._full_map(), self.references)
        return self._scores

    @property
    def stale(self) -> bool:
        """Whether the heatmap values, or overlay voxels off screen, show an earlier band (until :meth:`flush`)."""
        return self._stale

    def flush(self) -> None:
        """Write the whole filtered map into the heatmaps (values, window) and overlays (what :meth:`apply` left)."""
        if not self._stale:
            return
        filtered = self._full_map()
        for channel, modality in enumerate(self.modalities):
            values = filtered.normalised[channel]
            display.update_heatmap(self.heatmaps[modality], values, half_width=self._window)
            display.update_heatmap(self.overlays[modality], display.relevance_codes(values, self._window))
        self._stale = False

    def refresh_views(self) -> None:
        """Write the band into the overlay slices the views show now that are not written yet (after a scroll)."""
        if not self._stale:
            return
        shown = display.shown_slices(self.scene, list(self.overlays.values()), self._ras_to_ijk, self.geometry.shape)
        if any(slices is display.ALL_SLICES for slices in shown.values()):
            self.flush()
            return
        for channel, modality in enumerate(self.modalities):
            node = self.overlays[modality]
            for axis, position in shown.get(node.GetID(), []):
                if (channel, axis, position) in self._written:
                    continue
                region = (slice(None),) * axis + (position,)
                values = filtered_region(self._index.source, self._band, channel, region)
                display.update_heatmap_region(node, display.relevance_codes(values, self._window), region)
                self._written.add((channel, axis, position))

    def _full_map(self) -> FilteredMap:
        """The whole filtered map of what is shown (made once per band; buffers reused across bands)."""
        if self._map is None:
            if self._index is self.index and self._band != NO_FILTER:
                self._filtered = self.cache.filtered(self._band, reuse=self._filtered)  # overwrites the last one
                self._map = self._filtered
            else:  # the identity shares the cache's (read-only) arrays: never a reuse buffer
                self._map = self._index.source.filtered(self._band)
        return self._map

    def _show(self, index: BandIndex, band: AmplitudeFilter, window: float, key: AmplitudeFilter, where: str,
              exact: ExplanationScores | None = None) -> None:
        start = _now()
        self._band_scores = index.score(band, output_relevance_sum=self.output_relevance_sum) if exact is None \
            else exact
        self._scores, self._map = exact, None
        self._index, self._band, self.filter, self.where = index, band, key, where
        marks = (start, _now())
        self._window = window
        self._stale, self._written = True, set()
        self.refresh_views()
        marks += (_now(),)
        rows = tables.score_rows(self._band_scores, self.dice)
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
        """The linked grid of a view per modality (2x3 for six), or one view of ``modality``: heatmaps over inputs."""
        if single_view:
            if modality not in self.heatmaps:
                raise LiveError(f"Unknown modality {modality!r}: use one of {', '.join(self.modalities)}.")
            display.show_single(self.scene, self.backgrounds.get(modality), self.heatmaps[modality],
                                self.overlays[modality], opacity)
        else:
            display.show_grid(self.scene, self.backgrounds, self.heatmaps, self.overlays, opacity, self.modalities)
        for node in (self.segmentation, self.ground_truth_segmentation):
            if node is not None and node.GetDisplayNode() is not None:
                node.GetDisplayNode().SetVisibility(bool(outlines))


def observe(live: LiveExplanation) -> list[tuple[Any, int]]:
    """Keep the lazy heatmap voxels of ``live`` right: flush on the scene's StartSaveEvent, write newly shown
    slices when a slice view or its layers change (scroll, layout). Call after :meth:`LiveExplanation.show`;
    returns the observations for :func:`unobserve`."""
    scene = live.scene
    observations = [(scene, scene.AddObserver(scene.StartSaveEvent, lambda *_: live.flush()))]
    for class_name in ("vtkMRMLSliceNode", "vtkMRMLSliceCompositeNode"):
        for index in range(scene.GetNumberOfNodesByClass(class_name)):
            node = scene.GetNthNodeByClass(index, class_name)
            observations.append((node, node.AddObserver("ModifiedEvent", lambda *_: live.refresh_views())))
    return observations


def unobserve(observations: list[tuple[Any, int]]) -> None:
    for node, tag in observations:
        node.RemoveObserver(tag)
