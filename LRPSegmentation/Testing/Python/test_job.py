"""The child-process job the Slicer module runs ``lrpseg explain`` with: command line, progress, errors, cancel."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from LRPSegmentationLib.mrml.job import (
    ChildJob,
    ExplainRequest,
    JobError,
    ProgressEvent,
    child_environment,
    parse_progress,
)


def test_request_command_line_matches_the_cli_contract(tmp_path):
    from LRPSegmentationLib.lrp import DEFAULT_PRESET  # the job's default rule must follow the library's

    request = ExplainRequest(tmp_path / "case", tmp_path / "out", model=tmp_path / "m.safetensors", device="cpu",
                             filter="clamp", alpha=0.4, alpha_low=0.05, where="layers", target="probability")
    command = request.command("/opt/PythonSlicer")
    assert command[:4] == ["/opt/PythonSlicer", "-m", "LRPSegmentationLib.pipeline.cli", "explain"]
    assert command[4] == str(tmp_path / "case")
    options = dict(zip(command[5::2], command[6::2]))
    assert options == {"--model": str(tmp_path / "m.safetensors"), "--out": str(tmp_path / "out"), "--device": "cpu",
                       "--rule": DEFAULT_PRESET, "--target": "probability", "--filter": "clamp", "--alpha": "0.4",
                       "--alpha-low": "0.05", "--where": "layers", "--progress": "json"}
    assert "--model" not in ExplainRequest(tmp_path, tmp_path).arguments()


@pytest.mark.parametrize("kwargs, word", [({"filter": "band"}, "filter"), ({"where": "inside"}, "where"),
                                          ({"alpha": 0.1, "alpha_low": 0.2}, "alpha")])
def test_request_rejects_bad_options(tmp_path, kwargs, word):
    with pytest.raises(JobError, match=word):
        ExplainRequest(tmp_path, tmp_path, **kwargs)


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
    assert job.start().wait(timeout=30, on_progress=seen.append)
    assert [e.stage for e in seen] == ["load", "predict", "done"] and seen[-1].fraction == 1.0
    assert job.lines == ["a warning line"] and job.returncode == 0 and job.elapsed > 0


def test_job_failure_gives_the_last_line(tmp_path):
    job = script_job(tmp_path, "import sys\nprint('{\"stage\": \"load\", \"fraction\": 0.0, \"message\": \"\"}')\n"
                     "sys.stderr.write('Case folder x lacks TTP\\n')\nsys.exit(2)\n")
    assert not job.start().wait(timeout=30)
    assert job.returncode == 2 and job.error_message() == "Case folder x lacks TTP"


def test_job_cancel_stops_the_child(tmp_path):
    start_line = '{"stage": "start", "fraction": 0, "message": ""}'
    job = script_job(tmp_path, f"import time\nprint({start_line!r}, flush=True)\ntime.sleep(60)\n")
    job.start()
    deadline = time.time() + 20
    while not job.poll() and time.time() < deadline:
        time.sleep(0.05)
    job.cancel()
    assert not job.wait(timeout=20)
    assert job.cancelled and job.error_message() == "Cancelled." and job.elapsed < 30


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
