"""Every third-party package the child process imports is bundled with Slicer or installed by the module.

The child's library modules are found by running the real ``lrpseg explain`` (as the module runs it) and listing
the LRPSegmentationLib modules it loaded; their imports (file scope and function bodies) are read from the code.
A package outside Slicer's bundle and the module's install list would fail every Run on a stock Slicer.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from LRPSegmentationLib.mrml.job import MODEL_REQUIREMENTS, PIP_REQUIREMENTS, SLICER_BUNDLED

MODULE_DIR = Path(__file__).resolve().parents[2]
FROM_THE_PYTORCH_EXTENSION = ("torch",)

CHILD = """
import sys
from LRPSegmentationLib.pipeline.cli import main
code = main(["explain", sys.argv[1], "--model", sys.argv[2], "--out", sys.argv[3], "--device", "cpu",
             "--progress", "json", "--target", "probability"])
print("MODULES", " ".join(sorted(m for m in sys.modules if m.startswith("LRPSegmentationLib"))))
sys.exit(code)
"""


def third_party_imports(module: str) -> set[str]:
    path = MODULE_DIR.joinpath(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
        found |= {n.split(".")[0] for n in names}
    return {n for n in found if n not in sys.stdlib_module_names and n != "LRPSegmentationLib"}


def test_the_child_imports_only_what_slicer_has_or_the_module_installs(synthetic_case_dir, tiny_model_file,
                                                                      tmp_path):
    result = subprocess.run([sys.executable, "-c", CHILD, str(synthetic_case_dir), str(tiny_model_file),
                             str(tmp_path / "out")], capture_output=True, text=True, timeout=300, cwd=MODULE_DIR)
    assert result.returncode == 0, result.stderr[-3000:]
    modules = next(line for line in result.stdout.splitlines() if line.startswith("MODULES")).split()[1:]
    assert "LRPSegmentationLib.pipeline.explain_case" in modules and "LRPSegmentationLib.analysis.preview" in modules
    used = set().union(*(third_party_imports(m) for m in modules))
    allowed = set(SLICER_BUNDLED) | set(PIP_REQUIREMENTS) | set(FROM_THE_PYTORCH_EXTENSION) | set(MODEL_REQUIREMENTS)
    assert used - allowed == set(), f"the child imports {sorted(used - allowed)}: add them to PIP_REQUIREMENTS"
    assert {"matplotlib", "safetensors", "torch"} <= used
