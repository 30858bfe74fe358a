""""Check this explanation" (LRPSegmentationLib.mrml.checks) through the Logic's API on a real slicer-core scene.

The check's output folder is written once by the real ``lrpseg check`` (tiny random model, three methods, two
depths); jobs replay it (and a real ``lrpseg explain`` folder for the result being checked), as in test_run.py.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is needed for the MRML tests")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the installed 'slicer' package has no MRML (install slicer-core)", allow_module_level=True)

from test_run import ReplayJob, finish  # noqa: E402

from LRPSegmentationLib.analysis.similarity import aopc  # noqa: E402
from LRPSegmentationLib.analysis.trust import read_check, read_curves, trust_headline, trust_rows  # noqa: E402
from LRPSegmentationLib.mrml import case as case_nodes  # noqa: E402
from LRPSegmentationLib.mrml import checks, headless, tables  # noqa: E402
from LRPSegmentationLib.mrml import nodes as scene_nodes  # noqa: E402
from LRPSegmentationLib.mrml.job import CheckRequest  # noqa: E402
from LRPSegmentationLib.mrml.run import RunError, RunState  # noqa: E402
from LRPSegmentationLib.mrml.session import ExplanationSession  # noqa: E402
from LRPSegmentationLib.pipeline.cli import main as cli_main  # noqa: E402

METHODS = ("lrp-epsilon", "lrp-epsilon+clamp[0,0.2]", "gradient")


@pytest.fixture(scope="module")
def replays(tiny_case_args, tmp_path_factory) -> dict[str, Path]:
    """Real output folders: ``lrpseg explain`` (the result checked) and ``lrpseg check`` of it."""
    root = tmp_path_factory.mktemp("check-replays")
    common = tiny_case_args
    assert cli_main(["explain", *common, "--out", str(root / "raw")]) == 0
    assert cli_main(["check", *common, "--out", str(root / "check"), "--depths", "2", "--no-plots",
                     "--methods", ",".join(METHODS)]) == 0
    assert cli_main(["check", *common, "--out", str(root / "randomisation"), "--depths", "2", "--no-plots",
                     "--methods", "gradient", "--no-flipping", "--no-ablation", "--no-random-logit",
                     "--no-localisation"]) == 0
    broken = shutil.copytree(root / "check", root / "broken")
    (broken / "check.json").write_text("{not json")
    return {"raw": root / "raw", "check": root / "check", "randomisation": root / "randomisation", "broken": broken}


class Jobs:
    """Job factory: explain requests replay the explain folder, check requests ``check`` (or fail with ``error``)."""

    def __init__(self, folders: dict[str, Path], check: str = "check", error: str | None = None) -> None:
        self.folders, self.check, self.error, self.checks = folders, check, error, []

    def __call__(self, request):
        if isinstance(request, CheckRequest):
            assert (request.case_dir / "ADC.nii.gz").is_file()  # the inputs were written before it started
            self.checks.append(ReplayJob(request, self.folders[self.check], self.error))
            return self.checks[-1]
        return ReplayJob(request, self.folders["raw"])


@pytest.fixture
def env(synthetic_case_dir, replays, tmp_path):
    mrml = headless.headless_scene()
    mrml.case = case_nodes.load_case_folder(mrml.scene, synthetic_case_dir)
    mrml.jobs = Jobs(replays)
    mrml.session = ExplanationSession(mrml.scene, tmp_path / "work", mrml.jobs)
    mrml.session.explain(mrml.case.volumes, mrml.case.ground_truth, device="cpu")
    return mrml


def finish_check(session):
    """Poll (as the panel's timer does) until the check ended; its status."""
    for _ in range(20):
        session.poll()
        if not session.checkRunning:
            return session.checkStatus
    raise AssertionError("the check did not end")


def check(session, **options):
    session.startCheck(**options)
    return finish_check(session)


def finite(value):
    return None if isinstance(value, float) and math.isnan(value) else value


def column(node, name: str) -> list:
    table = node.GetTable()
    array = table.GetColumnByName(name)
    assert array is not None, name
    return [array.GetValue(r) for r in range(table.GetNumberOfRows())]


def test_the_check_of_the_result_shown_fills_the_trust_table_and_the_curves(env, replays):
    session = env.session
    session.applyFilter("clamp", alpha=0.2)
    assert session.trustSummary == "" and session.checkNodes is None
    session.startCheck(parts=("randomisation", "flipping", "ablation"), methods=METHODS)
    request = env.jobs.checks[-1].request
    assert (request.rule, request.device, request.filter, request.alpha, request.alpha_low) == (
        "epsilon", "cpu", "clamp", 0.2, 0.0)
    assert request.parts == ("randomisation", "flipping", "ablation") and request.methods == METHODS
    assert session.checkRunning and session.trustSummary.startswith("Checking")
    status = finish_check(session)
    report = read_check(replays["check"])
    assert status.state is RunState.DONE
    headline = trust_headline(report, "lrp-epsilon+clamp[0,0.2]")  # the map shown: the clamped one
    assert session.trustSummary == status.message == headline and headline.startswith("lrp-epsilon+clamp[0,0.2];")
    shown = session.checkNodes
    assert [{k: finite(v) for k, v in row.items()} for row in tables.table_rows(shown.trust)] == trust_rows(report)
    assert shown.trust.GetAttribute(checks.HEADLINE_ATTRIBUTE) == headline

    curves = read_curves(replays["check"])
    flipping = shown.curves["flipping"]
    assert column(flipping, checks.FRACTION_COLUMN) == [0.0, 0.01, 0.03, 0.1, 0.3] == list(curves.fractions)
    for name in METHODS:
        morf = column(flipping, f"{name} MoRF")
        assert morf == pytest.approx(curves.scores[name]["morf"])
        assert aopc(morf) == pytest.approx(report["methods"][name]["flipping"]["morf_aopc"], rel=1e-6, abs=1e-12)
        assert aopc(column(flipping, f"{name} LeRF")) == pytest.approx(
            report["methods"][name]["flipping"]["lerf_aopc"], rel=1e-6, abs=1e-12)
        assert column(shown.curves["randomisation"], name) == pytest.approx(
            report["methods"][name]["randomisation"]["spearman"])
    assert aopc(column(flipping, "Random order")) == pytest.approx(
        report["methods"]["gradient"]["flipping"]["random_aopc"], rel=1e-6, abs=1e-12)
    assert column(shown.curves["randomisation"], checks.LAYER_COLUMN) == report["methods"]["gradient"][
        "randomisation"]["layers"]
    chart = shown.charts["flipping"]
    assert chart.IsA("vtkMRMLPlotChartNode") and chart.GetNumberOfPlotSeriesNodes() == 2 * len(METHODS) + 1
    series = chart.GetNthPlotSeriesNode(0)
    assert (series.GetTableNodeID(), series.GetXColumnName(), series.GetYColumnName()) == (
        flipping.GetID(), checks.FRACTION_COLUMN, "lrp-epsilon MoRF")
    assert shown.charts["randomisation"].GetNumberOfPlotSeriesNodes() == len(METHODS)
    assert len(shown.series) == 3 * len(METHODS) + 1
    assert not request.case_dir.exists() and (request.out_dir / "check.json").is_file()  # inputs go, outputs stay
    assert session.checks.folder == request.out_dir




def test_a_new_check_replaces_only_the_nodes_of_the_last_one(env):
    scene, session = env.scene, env.session
    user_table = scene.AddNewNodeByClass("vtkMRMLTableNode", "LRP trust check")  # the user's, same name
    user_chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", "LRP trust check: flipping")
    scores = session.live.table
    first = check(session, methods=METHODS)
    assert first.state is RunState.DONE
    old = session.checkNodes
    old_ids = [old.trust.GetID(), *(n.GetID() for n in (*old.charts.values(), *old.curves.values(), *old.series))]
    old_folder = session.checks.folder
    assert check(session, methods=METHODS).state is RunState.DONE
    new = session.checkNodes
    assert all(scene.GetNodeByID(i) is None for i in old_ids)  # the last check's nodes are gone ...
    assert not old_folder.parent.exists() and session.checks.folder.is_dir()
    made = [new.trust, *new.charts.values(), *new.curves.values(), *new.series]
    assert len(made) == len(old_ids) and all(n.GetScene() is scene for n in made)  # ... replaced by as many new ones
    assert len(scene_nodes.output_nodes(scene, checks.SERIES_ROLE)) == len(new.series)
    for node in (user_table, user_chart, scores, *session.live.heatmaps.values()):
        assert node.GetScene() is scene  # the user's nodes and the explanation's are untouched
    assert user_table.GetTable().GetNumberOfColumns() == 0 and user_chart.GetNumberOfPlotSeriesNodes() == 0


def test_a_failed_check_says_why_in_one_line_and_keeps_the_last_one(env, replays):
    session = env.session
    assert check(session, methods=METHODS).state is RunState.DONE
    shown = session.checkNodes
    env.jobs.error = "lrpseg check: model file not found: /x.safetensors; pass --model"
    status = check(session)
    assert (status.state, status.message) == (RunState.FAILED, env.jobs.error)
    assert session.trustSummary == f"The check failed: {env.jobs.error}" and "\n" not in session.trustSummary
    assert session.checkNodes is shown and shown.trust.GetScene() is env.scene
    assert not env.jobs.checks[-1].request.case_dir.parent.exists()  # a failed check leaves no folder
    env.jobs.error, env.jobs.check = None, "broken"
    status = check(session)
    assert status.state is RunState.FAILED and "Cannot read" in status.message and "lrpseg check" in status.message


def test_cancel_stops_the_check_and_shows_nothing(env):
    session = env.session
    session.startCheck()
    session.poll()
    session.cancel()
    status = finish_check(session)
    assert (status.state, session.trustSummary) == (RunState.CANCELLED, "The check was cancelled.")
    assert env.jobs.checks[-1].cancelled and session.checkNodes is None
    assert not scene_nodes.output_nodes(env.scene, checks.TRUST_ROLE)
    assert not env.jobs.checks[-1].request.case_dir.parent.exists()


def test_checks_that_cannot_start_or_whose_result_changed(env, replays, tmp_path):
    empty = headless.headless_scene()
    idle = ExplanationSession(empty.scene, tmp_path / "idle", Jobs(replays))
    with pytest.raises(RunError, match="No explanation to check: run the model first"):
        idle.startCheck()
    session = env.session
    session.startCheck()
    with pytest.raises(RunError, match="A check is already running"):
        session.startCheck()
    with pytest.raises(ValueError, match="check parts"):
        CheckRequest(Path("c"), Path("o"), parts=("nonsense",))
    session.start(env.case.volumes, env.case.ground_truth, device="cpu")  # a new result while the check runs
    finish(session.controller)
    status = finish_check(session)
    assert status.state is RunState.FAILED and "changed while it was checked" in status.message
    assert session.checkNodes is None
    assert check(session).state is RunState.DONE
    session.start(env.case.volumes, env.case.ground_truth, rule="epsilon-zb")
    finish(session.controller)
    assert "earlier result" in session.trustSummary  # the check shown is not about the new result
    voxels = slicer.util.arrayFromVolume(env.case.volumes["ADC"])
    voxels[0, 0, 0] += 1.0
    slicer.util.arrayFromVolumeModified(env.case.volumes["ADC"])
    with pytest.raises(RunError, match="input voxels changed"):
        session.startCheck()


def test_a_saved_scene_shows_its_check_again(env, tmp_path):
    session = env.session
    assert check(session, methods=METHODS).state is RunState.DONE
    headline = session.trustSummary
    saved = headless.save_scene(env.scene, tmp_path / "checked.mrml")
    again = headless.headless_scene()
    again.scene.SetURL(str(saved.scene_file))
    assert again.scene.Import()
    reopened = ExplanationSession(again.scene, tmp_path / "again", Jobs({}))
    assert reopened.restoreFromScene()
    assert reopened.trustSummary == headline and len(tables.table_rows(reopened.checkNodes.trust)) == len(METHODS)
    assert set(reopened.checkNodes.charts) == {"flipping", "randomisation"}
    reopened.closeScene()
    assert reopened.checkNodes is None and reopened.trustSummary == ""


def test_show_curves_puts_the_chart_in_a_plot_view_with_slicers_plots_logic(env):
    session = env.session
    plots = slicer.vtkSlicerPlotsLogic()  # what slicer.modules.plots.logic() is in the application
    plots.SetMRMLScene(env.scene)
    plots.SetMRMLApplicationLogic(env.app)
    with pytest.raises(RunError, match="No curves to show: check the explanation"):
        session.showCurves(plots)
    env.jobs.check = "randomisation"
    assert check(session, parts=("randomisation",), methods=("gradient",)).state is RunState.DONE
    assert set(session.checkNodes.charts) == {"randomisation"}  # no flipping part: no flipping chart
    assert session.trustSummary.startswith("gradient; randomisation") and "AOPC" not in session.trustSummary
    session.showCurves(plots)  # falls back to the chart there is
    view = env.scene.GetFirstNodeByClass("vtkMRMLPlotViewNode")
    assert view.GetPlotChartNodeID() == session.checkNodes.charts["randomisation"].GetID()
    env.jobs.check = "check"
    assert check(session, methods=METHODS).state is RunState.DONE
    session.showCurves(plots)
    assert view.GetPlotChartNodeID() == session.checkNodes.charts["flipping"].GetID()


def test_poll_reports_when_the_check_ends_and_while_anything_runs(env):
    session = env.session
    assert not session.busy and session.trustTable is None
    session.startCheck(methods=METHODS)
    ended = []
    while session.busy:
        session.poll()
        ended.append(session.ended)
    assert ended[-1] and not any(ended[:-1])  # the poll that imported the check, and only that one
    assert session.trustTable is session.checkNodes.trust and session.trustTable.IsA("vtkMRMLTableNode")


def test_the_console_call_waits_and_returns_the_summary_or_raises_the_reason(env, replays):
    session = env.session
    headline = session.checkExplanation(methods=METHODS)
    assert headline == trust_headline(read_check(replays["check"]), "lrp-epsilon") == session.trustSummary
    env.jobs.error = "lrpseg check: no brain voxel in the case; check the inputs"
    with pytest.raises(RuntimeError, match="The check failed: lrpseg check: no brain voxel"):
        session.checkExplanation()
