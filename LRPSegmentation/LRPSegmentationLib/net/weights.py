"""Safe model files: safetensors tensors plus JSON metadata in the safetensors header.

Nothing is unpickled: a torch.save/pickle file is refused before any of it is read as Python objects.
The metadata can be read without torch (the Slicer module shows it before torch is installed).
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any

from LRPSegmentationLib import __version__
from LRPSegmentationLib.data.modalities import MODALITIES

FORMAT = "lrpseg-weights"
FORMAT_VERSION = 1
METADATA_KEY = "lrpseg"
MODELS_DIR = Path(__file__).resolve().parents[2] / "Resources" / "Models"
BUNDLED_MODEL = "lrpseg-synthetic-b8.safetensors"
_MAX_HEADER_BYTES = 100 * 1024 * 1024


class WeightsError(ValueError):
    """A model file that cannot be used; the message names the file and what to do."""


@dataclass
class ModelInfo:
    """Everything stored with the weights: how to rebuild the model and how it was made."""

    config: dict[str, Any]
    preprocess: dict[str, Any]
    modalities: list[str] = field(default_factory=lambda: list(MODALITIES))
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    postprocess: dict[str, Any] = field(default_factory=dict)  # e.g. {"contralateral_min_contrast": 0.5}
    package_version: str = __version__
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, **self.__dict__}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, path: Path) -> "ModelInfo":
        try:
            values = json.loads(text)
        except json.JSONDecodeError as error:
            raise WeightsError(f"{path}: the model metadata is not valid JSON ({error}).") from None
        if values.pop("format", None) != FORMAT:
            raise WeightsError(f"{path}: not an LRPSegmentation model file (metadata format missing).")
        version = values.pop("format_version", None)
        if version != FORMAT_VERSION:
            raise WeightsError(f"{path}: model file format version {version} is not supported "
                               f"(this package reads version {FORMAT_VERSION}); update LRPSegmentation.")
        try:
            return cls(**values)
        except TypeError as error:
            raise WeightsError(f"{path}: model metadata has unexpected fields ({error}).") from None


@dataclass
class LoadedModel:
    """A ready-to-run model with its metadata and the file it came from: the one interface predict, explain, sweep
    and info use, whichever route the model came by (our U-Net file, a MONAI network, an nnU-Net v2 folder).

    ``preprocessor`` maps a case's (C, D, H, W) images onto the model input and model-grid arrays back onto the
    case's native grid (:class:`~LRPSegmentationLib.net.preprocess.ResizePreprocessor` for our U-Net and MONAI
    networks, :class:`~LRPSegmentationLib.net.nnunet.NnunetPreprocessor` for nnU-Net); ``None``: the resize
    preprocessor of ``info.preprocess``. ``modalities`` is the input channel order (``info.modalities``)."""

    model: Any  # a torch.nn.Module; typed loosely so this module imports without torch
    info: ModelInfo
    path: Path
    sha256: str
    preprocessor: Any = None
    kind: str = "lrpseg"
    lesion_class: int = 1

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.info.modalities)

    @property
    def contralateral_min_contrast(self) -> float | None:
        """The minimum contrast of the contralateral check this model's masks get (None: no check; see
        :mod:`LRPSegmentationLib.analysis.contralateral`)."""
        value = self.info.postprocess.get("contralateral_min_contrast")
        return None if value is None else float(value)

    def prep(self):
        """The preprocessor (built from ``info.preprocess`` on first use for our model files)."""
        if self.preprocessor is None:
            from LRPSegmentationLib.net.preprocess import PreprocessSpec, ResizePreprocessor

            self.preprocessor = ResizePreprocessor(PreprocessSpec.from_dict(self.info.preprocess))
        return self.preprocessor

    def describe(self) -> dict[str, Any]:
        """JSON-ready description for provenance and ``lrpseg info``."""
        return {"kind": self.kind, "path": str(self.path), "sha256": self.sha256, "modalities": list(self.modalities),
                "lesion_class": self.lesion_class, "config": self.info.config, "preprocess": self.info.preprocess,
                "postprocess": self.info.postprocess}


def bundled_model_path() -> Path:
    """The default model shipped in Resources/Models (trained on synthetic cases; see its model card)."""
    return MODELS_DIR / BUNDLED_MODEL


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_header(path: Path) -> dict[str, Any]:
    """Parse and check the safetensors header without torch and without executing anything."""
    path = Path(path)
    if not path.is_file():
        hint = ("the bundled model is missing from this installation; reinstall LRPSegmentation or pass a model "
                "file" if path == bundled_model_path() else "pass an existing .safetensors model file, or none "
                "to use the bundled model")
        raise WeightsError(f"{path}: model file not found: {hint}.")
    size = path.stat().st_size
    with open(path, "rb") as stream:
        head = stream.read(9)
        header_length = struct.unpack("<Q", head[:8])[0] if len(head) >= 8 else 0
        looks_like_safetensors = head[8:9] == b"{" and header_length <= min(size - 8, _MAX_HEADER_BYTES)
        if not looks_like_safetensors and (head[:2] == b"PK" or head[:1] == b"\x80"):
            raise WeightsError(
                f"{path}: this is a pickle-based PyTorch checkpoint (torch.save). It is refused because unpickling "
                "can execute code. In a trusted environment, load it with torch.load(path, weights_only=True) and "
                "save it with LRPSegmentationLib.net.weights.save_model to get a .safetensors file.")
        if len(head) < 9:
            raise WeightsError(f"{path}: file is empty or truncated ({size} bytes); not a safetensors model.")
        if header_length > min(size - 8, _MAX_HEADER_BYTES):
            raise WeightsError(f"{path}: not a safetensors file, or truncated (header of {header_length} bytes "
                               f"in a file of {size} bytes). Download or copy the model again.")
        stream.seek(8)
        raw = stream.read(header_length)
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise WeightsError(f"{path}: corrupt safetensors header. Download or copy the model again.") from None
    data_end = max((max(v["data_offsets"]) for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + header_length + data_end > size:
        raise WeightsError(f"{path}: file is truncated ({size} bytes, header promises {8 + header_length + data_end})."
                           " Download or copy the model again.")
    return header


def read_metadata(path: Path | str) -> ModelInfo:
    """The metadata of a model file, checked for the six-modality input; needs no torch."""
    path = Path(path)
    metadata = _read_header(path).get("__metadata__") or {}
    if METADATA_KEY not in metadata:
        raise WeightsError(f"{path}: a safetensors file without LRPSegmentation metadata; it was not written by "
                           "lrpseg train / save_model and cannot be rebuilt safely.")
    info = ModelInfo.from_json(metadata[METADATA_KEY], path)
    channels = info.config.get("in_channels")
    if channels != len(MODALITIES) or list(info.modalities) != list(MODALITIES):
        raise WeightsError(f"{path}: the model expects {channels} input channels ({', '.join(info.modalities)}); "
                           f"this pipeline feeds the six modalities {', '.join(MODALITIES)} in that order.")
    return info


def save_model(model, info: ModelInfo, path: Path | str) -> Path:
    """Write the model's state_dict as safetensors with ``info`` embedded; returns the path."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    temporary = path.with_name(path.name + ".partial")
    save_file(tensors, str(temporary), metadata={METADATA_KEY: info.to_json()})
    temporary.replace(path)  # never leave a half-written file under the final name
    return path


def load_model(path: Path | str | None = None, device: str | Any = "cpu") -> LoadedModel:
    """Load any supported model: an nnU-Net v2 trained-model (or fold) folder, a MONAI JSON description, or one of
    our ``.safetensors`` model files (the bundled one when ``path`` is None); eval mode on ``device``."""
    route = model_route(path)
    if route is ModelRoute.NNUNET:
        from LRPSegmentationLib.net.nnunet import load_nnunet

        return load_nnunet(path, device)
    if route is ModelRoute.MONAI:
        from LRPSegmentationLib.net.peer import load_monai

        return load_monai(path, device)
    return load_unet(path, device)


class ModelRoute(Enum):
    """How a model path is loaded: one of our model files, a MONAI JSON description, an nnU-Net v2 folder."""

    LRPSEG = "lrpseg"
    MONAI = "monai"
    NNUNET = "nnunet"


def model_route(path: Path | str | None) -> ModelRoute:
    """The route of ``path`` (None: the bundled model) from cheap checks of the path; needs no torch."""
    if path is None:
        return ModelRoute.LRPSEG
    from LRPSegmentationLib.net.nnunet import is_nnunet_folder
    from LRPSegmentationLib.net.peer import is_monai_description

    if is_nnunet_folder(Path(path)):
        return ModelRoute.NNUNET
    if is_monai_description(Path(path)):
        return ModelRoute.MONAI
    if Path(path).is_dir():
        raise WeightsError(f"{path}: a folder, but no nnU-Net v2 trained-model folder (no plans.json); give a "
                           "model file, a MONAI .json description or an nnU-Net trained-model folder.")
    return ModelRoute.LRPSEG


def model_modalities(path: Path | str | None = None) -> tuple[str, ...]:
    """The input modalities of a model, in channel order, from its metadata alone (no weights read, no torch): what
    the Slicer module's selectors follow. None: the bundled model."""
    route = model_route(path)
    if route is ModelRoute.NNUNET:
        from LRPSegmentationLib.net.nnunet import folder_modalities

        return folder_modalities(path)
    if route is ModelRoute.MONAI:
        from LRPSegmentationLib.net.peer import read_description

        return tuple(str(m) for m in read_description(path)["modalities"])
    return tuple(read_metadata(path if path is not None else bundled_model_path()).modalities)


def load_unet(path: Path | str | None = None, device: str | Any = "cpu") -> LoadedModel:
    """Rebuild a UNet3D from a model file (the bundled one when ``path`` is None), in eval mode on ``device``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from LRPSegmentationLib.net.model import UNet3D, UNetConfig

    path = Path(path) if path is not None else bundled_model_path()
    info = read_metadata(path)
    try:
        config = UNetConfig.from_dict(info.config)
    except (TypeError, ValueError) as error:
        raise WeightsError(f"{path}: unusable architecture in the metadata ({error}).") from None
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise WeightsError(f"{path}: corrupt tensor data ({error}). Download or copy the model again.") from None
    model = UNet3D(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        details = "; ".join(f"{label}: {', '.join(names[:4])}{' ...' if len(names) > 4 else ''}"
                            for label, names in (("missing", missing), ("unexpected", unexpected),
                                                 ("wrong shape", wrong)) if names)
        raise WeightsError(f"{path}: the tensors do not match the architecture in its metadata ({details}).")
    model.load_state_dict(state)
    model.eval().to(device)
    return LoadedModel(model=model, info=info, path=path, sha256=file_sha256(path))


def set_contralateral_check(path: Path | str, out: Path | str, min_contrast: float | None) -> Path:
    """Copy the model file ``path`` to ``out`` (never an existing file) with its weights unchanged and its masks'
    contralateral check set to ``min_contrast`` (None: no check; see :mod:`..analysis.contralateral`)."""
    out = Path(out)
    if out.exists():
        raise ValueError(f"{out} exists: choose a new file name (an existing model is never overwritten).")
    if min_contrast is not None and not 0.0 < min_contrast <= 5.0:
        raise ValueError(f"The contralateral check's minimum contrast must lie in (0, 5] standard deviations, got "
                         f"{min_contrast}.")
    loaded = load_unet(path)
    postprocess = {k: v for k, v in loaded.info.postprocess.items() if k != "contralateral_min_contrast"}
    if min_contrast is not None:
        postprocess["contralateral_min_contrast"] = float(min_contrast)
    return save_model(loaded.model, replace(loaded.info, postprocess=postprocess), out)
