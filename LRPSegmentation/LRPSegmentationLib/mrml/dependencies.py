"""What the child process needs in Slicer's Python, and installing it (asking the user once).

torch comes from the PyTorch extension (``PyTorchUtils`` picks the CUDA build for the machine); every other
third-party package the child imports is either bundled with Slicer or listed in
:data:`~LRPSegmentationLib.mrml.job.PIP_REQUIREMENTS` and installed here with ``slicer.util.pip_install``.
"""

from __future__ import annotations

import importlib.util

from LRPSegmentationLib.mrml.job import PIP_REQUIREMENTS, missing_requirements

TORCH_REQUIREMENT = ">=2.1"


def missing_packages() -> list[str]:
    """Import names of the child's packages (torch first) that this Python cannot import."""
    missing = []
    for name in ("torch", *PIP_REQUIREMENTS):
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    return missing


def skip_reason() -> str | None:
    """Why the module's self-test cannot run the model here (None when everything is installed)."""
    missing = missing_packages()
    if "torch" in missing:
        return "PyTorch is not installed: install the PyTorch extension"
    if missing:
        return f"{', '.join(missing)} not installed: press Run in the module once to install them"
    return None


def ensure_installed(ask_user: bool = True) -> bool:
    """Install what is missing (after one confirmation when ``ask_user``); False when the user declined."""
    import slicer

    try:
        import PyTorchUtils
    except ModuleNotFoundError:
        raise RuntimeError("This module needs the PyTorch extension: install 'PyTorch' from the Extensions Manager "
                           "and restart Slicer.") from None
    torch_logic, missing = PyTorchUtils.PyTorchUtilsLogic(), missing_requirements()
    names = ", ".join((["PyTorch"] if not torch_logic.torchInstalled() else []) + missing)
    if names and ask_user and not slicer.util.confirmOkCancelDisplay(
            f"LRPSegmentation needs {names}. Install now? (This can take minutes.)"):
        return False
    if not torch_logic.torchInstalled():
        torch_logic.installTorch(askConfirmation=False, torchVersionRequirement=TORCH_REQUIREMENT)
    if missing:
        slicer.util.pip_install(missing)
    return True
