"""The run flow of the Slicer module, Qt-free: start a job, poll it, import its result into the scene, cancel.

:class:`RunController` owns the one running job and the current :class:`~LRPSegmentationLib.mrml.live.LiveExplanation`.
The job comes from a factory (:class:`JobFactory`): the module uses :func:`child_process_jobs`, which runs
``lrpseg explain`` in a child process; tests pass a factory of jobs that replay a real output folder. The module's
Widget only calls :meth:`RunController.start`, :meth:`RunController.poll` (from a timer),
:meth:`RunController.cancel` and :meth:`RunController.show_filter`, and shows the :class:`RunStatus` it gets back.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from LRPSegmentationLib import options
from LRPSegmentationLib.analysis.filters import NO_FILTER, AmplitudeFilter
from LRPSegmentationLib.data.modalities import MODALITIES
from LRPSegmentationLib.mrml.case import write_case_folder
from LRPSegmentationLib.mrml.job import BandsRequest, ChildRequest, ExplainRequest, ProgressEvent, start_explain
from LRPSegmentationLib.mrml.live import LiveExplanation, band_key, slider_filter
from LRPSegmentationLib.net.weights import model_modalities
from LRPSegmentationLib.pipeline.band_files import BANDS_FILE, BANDS_JSON, BandFile, BandFileError, read_band_scores


class RunError(ValueError):
    """A run that cannot start (inputs missing, one already running); the message says what to do."""


class JobProtocol(Protocol):
    """What the controller needs of a job (``mrml.job.ChildJob`` is one)."""

    cancelled: bool

    def poll(self) -> list[ProgressEvent]: ...
    def cancel(self) -> None: ...
    def error_message(self) -> str: ...

    @property
    def finished(self) -> bool: ...

    @property
    def succeeded(self) -> bool: ...

    @property
    def elapsed(self) -> float: ...


JobFactory = Callable[[ChildRequest], JobProtocol]
"""Starts the job for a request (non-blocking) and returns it: ``lrpseg explain``, ``bands`` or ``check``."""


LIBRARY_PARENT = Path(__file__).resolve().parents[2]
"""The folder holding this LRPSegmentationLib (the Slicer module folder in an installed extension)."""


def child_process_jobs(library_parent: Path | str = LIBRARY_PARENT, python: str | None = None) -> JobFactory:
    """The real factory: ``lrpseg explain`` in a child process importing LRPSegmentationLib from ``library_parent``
    (default: this library), with Slicer's ``PythonSlicer`` when it is found, else this interpreter."""
    return lambda request: start_explain(request, library_parent, python)


@dataclass(frozen=True)
class RunSettings:
    """How an explanation is computed (what makes a result stale when it changes); the filter band is separate."""

    model: Path | None = None
    device: str = "auto"
    rule: str = options.DEFAULT_PRESET
    target: str = options.DEFAULT_TARGET.value

    def describe(self) -> dict[str, Any]:
        """JSON-ready (kept in the scene with the result)."""
        return {"model": None if self.model is None else str(self.model), "device": self.device, "rule": self.rule,
                "target": self.target}

    @classmethod
    def from_description(cls, values: Mapping[str, Any]) -> RunSettings:
        model = values.get("model")
        return cls(Path(model) if model else None, values.get("device", "auto"),
                   values.get("rule", options.DEFAULT_PRESET), values.get("target", options.DEFAULT_TARGET.value))


class RunState(Enum):
    IDLE = "idle"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class RunStatus:
    """What the panel shows: state, the last progress stage / fraction / message, seconds elapsed."""

    state: RunState = RunState.IDLE
    stage: str = ""
    fraction: float | None = None
    message: str = ""
    elapsed: float = 0.0

    @property
    def running(self) -> bool:
        return self.state is RunState.RUNNING


@dataclass(frozen=True)
class RunInputs:
    """The input nodes of a run (one per model modality, in the model's order) and the modification times of their
    voxels when it started."""

    volumes: dict[str, Any]
    ground_truth: Any | None = None
    stamps: tuple[int, ...] = field(default=(), compare=False)

    @classmethod
    def of(cls, volumes: Mapping[str, Any], ground_truth=None, modalities: Sequence[str] = MODALITIES) -> RunInputs:
        problems = input_problems(volumes, modalities)
        if problems:
            raise RunError(f"Select one volume of its own for each modality; not yet for: {', '.join(problems)}.")
        nodes = [volumes[m] for m in modalities]
        return cls({m: volumes[m] for m in modalities}, ground_truth, _stamps([*nodes, ground_truth]))

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.volumes)

    def changed(self) -> bool:
        """Whether any input node was removed from its scene or had its voxels changed since :meth:`of`."""
        nodes = [*self.volumes.values(), self.ground_truth]
        if any(n is not None and n.GetScene() is None for n in nodes):
            return True
        return _stamps(nodes) != self.stamps


def followed(status: RunStatus, job: JobProtocol) -> RunStatus:
    """``status`` after the job's new progress events (never blocks): last stage and message, latest fraction."""
    for event in job.poll():
        status = replace(status, stage=event.stage, message=event.message,
                         fraction=status.fraction if event.fraction is None else event.fraction)
    return replace(status, elapsed=job.elapsed)


def input_problems(volumes: Mapping[str, Any], modalities: Sequence[str] = MODALITIES) -> list[str]:
    """Modalities (of the model's list) without a volume, and modalities given the volume of another one (each needs
    its own)."""
    problems, seen = [], {}
    for modality in modalities:
        node = volumes.get(modality)
        if node is None:
            problems.append(modality)
        elif id(node) in seen:
            problems.append(f"{modality} (same volume as {seen[id(node)]})")
        else:
            seen[id(node)] = modality
    return problems


def _stamps(nodes) -> tuple[int, ...]:
    def stamp(node) -> int:
        if node is None:
            return -1
        data = node.GetImageData() if hasattr(node, "GetImageData") else None
        return max(node.GetMTime() if data is None else data.GetMTime(), 0)

    return tuple(stamp(n) for n in nodes)


@dataclass(frozen=True)
class _Run:
    request: ExplainRequest
    inputs: RunInputs
    settings: RunSettings
    band: AmplitudeFilter  # NO_FILTER for a full run, the in-chain band otherwise


@dataclass(frozen=True)
class _GridRun:
    """The background band-grid job of one result (``live``): imported only into that result."""

    job: JobProtocol
    request: BandsRequest
    inputs: RunInputs
    live: LiveExplanation


class BandStatus(Enum):
    """How the in-chain slider stands for a band (:meth:`RunController.band_status`)."""

    SHOWN = "shown"  # the band, or its nearest band of the finished grid, is shown
    PENDING = "pending"  # being computed (the background grid, or this band on demand)
    MISSING = "missing"  # neither: showing it starts its computation on demand


class RunController:
    """One explanation at a time in ``scene``: its job, its result, and the filter shown on it.

    ``work_folder`` holds a ``run-*`` folder per job (inputs and outputs), removed once its result is imported
    (``keep_runs`` keeps the newest ones, for inspection). A result is never imported when its inputs changed
    while it ran; a full run replaces the previous result, an in-chain band is added to it.

    ``precompute_bands``: after a full run is imported (or a result restored from a scene), a background
    ``lrpseg bands`` job computes the in-chain band grid (``band_step``); it runs beside the main job, so an exact
    band asked for on demand (``show_filter(..., exact=True)``) starts at once instead of waiting for the grid. A new
    full run, a cancel or a restore stops it; while it runs the slider shows the nearest computed band (pending).
    """

    def __init__(self, scene, work_folder: Path | str, jobs: JobFactory, keep_runs: int = 0,
                 precompute_bands: bool = False, band_step: float = 0.05, band_chunk: int = options.BAND_CHUNK) -> None:
        self.scene = scene
        self.work_folder = Path(work_folder)
        self.jobs = jobs
        self.keep_runs = int(keep_runs)
        self.live: LiveExplanation | None = None
        self.result_inputs: RunInputs | None = None
        self.result_settings: RunSettings | None = None
        self.job: JobProtocol | None = None
        self.status = RunStatus()
        self._run: _Run | None = None
        self._kept: list[Path] = []
        self.precompute_bands, self.band_step, self.band_chunk = precompute_bands, band_step, band_chunk
        self.grid_status = RunStatus()
        self.grid_bands: tuple[AmplitudeFilter, ...] = ()  # the bands of the grid imported into ``live``
        self._grid: _GridRun | None = None
        self._stopping: list[_GridRun] = []  # cancelled grid jobs, polled until their process tree is gone
        self._wanted: AmplitudeFilter | None = None  # the in-chain band the slider asks for (None: final-map mode)
        self._grid_file: Path | None = None  # the imported grid's bands, read band by band while it is shown

    @property
    def running(self) -> bool:
        return self.job is not None and self.status.running

    # -------------------------------------------------------------------------------------------- starting
    def start(self, volumes: Mapping[str, Any], ground_truth=None, settings: RunSettings = RunSettings(),
              modalities: Sequence[str] | None = None) -> None:
        """Explain these inputs (the raw map; final-map filters are applied live by :meth:`show_filter`); stops the
        band grid of the previous result. ``volumes`` maps each of ``modalities`` (default: the model's list, from
        its metadata) to its volume node."""
        inputs = RunInputs.of(volumes, ground_truth, modalities or model_modalities(settings.model))
        if self.running:
            raise RunError("A computation is already running: wait for it or cancel it first.")
        self._stop_grid()
        self._start(inputs, settings, NO_FILTER)

    def _start(self, inputs: RunInputs, settings: RunSettings, band: AmplitudeFilter) -> None:
        if self.running:
            raise RunError("A computation is already running: wait for it or cancel it first.")
        request = ExplainRequest.in_new_run_folder(
            self.work_folder, model=settings.model, device=settings.device, rule=settings.rule,
            target=settings.target, filter=band.kind.value, alpha=band.high, alpha_low=band.low,
            where=(options.FilterPlacement.OUTPUT if band == NO_FILTER else options.FilterPlacement.LAYERS).value)
        try:
            write_case_folder(inputs.volumes, request.case_dir, inputs.ground_truth, inputs.modalities)
            job = self.jobs(request)
        except Exception:
            shutil.rmtree(request.case_dir.parent, ignore_errors=True)
            raise
        self.job, self._run = job, _Run(request, inputs, settings, band)
        self.status = RunStatus(RunState.RUNNING, "start", 0.0, "in-chain band " + band.label if band != NO_FILTER
                                else "")

    # ------------------------------------------------------------------------------------------------ polling
    def poll(self) -> RunStatus:
        """Drain the jobs' progress (never blocks); import what ended. Returns the main job's status (the band
        grid's is :attr:`grid_status`)."""
        self._poll_grid()
        if self.live is not None and self.grid_bands:
            self.live.prefetch_layers()  # a few grid bands into memory per poll: the in-chain slider reads them
        if self.job is None or not self.status.running:
            return self.status
        self.status = followed(self.status, self.job)
        if self.job.finished:
            self.status = self._finish()
        return self.status

    def _finish(self) -> RunStatus:
        job, run = self.job, self._run
        assert job is not None and run is not None
        self._run = None
        elapsed = job.elapsed
        try:
            if job.cancelled:
                return RunStatus(RunState.CANCELLED, message="Cancelled.", elapsed=elapsed)
            if not job.succeeded:
                return RunStatus(RunState.FAILED, message=job.error_message(), elapsed=elapsed)
            if run.inputs.changed():
                return RunStatus(RunState.FAILED, elapsed=elapsed,
                                 message="The input volumes changed while the computation ran: run it again.")
            if run.band != NO_FILTER:
                if self.live is None or self.result_inputs != run.inputs or self.result_settings != run.settings:
                    return RunStatus(RunState.FAILED, elapsed=elapsed,
                                     message="The explanation changed while the band was computed: run it again.")
            self.live = LiveExplanation.import_run(self.scene, run.request, run.inputs.volumes, current=self.live,
                                                   ground_truth_node=run.inputs.ground_truth,
                                                   settings=run.settings.describe())
            self.result_inputs, self.result_settings = run.inputs, run.settings
            if run.band != NO_FILTER:
                self.live.apply_layers(run.band)
            else:
                self.grid_bands = ()
                self._drop_grid_file()
                self._start_grid()
            return RunStatus(RunState.DONE, "done", 1.0, f"Done in {elapsed:.1f} s.", elapsed)
        finally:
            self._retire(run.request.case_dir.parent)

    def _retire(self, run_folder: Path) -> None:
        self._kept.append(run_folder)
        while len(self._kept) > self.keep_runs:
            shutil.rmtree(self._kept.pop(0), ignore_errors=True)

    def cancel(self) -> None:
        """Stop the running job and the band grid (whole process trees); the next :meth:`poll` reports CANCELLED."""
        if self.running:
            self.job.cancel()
        self._stop_grid()

    def wait(self, timeout: float | None = None, on_status: Callable[[RunStatus], None] | None = None,
             idle: Callable[[], None] | None = None, interval: float = 0.05) -> RunStatus:
        """Poll until the job ended (console, self-test); ``idle`` runs between polls (e.g. processEvents)."""
        import time

        deadline = None if timeout is None else time.perf_counter() + timeout
        while self.poll().running:
            if on_status is not None:
                on_status(self.status)
            if deadline is not None and time.perf_counter() > deadline:
                self.cancel()
                deadline = None
            if idle is not None:
                idle()
            time.sleep(interval)
        return self.status

    def restore(self) -> bool:
        """After a scene was loaded: rebuild the live view of the result saved in it (False when it has none)."""
        self._stop_grid()
        self.grid_bands = ()
        self._drop_grid_file()
        self.live = LiveExplanation.from_scene(self.scene)
        if self.live is None:
            self.result_inputs = self.result_settings = None
            return False
        volumes, truth, settings = self.live.inputs_in_scene
        self.result_inputs = RunInputs.of(volumes, truth, self.live.modalities)
        self.result_settings = RunSettings.from_description(settings)
        self._start_grid()  # the grid is recomputed in the background: the in-chain slider shows it pending
        return True

    def forget(self) -> None:
        """Stop the jobs and drop the result (its nodes stay in the scene, e.g. before the scene is cleared)."""
        self.cancel()
        self.live = self.result_inputs = self.result_settings = None
        self.grid_bands = ()
        self._drop_grid_file()

    # ------------------------------------------------------------------------------------------- band grid
    def _drop_grid_file(self) -> None:
        if self._grid_file is not None:
            self._grid_file.unlink(missing_ok=True)
            self._grid_file = None

    @property
    def grid_running(self) -> bool:
        return self._grid is not None

    @property
    def grid_exiting(self) -> bool:
        """Whether a cancelled grid job's processes are still exiting (:meth:`poll` reaps them)."""
        return bool(self._stopping)

    def _start_grid(self) -> None:
        if not self.precompute_bands or self.live is None or self.result_inputs is None:
            return
        settings = self.result_settings or RunSettings()
        request = BandsRequest.in_new_run_folder(
            self.work_folder, model=settings.model, device=settings.device, rule=settings.rule,
            target=settings.target, step=self.band_step, chunk=self.band_chunk)
        try:
            write_case_folder(self.result_inputs.volumes, request.case_dir, self.result_inputs.ground_truth,
                              self.result_inputs.modalities)
            job = self.jobs(request)
        except Exception as error:  # the result stays usable without its grid
            shutil.rmtree(request.case_dir.parent, ignore_errors=True)
            self.grid_status = RunStatus(RunState.FAILED, message=f"In-chain band grid not started: {error}")
            return
        self._grid = _GridRun(job, request, self.result_inputs, self.live)
        self.grid_status = RunStatus(RunState.RUNNING, "start", 0.0, "in-chain band grid")

    def _stop_grid(self) -> None:
        if self._grid is not None:
            self._grid.job.cancel()
            self._stopping.append(self._grid)
            self._grid = None
            self.grid_status = RunStatus(RunState.CANCELLED, message="Cancelled.")

    def _poll_grid(self) -> None:
        for grid in list(self._stopping):
            grid.job.poll()
            if grid.job.finished:
                self._stopping.remove(grid)
                shutil.rmtree(grid.request.case_dir.parent, ignore_errors=True)
        grid = self._grid
        if grid is None:
            return
        self.grid_status = followed(self.grid_status, grid.job)
        if grid.job.finished:
            self._grid = None
            try:
                self.grid_status = self._import_grid(grid)
            finally:
                self._retire(grid.request.case_dir.parent)

    def _import_grid(self, grid: _GridRun) -> RunStatus:
        elapsed = grid.job.elapsed
        if grid.job.cancelled:
            return RunStatus(RunState.CANCELLED, message="Cancelled.", elapsed=elapsed)
        if not grid.job.succeeded:
            return RunStatus(RunState.FAILED, message=grid.job.error_message(), elapsed=elapsed)
        if grid.live is not self.live or grid.inputs.changed():
            return RunStatus(RunState.FAILED, elapsed=elapsed,
                             message="The explanation changed while the band grid was computed.")
        kept = self.work_folder / f"grid-{grid.request.case_dir.parent.name}.npz"  # outlives the run folder
        try:
            (grid.request.out_dir / BANDS_FILE).replace(kept)
            bands = BandFile(kept, self.live.geometry.shape)
        except (OSError, BandFileError) as error:
            kept.unlink(missing_ok=True)
            return RunStatus(RunState.FAILED, message=str(error), elapsed=elapsed)
        self._drop_grid_file()
        self._grid_file = kept
        scores = read_band_scores(grid.request.out_dir / BANDS_JSON)
        for band in bands.bands:  # read band by band when the slider shows it
            self.live.add_layer_source(band, partial(bands.compact, band), scores.get(band))
        self.grid_bands = tuple(band_key(band) for band in bands.bands)
        if self._wanted is not None:  # the slider waited in the chain: show its nearest band now
            self.live.apply_layers(self._wanted, nearest=True)
        return RunStatus(RunState.DONE, "done", 1.0, f"{len(bands.bands)} in-chain bands in {elapsed:.1f} s.", elapsed)

    def band_status(self, kind: str, alpha: float, alpha_low: float = 0.0) -> BandStatus:
        """Whether the in-chain slider at this band shows it (or its nearest grid band), waits for it, or has
        neither (see :meth:`show_filter`)."""
        band = band_key(slider_filter(kind, alpha, alpha_low))
        if self.live is not None and self.live.has_layer_result(band):
            return BandStatus.SHOWN
        if self._run is not None and self.running and band_key(self._run.band) == band:
            return BandStatus.PENDING
        if self.grid_running:
            return BandStatus.PENDING
        if any(b.kind is band.kind for b in self.grid_bands):
            return BandStatus.SHOWN
        return BandStatus.MISSING

    # ---------------------------------------------------------------------------------------------- showing
    def stale_reason(self, volumes: Mapping[str, Any], ground_truth, settings: RunSettings) -> str | None:
        """Why the shown result no longer matches these inputs and settings (None while it does)."""
        if self.live is None or self.result_inputs is None:
            return None
        current = {m: volumes.get(m) for m in self.result_inputs.volumes}
        inputs = current != self.result_inputs.volumes or ground_truth is not self.result_inputs.ground_truth
        if inputs and settings.model == self.result_settings.model:  # else the model's change says it (other inputs)
            return "The inputs changed since this result was computed: run again to update it."
        if self.result_inputs.changed():
            return "The input voxels changed since this result was computed: run again to update it."
        if settings != self.result_settings:
            changed = [name for name in ("model", "device", "rule", "target")
                       if getattr(settings, name) != getattr(self.result_settings, name)]
            return f"Changed since this result was computed: {', '.join(changed)}. Run again to update it."
        return None

    def show_filter(self, kind: str, alpha: float, alpha_low: float = 0.0,
                    where: str = options.FilterPlacement.OUTPUT.value, exact: bool = False) -> bool:
        """Show the result filtered by the band [alpha_low, alpha] of ``kind``, on the final map or in the chain.

        A final-map filter is applied at once. An in-chain band is shown from the cache when it was computed
        before. Otherwise, unless ``exact``, a band grid (running or imported) serves it: the nearest computed band
        is shown, and False is returned while the grid still runs (pending). Else the band's own computation
        starts in the background (if no other band is computed on demand) and False is returned: the band shows
        when :meth:`poll` imports it.
        """
        if self.live is None:
            raise RunError("No explanation yet: run the model first.")
        band = slider_filter(kind, alpha, alpha_low)
        if options.FilterPlacement(where) is options.FilterPlacement.OUTPUT:
            self._wanted = None
            self.live.apply(band)
            return True
        self._wanted = band
        if self.live.apply_layers(band) is not None:
            return True
        if not exact and (self.grid_running or self.grid_bands):
            shown = self.live.apply_layers(band, nearest=True) is not None
            return shown and not self.grid_running and any(b.kind is band.kind for b in self.grid_bands)
        if not self.running:
            self._start(self.result_inputs, self.result_settings, band)
        return False
