"""The background in-chain band grid of the run flow, on a real slicer-core scene, with jobs replaying real outputs.

The replayed folders are written once by the real ``lrpseg explain`` and ``lrpseg bands`` (tiny random model); a
replay job copies its folder into the request's output folder when it "finishes" (see ``test_run.py``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is needed for the MRML tests")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the installed 'slicer' package has no MRML (install slicer-core)", allow_module_level=True)

from test_band_scores import assert_same_scores  # noqa: E402
from test_run import ReplayJob, finish  # noqa: E402

from LRPSegmentationLib.analysis.filters import AmplitudeFilter, filter_map  # noqa: E402
from LRPSegmentationLib.analysis.scores import score_explanation  # noqa: E402
from LRPSegmentationLib.data.caseio import load_case  # noqa: E402
from LRPSegmentationLib.data.modalities import MODALITIES  # noqa: E402
from LRPSegmentationLib.mrml import case as case_nodes  # noqa: E402
from LRPSegmentationLib.mrml import headless as headless_mrml  # noqa: E402
from LRPSegmentationLib.mrml import nodes as scene_nodes  # noqa: E402
from LRPSegmentationLib.mrml.job import BandsRequest  # noqa: E402
from LRPSegmentationLib.mrml.run import BandStatus, RunController, RunState  # noqa: E402
from LRPSegmentationLib.pipeline.band_files import BANDS_FILE, BANDS_JSON, read_band_scores, read_bands  # noqa: E402
from LRPSegmentationLib.pipeline.cli import main as cli_main  # noqa: E402
from LRPSegmentationLib.pipeline.outputs import read_relevance  # noqa: E402

STEP = 0.25  # what the controller asks for; the replayed grid is GRID, a small part of it (fast)
GRID = "clamp:0.25;clamp:0.5;pass:0.5;clamp:0.1"
BAND = AmplitudeFilter.clamp_band(0.25)


@pytest.fixture(scope="module")
def replays(tiny_case_args, tmp_path_factory) -> dict[str, Path]:
    """Real output folders: the raw map, the in-chain band pass [0, 0.3], and the band grid GRID."""
    root = tmp_path_factory.mktemp("band_replays")
    common = tiny_case_args
    assert cli_main(["explain", *common, "--out", str(root / "raw")]) == 0
    assert cli_main(["explain", *common, "--out", str(root / "band"), "--where", "layers", "--filter", "pass",
                     "--alpha", "0.3"]) == 0
    assert cli_main(["bands", *common, "--out", str(root / "grid"), "--bands", GRID, "--chunk", "4"]) == 0
    return {"raw": root / "raw", "band": root / "band", "grid": root / "grid"}


class GridReplays:
    """Job factory: the grid folder for band-grid requests (after ``grid_steps`` polls), the band folder for
    in-chain requests, the raw folder otherwise."""

    def __init__(self, folders: dict[str, Path], grid_steps: int = 6) -> None:
        self.folders, self.grid_steps, self.requests, self.jobs = folders, grid_steps, [], []

    def __call__(self, request) -> ReplayJob:
        assert (request.case_dir / "ADC.nii.gz").is_file()
        self.requests.append(request)
        if isinstance(request, BandsRequest):
            job = ReplayJob(request, self.folders["grid"], steps=self.grid_steps)
        else:
            job = ReplayJob(request, self.folders["band" if request.where == "layers" else "raw"])
        self.jobs.append(job)
        return job

    def grid_jobs(self) -> list[ReplayJob]:
        return [job for job in self.jobs if isinstance(job.request, BandsRequest)]


@pytest.fixture
def env(synthetic_case_dir):
    mrml = headless_mrml.headless_scene()
    mrml.case = case_nodes.load_case_folder(mrml.scene, synthetic_case_dir)
    mrml.inputs = load_case(synthetic_case_dir)
    return mrml


def controller_for(scene, tmp_path, jobs) -> RunController:
    return RunController(scene, tmp_path / "work", jobs, precompute_bands=True, band_step=STEP)


def grid_scores(replays):
    """The float32 scores the real ``lrpseg bands`` kept in bands.json, per band."""
    return read_band_scores(replays["grid"] / BANDS_JSON)


def finish_grid(controller: RunController, limit: int = 30) -> RunState:
    for _ in range(limit):
        controller.poll()
        if not controller.grid_running:
            return controller.grid_status.state
    raise AssertionError("the band grid did not end")


def assert_shows_band(live, relevance: np.ndarray, case, exact=None) -> None:
    """The heatmaps (after a flush) show the unfiltered map of ``relevance`` (``case``: its inputs); the scores are
    ``exact`` (a grid band's float32 scores) or, without them, those of ``relevance``."""
    live.flush()
    expected = filter_map(relevance, None)
    for channel, modality in enumerate(MODALITIES):  # a grid band is shown from its stored normalised values:
        np.testing.assert_allclose(scene_nodes.array_from_node(live.heatmaps[modality]),  # equal to rounding
                                   expected.normalised[channel], rtol=1e-6, atol=1e-7)
    rescored = score_explanation(expected, case.images, case.ground_truth)
    assert_same_scores(live.scores, rescored if exact is None else exact)
    if exact is not None:  # the float16 map alone would give other scores: the float32 ones are kept
        assert live.scores.modalities[0].share != rescored.modalities[0].share
    tmax = MODALITIES.index("Tmax")
    assert live.rows[tmax]["D(LRP,x)"] == pytest.approx(live.scores.modalities[tmax].input_inclusivity)


def test_grid_is_pending_while_it_runs_then_serves_the_slider(env, replays, tmp_path):
    jobs = GridReplays(replays)
    controller = controller_for(env.scene, tmp_path, jobs)
    controller.start(env.case.volumes, env.case.ground_truth)
    finish(controller)
    assert controller.grid_running and len(jobs.grid_jobs()) == 1
    request = jobs.grid_jobs()[0].request
    assert request.step == STEP and "bands" == request.arguments()[0]
    assert controller.band_status("clamp", 0.25) is BandStatus.PENDING
    assert controller.show_filter("clamp", 0.25, where="layers") is False  # pending: no band job of its own
    assert controller.live.where == "output" and not any(r.where == "layers" for r in jobs.requests[1:]
                                                           if not isinstance(r, BandsRequest))
    assert finish_grid(controller) is RunState.DONE
    assert (controller.live.filter, controller.live.where) == (BAND, "layers")  # shown as the grid arrived
    grid = read_bands(replays["grid"] / BANDS_FILE)
    assert set(controller.grid_bands) == set(grid) and BAND in grid and len(grid) > 2
    assert controller.live.loaded_bands == (BAND,)  # the grid is read band by band, as the slider shows it
    kept = list(tmp_path.rglob("grid-*.npz"))
    assert len(kept) == 1  # its file outlives the run folder while the result is shown
    assert controller.band_status("clamp", 0.25) is BandStatus.SHOWN
    assert controller.show_filter("clamp", 0.25, where="layers") is True
    assert controller.live.filter == BAND and controller.live.where == "layers"
    assert_shows_band(controller.live, grid[BAND], env.inputs, grid_scores(replays)[BAND])
    assert controller.show_filter("clamp", 0.3, where="layers") is True  # off the grid: the nearest band
    assert controller.live.filter == BAND and controller.band_status("clamp", 0.3) is BandStatus.SHOWN
    assert len(jobs.requests) == 2  # one full run, one grid: the slider started nothing more
    assert not request.case_dir.parent.exists()  # the grid's run folder goes once imported
    other = next(band for band in grid if band.kind is BAND.kind and band != BAND)
    assert controller.show_filter(other.kind.value, other.high, other.low, where="layers") is True
    assert controller.live.loaded_bands == (BAND, other)
    assert_shows_band(controller.live, grid[other], env.inputs, grid_scores(replays)[other])
    for _ in range(50):  # the poll reads the other grid bands into memory, a few at a time
        controller.poll()
    assert controller.live.prefetch_layers(seconds=0.0) == 0
    shown_from_memory = next(band for band in grid if band not in (BAND, other) and np.abs(grid[band]).max() > 0)
    kept[0].unlink()  # read already: showing it needs no file
    assert controller.show_filter(shown_from_memory.kind.value, shown_from_memory.high, shown_from_memory.low,
                                  where="layers") is True
    assert_shows_band(controller.live, grid[shown_from_memory], env.inputs, grid_scores(replays)[shown_from_memory])
    controller.forget()
    assert not kept[0].exists()  # the result is gone: so is its grid file


def test_an_exact_band_on_demand_runs_beside_the_grid(env, replays, tmp_path):
    jobs = GridReplays(replays, grid_steps=50)
    controller = controller_for(env.scene, tmp_path, jobs)
    controller.start(env.case.volumes, env.case.ground_truth)
    finish(controller)
    assert controller.show_filter("pass", 0.3, where="layers", exact=True) is False
    assert controller.band_status("pass", 0.3) is BandStatus.PENDING and controller.running
    status, _ = finish(controller)
    assert status.state is RunState.DONE and controller.grid_running  # served before the grid ended
    assert controller.live.filter == AmplitudeFilter.pass_band(0.3) and controller.live.where == "layers"
    assert_shows_band(controller.live, read_relevance(replays["band"]), env.inputs)


def test_cancel_stops_the_grid_and_imports_nothing(env, replays, tmp_path):
    jobs = GridReplays(replays)
    controller = controller_for(env.scene, tmp_path, jobs)
    controller.start(env.case.volumes, env.case.ground_truth)
    finish(controller)
    controller.poll()
    controller.cancel()
    grid_job = jobs.grid_jobs()[0]
    assert grid_job.cancelled and not controller.grid_running
    assert controller.grid_status.state is RunState.CANCELLED
    for _ in range(10):
        controller.poll()
    assert controller.live.layer_bands == () and controller.grid_bands == ()
    assert not grid_job.request.case_dir.parent.exists()  # removed once the cancelled job ended
    assert controller.band_status("clamp", 0.25) is BandStatus.MISSING
    assert controller.show_filter("clamp", 0.25, where="layers") is False and controller.running  # on demand now


def test_a_new_full_run_replaces_the_grid_job(env, replays, tmp_path):
    jobs = GridReplays(replays)
    controller = controller_for(env.scene, tmp_path, jobs)
    controller.start(env.case.volumes, env.case.ground_truth)
    finish(controller)
    first_live, first_grid = controller.live, jobs.grid_jobs()[0]
    controller.start(env.case.volumes, env.case.ground_truth)
    assert first_grid.cancelled and not controller.grid_running  # stopped at once: its result would be stale
    finish(controller)
    assert controller.live is not first_live and len(jobs.grid_jobs()) == 2 and controller.grid_running
    assert controller.band_status("clamp", 0.25) is BandStatus.PENDING
    assert finish_grid(controller) is RunState.DONE
    assert first_live.layer_bands == () and BAND in controller.live.layer_bands
    assert controller.show_filter("clamp", 0.25, where="layers") is True


def test_reopened_scene_recomputes_the_grid_and_the_in_chain_slider_works(env, replays, tmp_path):
    jobs = GridReplays(replays)
    controller = controller_for(env.scene, tmp_path, jobs)
    controller.start(env.case.volumes, env.case.ground_truth)
    finish(controller)
    finish_grid(controller)
    controller.show_filter("clamp", 0.25, where="layers")
    controller.live.flush()
    saved = headless_mrml.save_scene(env.scene, tmp_path / "scene" / "bands.mrml")

    again = headless_mrml.headless_scene()
    again.scene.SetURL(str(saved.scene_file))
    assert again.scene.Import()
    fresh_jobs = GridReplays(replays)
    reopened = controller_for(again.scene, tmp_path / "again", fresh_jobs)
    assert reopened.restore() and reopened.grid_running
    assert isinstance(fresh_jobs.requests[0], BandsRequest)
    assert reopened.band_status("clamp", 0.25) is BandStatus.PENDING
    assert reopened.show_filter("clamp", 0.25, where="layers") is False
    assert finish_grid(reopened) is RunState.DONE
    assert reopened.show_filter("clamp", 0.25, where="layers") is True
    assert_shows_band(reopened.live, read_bands(replays["grid"] / BANDS_FILE)[BAND], env.inputs,
                      grid_scores(replays)[BAND])
