"""From a case's raw arrays to a model input and back: resizing to series grids, intensity normalisation.

Resizing only rescales the voxel index grid (the native grid stays the reference), so mapping a result back
with :func:`to_native` restores the native shape and the case's :class:`~.geometry.Geometry` applies unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum

import numpy as np
import torch
from torch.nn import functional as F

from LRPSegmentationLib.options import IntensityNormalization

SERIES_GRIDS: dict[str, tuple[int, int, int]] = {
    "A": (19, 48, 48),
    "B": (19, 96, 96),
    "C": (19, 144, 144),
    "X": (19, 192, 192),
}
"""The paper's series grids as (D, H, W)."""


class Interpolation(str, Enum):
    LINEAR = "linear"  # continuous maps: images, probabilities
    NEAREST = "nearest"  # labels
    MASS = "mass"  # amounts per voxel (relevance): trilinear-smooth, each channel's sum kept (relevance_to_native)


@dataclass(frozen=True)
class PreprocessSpec:
    """How a case becomes a model input; stored with the weights so prediction repeats training exactly."""

    size: tuple[int, int, int] | None = SERIES_GRIDS["B"]  # (D, H, W); 0 keeps that axis native, None all three
    normalization: IntensityNormalization = IntensityNormalization.MINMAX

    def grid(self, native_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """The model grid of a case of ``native_shape``: ``size``, with native sizes where it has 0 (or None)."""
        if self.size is None:
            return tuple(int(n) for n in native_shape)
        return tuple(int(n) if s == 0 else int(s) for s, n in zip(self.size, native_shape))

    @property
    def fixed(self) -> bool:
        """Whether every case gets the same grid (needed to batch several cases)."""
        return self.size is not None and 0 not in self.size

    def to_dict(self) -> dict:
        values = asdict(self)
        values["normalization"] = self.normalization.value
        values["size"] = list(self.size) if self.size is not None else None
        return values

    @classmethod
    def from_dict(cls, values: dict) -> "PreprocessSpec":
        size = values.get("size")
        return cls(
            size=tuple(int(v) for v in size) if size is not None else None,
            normalization=IntensityNormalization(values.get("normalization", IntensityNormalization.MINMAX.value)),
        )


def parse_size(text: str, allow_native_axes: bool = True) -> tuple[int, int, int] | None:
    """A series letter (A, B, C, X), 'native', or 'DxHxW' as a grid size; with ``allow_native_axes`` a 0 in
    'DxHxW' keeps the case's own size along that axis ('0x96x96': every slice, each resized to 96 x 96)."""
    key = text.strip()
    if key.upper() in SERIES_GRIDS:
        return SERIES_GRIDS[key.upper()]
    if key.lower() == "native":
        return None
    try:
        size = tuple(int(v) for v in key.lower().split("x"))
    except ValueError:
        size = ()
    if len(size) != 3 or min(size) < (0 if allow_native_axes else 1) or max(size) < 1:
        native = " (0 keeps an axis native, as in 0x96x96)" if allow_native_axes else ""
        raise ValueError(f"Grid size {text!r} not understood: use A, B, C, X, 'native' or DxHxW such as "
                         f"19x96x96{native}.")
    return size  # type: ignore[return-value]


def brain_mask(images: np.ndarray) -> np.ndarray:
    """Voxels where any modality is non-zero (ISLES volumes are skull-stripped with zero background)."""
    return np.any(images != 0, axis=0)


def normalize(images: np.ndarray, method: IntensityNormalization = IntensityNormalization.MINMAX) -> np.ndarray:
    """Normalise each channel of a (C, D, H, W) array independently; constant channels become 0."""
    images = np.asarray(images, dtype=np.float32)
    out = np.zeros_like(images)
    if method == IntensityNormalization.MINMAX:
        for c, channel in enumerate(images):
            low, high = float(channel.min()), float(channel.max())
            if high > low:
                out[c] = (channel - low) / (high - low)
        return out
    brain = brain_mask(images)
    if not brain.any():
        return out
    for c, channel in enumerate(images):
        values = channel[brain]
        std = float(values.std())
        if std > 0:
            out[c][brain] = (values - values.mean()) / std
    return out


def resize(array: np.ndarray | torch.Tensor, size: tuple[int, int, int],
           interpolation: Interpolation = Interpolation.LINEAR) -> np.ndarray:
    """Resize a (D, H, W) or (C, D, H, W) array to ``size`` = (D, H, W); returns float32 (nearest keeps values)."""
    if interpolation == Interpolation.MASS:
        squeeze = np.ndim(array) == 3
        kept = relevance_to_native(array[None] if squeeze else array, size)
        return kept[0] if squeeze else kept
    tensor = torch.as_tensor(np.asarray(array) if not isinstance(array, torch.Tensor) else array)
    squeeze = tensor.ndim == 3
    tensor = tensor.float()[None, None] if squeeze else tensor.float()[None]
    if tuple(tensor.shape[2:]) != tuple(size):
        if interpolation == Interpolation.LINEAR:
            tensor = F.interpolate(tensor, size=tuple(size), mode="trilinear", align_corners=False)
        else:
            tensor = F.interpolate(tensor, size=tuple(size), mode="nearest-exact")
    tensor = tensor[0, 0] if squeeze else tensor[0]
    return tensor.cpu().numpy()


def prepare_input(images: np.ndarray, spec: PreprocessSpec) -> torch.Tensor:
    """(6, D, H, W) raw images -> (1, 6, d, h, w) float32 model input."""
    normalized = normalize(images, spec.normalization)
    normalized = resize(normalized, spec.grid(images.shape[1:]), Interpolation.LINEAR)
    return torch.from_numpy(np.ascontiguousarray(normalized))[None]


def prepare_label(label: np.ndarray, spec: PreprocessSpec, partial_volume: bool = False) -> torch.Tensor:
    """(D, H, W) 0/1 label -> (1, d, h, w) training target on the model grid: int64 classes (nearest), or with
    ``partial_volume`` float32 lesion shares in [0, 1] (linear), whose 0.5 level keeps edges finer than a model
    voxel."""
    if partial_volume:
        share = resize(np.asarray(label != 0, np.float32), spec.grid(label.shape), Interpolation.LINEAR)
        return torch.from_numpy(np.ascontiguousarray(np.clip(share, 0.0, 1.0)))[None]
    label = resize(label, spec.grid(label.shape), Interpolation.NEAREST)
    return torch.from_numpy(np.ascontiguousarray(label)).long()[None]


def to_native(array: np.ndarray | torch.Tensor, native_shape: tuple[int, int, int],
              interpolation: Interpolation = Interpolation.LINEAR) -> np.ndarray:
    """Map a (D, H, W) or (C, D, H, W) model-grid array back onto the native (D, H, W) grid."""
    return resize(array, native_shape, interpolation)


def relevance_to_native(relevance: np.ndarray | torch.Tensor, native_shape: tuple[int, int, int]) -> np.ndarray:
    """Map (C, d, h, w) model-grid relevance onto the native (D, H, W) grid keeping each channel's sum exactly
    (``resize(..., Interpolation.MASS)``, which every preprocessor's ``to_native`` uses for relevance).

    Relevance is an amount per voxel, not an intensity: plain interpolation onto a finer grid multiplies its sum by
    the ratio of voxel counts. Here each model voxel's relevance is divided by the total weight that trilinear
    interpolation gives it on the native grid (the adjoint of the interpolation applied to ones), then
    interpolated: the native map is as smooth as a trilinear one, and sum_native R_c = sum_model R_c up to float
    rounding. Model voxels that no native voxel samples (a grid shrunk more than twofold along an axis) hand their
    relevance to their nearest native voxel instead, so nothing is lost.
    """
    tensor = torch.as_tensor(np.asarray(relevance) if not isinstance(relevance, torch.Tensor) else relevance)
    tensor = tensor.detach().double().cpu()[None]
    if tuple(tensor.shape[2:]) == tuple(native_shape):
        return tensor[0].float().numpy()
    probe = torch.ones((1, 1, *tensor.shape[2:]), dtype=torch.float64, requires_grad=True)
    sampled = F.interpolate(probe, size=tuple(native_shape), mode="trilinear", align_corners=False)
    (weight,) = torch.autograd.grad(sampled.sum(), probe)
    reached = weight > 1e-12
    native = F.interpolate(torch.where(reached, tensor / weight.clamp_min(1e-12), 0.0), size=tuple(native_shape),
                           mode="trilinear", align_corners=False)
    if not bool(reached.all()):  # nearest native voxel of each unreached model voxel: the adjoint of nearest-exact
        rest = torch.where(reached, 0.0, tensor).requires_grad_(False)
        probe = torch.zeros((1, tensor.shape[1], *native_shape), dtype=torch.float64, requires_grad=True)
        coarse = F.interpolate(probe, size=tuple(tensor.shape[2:]), mode="nearest-exact")
        (spread,) = torch.autograd.grad((coarse * rest).sum(), probe)
        native = native + spread
    return native[0].float().numpy()


@dataclass(frozen=True)
class ResizePreprocessor:
    """Our U-Net's (and MONAI networks') route: normalise each channel, resize to ``spec.size``; back by resizing.

    ``multiple`` (> 1) zero-pads the model input to a multiple of the network's total stride (cropped off again)."""

    spec: PreprocessSpec
    multiple: int = 1

    def prepare(self, images: np.ndarray, spacing: tuple[float, float, float] | None = None) -> torch.Tensor:
        return pad_to_multiple(prepare_input(images, self.spec), self.multiple)

    def grid_shape(self, native_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        return self.spec.grid(native_shape)

    def to_native(self, array: np.ndarray | torch.Tensor, native_shape: tuple[int, int, int],
                  interpolation: Interpolation = Interpolation.LINEAR) -> np.ndarray:
        """A (D, H, W) or (C, D, H, W) model-grid array (padding included) on the native grid."""
        grid = self.grid_shape(native_shape)
        array = array[..., : grid[0], : grid[1], : grid[2]]
        return to_native(array, native_shape, interpolation)

    def mask_to_model(self, mask: np.ndarray, native_shape: tuple[int, int, int]) -> np.ndarray:
        """A native-grid boolean mask on the model grid (nearest; padding added as False)."""
        grid = self.grid_shape(native_shape)
        out = resize(mask.astype(np.float32), grid, Interpolation.NEAREST) > 0.5 if grid != mask.shape else mask
        return pad_mask(out, self.multiple)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad the spatial end of an (N, C, D, H, W) tensor up to a multiple of ``multiple`` per axis."""
    if multiple <= 1:
        return x
    pads: list[int] = []
    for size in reversed(x.shape[2:]):
        pads += [0, (-size) % multiple]
    return F.pad(x, pads) if any(pads) else x


def pad_mask(mask: np.ndarray, multiple: int) -> np.ndarray:
    """Pad a (D, H, W) mask with False like :func:`pad_to_multiple` pads the input."""
    if multiple <= 1:
        return mask
    return np.pad(mask, [(0, (-s) % multiple) for s in mask.shape])
