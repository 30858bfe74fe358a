"""A MONAI network as a model: class name + constructor arguments (JSON) + a state dict (safetensors or .pt).

The model description is a JSON file (nothing in it is executed)::

    {"format": "lrpseg-monai", "class": "BasicUNet",
     "args": {"spatial_dims": 3, "in_channels": 3, "out_channels": 2, "features": [16, 16, 32, 64, 128, 16]},
     "weights": "basicunet.safetensors",
     "modalities": ["DWI", "ADC", "FLAIR"],
     "preprocess": {"size": [32, 128, 128], "normalization": "zscore"},
     "pad_multiple": 16, "lesion_class": 1}

``class`` must name a class of ``monai.networks.nets`` (looked up as an attribute; no import path from the file is
followed). ``weights`` (relative to the JSON file) is a ``.safetensors`` file or a ``.pt``/``.pth`` state dict
read with ``torch.load(weights_only=True)`` (a ``{"state_dict": ...}`` or ``{"model": ...}`` wrapper is unwrapped).
``pad_multiple`` zero-pads the input to a multiple of the network's total stride (16 for BasicUNet).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from LRPSegmentationLib.net.weights import LoadedModel, ModelInfo, WeightsError, file_sha256

FORMAT = "lrpseg-monai"


def is_monai_description(path: Path) -> bool:
    """Whether ``path`` is a JSON model description of this module (cheap check, no torch)."""
    if path.suffix.lower() != ".json" or not path.is_file():
        return False
    try:
        return json.loads(path.read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def read_description(path: Path | str) -> dict[str, Any]:
    """The checked JSON description (no torch needed)."""
    path = Path(path)
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise WeightsError(f"{path}: cannot read the MONAI model description ({error}).") from None
    if not isinstance(values, dict) or values.get("format") != FORMAT:
        raise WeightsError(f"{path}: not a MONAI model description (needs \"format\": \"{FORMAT}\").")
    for key, kind in (("class", str), ("args", dict), ("weights", str), ("modalities", list)):
        if not isinstance(values.get(key), kind):
            raise WeightsError(f"{path}: the description needs \"{key}\" ({kind.__name__}).")
    if values["args"].get("in_channels", len(values["modalities"])) != len(values["modalities"]):
        raise WeightsError(f"{path}: in_channels is {values['args'].get('in_channels')} but {len(values['modalities'])}"
                           " modalities are listed; list one modality per input channel.")
    return values


def load_state_dict(path: Path) -> dict:
    """A state dict from ``.safetensors`` or a weights-only ``torch.load`` of ``.pt``/``.pth``."""
    import pickle

    import torch

    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found; \"weights\" is relative to the description file.")
    if path.name.lower().endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as error:
            raise WeightsError(f"{path}: corrupt safetensors file ({error}).") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise WeightsError(f"{path}: refused, it does not load with torch.load(weights_only=True) ({first}); save "
                           "the model's state_dict() (or use safetensors).") from None
    for key in ("state_dict", "model", "network_weights"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: not a state dict of tensors; save model.state_dict().")
    return state


def load_monai(path: Path | str, device: str | Any = "cpu") -> LoadedModel:
    """Build the MONAI network of the description, load its weights strictly, eval mode on ``device``."""
    from LRPSegmentationLib.net.preprocess import PreprocessSpec, ResizePreprocessor

    path = Path(path)
    values = read_description(path)
    try:
        from monai.networks import nets
    except ImportError:
        raise WeightsError(f"{path}: a MONAI model needs the 'monai' package: pip install 'lrpsegmentation[monai]'."
                           ) from None
    cls = getattr(nets, values["class"], None)
    if not isinstance(cls, type):
        raise WeightsError(f"{path}: monai.networks.nets has no class {values['class']!r}.")
    try:
        model = cls(**values["args"])
    except (TypeError, ValueError, AssertionError) as error:
        raise WeightsError(f"{path}: {values['class']}(**args) failed: {error}.") from None
    weights = path.parent / values["weights"]
    state = load_state_dict(weights)
    result = model.load_state_dict(state, strict=False)
    loaded_storage = {t.data_ptr() for k, t in model.state_dict().items() if k in state}
    missing = [k for k in result.missing_keys if model.state_dict()[k].data_ptr() not in loaded_storage]
    if missing or result.unexpected_keys:  # (a tensor shared with a loaded one, as safetensors saves it, is loaded)
        raise WeightsError(f"{weights}: the weights do not fit {values['class']} with these args (missing "
                           f"{missing[:3]}, unexpected {result.unexpected_keys[:3]}).")
    spec = PreprocessSpec.from_dict(values.get("preprocess", {"size": None, "normalization": "zscore"}))
    info = ModelInfo(config={"class": values["class"], "args": values["args"]}, preprocess=spec.to_dict(),
                     modalities=list(values["modalities"]))
    return LoadedModel(model=model.eval().to(device), info=info, path=path, sha256=file_sha256(weights),
                       preprocessor=ResizePreprocessor(spec, int(values.get("pad_multiple", 1))), kind="monai",
                       lesion_class=int(values.get("lesion_class", 1)))
