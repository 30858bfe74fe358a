""""Check this explanation", Qt-free: ``lrpseg check`` of the result shown, in the background, and its trust summary.

:class:`CheckController` runs the check of the result a :class:`~LRPSegmentationLib.mrml.run.RunController` shows
(its inputs, model, rule, target and final-map filter) through the same job factory, beside the explanation jobs,
and on success shows it in the scene (:func:`show_check`): a trust table (one row per method, as
:func:`~LRPSegmentationLib.analysis.trust.trust_rows`), the perturbation curves (MoRF / LeRF / random order: target
score against the fraction removed) and the randomisation curves (Spearman of |R| against the depth randomised) as
plot charts. The check's nodes carry roles of their own: a new check removes exactly them and makes new ones.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import slicer

from LRPSegmentationLib.analysis import trust
from LRPSegmentationLib.analysis.filters import NO_FILTER, AmplitudeFilter
from LRPSegmentationLib.analysis.trust import CheckCurves, CheckFileError, read_check, read_curves
from LRPSegmentationLib.mrml import nodes, tables
from LRPSegmentationLib.mrml.case import write_case_folder
from LRPSegmentationLib.mrml.job import CHECK_PARTS, CheckRequest
from LRPSegmentationLib.mrml.run import RunController, RunError, RunInputs, RunSettings, RunState, RunStatus, followed

TRUST_ROLE = "check_trust"
CHART_ROLES = {"flipping": "check_flipping_chart", "randomisation": "check_randomisation_chart"}
CURVE_TABLE_ROLES = {"flipping": "check_flipping_curves", "randomisation": "check_randomisation_curves"}
SERIES_ROLE = "check_series"
CHECK_ROLES = (TRUST_ROLE, *CHART_ROLES.values(), *CURVE_TABLE_ROLES.values(), SERIES_ROLE)
"""Roles (:data:`~LRPSegmentationLib.mrml.nodes.OUTPUT_ATTRIBUTE`) of every node a check makes, and of no other."""

HEADLINE_ATTRIBUTE = "LRPSegmentation.TrustHeadline"
"""Attribute of the trust table holding the panel's one-line summary (so a reopened scene shows it again)."""

FRACTION_COLUMN, DEPTH_COLUMN, LAYER_COLUMN = "Fraction removed", "Depth randomised", "Randomised down to"
ORDER_NAMES = {"morf": "MoRF", "lerf": "LeRF"}
COLORS = ((0.12, 0.47, 0.71), (1.0, 0.5, 0.05), (0.17, 0.63, 0.17), (0.84, 0.15, 0.16), (0.58, 0.4, 0.74),
          (0.55, 0.34, 0.29), (0.89, 0.47, 0.76), (0.74, 0.74, 0.13), (0.09, 0.75, 0.81))


@dataclass(frozen=True)
class CheckNodes:
    """What a check shows in the scene: the trust table, the curve tables and their charts (by "flipping" and
    "randomisation"; a chart is missing when its part was not run), the plot series and the headline."""

    trust: Any
    charts: dict[str, Any]
    curves: dict[str, Any]
    series: tuple[Any, ...]
    headline: str

    @classmethod
    def in_scene(cls, scene) -> CheckNodes | None:
        """The check shown in ``scene`` (a reopened scene), or None when it holds none."""
        trust = nodes.output_node(scene, TRUST_ROLE, "vtkMRMLTableNode")
        if trust is None:
            return None
        charts = {part: n for part, role in CHART_ROLES.items() if (n := nodes.output_node(scene, role))}
        curves = {part: n for part, role in CURVE_TABLE_ROLES.items() if (n := nodes.output_node(scene, role))}
        return cls(trust, charts, curves, tuple(nodes.output_nodes(scene, SERIES_ROLE)),
                   trust.GetAttribute(HEADLINE_ATTRIBUTE) or "")


def checked_band(live) -> AmplitudeFilter:
    """The filter the check of the map shown uses: its final-map filter (an in-chain band is not checked)."""
    return live.filter if live.where == "output" else NO_FILTER


def checked_method(rule: str, band: AmplitudeFilter) -> str:
    """The check's name of the map shown: ``lrp-<rule>``, with ``+<band>`` when it is filtered."""
    return f"lrp-{rule}" + ("" if band == NO_FILTER else f"+{band.label}")


def _curve_rows(report: dict[str, Any], curves: CheckCurves) -> dict[str, list[dict[str, Any]]]:
    """Rows of the two curve tables: the flipping scores per removed fraction (one random order, shared by every
    method), and the randomisation Spearman per depth."""
    found: dict[str, list[dict[str, Any]]] = {}
    if curves.scores:
        random = next((orders["random"] for orders in curves.scores.values() if "random" in orders), None)
        found["flipping"] = [{FRACTION_COLUMN: fraction,
                              **{f"{name} {ORDER_NAMES[order]}": orders[order][step]
                                 for name, orders in curves.scores.items() for order in ORDER_NAMES if order in orders},
                              **({} if random is None else {"Random order": random[step]})}
                             for step, fraction in enumerate(curves.fractions)]
    randomised = {name: entry["randomisation"] for name, entry in report["methods"].items()
                  if entry["randomisation"]["layers"]}
    if randomised:
        layers = max((entry["layers"] for entry in randomised.values()), key=len)
        found["randomisation"] = [{DEPTH_COLUMN: depth + 1, LAYER_COLUMN: layer,
                                   **{name: entry["spearman"][depth] if depth < len(entry["spearman"]) else None
                                      for name, entry in randomised.items()}}
                                  for depth, layer in enumerate(layers)]
    return found


AXES = {"flipping": ("Trust check: target score as the most (MoRF), least (LeRF, dashed) relevant or random voxels are "
                     "removed", FRACTION_COLUMN, "Fraction of brain voxels removed", "Target score"),
        "randomisation": ("Trust check: similarity to the original map as the network is randomised", DEPTH_COLUMN,
                          f"Blocks randomised from the head down (column '{LAYER_COLUMN}')",
                          "Spearman of |R| (mean over modalities)")}
"""Per chart: title, x column, x-axis title, y-axis title."""


def _series(scene, table, column: str, x_column: str, color, dashed: bool, reference):
    series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", column)
    series.SetAttribute(nodes.OUTPUT_ATTRIBUTE, SERIES_ROLE)
    series.SetAndObserveTableNodeID(table.GetID())
    series.SetXColumnName(x_column)
    series.SetYColumnName(column)
    series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
    series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleCircle)
    series.SetLineStyle(slicer.vtkMRMLPlotSeriesNode.LineStyleDash if dashed
                        else slicer.vtkMRMLPlotSeriesNode.LineStyleSolid)
    series.SetColor(*color)
    nodes.place_next_to(scene, series, reference, "LRPSegmentation")
    return series


def show_check(scene, report: dict[str, Any], curves: CheckCurves, method: str | None = None,
               reference=None) -> CheckNodes:
    """Replace the nodes of an earlier check (and only those) by the trust table, curve tables and charts of
    ``report`` and ``curves``; ``method`` picks the headline's method (default: the report's first)."""
    nodes.remove_outputs(scene, CHECK_ROLES)
    headline = trust.trust_headline(report, method)
    summary = tables.scores_table(scene, trust.trust_rows(report), TRUST_ROLE, "LRP trust check", reference)
    summary.SetAttribute(HEADLINE_ATTRIBUTE, headline)
    colors = {name: COLORS[i % len(COLORS)] for i, name in enumerate(report["methods"])}
    charts, curve_tables, made = {}, {}, []
    for part, rows in _curve_rows(report, curves).items():
        title, x_column, x_title, y_title = AXES[part]
        table = tables.scores_table(scene, rows, CURVE_TABLE_ROLES[part], f"LRP trust check: {part} curves",
                                    reference)
        chart = nodes.owned_output(scene, "vtkMRMLPlotChartNode", CHART_ROLES[part], f"LRP trust check: {part}")
        chart.SetTitle(title)
        chart.SetXAxisTitle(x_title)
        chart.SetYAxisTitle(y_title)
        for column in rows[0]:
            if column in (x_column, LAYER_COLUMN):
                continue
            name = next((n for n in colors if column in (n, f"{n} MoRF", f"{n} LeRF")), None)
            series = _series(scene, table, column, x_column, colors.get(name, (0.5, 0.5, 0.5)),
                             column.endswith(" LeRF") or name is None, reference)
            chart.AddAndObservePlotSeriesNodeID(series.GetID())
            made.append(series)
        nodes.place_next_to(scene, chart, reference, "LRPSegmentation")
        charts[part], curve_tables[part] = chart, table
    return CheckNodes(summary, charts, curve_tables, tuple(made), headline)


@dataclass(frozen=True)
class _CheckRun:
    job: Any
    request: CheckRequest
    live: Any  # the LiveExplanation checked: the result is shown only while it is still the one shown
    inputs: RunInputs
    method: str


class CheckController:
    """One check at a time of the result ``runs`` shows; its job comes from ``runs.jobs`` (``lrpseg check``).

    The check's run folder goes in ``runs.work_folder``; its inputs are removed when it ends, its outputs
    (check.json, check.csv, plots/) are kept for the latest successful check (:attr:`folder`).
    """

    def __init__(self, runs: RunController) -> None:
        self.runs = runs
        self.status = RunStatus()
        self.shown: CheckNodes | None = None
        self.checked = None  # the LiveExplanation that ``shown`` is about
        self.folder: Path | None = None
        self._run: _CheckRun | None = None

    @property
    def running(self) -> bool:
        return self._run is not None and self.status.running

    def start(self, parts: tuple[str, ...] = CHECK_PARTS, methods: tuple[str, ...] = ()) -> None:
        """Check the result shown (its inputs, settings and final-map filter) in the background; :meth:`poll`."""
        runs, live = self.runs, self.runs.live
        if live is None or runs.result_inputs is None:
            raise RunError("No explanation to check: run the model first, then check its result.")
        if self.running:
            raise RunError("A check is already running: wait for it or cancel it first.")
        if runs.result_inputs.changed():
            raise RunError("The input voxels changed since this result was computed: run it again, then check it.")
        settings = runs.result_settings or RunSettings()
        band = checked_band(live)
        request = CheckRequest.in_new_run_folder(
            runs.work_folder, model=settings.model, device=settings.device, rule=settings.rule, target=settings.target,
            filter=band.kind.value, alpha=band.high, alpha_low=band.low, parts=tuple(parts), methods=tuple(methods))
        try:
            write_case_folder(runs.result_inputs.volumes, request.case_dir, runs.result_inputs.ground_truth)
            job = runs.jobs(request)
        except Exception:
            shutil.rmtree(request.case_dir.parent, ignore_errors=True)
            raise
        method = checked_method(settings.rule, band)
        self._run = _CheckRun(job, request, live, runs.result_inputs, method)
        self.status = RunStatus(RunState.RUNNING, "start", 0.0, f"checking {method}")

    def poll(self) -> RunStatus:
        """Drain the check's progress (never blocks); show its result once it ended."""
        run = self._run
        if run is None or not self.status.running:
            return self.status
        self.status = followed(self.status, run.job)
        if run.job.finished:
            self._run = None
            self.status = self._finish(run)
            folder = run.request.case_dir.parent
            shutil.rmtree(run.request.case_dir if self.status.state is RunState.DONE else folder, ignore_errors=True)
            if self.status.state is RunState.DONE:
                if self.folder is not None and self.folder.parent != folder:
                    shutil.rmtree(self.folder.parent, ignore_errors=True)
                self.folder = run.request.out_dir
        return self.status

    def _finish(self, run: _CheckRun) -> RunStatus:
        job, elapsed = run.job, run.job.elapsed
        if job.cancelled:
            return RunStatus(RunState.CANCELLED, message="Cancelled.", elapsed=elapsed)
        if not job.succeeded:
            return RunStatus(RunState.FAILED, message=job.error_message(), elapsed=elapsed)
        if run.live is not self.runs.live or run.inputs.changed():
            return RunStatus(RunState.FAILED, elapsed=elapsed,
                             message="The explanation changed while it was checked: check it again.")
        try:
            report, curves = read_check(run.request.check_file), read_curves(run.request.out_dir)
        except CheckFileError as error:
            return RunStatus(RunState.FAILED, message=str(error), elapsed=elapsed)
        self.shown = show_check(self.runs.scene, report, curves, run.method, run.live.reference)
        self.checked = run.live
        return RunStatus(RunState.DONE, "done", 1.0, self.shown.headline, elapsed)

    def cancel(self) -> None:
        """Stop the running check (its whole process tree); the next :meth:`poll` reports CANCELLED once it is gone."""
        if self.running:
            self._run.job.cancel()

    def forget(self) -> None:
        """Before the scene is cleared: stop the check and forget what it showed (its nodes go with the scene)."""
        self.cancel()
        self.shown = self.checked = None
        self.status = self.status if self.running else RunStatus()

    def restore(self) -> None:
        """After a scene was loaded: the check it holds, if any, is about the result restored from it."""
        self.shown = CheckNodes.in_scene(self.runs.scene)
        self.checked = self.runs.live if self.shown is not None else None

    @property
    def summary(self) -> str:
        """The panel's line: the check's progress while it runs, then its headline, or why it failed."""
        status = self.status
        if status.running:
            return f"Checking ({status.stage}, {status.elapsed:.0f} s): {status.message}"
        if status.state is RunState.FAILED:
            return f"The check failed: {status.message}"
        if status.state is RunState.CANCELLED:
            return "The check was cancelled."
        if self.shown is None:
            return ""
        if self.checked is not self.runs.live:
            return "The trust check shown is of an earlier result: check this one again."
        return self.shown.headline
