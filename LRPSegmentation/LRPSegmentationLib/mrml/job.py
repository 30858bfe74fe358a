"""A long computation in a child process, polled from the GUI thread: command line, progress lines, cancel.

The Slicer module runs ``lrpseg explain`` (as ``PythonSlicer -m LRPSegmentationLib.pipeline.cli explain ...``) through
:class:`ChildJob`: a reader thread moves the child's output lines into a queue, and the GUI thread drains it with
:meth:`ChildJob.poll` from a timer, so Slicer never blocks and nothing here touches MRML or Qt.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from LRPSegmentationLib import options

PIP_REQUIREMENTS = {"safetensors": "safetensors>=0.4", "tqdm": "tqdm>=4.60", "SimpleITK": "SimpleITK>=2.2",
                    "scipy": "scipy>=1.10", "matplotlib": "matplotlib>=3.7"}
"""Packages the child needs besides torch and what Slicer bundles (import name -> pip requirement with a floor);
the module installs the missing ones after asking once."""

MODEL_REQUIREMENTS = {"monai": "monai>=1.3", "dynamic_network_architectures": "dynamic-network-architectures>=0.4.4",
                      "einops": "einops>=0.6"}
"""Packages only the peer-network routes import (a MONAI network, an nnU-Net v2 folder): the module installs them
(after asking) only for a model of such a route (:func:`child_requirements`)."""

ROUTE_REQUIREMENTS: dict[str, tuple[str, ...]] = {"monai": ("monai", "einops"),
                                                  "nnunet": ("dynamic_network_architectures", "einops")}
"""The import names of :data:`MODEL_REQUIREMENTS` each model route (``net.weights.ModelRoute`` value) needs."""

NO_DEPS = frozenset({"monai", "dynamic_network_architectures"})
"""Installed with ``pip --no-deps``: their dependencies are torch (the PyTorch extension's build, which pip must not
replace), numpy (Slicer's), einops (listed) and timm, which pulls torchvision and which the U-Nets never import."""

SLICER_BUNDLED = ("numpy", "scipy", "SimpleITK", "vtk")
"""Third-party packages every Slicer ships (its SuperBuild), which the child may import without installing."""

CANCEL_GRACE_SECONDS = 3.0
"""How long a cancelled child tree may take to exit after SIGTERM before it is killed."""


class JobError(ValueError):
    """A job request that cannot be run; the message names the argument and what to do."""


def _absolute(path: Path) -> str:
    return str(Path(path).expanduser().resolve())  # the child runs in the library's folder


@dataclass(frozen=True)
class ChildRequest:
    """What every ``lrpseg`` child run of the module shares: the case folder, the output folder, the model, the
    device, the rule preset and the target (names from :mod:`LRPSegmentationLib.options`)."""

    case_dir: Path
    out_dir: Path
    model: Path | None = None
    device: str = "auto"
    rule: str = options.DEFAULT_PRESET
    target: str = options.DEFAULT_TARGET.value

    def __post_init__(self) -> None:
        for name, allowed in (("rule", options.PRESET_NAMES), ("target", options.values(options.PANEL_TARGETS))):
            if getattr(self, name) not in allowed:
                raise JobError(f"{name} {getattr(self, name)!r}: use one of {', '.join(allowed)}.")

    def _arguments(self, command: str) -> list[str]:
        args = [command, _absolute(self.case_dir), "--out", _absolute(self.out_dir), "--device", self.device,
                "--rule", self.rule, "--target", self.target, "--progress", "json"]
        if self.model is not None:
            args[2:2] = ["--model", _absolute(self.model)]
        return args

    RUN_PREFIX: ClassVar[str] = "run-"

    def arguments(self) -> list[str]:
        raise NotImplementedError

    @classmethod
    def in_new_run_folder(cls, work_folder: Path | str, **fields) -> ChildRequest:
        """A request whose ``case_dir`` and ``out_dir`` are ``case`` and ``out`` in a new ``run-*`` (or
        ``bands-*``) folder of ``work_folder``."""
        Path(work_folder).mkdir(parents=True, exist_ok=True)
        run = Path(tempfile.mkdtemp(prefix=cls.RUN_PREFIX, dir=work_folder))
        return cls(run / "case", run / "out", **fields)

    def command(self, python: str | None = None) -> list[str]:
        """Full command line running the CLI module with ``python`` (default: this interpreter)."""
        return [python or sys.executable, "-m", "LRPSegmentationLib.pipeline.cli", *self.arguments()]


@dataclass(frozen=True)
class FilteredRequest(ChildRequest):
    """A child run with an amplitude filter band (explain, check)."""

    filter: str = options.FilterKind.NONE.value
    alpha: float = 1.0
    alpha_low: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.filter not in options.values(options.FilterKind):
            raise JobError(f"filter {self.filter!r}: use one of {', '.join(options.values(options.FilterKind))}.")
        if not 0.0 <= self.alpha_low <= self.alpha <= 1.0:
            raise JobError(f"alpha band [{self.alpha_low}, {self.alpha}] is invalid: need 0 <= a1 <= alpha <= 1.")

    def _arguments(self, command: str) -> list[str]:
        return [*super()._arguments(command), "--filter", self.filter, "--alpha", repr(float(self.alpha)),
                "--alpha-low", repr(float(self.alpha_low))]


@dataclass(frozen=True)
class ExplainRequest(FilteredRequest):
    """One ``lrpseg explain`` run; ``where`` places the filter on the final map or inside the chain."""

    where: str = options.FilterPlacement.OUTPUT.value

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.where not in options.values(options.FilterPlacement):
            raise JobError(f"where {self.where!r}: use one of {', '.join(options.values(options.FilterPlacement))}.")

    def arguments(self) -> list[str]:
        """The ``explain`` sub-command and its options (progress as JSON lines)."""
        return [*self._arguments("explain"), "--where", self.where]



CHECK_PARTS = ("randomisation", "random_logit", "flipping", "ablation", "localisation")
"""The parts of ``lrpseg check`` (pipeline.check.PARTS; not imported: that module imports torch)."""


@dataclass(frozen=True)
class CheckRequest(FilteredRequest):
    """One ``lrpseg check`` run ("Check this explanation"): the explanation's case, model, rule, target and filter,
    the parts to run and optionally the methods; writes check.json, check.csv and plots/ into ``out_dir``."""

    parts: tuple[str, ...] = CHECK_PARTS
    methods: tuple[str, ...] = ()
    plots: bool = True
    RUN_PREFIX: ClassVar[str] = "check-"

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = sorted(set(self.parts) - set(CHECK_PARTS))
        if unknown:
            raise JobError(f"check parts {unknown}: use {', '.join(CHECK_PARTS)}.")

    def arguments(self) -> list[str]:
        """The ``check`` sub-command and its options (progress as JSON lines; parts not asked for switched off)."""
        args = self._arguments("check")
        args += [f"--no-{part.replace('_', '-')}" for part in CHECK_PARTS if part not in self.parts]
        args += [] if self.plots else ["--no-plots"]
        args += ["--methods", ",".join(self.methods)] if self.methods else []
        return args

    @property
    def check_file(self) -> Path:
        return Path(self.out_dir) / "check.json"

    @classmethod
    def for_explanation(cls, request: ExplainRequest, **overrides) -> CheckRequest:
        """The check of a finished explain run: same case folder, model, device, rule, target and filter; results
        in ``check`` next to the run's ``out`` folder (``overrides`` replace any field)."""
        values = {"case_dir": request.case_dir, "out_dir": Path(request.out_dir).parent / "check",
                  "model": request.model, "device": request.device, "rule": request.rule, "target": request.target,
                  "filter": request.filter, "alpha": request.alpha, "alpha_low": request.alpha_low}
        return cls(**{**values, **overrides})


@dataclass(frozen=True)
class BandsRequest(ChildRequest):
    """One ``lrpseg bands`` run: the in-chain band grid of a case (``bands`` as 'pass:0.2;clamp:0.1', or the default
    grid of ``step``), written as ``bands.npz`` and ``bands.json`` into ``out_dir``."""

    bands: str | None = None
    step: float = 0.05
    chunk: int = options.BAND_CHUNK
    RUN_PREFIX: ClassVar[str] = "bands-"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.step <= 1.0 or self.chunk < 1:
            raise JobError(f"step {self.step} / chunk {self.chunk}: need 0 < step <= 1, chunk >= 1.")

    def arguments(self) -> list[str]:
        """The ``bands`` sub-command and its options (progress as JSON lines, absolute paths)."""
        args = [*self._arguments("bands"), "--step", repr(float(self.step)), "--chunk", str(int(self.chunk))]
        return args + (["--bands", self.bands] if self.bands is not None else [])



@dataclass(frozen=True)
class ProgressEvent:
    """One progress line of the child: ``fraction`` is None for notes (e.g. a CPU fallback message)."""

    stage: str
    fraction: float | None
    message: str


def parse_progress(line: str) -> ProgressEvent | None:
    """A progress event from one ``--progress json`` output line, or None for any other line."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        values = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(values, dict) or "stage" not in values:
        return None
    fraction = values.get("fraction")
    return ProgressEvent(str(values["stage"]), None if fraction is None else float(fraction),
                         str(values.get("message", "")))


class ChildJob:
    """A child process whose output lines are read on a thread and handed out by :meth:`poll`."""

    def __init__(self, command: Sequence[str], cwd: Path | str | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self.command = [str(c) for c in command]
        self.cwd = cwd
        self.env = dict(env) if env is not None else None
        self.process: subprocess.Popen | None = None
        self.lines: list[str] = []  # every non-progress line (warnings, the error message)
        self.cancelled = False
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader: threading.Thread | None = None
        self._started = 0.0
        self._ended: float | None = None
        self._cancel_deadline: float | None = None

    def start(self) -> ChildJob:
        """Start the child in a process group of its own, so that :meth:`cancel` reaches its whole tree."""
        group = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW} \
            if os.name == "nt" else {"start_new_session": True}
        self.process = subprocess.Popen(
            self.command, cwd=self.cwd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, text=True, encoding="utf-8", errors="replace", bufsize=1, **group,
        )
        self._started = time.perf_counter()
        self._reader = threading.Thread(target=self._read, name="LRPSegmentation job reader", daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def poll(self) -> list[ProgressEvent]:
        """Progress events that arrived since the last call (never blocks); other lines go to ``lines``."""
        events = []
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is None:
                continue
            event = parse_progress(line)
            if event is None:
                if line.strip():
                    self.lines.append(line)
            else:
                events.append(event)
        if self._cancel_deadline is not None and time.perf_counter() > self._cancel_deadline:
            self._cancel_deadline = None
            if self._group_alive():
                self._signal_tree(kill=True)  # it ignored SIGTERM
        if self._ended is None and self.finished:
            self._ended = time.perf_counter()
        return events

    @property
    def finished(self) -> bool:
        """The process ended and all its output was read."""
        if self.process is None or self.process.poll() is None:
            return False
        if self.cancelled and self._group_alive():
            return False  # a cancelled job is over only when nothing of its tree is left
        return (self._reader is None or not self._reader.is_alive()) and self._queue.empty()

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    @property
    def succeeded(self) -> bool:
        return self.finished and self.returncode == 0 and not self.cancelled

    @property
    def elapsed(self) -> float:
        """Seconds since start (until the end once finished)."""
        return (self._ended or time.perf_counter()) - self._started if self._started else 0.0

    def error_message(self) -> str:
        """The child's last non-progress output line (its one-line error), or a generic message."""
        if self.cancelled:
            return "Cancelled."
        return self.lines[-1] if self.lines else f"The computation stopped with exit code {self.returncode}."

    def cancel(self) -> None:
        """Stop the child and everything it started; returns at once (never waits on the caller's thread).

        A launcher such as Slicer's ``PythonSlicer`` runs the real interpreter as its own child and forwards no
        signals, so the whole process group is terminated (POSIX) or the whole tree is killed (Windows
        ``taskkill /T``); :meth:`poll` kills what is still alive after :data:`CANCEL_GRACE_SECONDS`.
        """
        if self.process is None or self.cancelled:
            self.cancelled = True
            return
        self.cancelled = True
        self._cancel_deadline = time.perf_counter() + CANCEL_GRACE_SECONDS
        self._signal_tree(kill=False)

    def _signal_tree(self, kill: bool) -> None:
        assert self.process is not None
        if os.name == "nt":
            subprocess.run(["taskkill", "/T", "/F", "/PID", str(self.process.pid)], capture_output=True,
                           creationflags=subprocess.CREATE_NO_WINDOW)
            return
        import signal

        try:
            os.killpg(self.process.pid, signal.SIGKILL if kill else signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass  # the group is gone already

    def _group_alive(self) -> bool:
        """Whether any process of the child's group is still running (POSIX; on Windows: the child itself)."""
        assert self.process is not None
        if os.name == "nt":
            return self.process.poll() is None
        self.process.poll()  # reap the group leader
        if Path("/proc/self/stat").is_file():
            return bool(_live_group_members(self.process.pid))
        try:
            os.killpg(self.process.pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def wait(self, timeout: float | None = None, interval: float = 0.05,
             on_progress: Callable[[ProgressEvent], None] | None = None,
             idle: Callable[[], None] | None = None) -> bool:
        """Block until the job ends (scripts, the console, tests), passing events to ``on_progress``; True on success.

        ``idle`` runs between polls: in Slicer pass ``slicer.app.processEvents`` so the application stays
        responsive while it waits. Past ``timeout`` seconds the job is cancelled (and waited for).
        """
        deadline = None if timeout is None else time.perf_counter() + timeout
        while True:
            for event in self.poll():
                if on_progress is not None:
                    on_progress(event)
            if self.finished:
                return self.succeeded
            if deadline is not None and time.perf_counter() > deadline and not self.cancelled:
                self.cancel()
            if idle is not None:
                idle()
            time.sleep(interval)


def _live_group_members(group: int) -> list[int]:
    """PIDs in process group ``group`` that are not zombies (Linux ``/proc``; an exited orphan may stay a zombie
    until its new parent reaps it, but it computes nothing and holds no GPU memory)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended while we looked
        if fields[0] != "Z" and int(fields[2]) == group:
            members.append(int(stat.parent.name))
    return members


def missing_requirements(requirements: Mapping[str, str] = PIP_REQUIREMENTS) -> list[str]:
    """The pip requirements of ``requirements`` whose module cannot be imported here (torch is not among them:
    in Slicer it comes from the PyTorch extension)."""
    import importlib.util

    missing = []
    for module, spec in requirements.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(spec)
    return missing


def child_requirements(model: Path | str | None = None) -> dict[str, str]:
    """Import name -> pip requirement of what the child imports for ``model`` (None: the bundled model) besides
    torch: :data:`PIP_REQUIREMENTS`, plus the route's :data:`MODEL_REQUIREMENTS` for a MONAI or nnU-Net model."""
    from LRPSegmentationLib.net.weights import model_route

    extra = ROUTE_REQUIREMENTS.get(model_route(model).value, ())
    return {**PIP_REQUIREMENTS, **{name: MODEL_REQUIREMENTS[name] for name in extra}}


def pip_calls(specs: Sequence[str]) -> list[list[str]]:
    """The ``slicer.util.pip_install`` argument lists installing ``specs`` (pip requirements of
    :func:`child_requirements`): those of :data:`NO_DEPS` in a call of their own with ``--no-deps``."""
    no_deps = {MODEL_REQUIREMENTS[name] for name in NO_DEPS}
    calls = [[s for s in specs if s not in no_deps], [*(s for s in specs if s in no_deps), "--no-deps"]]
    return [call for call in calls if call and call != ["--no-deps"]]


def model_summary(path: Path | str | None = None) -> str:
    """One line about a model (default: the bundled model) from its metadata: our model file, a MONAI description
    or an nnU-Net v2 folder, with the inputs it takes; reads no weights, needs no torch."""
    from LRPSegmentationLib.net import weights

    route = weights.model_route(path or None)
    if route is not weights.ModelRoute.LRPSEG:
        inputs = ", ".join(weights.model_modalities(path))
        if route is weights.ModelRoute.NNUNET:
            return f"{Path(path).name}: nnU-Net v2 trained model, inputs {inputs}"
        from LRPSegmentationLib.net.peer import read_description

        return f"{Path(path).name}: MONAI {read_description(path)['class']}, inputs {inputs}"
    path = Path(path) if path else weights.bundled_model_path()
    info = weights.read_metadata(path)
    dice = info.metrics.get("validation_dice", info.metrics.get("dice"))
    text = f"{path.name}: base width {info.config.get('base_width', '?')}, trained {info.created[:10]}"
    return text if dice is None else f"{text}, validation Dice {float(dice):.3f}"


def python_executable() -> str:
    """The interpreter for child jobs: Slicer's ``PythonSlicer`` when found (next to this one or on PATH), else this
    one."""
    candidates = [Path(sys.executable).with_name(name) for name in ("PythonSlicer", "PythonSlicer.exe")]
    found = shutil.which("PythonSlicer")
    for candidate in [*candidates, *([Path(found)] if found else [])]:
        if candidate.is_file():
            return str(candidate)
    return sys.executable


def start_explain(request: ChildRequest, library_parent: Path | str, python: str | None = None) -> ChildJob:
    """Start the ``lrpseg`` child run of ``request`` (explain, check or bands) in a process that imports
    LRPSegmentationLib from ``library_parent`` (the Slicer module folder); non-blocking: poll or wait on the
    returned job, cancel with :meth:`ChildJob.cancel`."""
    command = request.command(python or python_executable())
    return ChildJob(command, cwd=library_parent, env=child_environment(library_parent)).start()


def child_environment(library_parent: Path | str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for the child: ``base`` (default os.environ) with ``library_parent`` first on PYTHONPATH."""
    env = dict(os.environ if base is None else base)
    parts = [str(library_parent)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(parts)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env
