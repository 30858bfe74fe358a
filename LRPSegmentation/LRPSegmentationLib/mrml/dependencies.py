"""What the child process needs in Slicer's Python, and installing it (asking the user once).

torch comes from the PyTorch extension (``PyTorchUtils`` picks the CUDA build for the machine); every other
third-party package the child imports is either bundled with Slicer or listed in
:data:`~LRPSegmentationLib.mrml.job.PIP_REQUIREMENTS` (plus, for a MONAI or nnU-Net model, the packages of its route)
and installed here with ``slicer.util.pip_install``.
"""

from __future__ import annotations

from pathlib import Path

from LRPSegmentationLib.mrml.job import child_requirements, missing_requirements, pip_calls

TORCH_REQUIREMENT = ">=2.1"


def missing_packages(model: Path | str | None = None) -> list[str]:
    """Import names of the child's packages for ``model`` (torch first; None: the bundled model) that this Python
    cannot import."""
    requirements = {"torch": "torch", **child_requirements(model)}
    missing = set(missing_requirements(requirements))
    return [name for name, spec in requirements.items() if spec in missing]


def planned_installs(model: Path | str | None = None) -> list[list[str]]:
    """The ``slicer.util.pip_install`` calls :func:`ensure_installed` would make for ``model`` (torch aside: it
    comes from the PyTorch extension); empty when everything is there."""
    return pip_calls(missing_requirements(child_requirements(model)))


def skip_reason() -> str | None:
    """Why the module's self-test cannot run the model here (None when everything is installed)."""
    missing = missing_packages()
    if "torch" in missing:
        return "PyTorch is not installed: install the PyTorch extension"
    if missing:
        return f"{', '.join(missing)} not installed: press Run in the module once to install them"
    return None


def ensure_installed(ask_user: bool = True, model: Path | str | None = None) -> bool:
    """Install what ``model`` needs and is missing (after one confirmation when ``ask_user``): torch through the
    PyTorch extension, the rest with pip (:func:`planned_installs`); False when the user declined."""
    import slicer

    try:
        import PyTorchUtils
    except ModuleNotFoundError:
        raise RuntimeError("This module needs the PyTorch extension: install 'PyTorch' from the Extensions Manager "
                           "and restart Slicer.") from None
    torch_logic, calls = PyTorchUtils.PyTorchUtilsLogic(), planned_installs(model)
    names = ", ".join((["PyTorch"] if not torch_logic.torchInstalled() else [])
                      + [spec for call in calls for spec in call if spec != "--no-deps"])
    if names and ask_user and not slicer.util.confirmOkCancelDisplay(
            f"LRPSegmentation needs {names}. Install now? (This can take minutes.)"):
        return False
    if not torch_logic.torchInstalled():
        torch_logic.installTorch(askConfirmation=False, torchVersionRequirement=TORCH_REQUIREMENT)
    for call in calls:
        slicer.util.pip_install(call)
    return True
