"""Static checks of the Slicer module: packaging lists, widget names, file-scope imports, syntax, metadata."""

from __future__ import annotations

import ast
import json
import re
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

MODULE_DIR = Path(__file__).resolve().parents[2]
REPO_DIR = MODULE_DIR.parent
MODULE_FILE = MODULE_DIR / "LRPSegmentation.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "LRPSegmentation.ui"
NOT_SHIPPED = {"Testing", "__pycache__"}
LIGHT_IMPORTS = {"slicer", "vtk", "qt", "ctk", "numpy", "SimpleITK", "scipy", "LRPSegmentationLib", "typing",
                 "__future__"}


def cmake_lists() -> list[str]:
    """The files listed in the module CMakeLists.txt, relative to the module folder (explicit names only)."""
    text = re.sub(r"#[^\n]*", "", (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8"))
    assert not re.search(r"file\(\s*GLOB", text, re.I), "list every shipped file by name, no file(GLOB ...)"
    listed: list[str] = []
    for name in ("MODULE_PYTHON_SCRIPTS", "MODULE_PYTHON_RESOURCES"):
        block = re.search(rf"set\(\s*{name}\s+(.*?)\)", text, re.S)
        assert block, f"{name} is not set in LRPSegmentation/CMakeLists.txt"
        tokens = block.group(1).split()
        assert not [t for t in tokens if "${" in t or "*" in t], f"{name}: only explicit file names, please"
        listed += tokens
    assert "WITH_GENERIC_TESTS" in text and "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text
    assert "SCRIPTS ${MODULE_PYTHON_SCRIPTS}" in text and "RESOURCES ${MODULE_PYTHON_RESOURCES}" in text
    return listed


def shipped_files() -> list[str]:
    files = []
    for path in MODULE_DIR.rglob("*"):
        relative = path.relative_to(MODULE_DIR)
        if not path.is_file() or set(relative.parts) & NOT_SHIPPED or relative.name == "CMakeLists.txt":
            continue
        if any(part.endswith(".egg-info") for part in relative.parts) or relative.suffix == ".pyc":
            continue
        files.append(relative.as_posix())
    return sorted(files)


def test_every_module_file_is_listed_in_cmake():
    unlisted = sorted(set(shipped_files()) - set(cmake_lists()))
    assert not unlisted, f"add these to LRPSegmentation/CMakeLists.txt: {unlisted}"


def test_every_listed_file_exists_once():
    listed = cmake_lists()
    missing = [f for f in listed if not (MODULE_DIR / f).is_file()]
    assert not missing, f"listed in CMake but missing (the configure step would fail): {missing}"
    assert len(listed) == len(set(listed))
    for required in ("LRPSegmentation.py", "Resources/UI/LRPSegmentation.ui", "LRPSegmentationLib/mrml/live.py",
                     "Resources/Models/lrpseg-synthetic-b8.safetensors", "Resources/Models/MODEL_CARD.md"):
        assert required in listed, required
    assert [f for f in listed if f.endswith(".py") and "/" not in f] == ["LRPSegmentation.py"]  # one Slicer module
    scripts = [f for f in listed if f.endswith(".py")]
    assert all(f == "LRPSegmentation.py" or f.startswith("LRPSegmentationLib/") for f in scripts)


def test_module_file_stays_a_thin_layer():
    """Numerics and MRML work live in LRPSegmentationLib: the module file has no numpy and no vtk node building."""
    text = MODULE_FILE.read_text(encoding="utf-8")
    assert "numpy" not in text and "np." not in text
    assert "AddNewNodeByClass" not in text and "vtkMatrix4x4" not in text
    for call in ("LiveExplanation.import_run", "lrpjob.start_explain", "case_nodes.write_case_folder"):
        assert call in text, call


def module_tree() -> ast.Module:
    return ast.parse(MODULE_FILE.read_text(encoding="utf-8"), feature_version=(3, 12))


def ui_widgets() -> dict[str, ET.Element]:
    root = ET.parse(UI_FILE).getroot()
    return {w.get("name"): w for w in root.iter("widget")}


def test_module_parses_as_python_312():
    for path in [MODULE_FILE, *sorted((MODULE_DIR / "LRPSegmentationLib").rglob("*.py"))]:
        ast.parse(path.read_text(encoding="utf-8"), filename=str(path), feature_version=(3, 12))


def test_widget_names_used_by_the_code_exist_in_the_ui():
    widgets = ui_widgets()
    used, patterns = set(), []
    for node in ast.walk(module_tree()):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "ui"
                and isinstance(node.value.value, ast.Name) and node.value.value.id == "self"):
            used.add(node.attr)
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
                and isinstance(node.args[0], ast.Attribute) and node.args[0].attr == "ui"):
            name = node.args[1]
            if isinstance(name, ast.JoinedStr):
                patterns.append("".join(re.escape(v.value) if isinstance(v, ast.Constant) else r"\w+"
                                        for v in name.values))
    assert used, "the module uses no self.ui widgets?"
    missing = sorted(used - set(widgets))
    assert not missing, f"widgets used in LRPSegmentation.py but absent from the .ui: {missing}"
    for pattern in patterns:
        assert any(re.fullmatch(pattern, name) for name in widgets), f"no widget matches {pattern}"
    for kind in ("None", "Pass", "Clamp"):
        assert widgets[f"filter{kind}RadioButton"].get("class") == "QRadioButton"


def parameter_fields() -> set[str]:
    for node in module_tree().body:
        if isinstance(node, ast.ClassDef) and node.name == "LRPSegmentationParameterNode":
            return {s.target.id for s in node.body if isinstance(s, ast.AnnAssign)}
    raise AssertionError("LRPSegmentationParameterNode not found")


def test_ui_structure_and_parameter_bindings():
    root = ET.parse(UI_FILE).getroot()
    top = root.find("widget")
    assert top.get("class") == "qMRMLWidget"
    widgets = ui_widgets()
    for section in ("inputs", "model", "explanation", "display", "scores"):
        assert widgets[f"{section}CollapsibleButton"].get("class") == "ctkCollapsibleButton"
    bindings = {}
    for name, widget in widgets.items():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bindings[name] = prop.find("string").text
    fields = parameter_fields()
    unknown = {w: p for w, p in bindings.items() if p not in fields}
    assert not unknown, f"SlicerParameterName without a parameter-node field: {unknown}"
    for key in ("adc", "mtt", "rcbf", "rcbv", "tmax", "ttp"):
        assert widgets[f"{key}Selector"].get("class") == "qMRMLNodeComboBox"
        assert bindings[f"{key}Selector"] == f"{key}Volume"
    assert widgets["alphaSlider"].get("class") == "ctkSliderWidget"
    assert widgets["scoresTableView"].get("class") == "qMRMLTableView"
    assert bindings["alphaSlider"] == "alpha" and bindings["opacitySlider"] == "opacity"


def test_no_heavy_import_at_file_scope():
    stdlib = set(sys.stdlib_module_names)
    for node in module_tree().body:
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        for name in names:
            top = name.split(".")[0]
            assert top in stdlib or top in LIGHT_IMPORTS, f"file-scope import of {name} in LRPSegmentation.py"
    # the LRPSegmentationLib modules imported at file scope must not pull torch in (run it for real)
    imported = sorted({node.module for node in module_tree().body
                       if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("LRPSegmentationLib")})
    assert imported
    code = ("import sys\n" + "".join(f"import {m}\n" for m in imported)
            + "heavy = [m for m in ('torch', 'safetensors', 'tqdm') if m in sys.modules]\n"
            + "assert not heavy, heavy\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=MODULE_DIR)
    assert result.returncode == 0, result.stderr[-2000:]


def test_torch_is_only_imported_inside_functions():
    text = MODULE_FILE.read_text(encoding="utf-8")
    assert 'pip_install("torch' not in text and "pip_install('torch" not in text
    assert "PyTorchUtils" in text


def test_extension_metadata():
    top = (REPO_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
    assert re.search(r"project\(LRPSegmentation\)", top)
    for variable in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                     "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        assert re.search(rf"set\({variable}\s+\"[^\"]+\"\)", top), variable
    assert re.search(r'set\(EXTENSION_DEPENDS\s+"PyTorch"\)', top)
    assert "add_subdirectory(LRPSegmentation)" in top and "Slicer_EXTENSION_CPACK" in top
    entry = json.loads((REPO_DIR / "LRPSegmentation.json").read_text(encoding="utf-8"))
    assert entry["build_dependencies"] == ["PyTorch"] and entry["category"] == "Segmentation"
    assert entry["scm_url"].startswith("https://") and "$schema" in entry


@pytest.mark.parametrize("name", ["LRPSegmentation.png", "LRPSegmentationSample.png"])
def test_icons_are_128_pixel_pngs(name):
    data = (MODULE_DIR / "Resources" / "Icons" / name).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (128, 128)
