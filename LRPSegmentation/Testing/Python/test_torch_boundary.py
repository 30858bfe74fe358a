"""The process boundary: everything the Slicer process imports works in an interpreter where ``import torch`` fails.

torch comes from the PyTorch extension (it may be missing, and it costs seconds and memory); only the child
process that runs ``lrpseg explain`` may import it. The check runs for real in a fresh interpreter whose import
system refuses torch, imports every library module the Slicer side uses (the module file's imports at file scope
and inside its functions, and every module of the Slicer-side packages), and drives the live slider once.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

MODULE_DIR = Path(__file__).resolve().parents[2]
LIB_DIR = MODULE_DIR / "LRPSegmentationLib"
SLICER_SIDE_PACKAGES = ("mrml", "analysis", "data")
"""Library packages whose every module runs in the Slicer process (besides ``options`` and what the module uses)."""

NO_TORCH = '''
import importlib.abc, sys

class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch" or name == "safetensors.torch":
            raise ImportError(f"{name} imported in the Slicer process")
        return None

sys.meta_path.insert(0, NoTorch())
'''


def module_name(path: Path) -> str:
    parts = path.relative_to(MODULE_DIR).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_file_imports() -> set[str]:
    """Library modules the Slicer module file imports anywhere (file scope and function bodies)."""
    tree = ast.parse((MODULE_DIR / "LRPSegmentation.py").read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("LRPSegmentationLib"):
            found.add(node.module)
            base = LIB_DIR.joinpath(*node.module.split(".")[1:])
            found |= {f"{node.module}.{a.name}" for a in node.names if (base / f"{a.name}.py").is_file()}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("LRPSegmentationLib")}
    return found


def slicer_side_modules() -> list[str]:
    names = module_file_imports() | {"LRPSegmentationLib.options"}
    for package in SLICER_SIDE_PACKAGES:
        names |= {module_name(p) for p in (LIB_DIR / package).glob("*.py")}
    return sorted(names)


LIVE_SLIDER = '''
import numpy as np
from LRPSegmentationLib.data.synthetic import generate_case
from LRPSegmentationLib.mrml import case as case_nodes, headless
from LRPSegmentationLib.mrml.live import LiveExplanation, slider_filter

env = headless.headless_scene()
case = generate_case(3, shape=(6, 24, 24)).to_case("sample")
nodes = case_nodes.add_case(env.scene, case)
relevance = np.random.default_rng(0).normal(size=case.images.shape).astype(np.float32)
live = LiveExplanation(env.scene, relevance, case.images, case.geometry, ground_truth=case.ground_truth,
                       backgrounds=nodes.volumes)
for kind, alpha in (("pass", 0.3), ("clamp", 0.1), ("none", 1.0)):
    live.apply(slider_filter(kind, alpha))
live.show(opacity=0.5)
assert len(live.rows) == 7
'''


def run_without_torch(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NO_TORCH + code], capture_output=True, text=True, cwd=MODULE_DIR,
                          timeout=300)


def test_the_blocker_blocks():
    result = run_without_torch("import LRPSegmentationLib.lrp\n")
    assert result.returncode != 0 and "torch imported in the Slicer process" in result.stderr


def test_the_slicer_side_imports_without_torch():
    modules = slicer_side_modules()
    assert {"LRPSegmentationLib.mrml.session", "LRPSegmentationLib.mrml.live", "LRPSegmentationLib.mrml.job",
            "LRPSegmentationLib.analysis.scores", "LRPSegmentationLib.analysis.filters"} <= set(modules)
    code = "".join(f"import {name}\n" for name in modules)
    code += "assert 'torch' not in sys.modules\n"
    result = run_without_torch(code)
    assert result.returncode == 0, result.stderr[-3000:]


def test_the_live_slider_runs_without_torch():
    pytest.importorskip("slicer", reason="slicer-core is needed for the MRML side")
    result = run_without_torch(LIVE_SLIDER + "assert 'torch' not in sys.modules\n")
    assert result.returncode == 0, result.stderr[-3000:]
