"""The module file through Slicer's own Python layer (../shared/slicer-python) on slicer-core's real MRML.

The parameter node class runs through Slicer's real ``parameterNodeWrapper``, the Logic through Slicer's real
``ScriptedLoadableModuleLogic`` with a real ``lrpseg explain`` child process, the self-test through
``ScriptedLoadableModuleTest`` both ways Slicer runs it. Only qt/ctk class names and a small ``slicer.app`` stand
in for the application (see slicer_testbed.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import unittest
from pathlib import Path

import numpy as np
import pytest

slicer_core = pytest.importorskip("slicer", reason="slicer-core is needed for the MRML tests")
if not hasattr(slicer_core, "vtkMRMLScene"):
    pytest.skip("the installed 'slicer' package has no MRML (install slicer-core)", allow_module_level=True)

import slicer_testbed  # noqa: E402

if slicer_testbed.slicer_python_dir() is None:
    pytest.skip("../shared/slicer-python (Slicer's own Python layer) is not beside this clone", allow_module_level=True)

from LRPSegmentationLib import options  # noqa: E402
from LRPSegmentationLib.analysis.filters import AmplitudeFilter, filter_map  # noqa: E402
from LRPSegmentationLib.data.geometry import Geometry  # noqa: E402
from LRPSegmentationLib.data.modalities import MODALITIES  # noqa: E402
from LRPSegmentationLib.mrml import display, headless, panel  # noqa: E402
from LRPSegmentationLib.mrml import nodes as scene_nodes  # noqa: E402

TESTBED_DIR = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def module(tmp_path_factory):
    slicer_testbed.install(tmp_path_factory.mktemp("slicer-cache"))
    return slicer_testbed.module_file()


@pytest.fixture
def env(module):
    return headless.headless_scene()  # also slicer.mrmlScene


def test_parameter_node_sets_up_on_a_new_scene_with_its_defaults(module, env):
    """The wrapper writes every default on a new node (a Union without None raised TypeError here)."""
    p = module.LRPSegmentationLogic().getParameterNode()
    for name in panel.VOLUME_PARAMETERS.values():
        assert getattr(p, name) is None
    assert p.groundTruth is None and p.modelPath == ""
    assert (p.device, p.rule, p.target, p.filterKind, p.where) == (
        "auto", options.DEFAULT_PRESET, options.DEFAULT_TARGET.value, "none", "output")
    volume = env.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "v")
    labels = env.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "l")
    segments = env.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "s")
    p.adcVolume = volume
    assert p.adcVolume is volume
    p.adcVolume = None
    for truth in (labels, segments, None):
        p.groundTruth = truth
        assert p.groundTruth is truth
    with pytest.raises(ValueError):
        p.rule = "not-a-preset"
    with pytest.raises(ValueError):
        p.alpha = 1.5


def test_parameters_survive_saving_and_reopening_the_scene(module, env, tmp_path):
    p = module.LRPSegmentationLogic().getParameterNode()
    volume = scene_nodes.volume_node(env.scene, np.ones((2, 3, 4), np.float32), Geometry((2, 3, 4)), "Tmax volume")
    p.tmaxVolume, p.rule, p.filterKind, p.alpha, p.where, p.opacity = volume, "epsilon-zb", "clamp", 0.35, "layers", 0.3
    saved = headless.save_scene(env.scene, tmp_path / "scene.mrml")
    again = headless.headless_scene()
    again.scene.SetURL(str(saved.scene_file))
    assert again.scene.Import()
    q = module.LRPSegmentationLogic().getParameterNode()
    assert q.tmaxVolume is not None and q.tmaxVolume.GetName() == "Tmax volume"
    assert (q.rule, q.filterKind, q.alpha, q.where, q.opacity) == ("epsilon-zb", "clamp", 0.35, "layers", 0.3)


def blended(env, live, view: str) -> np.ndarray:
    logic = env.slice_logic(view, 64, 64)
    return headless.blend_view(logic)[..., :3].astype(int)


def test_logic_end_to_end_with_a_real_child_process(module, env, tmp_path):
    """Load a synthetic case, explain it in a real child, filter live, route panel changes, reopen the scene."""
    logic = module.LRPSegmentationLogic()
    logic.controller.precompute_bands = True  # as the panel sets it (the console default is off)
    nodes = logic.loadSyntheticSample(seed=7)
    assert Path(slicer_core.app.cachePath) in Path(logic.workFolder()).parents
    events_before = slicer_core.app.processed_events
    live = logic.explain(nodes.volumes, nodes.ground_truth, device="cpu", timeout=600)
    assert slicer_core.app.processed_events > events_before  # Slicer stayed responsive while it waited
    assert set(live.heatmaps) == set(MODALITIES) and live.dice is not None
    assert not list((logic.workFolder() / "runs").glob("run-*"))  # imported, then removed

    p = logic.getParameterNode()
    logic.selectCase(p, nodes)
    assert "device" in logic.staleReason(p)  # the panel says auto, the result was computed on the CPU
    p.device = "cpu"
    logic.update(p, panel.changes(None, panel.snapshot(p)))
    tmax_view = display.GRID_VIEW_NAMES[MODALITIES.index("Tmax")]
    plain = blended(env, live, tmax_view)
    p.filterKind, p.alpha = "clamp", 0.05
    logic.update(p, panel.Change.FILTER)
    assert not np.array_equal(plain, blended(env, live, tmax_view))  # the view shows the clamped heatmap
    assert live.stale and not logic.flushWhenIdle(idleSeconds=60)  # the slider is still moving
    assert logic.flushWhenIdle(idleSeconds=0) and not live.stale  # at rest, the whole map is written
    expected = filter_map(live.relevance, AmplitudeFilter.clamp_band(0.05))
    for channel, modality in enumerate(MODALITIES):
        np.testing.assert_array_equal(scene_nodes.array_from_node(live.heatmaps[modality]),
                                      expected.normalised[channel])
    assert [row["Modality"] for row in live.rows] == [*MODALITIES, "all"]
    p.singleView, p.viewModality = True, "Tmax"
    logic.update(p, panel.Change.DISPLAY)
    red = display.composite_node(env.scene, "Red")
    assert (red.GetBackgroundVolumeID(), red.GetForegroundVolumeID(), red.GetLabelVolumeID()) == (
        nodes.volumes["Tmax"].GetID(), live.heatmaps["Tmax"].GetID(), live.overlays["Tmax"].GetID())

    before = scene_nodes.array_from_node(live.heatmaps["ADC"]).copy()
    p.opacity = 0.2  # a display parameter: voxels untouched
    logic.update(p, panel.changes(panel.snapshot(p) | {"opacity": 0.6}, panel.snapshot(p)))
    np.testing.assert_array_equal(scene_nodes.array_from_node(live.heatmaps["ADC"]), before)
    assert display.composite_node(env.scene, "Red").GetLabelOpacity() == pytest.approx(0.2)
    assert logic.staleReason(p) is None
    p.rule = "epsilon-zb"
    assert "rule" in logic.staleReason(p)

    saved = headless.save_scene(env.scene, tmp_path / "after-run.mrml")
    reopen = subprocess.run([sys.executable, "-c", REOPEN, str(saved.scene_file), str(tmp_path / "cache")],
                            capture_output=True, text=True, timeout=300, cwd=TESTBED_DIR,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                [str(TESTBED_DIR), str(slicer_testbed.MODULE_DIR), os.environ.get("PYTHONPATH", "")])})
    assert reopen.returncode == 0, reopen.stderr[-3000:]
    assert "reopened" in reopen.stdout
    assert logic.gridRunning  # the in-chain band grid computes in the background (a real child)
    stop_band_grid(logic)


def poll_like_the_panel(logic, parameters, timeout: float = 300.0) -> None:
    """Poll as the panel's timer does (with its parameters) until nothing runs any more."""
    deadline = time.monotonic() + timeout
    logic.poll(parameters)
    while logic.busy:
        assert time.monotonic() < deadline, logic.trustSummary
        time.sleep(0.05)
        logic.poll(parameters)


def test_check_this_explanation_with_real_child_processes(module, env, synthetic_case_dir, tiny_model_file):
    """Run, then "Check this explanation" through the Logic and its parameter node, each in a real child process,
    polled as the panel does; a second check is cancelled while it runs."""
    from LRPSegmentationLib.analysis.trust import read_check, trust_headline, trust_rows
    from LRPSegmentationLib.mrml import tables
    from LRPSegmentationLib.mrml.run import RunError, RunState

    logic = module.LRPSegmentationLogic()
    p = logic.getParameterNode()
    logic.selectCase(p, logic.loadCaseFolder(synthetic_case_dir))
    p.modelPath, p.device, p.target, p.filterKind, p.alpha = str(tiny_model_file), "cpu", "probability", "clamp", 0.2
    with pytest.raises(RunError, match="No explanation to check"):
        logic.startCheckFromParameters(p)
    logic.startFromParameters(p)
    poll_like_the_panel(logic, p)
    assert logic.live.filter == AmplitudeFilter.clamp_band(0.2)  # the new result shows the panel's filter
    logic.startCheck(parts=("flipping",), methods=("lrp-epsilon+clamp[0,0.2]", "gradient"))  # a short check
    poll_like_the_panel(logic, p)
    assert logic.checkStatus.state is RunState.DONE, logic.trustSummary
    report = read_check(logic.checks.folder)
    assert list(report["methods"]) == ["lrp-epsilon+clamp[0,0.2]", "gradient"]
    assert logic.trustSummary == trust_headline(report, "lrp-epsilon+clamp[0,0.2]")
    rows = tables.table_rows(logic.trustTable)
    assert [row["Method"] for row in rows] == [row["Method"] for row in trust_rows(report)]
    assert set(logic.checkNodes.charts) == {"flipping"} and "AOPC" in logic.trustSummary

    logic.startCheckFromParameters(p)  # the panel's button: every part, the default methods
    logic.poll(p)
    logic.cancel()
    poll_like_the_panel(logic, p, timeout=30)
    assert logic.checkStatus.state is RunState.CANCELLED and logic.trustSummary == "The check was cancelled."
    assert logic.checkNodes.trust is logic.trustTable and logic.trustTable.GetScene() is env.scene  # the last one
    assert not list((logic.workFolder() / "runs").glob("check-*/case"))
    logic.closeScene()


REOPEN = '''
import sys
import time
from pathlib import Path
import numpy as np
import slicer_testbed
slicer_testbed.install(Path(sys.argv[2]))
module = slicer_testbed.module_file()
from LRPSegmentationLib.analysis.filters import AmplitudeFilter, filter_map
from LRPSegmentationLib.data.modalities import MODALITIES
from LRPSegmentationLib.mrml import display, headless, nodes

env = headless.headless_scene()
display.register_grid_layout(env.scene)          # what the module does at startup
env.scene.SetURL(sys.argv[1])
assert env.scene.Import()
logic = module.LRPSegmentationLogic()
logic.controller.precompute_bands = True         # as the panel sets it
assert logic.restoreFromScene()                  # what the widget does on EndImportEvent
assert logic.gridRunning and logic.bandStatus("clamp", 0.3) == "pending"  # the band grid is recomputed
layout = display.layout_node(env.scene)
assert layout.GetViewArrangement() != display.GRID_LAYOUT_ID or layout.IsLayoutDescription(display.GRID_LAYOUT_ID)
p = logic.getParameterNode()
assert (p.filterKind, p.alpha, p.singleView, p.viewModality) == ("clamp", 0.05, True, "Tmax")
assert logic.staleReason(p) and "rule" in logic.staleReason(p)
live = logic.live
assert len(live.rows) == 7 and set(live.heatmaps) == set(MODALITIES)
raw = np.stack([nodes.array_from_node(live.raw_nodes[m]) for m in MODALITIES])
rows = logic.applyFilter("pass", alpha=0.3)
expected = filter_map(raw, AmplitudeFilter.pass_band(0.3))
for channel, modality in enumerate(MODALITIES):
    assert np.array_equal(nodes.array_from_node(live.heatmaps[modality]), expected.normalised[channel]), modality
logic.closeScene()                               # stops the band grid's child
print("reopened", rows[-1]["D(LRP,x)"])
'''


def test_startup_registers_the_2x3_layout(module, env):
    app = slicer_core.app
    app.startup_slots.clear()
    module.LRPSegmentation(type("Parent", (), {"path": str(slicer_testbed.MODULE_DIR / "LRPSegmentation.py")})())
    assert module.registerLayout in app.startup_slots and module.registerSampleData in app.startup_slots
    module.registerLayout()
    assert display.layout_node(env.scene).IsLayoutDescription(display.GRID_LAYOUT_ID)


def run_self_test(module, direct: bool) -> unittest.TestResult | None:
    if direct:  # "Reload and Test": runTest called directly, no unittest runner
        module.LRPSegmentationTest().runTest()
        return None
    result = unittest.TestResult()  # ctest: each test_* method alone, by name
    for name in sorted(n for n in dir(module.LRPSegmentationTest) if n.startswith("test_")):
        unittest.TestLoader().loadTestsFromName(f"LRPSegmentationTest.{name}", module).run(result)
    return result


def test_self_test_runs_both_ways(module, env):
    run_self_test(module, direct=True)
    result = run_self_test(module, direct=False)
    assert result.wasSuccessful() and result.testsRun == 2 and not result.skipped, result.errors + result.failures


SELF_TEST_WITHOUT_TORCH = '''
import importlib.abc, sys, unittest
from pathlib import Path

class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoTorch())
import logging
logging.basicConfig(level=logging.INFO)
import slicer_testbed
slicer_testbed.install(Path(sys.argv[1]))
module = slicer_testbed.module_file()
from LRPSegmentationLib.mrml import headless
headless.headless_scene()
module.LRPSegmentationTest().runTest()           # direct: passes, says it skipped
result = unittest.TestResult()
for name in ("test_ExplainAndFilter", "test_LoadSyntheticCase"):
    unittest.TestLoader().loadTestsFromName(f"LRPSegmentationTest.{name}", module).run(result)
assert result.wasSuccessful(), result.errors + result.failures
assert [str(reason) for _, reason in result.skipped] == ["PyTorch is not installed: install the PyTorch extension"]
print("skipped as each runner expects")
'''


def test_self_test_without_torch_skips_the_way_each_runner_understands(tmp_path):
    result = subprocess.run([sys.executable, "-c", SELF_TEST_WITHOUT_TORCH, str(tmp_path)], capture_output=True,
                            text=True, timeout=300, cwd=TESTBED_DIR,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                [str(TESTBED_DIR), str(slicer_testbed.MODULE_DIR), os.environ.get("PYTHONPATH", "")])})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "skipped as each runner expects" in result.stdout
    assert "Skipped: PyTorch is not installed" in result.stderr  # the direct run says so (logging)


def console_examples(module) -> dict[str, str]:
    """The Slicer-console examples: the README's and the one in the Logic's docstring."""
    import re
    import textwrap

    readme = (slicer_testbed.REPO_DIR / "README.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "getModuleLogic" in b)
    docstring = module.LRPSegmentationLogic.__doc__
    return {"README": block, "Logic docstring": textwrap.dedent(docstring.split("::", 1)[1])}


def test_console_examples_run_as_written(module, env, monkeypatch):
    """Slicer's console has the module registry; here getModuleLogic gives the module's Logic on the scene."""
    monkeypatch.setattr(slicer_core.util, "getModuleLogic",
                        lambda name: module.LRPSegmentationLogic() if name == "LRPSegmentation" else None)
    for source, code in console_examples(module).items():
        namespace = {"slicer": slicer_core}
        exec(compile(code, source, "exec"), namespace)
        assert namespace["live"].table is not None and len(namespace["rows"]) == len(MODALITIES) + 1, source
        stop_band_grid(namespace["logic"])


def stop_band_grid(logic, timeout: float = 30.0) -> None:
    """Cancel the band grid a result started in the background and wait until its child process is gone."""
    logic.closeScene()
    deadline = time.monotonic() + timeout
    while logic.controller.grid_exiting and time.monotonic() < deadline:
        logic.poll()
        time.sleep(0.05)
    assert not logic.gridRunning and not logic.controller.grid_exiting
