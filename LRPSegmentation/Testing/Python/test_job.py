"""The child-process job the Slicer module runs ``lrpseg explain`` with: command line, progress, errors, cancel."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from LRPSegmentationLib.mrml.job import (
    BandsRequest,
    ChildJob,
    ExplainRequest,
    JobError,
    ProgressEvent,
    child_environment,
    parse_progress,
)


def test_request_command_line_matches_the_cli_contract(tmp_path):
    request = ExplainRequest(tmp_path / "case", tmp_path / "out", model=tmp_path / "m.safetensors", device="cpu",
                             filter="clamp", alpha=0.4, alpha_low=0.05, where="layers", target="probability")
    command = request.command("/opt/PythonSlicer")
    assert command[:4] == ["/opt/PythonSlicer", "-m", "LRPSegmentationLib.pipeline.cli", "explain"]
    assert command[4] == str(tmp_path / "case")
    options = dict(zip(command[5::2], command[6::2]))
    assert options == {"--model": str(tmp_path / "m.safetensors"), "--out": str(tmp_path / "out"), "--device": "cpu",
                       "--rule": "epsilon", "--target": "probability", "--filter": "clamp", "--alpha": "0.4",
                       "--alpha-low": "0.05", "--where": "layers", "--progress": "json"}
    assert "--model" not in ExplainRequest(tmp_path, tmp_path).arguments()


@pytest.mark.parametrize("kwargs, word", [({"filter": "band"}, "filter"), ({"where": "inside"}, "where"),
                                          ({"alpha": 0.1, "alpha_low": 0.2}, "alpha")])
def test_request_rejects_bad_options(tmp_path, kwargs, word):
    with pytest.raises(JobError, match=word):
        ExplainRequest(tmp_path, tmp_path, **kwargs)


def test_bands_request_command_line_parses_as_the_cli_bands_command(tmp_path):
    from LRPSegmentationLib.pipeline.cli import build_parser

    request = BandsRequest(tmp_path / "case", tmp_path / "out", model=tmp_path / "m.safetensors", device="cpu",
                           rule="epsilon-zb", target="probability", step=0.1, chunk=5, bands="pass:0.2;clamp:0.1")
    args = build_parser().parse_args(request.arguments())
    assert (args.command, args.case, args.out, args.model) == ("bands", str(tmp_path / "case"), str(tmp_path / "out"),
                                                              str(tmp_path / "m.safetensors"))
    assert (args.device, args.rule, args.target, args.step, args.chunk, args.bands, args.progress) == (
        "cpu", "epsilon-zb", "probability", 0.1, 5, "pass:0.2;clamp:0.1", "json")
    assert "--bands" not in BandsRequest(tmp_path, tmp_path).arguments()
    for kwargs, word in (({"step": 0.0}, "step"), ({"chunk": 0}, "chunk"), ({"rule": "lrp"}, "rule")):
        with pytest.raises(JobError, match=word):
            BandsRequest(tmp_path, tmp_path, **kwargs)


def test_parse_progress_lines():
    event = parse_progress('{"stage": "lrp", "fraction": 0.5, "message": "layer 3"}')
    assert event == ProgressEvent("lrp", 0.5, "layer 3")
    assert parse_progress('{"stage": "note", "fraction": null, "message": "CPU fallback"}').fraction is None
    assert parse_progress("Traceback (most recent call last):") is None
    assert parse_progress("{not json") is None
    assert parse_progress('{"fraction": 1}') is None


def script_job(tmp_path: Path, body: str) -> ChildJob:
    script = tmp_path / "child.py"
    script.write_text(body, encoding="utf-8")
    return ChildJob([sys.executable, str(script)], env=child_environment(tmp_path))


def test_job_reports_progress_and_success(tmp_path):
    lines = [json.dumps({"stage": s, "fraction": f, "message": m}) for s, f, m in
             [("load", 0.1, "case"), ("predict", 0.5, ""), ("done", 1.0, "ok")]]
    job = script_job(tmp_path, "import os, sys\nassert os.environ['PYTHONPATH'].split(os.pathsep)[0] == "
                     f"{str(tmp_path)!r}\nprint('a warning line')\n" + "".join(f"print({line!r})\n" for line in lines))
    seen = []
    began = time.perf_counter()
    assert job.start().wait(timeout=30, on_progress=seen.append)
    took = time.perf_counter() - began
    assert [e.stage for e in seen] == ["load", "predict", "done"] and seen[-1].fraction == 1.0
    assert job.lines == ["a warning line"] and job.returncode == 0
    ended = job.elapsed
    time.sleep(0.05)
    assert 0 < ended <= took and job.elapsed == ended  # measured until the child ended, then fixed


def test_job_failure_gives_the_last_line(tmp_path):
    job = script_job(tmp_path, "import sys\nprint('{\"stage\": \"load\", \"fraction\": 0.0, \"message\": \"\"}')\n"
                     "sys.stderr.write('Case folder x lacks TTP\\n')\nsys.exit(2)\n")
    assert not job.start().wait(timeout=30)
    assert job.returncode == 2 and job.error_message() == "Case folder x lacks TTP"


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (an exited process computes nothing)."""
    stat = Path(f"/proc/{pid}/stat")
    if stat.is_file():
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


SLEEPER = """import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # as stubborn as a busy computation: only SIGKILL stops it
open(sys.argv[1], "w").write(str(os.getpid()))
print('{"stage": "start", "fraction": 0, "message": ""}', flush=True)
time.sleep(120)
"""


def started_job(job: ChildJob, pid_file: Path) -> int:
    job.start()
    deadline = time.time() + 30
    while not (job.poll() and pid_file.is_file() and pid_file.read_text()) and time.time() < deadline:
        time.sleep(0.05)
    return int(pid_file.read_text())


@pytest.mark.skipif(os.name == "nt", reason="POSIX process groups; Windows uses taskkill /T")
@pytest.mark.parametrize("through_launcher", [False, True], ids=["python", "launcher"])
def test_cancel_stops_the_whole_process_tree_at_once(tmp_path, through_launcher):
    """Like PythonSlicer (a launcher whose child runs Python and keeps the pipe open), the computing process is a
    grandchild that ignores SIGTERM; Cancel returns at once and leaves no process behind within 5 s."""
    script, pid_file = tmp_path / "child.py", tmp_path / "pid"
    script.write_text(SLEEPER, encoding="utf-8")
    command = [sys.executable, str(script), str(pid_file)]
    if through_launcher:
        launcher = tmp_path / "PythonSlicer"
        launcher.write_text('#!/bin/sh\ntrap "" TERM\n"$@"\necho launcher-done\n', encoding="utf-8")
        launcher.chmod(0o755)
        command = [str(launcher), *command]
    job = ChildJob(command, env=child_environment(tmp_path))
    worker = started_job(job, pid_file)
    assert alive(worker)
    began = time.perf_counter()
    job.cancel()
    assert time.perf_counter() - began < 0.5  # never blocks the GUI thread
    while not job.finished and time.perf_counter() - began < 5:
        job.poll()
        time.sleep(0.05)
    assert job.finished and not alive(worker) and not alive(job.process.pid)
    assert job.cancelled and not job.succeeded and job.error_message() == "Cancelled."


def test_new_run_folder_request_and_child_start(tmp_path):
    from LRPSegmentationLib.mrml.job import ExplainRequest, python_executable, start_explain

    first = ExplainRequest.in_new_run_folder(tmp_path / "work", device="cpu", filter="pass", alpha=0.3)
    second = ExplainRequest.in_new_run_folder(tmp_path / "work")
    assert first.case_dir.parent != second.case_dir.parent and first.case_dir.parent.is_dir()
    assert (first.case_dir.name, first.out_dir.name, first.alpha, first.device) == ("case", "out", 0.3, "cpu")
    assert Path(python_executable()).is_file()
    job = start_explain(first, Path(__file__).resolve().parents[2], python=sys.executable)
    assert not job.wait(timeout=120)  # the case folder is empty: the child fails with a one-line reason
    assert job.returncode != 0 and str(first.case_dir) in job.error_message()


def test_missing_requirements_and_model_summary(tmp_path):
    from LRPSegmentationLib.mrml.job import missing_requirements, model_summary

    assert missing_requirements({"json": "json", "no_such_module_xyz": "no-such-module-xyz>=1"}) == [
        "no-such-module-xyz>=1"]
    with pytest.raises(ValueError, match="nothing.safetensors"):
        model_summary(tmp_path / "nothing.safetensors")
