"""Slicer's own Python layer over slicer-core's real MRML, for running the module file outside the application.

``../shared/slicer-python`` holds Slicer's unmodified ``parameterNodeWrapper``, ``ScriptedLoadableModule`` and
``i18n``; slicer-core ships MRML, the logics and the real ``slicer.util``. What only the application has is
replaced by the least that lets that code run: ``qt`` and ``ctk`` modules whose classes are bare names (the wrapper
and the base classes refer to them; nothing here draws a widget) and a ``slicer.app`` with the attributes the
module reads (``cachePath``, ``processEvents``, ``connect``, ``translate``). Numerics, MRML, the wrapper and the
jobs are real. A user's clone has no ``../shared``: :func:`slicer_python_dir` is then None and the tests skip.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parents[3]
MODULE_DIR = REPO_DIR / "LRPSegmentation"


QT_WIDGET_NAMES = ("qMRMLNodeComboBox", "qMRMLRangeWidget", "qMRMLSliderWidget", "qMRMLSpinBox", "qMRMLWidget",
                   "qSlicerWidget", "qMRMLUtils", "qMRMLScreenShotDialog")


def slicer_python_dir() -> Path | None:
    folder = REPO_DIR.parent / "shared" / "slicer-python" / "slicer"
    return folder if (folder / "parameterNodeWrapper" / "wrapper.py").is_file() else None


class _Names(types.ModuleType):
    """A module whose every attribute is a class of that name (made once): what the wrapper needs of qt/ctk."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        made = type(name, (), {"__module__": self.__name__, "__init__": lambda self, *args, **kwargs: None})
        setattr(self, name, made)
        return made


class App:
    """The attributes of ``slicer.app`` the module and Slicer's base classes read outside a GUI."""

    def __init__(self, cache_path: Path) -> None:
        self.cachePath = str(cache_path)
        self.commandOptions = types.SimpleNamespace(noMainWindow=True)
        self.startup_slots: list = []
        self.processed_events = 0

    def processEvents(self, *args) -> None:
        self.processed_events += 1

    def connect(self, signal: str, slot) -> None:
        if signal == "startupCompleted()":
            self.startup_slots.append(slot)

    def translate(self, context: str, text: str) -> str:
        return text

    def layoutManager(self):
        return None  # no views without the application (slicer.util skips fitting them)


def _load(name: str, path: Path, package: bool = False):
    spec = importlib.util.spec_from_file_location(
        name, path, submodule_search_locations=[str(path.parent)] if package else None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def install(cache_path: Path):
    """Make ``slicer`` what a module sees in the application (once per process); returns the ``slicer`` package."""
    import slicer  # slicer-core: real MRML and slicer.util

    folder = slicer_python_dir()
    if folder is None:
        raise RuntimeError("../shared/slicer-python is not there")
    for name in ("qt", "ctk"):
        sys.modules.setdefault(name, _Names(name))
    widgets = _Names("slicer")
    for name in QT_WIDGET_NAMES:  # Slicer's Qt widget classes the wrapper's GUI connectors name
        if not hasattr(slicer, name):
            setattr(slicer, name, getattr(widgets, name))
    if not isinstance(getattr(slicer, "app", None), App):
        slicer.app = App(cache_path)
    if "slicer.parameterNodeWrapper" not in sys.modules:
        slicer.i18n = _load("slicer.i18n", folder / "i18n.py")
        slicer.parameterNodeWrapper = _load("slicer.parameterNodeWrapper", folder / "parameterNodeWrapper" /
                                            "__init__.py", package=True)
        slicer.ScriptedLoadableModule = _load("slicer.ScriptedLoadableModule", folder / "ScriptedLoadableModule.py")
    return slicer


def module_file():
    """The module file ``LRPSegmentation.py`` imported as Slicer imports it (after :func:`install`)."""
    if "LRPSegmentation" not in sys.modules:
        if str(MODULE_DIR) not in sys.path:
            sys.path.insert(0, str(MODULE_DIR))
        _load("LRPSegmentation", MODULE_DIR / "LRPSegmentation.py")
    return sys.modules["LRPSegmentation"]
