"""The Slicer module's Logic API, Qt-free: load a case, explain it, filter and show the result, from one scene.

``LRPSegmentationLogic`` (the module file) is this class over ``slicer.mrmlScene`` plus the Slicer-only
dependency installer, so the console API, the panel and the tests run the same code. Method names are camelCase
as in Slicer's console API; the scene, the work folder, the job factory and the event pump are arguments.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from LRPSegmentationLib import options
from LRPSegmentationLib.data.modalities import MODALITIES
from LRPSegmentationLib.mrml import case, checks, dependencies, job, live, panel, run, tables
from LRPSegmentationLib.net.weights import model_modalities


class ExplanationSession:
    """Console API over one scene (see the module docstring of ``LRPSegmentation.py`` for an example).

    ``jobs`` starts the explanation jobs (e.g. ``run.child_process_jobs()``: ``lrpseg explain`` in a child
    process); ``idle`` runs while :meth:`explain` waits (``slicer.app.processEvents`` in Slicer, so the application
    stays responsive); ``keep_runs`` keeps that many finished run folders (inputs and outputs) for inspection;
    ``precomputeBands`` (off for scripts; the panel turns it on) computes the in-chain band grid in the background
    after each result (see
    :class:`~LRPSegmentationLib.mrml.run.RunController`; keep polling while :attr:`gridRunning`).
    """

    def __init__(self, scene, work_folder: Path | str, jobs: run.JobFactory,
                 idle: Callable[[], None] | None = None, keep_runs: int = 0, precomputeBands: bool = False) -> None:
        self.scene, self.work_folder, self.idle = scene, Path(work_folder), idle
        self.controller = run.RunController(scene, self.work_folder / "runs", jobs, keep_runs,
                                            precompute_bands=precomputeBands)
        self.checks = checks.CheckController(self.controller)  # "Check this explanation", beside the runs
        self._watched: tuple[Any, list] | None = None  # the live view whose lazy voxels follow scene events
        self._filtered_at = 0.0
        self.ended = False  # whether the last poll saw the explanation or the check end
        self._ensured: set[str] = set()  # the model paths whose dependencies are installed

    @property
    def live(self):
        """The :class:`~LRPSegmentationLib.mrml.live.LiveExplanation` shown, or None before the first result."""
        return self.controller.live

    @property
    def running(self) -> bool:
        return self.controller.running

    @property
    def busy(self) -> bool:
        """Whether anything still needs polling: the explanation, the band grid (or its exit), the check."""
        return self.running or self.gridRunning or self.controller.grid_exiting or self.checkRunning

    # ------------------------------------------------------------------------------------------------- cases
    def loadCaseFolder(self, folder, modalities: Sequence[str] = MODALITIES) -> case.CaseNodes:
        """Load a case folder (ISLES 2017, ISLES 2022 or flat ``ADC.nii.gz`` ...) as one named volume per modality of
        ``modalities`` (the model's list, e.g. ``logic.modelModalities(path)``; default our U-Net's six) + OT."""
        return self.onCaseLoaded(case.load_case_folder(self.scene, folder, modalities))

    def loadSyntheticSample(self, seed: int = 2017) -> case.CaseNodes:
        """Generate (once, in the work folder) and load a synthetic ISLES-like case."""
        return self.onCaseLoaded(case.load_synthetic_case(self.scene, self.work_folder / "SampleData", seed))

    def onCaseLoaded(self, nodes: case.CaseNodes) -> case.CaseNodes:
        """Hook for the application (the module shows the ADC volume); returns ``nodes``."""
        return nodes

    @staticmethod
    def selectCase(parameters: Any, nodes: case.CaseNodes) -> None:
        """Put a loaded case's volumes (slot k: its k-th modality) and ground truth into the panel's parameters."""
        panel.select_volumes(parameters, nodes.volumes)
        parameters.groundTruth = nodes.ground_truth

    def loadCaseIntoPanel(self, parameters: Any, folder) -> case.CaseNodes:
        """The panel's "Load case folder": the modalities of the panel's model, selected in its slots."""
        nodes = self.loadCaseFolder(folder, panel.modalities(parameters))
        self.selectCase(parameters, nodes)
        return nodes

    @staticmethod
    def modelModalities(path: str = "") -> tuple[str, ...]:
        """The input modalities of a model (default: the bundled one; an nnU-Net folder or its plans.json, a MONAI
        .json description, a .safetensors file), in channel order, from its metadata; raises ValueError."""
        return model_modalities(panel.model_path(path))

    @staticmethod
    def dependencyPlan(modelPath: str = "") -> list[list[str]]:
        """The pip installs :meth:`ensureDependencies` would offer for this model (its route's packages too: MONAI,
        dynamic-network-architectures), torch aside; [] when everything is there."""
        return dependencies.planned_installs(panel.model_path(modelPath))

    def ensureDependencies(self, askUser: bool = True, modelPath: str = "") -> bool:
        """In Slicer: torch through the PyTorch extension, the other packages of this model (:meth:`dependencyPlan`)
        with pip, asking once per model; False when the user declined."""
        if modelPath not in self._ensured and dependencies.ensure_installed(askUser, panel.model_path(modelPath)):
            self._ensured.add(modelPath)
        return modelPath in self._ensured

    @staticmethod
    def modelSummary(path: str = "") -> str:
        """One line about the model file (default: the bundled model), or why it cannot be used."""
        try:
            return job.model_summary(panel.model_path(path))
        except ValueError as error:
            return str(error)

    # -------------------------------------------------------------------------------------------------- runs
    def start(self, volumes: dict, groundTruth=None, *, modelPath=None, device: str = "auto",
              rule: str = options.DEFAULT_PRESET, target: str = options.DEFAULT_TARGET.value) -> None:
        """Start explaining the volumes (one per modality of the model) in the background (:meth:`poll` follows
        it)."""
        settings = run.RunSettings(panel.model_path(str(modelPath or "")), device, rule, target)
        self.controller.start(volumes, groundTruth, settings)

    def startFromParameters(self, parameters: Any) -> None:
        """The panel's Run: the volumes of its slots as the model's modalities (read from the model's metadata)."""
        names = self.modelModalities(parameters.modelPath)
        if len(names) > len(panel.VOLUME_SLOTS):
            raise run.RunError(f"The model takes {len(names)} modalities but the panel has {len(panel.VOLUME_SLOTS)} "
                               "inputs: explain it from the Python console (logic.explain) or with lrpseg explain.")
        self.controller.start(panel.input_volumes(parameters, names), parameters.groundTruth,
                              panel.run_settings(parameters), names)

    def poll(self, parameters: Any = None) -> run.RunStatus:
        """Progress of the running job; imports its result once it ended (shown with the filter and display of the
        panel's ``parameters`` when given). Follows the check too (:attr:`checkStatus`); :attr:`ended` says whether
        the explanation or the check ended in this poll."""
        before = (self.running, self.checkRunning)
        status = self.controller.poll()
        self.checks.poll()
        self.ended = before != (self.running, self.checkRunning)
        if parameters is not None and before[0] and status.state is run.RunState.DONE:
            self.update(parameters, panel.Change.FILTER | panel.Change.DISPLAY)
        if self._watched is not None and self._watched[0] is not self.live:
            self._watch(None)  # a new result replaced the one shown: the old view must stop writing voxels
        return status

    def cancel(self) -> None:
        """Stop the running job, the band grid and the check, with their whole process trees (returns at once)."""
        self.controller.cancel()
        self.checks.cancel()

    @property
    def gridRunning(self) -> bool:
        """Whether the in-chain band grid is being computed (poll until it ends: it is imported then)."""
        return self.controller.grid_running

    @property
    def gridStatus(self) -> run.RunStatus:
        """Progress of the in-chain band grid (for a second status line)."""
        return self.controller.grid_status

    def bandStatus(self, kind: str, alpha: float, alphaLow: float = 0.0) -> str:
        """"shown", "pending" or "missing": how the in-chain slider stands at this band (mark pending bands)."""
        return self.controller.band_status(kind, alpha, alphaLow).value

    def computeBand(self, kind: str, alpha: float, alphaLow: float = 0.0) -> bool:
        """Compute exactly this in-chain band on demand (beside the grid, never waiting for it); True if shown."""
        return self.controller.show_filter(kind, alpha, alphaLow, options.FilterPlacement.LAYERS.value, exact=True)

    def explain(self, volumes: dict, groundTruth=None, timeout: float = 3600, **settings):
        """:meth:`start`, wait (running ``idle`` meanwhile) and return the LiveExplanation; raises on failure."""
        self.start(volumes, groundTruth, **settings)
        status = self.controller.wait(timeout, idle=self.idle)
        if status.state is not run.RunState.DONE:
            raise RuntimeError(status.message)
        return self.live

    # ------------------------------------------------------------------------------------------------ checks
    def startCheck(self, parts=job.CHECK_PARTS, methods=()) -> None:
        """"Check this explanation": run ``lrpseg check`` on the result shown (its inputs, model, rule, target and
        final-map filter) in the background; :meth:`poll` follows it, :meth:`cancel` stops it. ``parts`` and
        ``methods`` as ``lrpseg check`` takes them (default: every part, the default methods)."""
        self.checks.start(tuple(parts), tuple(methods))

    def startCheckFromParameters(self, parameters: Any = None) -> None:
        """The panel's "Check this explanation" (the result shown, whatever the panel's settings are now)."""
        self.startCheck()

    def checkExplanation(self, timeout: float = 1800, **options) -> str:
        """:meth:`startCheck`, wait (running ``idle`` meanwhile) and return the trust summary; raises on failure."""
        self.startCheck(**options)
        deadline = time.monotonic() + timeout
        while self.checks.poll().running:
            if deadline is not None and time.monotonic() > deadline:
                self.checks.cancel()
                deadline = None
            if self.idle is not None:
                self.idle()
            time.sleep(0.05)
        if self.checks.status.state is not run.RunState.DONE:
            raise RuntimeError(self.checks.summary)
        return self.trustSummary

    @property
    def checkRunning(self) -> bool:
        return self.checks.running

    @property
    def checkStatus(self) -> run.RunStatus:
        return self.checks.status

    @property
    def trustSummary(self) -> str:
        """The check's line for the panel: its progress, then its headline (randomisation, AOPC against random, rank
        by faithfulness) or why it failed; "" before any check."""
        return self.checks.summary

    @property
    def checkNodes(self) -> checks.CheckNodes | None:
        """The trust table, curve tables and plot charts of the last check (None before one)."""
        return self.checks.shown

    @property
    def trustTable(self):
        """The trust table of the last check (one row per method), or None."""
        return None if self.checks.shown is None else self.checks.shown.trust

    def showCurves(self, plotsLogic, part: str = "flipping") -> None:
        """Show a chart of the last check ("flipping", else the other one) in a plot view, with Slicer's plots logic
        (``slicer.modules.plots.logic()``: it switches to a layout with a plot view when the current one has none)."""
        charts = self.checks.shown.charts if self.checks.shown is not None else {}
        chart = charts.get(part) or next(iter(charts.values()), None)
        if chart is None:
            raise run.RunError("No curves to show: check the explanation (with its flipping or randomisation part).")
        plotsLogic.ShowChartInLayout(chart)

    # ------------------------------------------------------------------------------------------------ showing
    def applyFilter(self, kind: str = "none", alpha: float = 1.0, alphaLow: float = 0.0) -> list[dict]:
        """Filter the final map live (heatmap voxels and table updated in place); returns the table rows."""
        self.controller.show_filter(kind, alpha, alphaLow)
        self.live.flush()  # a console caller reads the heatmaps next: no voxel left for later
        return self.live.rows

    def update(self, parameters: Any, change: panel.Change) -> None:
        """Apply a panel change to the result shown: re-filter (or fetch an in-chain band) and/or redisplay."""
        if self.live is None:
            return
        if change & panel.Change.FILTER:
            self.controller.show_filter(*panel.filter_band(parameters))
            self._filtered_at = time.monotonic()
        if change & panel.Change.DISPLAY:
            self.showViews(parameters.singleView, panel.view_modality(parameters, self.live.modalities),
                           parameters.opacity, parameters.showOutlines)

    def staleReason(self, parameters: Any) -> str | None:
        """Why the result shown no longer matches the panel's inputs and settings (None while it does)."""
        return self.controller.stale_reason(panel.input_volumes(parameters), parameters.groundTruth,
                                            panel.run_settings(parameters))

    def showViews(self, singleView: bool = False, modality: str = "ADC", opacity: float = 0.6,
                  showOutlines: bool = True) -> None:
        """The linked grid of one view per modality (2x3 for six) or one view of ``modality``, with each heatmap over
        its modality."""
        if self.live is not None:
            self.live.show(singleView, modality, opacity, showOutlines)
            self._watch(self.live)

    def _watch(self, shown) -> None:
        """Observe the scene for the live view shown (flush before a save, write slices a scroll reveals)."""
        if self._watched is not None and self._watched[0] is not shown:
            live.unobserve(self._watched[1])
            self._watched = None
        if shown is not None and self._watched is None:
            self._watched = (shown, live.observe(shown))

    def flushWhenIdle(self, idleSeconds: float = 0.25) -> bool:
        """Write the whole filtered map (the slider writes only the slices on screen) once it rested a moment."""
        if self.live is None or time.monotonic() - self._filtered_at < idleSeconds:
            return False
        self.live.flush()
        return True

    def exportScores(self, path) -> None:
        """Write the scores table as CSV (the table node itself keeps saving with the scene)."""
        if self.live is not None:
            tables.export_csv(self.live.table, path)

    def restoreFromScene(self) -> bool:
        """After a scene was loaded: rebuild the live view (slider, heatmaps, table) of the result saved in it."""
        restored = self.controller.restore()
        self.checks.restore()
        return restored

    def closeScene(self) -> None:
        """Before the scene is cleared: stop the job and forget the result (its nodes go with the scene)."""
        self.checks.forget()
        self._watch(None)
        self.controller.forget()
