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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

PIP_REQUIREMENTS = {"safetensors": "safetensors>=0.4", "tqdm": "tqdm>=4.60", "SimpleITK": "SimpleITK>=2.2",
                    "scipy": "scipy>=1.10"}
"""Pure-Python packages the child needs besides torch (import name -> pip requirement with a version floor)."""

FILTER_KINDS = ("none", "pass", "clamp")
WHERE_CHOICES = ("output", "layers")


class JobError(ValueError):
    """A job request that cannot be run; the message names the argument and what to do."""


@dataclass(frozen=True)
class ExplainRequest:
    """One ``lrpseg explain`` run: the case folder, the model, and how relevance is computed and filtered."""

    case_dir: Path
    out_dir: Path
    model: Path | None = None
    device: str = "auto"
    rule: str = "epsilon"  # lrp.presets.DEFAULT_PRESET (not imported: this module must not import torch)
    target: str = "lesion-logits"
    filter: str = "none"
    alpha: float = 1.0
    alpha_low: float = 0.0
    where: str = "output"

    def __post_init__(self) -> None:
        if self.filter not in FILTER_KINDS:
            raise JobError(f"filter {self.filter!r}: use one of {', '.join(FILTER_KINDS)}.")
        if self.where not in WHERE_CHOICES:
            raise JobError(f"where {self.where!r}: use 'output' (final map) or 'layers' (inside the chain).")
        if not 0.0 <= self.alpha_low <= self.alpha <= 1.0:
            raise JobError(f"alpha band [{self.alpha_low}, {self.alpha}] is invalid: need 0 <= a1 <= alpha <= 1.")

    def arguments(self) -> list[str]:
        """The ``explain`` sub-command and its options (progress as JSON lines)."""
        args = ["explain", str(self.case_dir), "--out", str(self.out_dir), "--device", self.device,
                "--rule", self.rule, "--target", self.target, "--filter", self.filter,
                "--alpha", repr(float(self.alpha)), "--alpha-low", repr(float(self.alpha_low)),
                "--where", self.where, "--progress", "json"]
        if self.model is not None:
            args[2:2] = ["--model", str(self.model)]
        return args

    def command(self, python: str | None = None) -> list[str]:
        """Full command line running the CLI module with ``python`` (default: this interpreter)."""
        return [python or sys.executable, "-m", "LRPSegmentationLib.pipeline.cli", *self.arguments()]

    @classmethod
    def in_new_run_folder(cls, work_folder: Path | str, **options) -> ExplainRequest:
        """A request whose ``case_dir`` and ``out_dir`` are ``case`` and ``out`` in a new ``run-*`` folder."""
        Path(work_folder).mkdir(parents=True, exist_ok=True)
        run = Path(tempfile.mkdtemp(prefix="run-", dir=work_folder))
        return cls(run / "case", run / "out", **options)


CHECK_PARTS = ("randomisation", "random_logit", "flipping", "ablation", "localisation")
"""The parts of ``lrpseg check`` (pipeline.check.PARTS; not imported: that module imports torch)."""


@dataclass(frozen=True)
class CheckRequest:
    """One ``lrpseg check`` run ("Check this explanation"): the explanation's case, model, rule, target and filter,
    the parts to run and optionally the methods; writes check.json, check.csv and plots/ into ``out_dir``."""

    case_dir: Path
    out_dir: Path
    model: Path | None = None
    device: str = "auto"
    rule: str = "epsilon"
    target: str = "lesion-logits"
    filter: str = "none"
    alpha: float = 1.0
    alpha_low: float = 0.0
    parts: tuple[str, ...] = CHECK_PARTS
    methods: tuple[str, ...] = ()
    plots: bool = True

    def __post_init__(self) -> None:
        if self.filter not in FILTER_KINDS:
            raise JobError(f"filter {self.filter!r}: use one of {', '.join(FILTER_KINDS)}.")
        if not 0.0 <= self.alpha_low <= self.alpha <= 1.0:
            raise JobError(f"alpha band [{self.alpha_low}, {self.alpha}] is invalid: need 0 <= a1 <= alpha <= 1.")
        unknown = sorted(set(self.parts) - set(CHECK_PARTS))
        if unknown:
            raise JobError(f"check parts {unknown}: use {', '.join(CHECK_PARTS)}.")

    def arguments(self) -> list[str]:
        """The ``check`` sub-command and its options (progress as JSON lines; parts not asked for switched off)."""
        args = ["check", str(self.case_dir), "--out", str(self.out_dir), "--device", self.device,
                "--rule", self.rule, "--target", self.target, "--filter", self.filter,
                "--alpha", repr(float(self.alpha)), "--alpha-low", repr(float(self.alpha_low)), "--progress", "json"]
        if self.model is not None:
            args[2:2] = ["--model", str(self.model)]
        args += [f"--no-{part.replace('_', '-')}" for part in CHECK_PARTS if part not in self.parts]
        args += [] if self.plots else ["--no-plots"]
        args += ["--methods", ",".join(self.methods)] if self.methods else []
        return args

    def command(self, python: str | None = None) -> list[str]:
        return [python or sys.executable, "-m", "LRPSegmentationLib.pipeline.cli", *self.arguments()]

    @property
    def check_file(self) -> Path:
        return Path(self.out_dir) / "check.json"

    @classmethod
    def for_explanation(cls, request: ExplainRequest, **options) -> CheckRequest:
        """The check of a finished explain run: same case folder, model, device, rule, target and filter; results
        in ``check`` next to the run's ``out`` folder (``options`` override any field)."""
        values = {"case_dir": request.case_dir, "out_dir": Path(request.out_dir).parent / "check",
                  "model": request.model, "device": request.device, "rule": request.rule, "target": request.target,
                  "filter": request.filter, "alpha": request.alpha, "alpha_low": request.alpha_low}
        return cls(**{**values, **options})


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

    def start(self) -> ChildJob:
        flags = getattr(subprocess, "CREATE_NO_WINDOW", 0) if os.name == "nt" else 0
        self.process = subprocess.Popen(
            self.command, cwd=self.cwd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, text=True, encoding="utf-8", errors="replace", bufsize=1, creationflags=flags,
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
        if self._ended is None and self.finished:
            self._ended = time.perf_counter()
        return events

    @property
    def finished(self) -> bool:
        """The process ended and all its output was read."""
        return (self.process is not None and self.process.poll() is not None
                and (self._reader is None or not self._reader.is_alive()) and self._queue.empty())

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
        """Stop the child (terminate, then kill after 5 s)."""
        self.cancelled = True
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def wait(self, timeout: float | None = None, interval: float = 0.05, on_progress=None) -> bool:
        """Block until the job ends (for scripts and tests), passing events to ``on_progress``; True on success."""
        deadline = None if timeout is None else time.perf_counter() + timeout
        while not self.finished:
            for event in self.poll():
                if on_progress is not None:
                    on_progress(event)
            if deadline is not None and time.perf_counter() > deadline:
                self.cancel()
                break
            time.sleep(interval)
        for event in self.poll():
            if on_progress is not None:
                on_progress(event)
        return self.succeeded


def missing_requirements(requirements: Mapping[str, str] = PIP_REQUIREMENTS) -> list[str]:
    """The pip requirements of ``requirements`` whose module cannot be imported here (torch is not among them:
    in Slicer it comes from the PyTorch extension)."""
    import importlib.util

    return [spec for module, spec in requirements.items() if importlib.util.find_spec(module) is None]


def model_summary(path: Path | str | None = None) -> str:
    """One line about a model file from its metadata (default: the bundled model); reads no weights, needs no torch."""
    from LRPSegmentationLib.net import weights

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


def start_explain(request: ExplainRequest | CheckRequest, library_parent: Path | str,
                  python: str | None = None) -> ChildJob:
    """Start ``lrpseg explain`` (or ``check``, for a :class:`CheckRequest`) for ``request`` in a child process that
    imports LRPSegmentationLib from ``library_parent`` (the Slicer module folder); non-blocking: poll or wait on the
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
