"""An nnU-Net v2 trained-model folder as a model: network rebuilt from the plans, nnU-Net's preprocessing.

A trained-model folder (``nnUNetTrainer__nnUNetPlans__3d_fullres``) holds ``plans.json``, ``dataset.json`` and
``fold_K/checkpoint_final.pth`` (or ``checkpoint_best.pth``). The checkpoint is read with
``torch.load(weights_only=True)`` (numpy scalars in its training log allowed, nothing else); one that needs more
is refused. The network is rebuilt from the plans' ``architecture`` entry with ``dynamic-network-architectures``;
class and layer names are looked up in fixed tables, never imported from the file. Deep supervision is off (the
full-resolution output), as in nnU-Net's predictor.

Preprocessing of the configuration, as nnU-Net's ``DefaultPreprocessor``: channels in ``dataset.json``'s order,
axes transposed by ``transpose_forward`` (nnU-Net's arrays are (z, y, x) like ours, spacing reversed from ITK),
crop to the bounding box of the hole-filled non-zero mask, per-channel normalisation (``ZScoreNormalization`` with
or without that mask, ``CTNormalization``, ``NoNormalization``, ``RescaleTo01Normalization``), resampling to the
target spacing with nnU-Net's own scheme (:mod:`.nnunet_resampling`: cubic in-plane, nearest along an anisotropic
axis). The input is zero-padded, centred as nnU-Net's predictor does, to at least ``patch_size`` and a multiple of
the total stride; predictions go back with the plans' probability resampling. Checked against nnU-Net's
``nnUNetPredictor`` on a folder trained by nnU-Net itself (``Testing/Python/test_nnunet_fixture.py``).
Differences, documented: the whole volume goes through the network once (nnU-Net: Gaussian-weighted sliding
windows of ``patch_size`` when the case is larger than one patch; mirroring on by default) -- one forward is what
LRP explains.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from LRPSegmentationLib.net.nnunet_resampling import Resampling, resample
from LRPSegmentationLib.net.weights import LoadedModel, ModelInfo, WeightsError, file_sha256

CHECKPOINTS = ("checkpoint_final.pth", "checkpoint_best.pth")
NETWORKS = ("PlainConvUNet", "ResidualEncoderUNet", "ResidualUNet")
"""dynamic-network-architectures classes a plans file may name (``...architectures.unet.<name>``)."""
NORMALIZATIONS = ("ZScoreNormalization", "CTNormalization", "NoNormalization", "RescaleTo01Normalization")


def is_nnunet_folder(path: Path) -> bool:
    """A trained-model folder or one of its ``fold_K`` folders (cheap check, no torch)."""
    path = Path(path)
    return path.is_dir() and ((path / "plans.json").is_file() or (path.parent / "plans.json").is_file())


def channel_names(dataset: dict) -> list[str]:
    """The input channel names of a ``dataset.json`` (``channel_names``, or nnU-Net v1's ``modality``), in order."""
    channels = dataset.get("channel_names") or dataset.get("modality") or {}
    return [str(channels[k]) for k in sorted(channels, key=int)]


def folder_modalities(path: Path | str) -> tuple[str, ...]:
    """The input modalities of a trained-model (or fold) folder, from its ``dataset.json``; needs no torch."""
    path = Path(path)
    root = path if (path / "plans.json").is_file() else path.parent
    return tuple(channel_names(_read_json(root / "dataset.json")))


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise WeightsError(f"{path}: cannot read ({error}); is this an nnU-Net v2 trained-model folder?") from None


def find_checkpoint(path: Path, fold: int | None = None) -> tuple[Path, Path]:
    """(trained-model folder, checkpoint file) for a trained-model folder or a ``fold_K`` folder."""
    path = Path(path)
    root = path if (path / "plans.json").is_file() else path.parent
    folds = [path] if path != root else ([root / f"fold_{fold}"] if fold is not None else
                                         sorted(p for p in root.glob("fold_*") if p.is_dir()))
    for folder in folds:
        for name in CHECKPOINTS:
            if (folder / name).is_file():
                return root, folder / name
    raise WeightsError(f"{path}: no fold_K/{' or '.join(CHECKPOINTS)} found; train a fold first or give its folder.")


def load_checkpoint(path: Path) -> dict:
    """The checkpoint dict via ``torch.load(weights_only=True)``, numpy scalars allowed; refuses anything else."""
    import pickle

    import torch

    core = getattr(np, "_core", None) or np.core
    allowed = [core.multiarray.scalar, np.dtype] + [type(np.dtype(t)) for t in (np.float64, np.float32, np.int64)]
    try:
        with torch.serialization.safe_globals(allowed):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, AttributeError) as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        why = next((line for line in lines if "Unsupported global" in line), lines[0] if lines else repr(error))
        raise WeightsError(f"{path}: refused, it does not load with torch.load(weights_only=True) ({why[:200]}). "
                           "Re-save only {'network_weights': ...} with torch.save in a trusted environment.") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("network_weights"), dict):
        raise WeightsError(f"{path}: not an nnU-Net v2 checkpoint (no 'network_weights').")
    return checkpoint


def configuration(plans: dict, name: str, path: Path) -> dict:
    """The plans' configuration ``name`` with ``inherits_from`` resolved."""
    configs = plans.get("configurations", {})
    if name not in configs:
        raise WeightsError(f"{path}: plans.json has no configuration {name!r} (has {', '.join(configs)}).")
    config = dict(configs[name])
    parent = config.get("inherits_from")
    return {**configuration(plans, parent, path), **config} if parent else config


def _torch_op(name: str | None):
    """A torch.nn layer class named by the plans (``torch.nn.modules.conv.Conv3d`` -> ``nn.Conv3d``), or None."""
    from torch import nn

    if name is None:
        return None
    short = str(name).rsplit(".", 1)[-1]
    op = getattr(nn, short, None)
    if not (isinstance(op, type) and issubclass(op, nn.Module)):
        raise WeightsError(f"plans.json names the layer {name!r}, which is not a torch.nn layer.")
    return op


def build_network(config: dict, in_channels: int, classes: int, path: Path):
    """The dynamic-network-architectures network of a plans configuration (new or pre-2.3 plans format)."""
    from torch import nn

    try:
        from dynamic_network_architectures.architectures import unet
    except ImportError:
        raise WeightsError(f"{path}: nnU-Net models need 'dynamic-network-architectures': pip install --no-deps "
                           "dynamic-network-architectures einops (see the README).") from None
    arch = config.get("architecture")
    if arch is not None:
        name = str(arch.get("network_class_name", "")).rsplit(".", 1)[-1]
        kwargs = dict(arch.get("arch_kwargs", {}))
        for key in arch.get("_kw_requires_import", ()):
            kwargs[key] = _torch_op(kwargs.get(key))
    else:  # nnU-Net v2 < 2.3 plans: PlainConvUNet parameters at the top of the configuration
        name = config.get("UNet_class_name", "PlainConvUNet")
        kernels = config["conv_kernel_sizes"]
        conv = nn.Conv3d if len(kernels[0]) == 3 else nn.Conv2d
        base, top = config["UNet_base_num_features"], config["unet_max_num_features"]
        kwargs = dict(n_stages=len(kernels), conv_op=conv, kernel_sizes=kernels, strides=config["pool_op_kernel_sizes"],
                      features_per_stage=[min(base * 2 ** i, top) for i in range(len(kernels))],
                      n_conv_per_stage=config["n_conv_per_stage_encoder"],
                      n_conv_per_stage_decoder=config["n_conv_per_stage_decoder"], conv_bias=True,
                      norm_op=nn.InstanceNorm3d if conv is nn.Conv3d else nn.InstanceNorm2d,
                      norm_op_kwargs={"eps": 1e-5, "affine": True}, dropout_op=None, dropout_op_kwargs=None,
                      nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True})
        if name == "ResidualEncoderUNet":
            kwargs["n_blocks_per_stage"] = kwargs.pop("n_conv_per_stage")
    if name not in NETWORKS:
        raise WeightsError(f"{path}: network class {name!r} is not one of {', '.join(NETWORKS)}.")
    try:
        return getattr(unet, name)(input_channels=in_channels, num_classes=classes, deep_supervision=False, **kwargs)
    except (TypeError, ValueError, KeyError, AssertionError) as error:
        raise WeightsError(f"{path}: cannot build {name} from the plans ({error}).") from None


def total_stride(config: dict) -> tuple[int, ...]:
    """Per-axis product of the encoder strides: the input must be a multiple of it."""
    arch = config.get("architecture")
    strides = arch["arch_kwargs"]["strides"] if arch is not None else config["pool_op_kernel_sizes"]
    return tuple(int(np.prod([s[a] if isinstance(s, (list, tuple)) else s for s in strides]))
                 for a in range(len(config["patch_size"])))


def centred_pads(shape, patch, multiple) -> list[tuple[int, int]]:
    """Zero padding to at least ``patch`` and a multiple of the total stride, split as nnU-Net's ``pad_nd_image``
    (half below, the rest above), so the network sees the case where nnU-Net's predictor puts it."""
    pads = []
    for size, least, step in zip(shape, patch, multiple):
        target = max(size, least)
        target += (-target) % step
        pads.append(((target - size) // 2, target - size - (target - size) // 2))
    return pads


@dataclass
class NnunetPreprocessor:
    """nnU-Net v2 preprocessing of one configuration (module docstring) and its inverse for model-grid arrays.

    Stateful per case: :meth:`prepare` records the crop box and shapes that :meth:`to_native` and
    :meth:`mask_to_model` use for the same case (the pipeline handles one case at a time)."""

    transpose_forward: tuple[int, ...]
    spacing: tuple[float, ...]  # target spacing, in transposed axis order
    schemes: tuple[str, ...]
    use_mask: tuple[bool, ...]
    intensity: tuple[dict, ...]
    multiple: tuple[int, ...]
    patch_size: tuple[int, ...] = (1, 1, 1)
    data_resampling: Resampling = Resampling(3, 0)
    output_resampling: Resampling = Resampling(1, 0)
    _layout: dict = field(default_factory=dict, repr=False)

    def describe(self) -> dict[str, Any]:
        return {"transpose_forward": list(self.transpose_forward), "spacing": list(self.spacing),
                "normalization_schemes": list(self.schemes), "use_mask_for_norm": list(self.use_mask),
                "pad_multiple": list(self.multiple), "patch_size": list(self.patch_size),
                "resampling_order": [self.data_resampling.order, self.data_resampling.order_z]}

    def prepare(self, images: np.ndarray, spacing: tuple[float, float, float]):
        import torch
        from scipy.ndimage import binary_fill_holes

        axes = self.transpose_forward
        data = np.transpose(np.asarray(images, dtype=np.float32), (0, *[a + 1 for a in axes]))
        native_spacing = tuple(float(spacing[::-1][a]) for a in axes)  # ITK (x, y, z) -> array (z, y, x)
        nonzero = binary_fill_holes(np.any(data != 0, axis=0))  # nnU-Net's create_nonzero_mask
        if nonzero.any():
            box = [(int(i.min()), int(i.max()) + 1) for i in np.nonzero(nonzero)]
        else:
            box = [(0, s) for s in nonzero.shape]
        crop = tuple(slice(a, b) for a, b in box)
        data, mask = data[(slice(None), *crop)], nonzero[crop]
        data = np.stack([self._normalise(c, channel, mask) for c, channel in enumerate(data)])
        shape = tuple(max(1, int(round(o / t * s))) for s, o, t in zip(data.shape[1:], native_spacing, self.spacing))
        data = resample(data, shape, native_spacing, self.spacing, self.data_resampling)
        if any(s > p for s, p in zip(shape, self.patch_size)):
            warnings.warn(f"The case's model grid {shape} exceeds nnU-Net's patch {self.patch_size}: nnU-Net's "
                          "predictor would tile sliding windows; this whole-volume forward (the one LRP explains) "
                          "can predict differently (README, 'Explain your own model', Limits).", stacklevel=2)
        pads = centred_pads(shape, self.patch_size, self.multiple)
        data = np.pad(data, [(0, 0), *pads])
        self._layout = {"native": tuple(images.shape[1:]), "transposed": nonzero.shape, "crop": crop,
                        "cropped": mask.shape, "grid": shape, "pads": pads, "native_spacing": native_spacing}
        return torch.from_numpy(np.ascontiguousarray(data))[None]

    def _normalise(self, c: int, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        scheme, props = self.schemes[c], self.intensity[c] if c < len(self.intensity) else {}
        image = image.astype(np.float32)
        if scheme == "NoNormalization":
            return image
        if scheme == "RescaleTo01Normalization":
            low, high = float(image.min()), float(image.max())
            return (image - low) / max(high - low, 1e-8)
        if scheme == "CTNormalization":
            image = np.clip(image, props["percentile_00_5"], props["percentile_99_5"])
            return (image - props["mean"]) / max(props["std"], 1e-8)
        if self.use_mask[c]:  # outside the (hole-filled) non-zero mask every channel is 0 already
            values = image[mask]
            if values.size:
                image[mask] = (values - values.mean()) / max(float(values.std()), 1e-8)
            return image
        return (image - image.mean()) / max(float(image.std()), 1e-8)

    def _check(self, native_shape) -> dict:
        if self._layout.get("native") != tuple(native_shape):
            raise ValueError("NnunetPreprocessor: prepare() the case before mapping its arrays back.")
        return self._layout

    def to_native(self, array, native_shape, interpolation=None) -> np.ndarray:
        """A model-grid (D, H, W) or (C, D, H, W) array back: crop the padding, resample to the cropped shape,
        place into the non-zero box (zeros outside), transpose back. ``LINEAR`` (probabilities) goes through
        :meth:`log_odds_to_native`."""
        from scipy.special import expit, logit

        from LRPSegmentationLib.net.preprocess import Interpolation, resize

        layout = self._check(native_shape)
        interpolation = interpolation or Interpolation.LINEAR
        if interpolation == Interpolation.LINEAR:
            odds = logit(np.clip(np.asarray(array, dtype=np.float64), 1e-12, 1 - 1e-12))
            return expit(self.log_odds_to_native(odds, native_shape)).astype(np.float32)
        array = resize(self._unpad(np.asarray(array, dtype=np.float32)), layout["cropped"], interpolation)
        return self._uncrop(array, 0.0)

    def log_odds_to_native(self, array, native_shape) -> np.ndarray:
        """Lesion log-odds (D, H, W) or (C, D, H, W) back onto the native grid as nnU-Net's export treats logits:
        the plans' probability resampling (``resampling_fn_probabilities_kwargs``), background outside the box."""
        layout = self._check(native_shape)
        array = self._unpad(np.asarray(array, dtype=np.float64))
        lead = array.shape[:-3]
        flat = array.reshape(-1, *array.shape[-3:])
        flat = resample(flat, layout["cropped"], self.spacing, layout["native_spacing"], self.output_resampling)
        return self._uncrop(flat.reshape(*lead, *flat.shape[1:]), -1e4)

    def _unpad(self, array: np.ndarray) -> np.ndarray:
        layout = self._layout
        inside = tuple(slice(low, low + size) for (low, _), size in zip(layout["pads"], layout["grid"]))
        return array[(Ellipsis, *inside)]

    def _uncrop(self, array: np.ndarray, outside: float) -> np.ndarray:
        lead = array.shape[:-3]
        full = np.full((*lead, *self._layout["transposed"]), outside, dtype=np.float32)
        full[(Ellipsis, *self._layout["crop"])] = array
        back = np.argsort(self.transpose_forward)
        return np.transpose(full, (*range(len(lead)), *[len(lead) + a for a in back]))

    def mask_to_model(self, mask: np.ndarray, native_shape) -> np.ndarray:
        from LRPSegmentationLib.net.preprocess import Interpolation, resize

        layout = self._check(native_shape)
        mask = np.transpose(np.asarray(mask, dtype=np.float32), self.transpose_forward)[layout["crop"]]
        mask = resize(mask, layout["grid"], Interpolation.NEAREST) > 0.5
        return np.pad(mask, layout["pads"])


def load_nnunet(path: Path | str, device: str | Any = "cpu", fold: int | None = None) -> LoadedModel:
    """Rebuild an nnU-Net v2 trained model (module docstring), eval mode on ``device``."""
    root, checkpoint_path = find_checkpoint(Path(path), fold)
    plans, dataset = _read_json(root / "plans.json"), _read_json(root / "dataset.json")
    checkpoint = load_checkpoint(checkpoint_path)
    init = checkpoint.get("init_args") or {}
    name = init.get("configuration") or root.name.rsplit("__", 1)[-1]
    config = configuration(plans, name, root / "plans.json")
    modalities = channel_names(dataset)
    labels = dataset.get("labels", {})
    if any(isinstance(v, (list, tuple)) for v in labels.values()):
        raise WeightsError(f"{root}: region-based nnU-Net models (sigmoid outputs) are not supported; train with "
                           "plain labels.")
    network = build_network(config, len(modalities), len(labels), root)
    result = network.load_state_dict(checkpoint["network_weights"], strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise WeightsError(f"{checkpoint_path}: the weights do not fit the network of the plans (missing "
                           f"{result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]}).")
    schemes = tuple(config.get("normalization_schemes", ["ZScoreNormalization"] * len(modalities)))
    unknown = sorted(set(schemes) - set(NORMALIZATIONS))
    if unknown:
        raise WeightsError(f"{root}: normalisation scheme(s) {unknown} not supported ({', '.join(NORMALIZATIONS)}).")
    properties = plans.get("foreground_intensity_properties_per_channel", {})
    prep = NnunetPreprocessor(
        transpose_forward=tuple(plans.get("transpose_forward", (0, 1, 2))), spacing=tuple(config["spacing"]),
        schemes=schemes, use_mask=tuple(config.get("use_mask_for_norm", [False] * len(modalities))),
        intensity=tuple(properties.get(str(c), {}) for c in range(len(modalities))), multiple=total_stride(config),
        patch_size=tuple(int(p) for p in config["patch_size"]),
        data_resampling=Resampling.from_plans(config.get("resampling_fn_data_kwargs"), 3),
        output_resampling=Resampling.from_plans(config.get("resampling_fn_probabilities_kwargs"), 1))
    lesion = sorted(v for k, v in labels.items() if k != "background" and isinstance(v, int))
    info = ModelInfo(config={"configuration": name, "plans": plans.get("plans_name"),
                             "trainer": checkpoint.get("trainer_name"), "fold": checkpoint_path.parent.name,
                             "network": type(network).__name__, "labels": labels},
                     preprocess=prep.describe(), modalities=modalities)
    return LoadedModel(model=network.eval().to(device), info=info, path=checkpoint_path,
                       sha256=file_sha256(checkpoint_path), preprocessor=prep, kind="nnunet",
                       lesion_class=int(lesion[0]) if lesion else 1)
