"""The run flow (LRPSegmentationLib.mrml.run) on a real slicer-core scene, with jobs that replay real outputs.

The replayed folders are written once by the real ``lrpseg explain`` (tiny random model); a replay job copies
them into the request's output folder when it "finishes", so the controller imports real files.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is needed for the MRML tests")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the installed 'slicer' package has no MRML (install slicer-core)", allow_module_level=True)

from LRPSegmentationLib.analysis.filters import AmplitudeFilter, filter_map  # noqa: E402
from LRPSegmentationLib.data.modalities import MODALITIES  # noqa: E402
from LRPSegmentationLib.mrml import case as case_nodes  # noqa: E402
from LRPSegmentationLib.mrml import headless as headless_mrml  # noqa: E402
from LRPSegmentationLib.mrml import nodes as scene_nodes  # noqa: E402
from LRPSegmentationLib.mrml.job import ExplainRequest, ProgressEvent  # noqa: E402
from LRPSegmentationLib.mrml.run import RunController, RunError, RunSettings, RunState  # noqa: E402
from LRPSegmentationLib.pipeline.cli import main as cli_main  # noqa: E402
from LRPSegmentationLib.pipeline.outputs import read_relevance  # noqa: E402

BAND = AmplitudeFilter.clamp_band(0.3)


@pytest.fixture(scope="module")
def replays(tiny_case_args, tmp_path_factory) -> dict[str, Path]:
    """Real ``lrpseg explain`` output folders: the raw map, and the in-chain band clamp [0, 0.3]."""
    root = tmp_path_factory.mktemp("replays")
    common = tiny_case_args
    assert cli_main(["explain", *common, "--out", str(root / "raw")]) == 0
    assert cli_main(["explain", *common, "--out", str(root / "band"), "--where", "layers", "--filter", "clamp",
                     "--alpha", "0.3"]) == 0
    return {"raw": root / "raw", "band": root / "band"}


class ReplayJob:
    """A job that reports progress for ``steps`` polls, then ends: with ``source`` copied into the request's output
    folder (success), with ``error`` (failure), or cancelled."""

    def __init__(self, request: ExplainRequest, source: Path | None, error: str | None = None, steps: int = 3):
        self.request, self.source, self.error, self.steps = request, source, error, steps
        self.cancelled = False
        self.polls = 0

    def poll(self) -> list[ProgressEvent]:
        if self.finished:
            return []
        self.polls += 1
        if self.polls == self.steps and self.error is None and not self.cancelled:
            shutil.copytree(self.source, self.request.out_dir, dirs_exist_ok=True)
        return [ProgressEvent("lrp", self.polls / self.steps, f"step {self.polls}")]

    def cancel(self) -> None:
        self.cancelled = True

    def error_message(self) -> str:
        return "Cancelled." if self.cancelled else (self.error or "")

    @property
    def finished(self) -> bool:
        return self.cancelled or self.polls >= self.steps

    @property
    def succeeded(self) -> bool:
        return self.finished and not self.cancelled and self.error is None

    @property
    def elapsed(self) -> float:
        return 0.1 * self.polls


class Replays:
    """Job factory: replays the band folder for in-chain requests and the raw folder otherwise."""

    def __init__(self, folders: dict[str, Path], error: str | None = None) -> None:
        self.folders, self.error, self.requests, self.jobs = folders, error, [], []

    def __call__(self, request: ExplainRequest) -> ReplayJob:
        assert (request.case_dir / "ADC.nii.gz").is_file()  # the controller wrote the inputs before starting
        self.requests.append(request)
        source = self.folders["band" if request.where == "layers" else "raw"]
        self.jobs.append(ReplayJob(request, source, self.error))
        return self.jobs[-1]


@pytest.fixture
def env(synthetic_case_dir):
    mrml = headless_mrml.headless_scene()
    mrml.case = case_nodes.load_case_folder(mrml.scene, synthetic_case_dir)
    return mrml


def finish(controller: RunController, limit: int = 20):
    states = []
    for _ in range(limit):
        status = controller.poll()
        states.append(status.state)
        if not status.running:
            return status, states
    raise AssertionError(f"the run did not end: {states}")


def test_final_map_result_is_imported_and_filtered_live(env, replays, tmp_path):
    jobs = Replays(replays)
    controller = RunController(env.scene, tmp_path / "work", jobs)
    controller.start(env.case.volumes, env.case.ground_truth, RunSettings(device="cpu"))
    assert controller.running and jobs.requests[0].where == "output" and jobs.requests[0].filter == "none"
    status, states = finish(controller)
    assert status.state is RunState.DONE and states[:2] == [RunState.RUNNING, RunState.RUNNING]
    live = controller.live
    raw = read_relevance(replays["raw"])
    np.testing.assert_array_equal(live.relevance, raw)
    assert controller.show_filter("clamp", 0.2) is True
    live.flush()  # the slider path writes the voxels on screen at once, the rest here
    expected = filter_map(raw, AmplitudeFilter.clamp_band(0.2))
    for channel, modality in enumerate(MODALITIES):
        np.testing.assert_array_equal(scene_nodes.array_from_node(live.heatmaps[modality]),
                                      expected.normalised[channel])
    assert not jobs.requests[0].case_dir.parent.exists()  # the run folder goes once imported
    assert controller.stale_reason(env.case.volumes, env.case.ground_truth, RunSettings(device="cpu")) is None


def test_in_chain_band_is_computed_once_then_served_from_the_cache(env, replays, tmp_path):
    jobs = Replays(replays)
    controller = RunController(env.scene, tmp_path / "work", jobs)
    controller.start(env.case.volumes, env.case.ground_truth)
    finish(controller)
    assert controller.show_filter("clamp", 0.3, where="layers") is False  # not cached: computed in the background
    request = jobs.requests[-1]
    assert (request.where, request.filter, request.alpha, request.alpha_low) == ("layers", "clamp", 0.3, 0.0)
    status, _ = finish(controller)
    assert status.state is RunState.DONE and controller.live.layer_bands == (BAND,)
    band = filter_map(read_relevance(replays["band"]), None)
    assert not np.allclose(band.normalised, filter_map(read_relevance(replays["raw"]), None).normalised)
    controller.live.flush()
    voxels = scene_nodes.array_from_node(controller.live.heatmaps["Tmax"])
    np.testing.assert_array_equal(voxels, band.normalised[MODALITIES.index("Tmax")])
    assert controller.show_filter("clamp", 0.3, where="layers") is True and len(jobs.requests) == 2


def test_failed_job_reports_its_message_and_keeps_the_result(env, replays, tmp_path):
    controller = RunController(env.scene, tmp_path / "work", Replays(replays))
    controller.start(env.case.volumes, env.case.ground_truth)
    finish(controller)
    shown = controller.live
    controller.jobs = failing = Replays(replays, error="Case folder lacks TTP")
    controller.start(env.case.volumes, env.case.ground_truth, RunSettings(rule="epsilon-zb"))
    status, _ = finish(controller)
    assert (status.state, status.message) == (RunState.FAILED, "Case folder lacks TTP")
    assert controller.live is shown and not controller.running
    assert not failing.requests[0].case_dir.parent.exists()
    reason = controller.stale_reason(env.case.volumes, env.case.ground_truth, RunSettings(rule="epsilon-zb"))
    assert "rule" in reason


def test_cancelled_job_ends_cancelled_with_nothing_imported(env, replays, tmp_path):
    jobs = Replays(replays)
    controller = RunController(env.scene, tmp_path / "work", jobs)
    controller.start(env.case.volumes, env.case.ground_truth)
    controller.poll()
    controller.cancel()
    status, _ = finish(controller)
    assert (status.state, status.message) == (RunState.CANCELLED, "Cancelled.") and controller.live is None
    assert jobs.jobs[0].cancelled and not (jobs.requests[0].out_dir / "relevance_ADC.nii.gz").exists()


def test_inputs_changed_while_the_job_ran_are_not_imported(env, replays, tmp_path):
    controller = RunController(env.scene, tmp_path / "work", Replays(replays))
    controller.start(env.case.volumes, env.case.ground_truth)
    controller.poll()
    voxels = slicer.util.arrayFromVolume(env.case.volumes["rCBF"])
    voxels[0, 0, 0] += 1.0
    slicer.util.arrayFromVolumeModified(env.case.volumes["rCBF"])
    status, _ = finish(controller)
    assert status.state is RunState.FAILED and "changed" in status.message and controller.live is None


def test_stale_reason_and_bad_starts(env, replays, tmp_path):
    controller = RunController(env.scene, tmp_path / "work", Replays(replays))
    controller.start(env.case.volumes, env.case.ground_truth)
    with pytest.raises(RunError, match="already running"):
        controller.start(env.case.volumes, env.case.ground_truth)
    finish(controller)
    swapped = dict(env.case.volumes, MTT=env.case.volumes["TTP"])
    with pytest.raises(RunError, match="MTT"):
        controller.start(swapped, None)
    assert "inputs" in controller.stale_reason(swapped, env.case.ground_truth, RunSettings())
    assert "target" in controller.stale_reason(env.case.volumes, env.case.ground_truth,
                                               RunSettings(target="equal"))
