"""The README's Python examples run as written (each in a fresh interpreter, in an empty folder)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[3] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def outside_slicer() -> list[str]:
    """The examples that need no Slicer application (the console one runs in test_slicer_layer.py)."""
    return [b for b in python_blocks() if "getModuleLogic" not in b]


def test_readme_has_the_examples():
    blocks = python_blocks()
    assert len(blocks) == 3 and len(outside_slicer()) == 2


@pytest.mark.parametrize("index", range(2), ids=["headless-session", "pipeline"])
def test_readme_example_runs(index, tmp_path):
    if index == 0:
        pytest.importorskip("slicer", reason="slicer-core is needed for the headless session example")
    block = outside_slicer()[index]
    result = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip(), "the example prints its result"
