"""What an explanation explains: the starting relevance placed on the network's logits.

LRP starts from a relevance tensor shaped like the output (N, classes, D, H, W) and propagates it to the input.
Which voxels and which classes carry that starting relevance decides what the heatmap explains, so it is an
explicit, recorded option (:class:`Target`, saved in provenance through :meth:`Target.describe`).

Signs. With the paper's head (BatchNorm + ReLU) logits are non-negative, so every target except
``contrastive`` starts from non-negative relevance; positive input relevance then means "evidence for the
lesion score at the selected voxels". ``contrastive`` puts ``+lesion logit`` on the lesion channel and
``-other logit`` on the other channels, so its total is ``sum(lesion - other)`` and positive input relevance
means evidence for lesion over background. ``false-negative`` puts the (small) lesion logit on voxels the
model missed: positive relevance there shows the lesion evidence the model did see, which was too weak to win.

``lesion-logits`` never fails on an empty prediction: when the model predicts no lesion voxel it puts the
lesion logit weighted by ``p / max(p)`` (``p`` the softmax lesion probability) on every voxel, i.e. it shows
where the model saw the most lesion evidence, and :meth:`Target.note` says so (:data:`NO_LESION_NOTE`).

The predicted lesion is ``argmax over classes == lesion_class`` (ties go to the lower class index, i.e. to the
background for the usual lesion_class 1).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from LRPSegmentationLib.options import NO_LESION_NOTE, TargetKind, choose

__all__ = ["TargetKind", "Target", "TargetError", "predicted_lesion", "connected_components"]


class TargetError(ValueError):
    """A target that cannot be built for the given logits (empty selection, wrong shapes, missing inputs)."""


_NEEDS_GT = (TargetKind.FALSE_POSITIVE, TargetKind.FALSE_NEGATIVE)


def _as_mask(value: Any, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.ndim != 3:
        raise TargetError(f"Target {name} must be a 3-D (D, H, W) mask, got shape {array.shape}.")
    if array.dtype.kind not in "biuf":
        raise TargetError(f"Target {name} must be a numeric or boolean mask, got dtype {array.dtype}.")
    return array != 0


def _mask_summary(mask: np.ndarray | None) -> dict[str, Any] | None:
    if mask is None:
        return None
    packed = np.packbits(np.ascontiguousarray(mask), axis=None)
    return {
        "shape": list(mask.shape),
        "voxels": int(np.count_nonzero(mask)),
        "sha256": hashlib.sha256(packed.tobytes()).hexdigest(),
    }


def predicted_lesion(logits: torch.Tensor, lesion_class: int = 1) -> torch.Tensor:
    """Boolean (N, D, H, W) mask of voxels whose argmax class is ``lesion_class``."""
    return logits.argmax(dim=1) == lesion_class


def connected_components(mask: np.ndarray) -> list[np.ndarray]:
    """Connected components (26-connectivity) of a 3-D boolean mask, largest first (ties: scan order)."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    if count == 0:
        return []
    sizes = np.bincount(labels.ravel())[1:]
    order = np.argsort(-sizes, kind="stable")
    return [labels == (index + 1) for index in order]


@dataclass(frozen=True, eq=False)
class Target:
    """What to explain. ``kind`` may be given as its string value (e.g. "contrastive").

    ``mask`` (MASK) and ``ground_truth`` (FALSE_POSITIVE / FALSE_NEGATIVE) are (D, H, W) arrays, non-zero meaning
    inside; they apply to every item of the batch. ``voxel`` is a (d, h, w) index (VOXEL, or the seed of COMPONENT).
    ``component`` is a rank by size, 0 being the largest (COMPONENT; default the largest; a seed voxel wins).
    """

    kind: TargetKind = TargetKind.LESION_LOGITS
    lesion_class: int = 1
    mask: np.ndarray | None = None
    voxel: tuple[int, int, int] | None = None
    component: int | None = None
    ground_truth: np.ndarray | None = None

    def __post_init__(self) -> None:
        kind = choose(TargetKind, self.kind, "target", TargetError)
        object.__setattr__(self, "kind", kind)
        if isinstance(self.lesion_class, bool) or int(self.lesion_class) != self.lesion_class or self.lesion_class < 0:
            raise TargetError(f"lesion_class must be a non-negative class index, got {self.lesion_class!r}.")
        object.__setattr__(self, "lesion_class", int(self.lesion_class))
        if self.mask is not None:
            object.__setattr__(self, "mask", _as_mask(self.mask, "mask"))
        if self.ground_truth is not None:
            object.__setattr__(self, "ground_truth", _as_mask(self.ground_truth, "ground_truth"))
        if self.voxel is not None:
            voxel = tuple(int(v) for v in self.voxel)
            if len(voxel) != 3:
                raise TargetError(f"Target voxel must be a (d, h, w) index, got {self.voxel!r}.")
            object.__setattr__(self, "voxel", voxel)
        if self.component is not None and (int(self.component) != self.component or self.component < 0):
            raise TargetError(f"Target component must be a rank >= 0 (0 = largest), got {self.component!r}.")
        if kind is TargetKind.MASK and self.mask is None:
            raise TargetError("Target 'mask' needs mask=<(D, H, W) array>; or choose target 'lesion-logits'.")
        if kind is TargetKind.VOXEL and self.voxel is None:
            raise TargetError("Target 'voxel' needs voxel=(d, h, w); or choose target 'component' or 'lesion-logits'.")
        if kind in _NEEDS_GT and self.ground_truth is None:
            raise TargetError(
                f"Target {kind.value!r} needs ground_truth=<(D, H, W) mask>; without one choose 'lesion-logits'."
            )

    # ------------------------------------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """JSON-ready description for provenance (arrays as shape, voxel count and hash)."""
        return {
            "kind": self.kind.value,
            "lesion_class": self.lesion_class,
            "mask": _mask_summary(self.mask),
            "voxel": list(self.voxel) if self.voxel is not None else None,
            "component": self.component,
            "ground_truth": _mask_summary(self.ground_truth),
        }

    def shows_evidence(self, logits: torch.Tensor) -> bool:
        """Whether this target falls back to the lesion evidence on ``logits`` (default target, nothing predicted)."""
        return self.kind is TargetKind.LESION_LOGITS and not bool(predicted_lesion(logits, self.lesion_class).any())

    def note(self, logits: torch.Tensor) -> str | None:
        """:data:`NO_LESION_NOTE` when :meth:`start_relevance` shows the lesion evidence on ``logits``, else None."""
        return NO_LESION_NOTE if self.shows_evidence(logits) else None

    def start_relevance(self, logits: torch.Tensor) -> torch.Tensor:
        """Starting relevance, shaped, typed and placed like ``logits`` (N, classes, D, H, W); detached."""
        if not isinstance(logits, torch.Tensor) or logits.ndim != 5:
            shape = tuple(logits.shape) if hasattr(logits, "shape") else type(logits).__name__
            raise TargetError(f"logits must be a torch tensor shaped (N, classes, D, H, W), got {shape}.")
        if not logits.is_floating_point():
            raise TargetError(f"logits must be floating point, got {logits.dtype}.")
        classes = logits.shape[1]
        if self.lesion_class >= classes:
            raise TargetError(f"lesion_class {self.lesion_class} does not exist: the logits have {classes} classes.")
        logits = logits.detach()
        kind = self.kind
        if kind is TargetKind.WHOLE_OUTPUT:
            return self._checked(logits.clone(), "the whole output is zero; nothing to explain")

        lesion = logits[:, self.lesion_class]
        start = torch.zeros_like(logits)
        if kind is TargetKind.PROBABILITY or self.shows_evidence(logits):
            probability = torch.softmax(logits, dim=1)[:, self.lesion_class]
            if kind is TargetKind.LESION_LOGITS:  # relative, so that a confident "no" still leaves a visible map
                probability = probability / probability.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-30)
            start[:, self.lesion_class] = lesion * probability
            return self._checked(start, "lesion logit times probability is zero everywhere; try 'whole-output'")
        if kind is TargetKind.VOXEL:
            self._check_voxel(logits)
            d, h, w = self.voxel  # type: ignore[misc]
            start[:, self.lesion_class, d, h, w] = lesion[:, d, h, w]
            return self._checked(
                start, f"the lesion logit at voxel {self.voxel} is 0; choose a voxel with lesion evidence "
                "(e.g. inside the predicted lesion) or target 'equal'"
            )

        selection = self._selection(logits)
        if kind is TargetKind.EQUAL:
            start[:, self.lesion_class] = selection.to(logits.dtype)
        elif kind is TargetKind.CONTRASTIVE:
            if classes < 2:
                raise TargetError("Target 'contrastive' needs at least 2 classes in the logits.")
            weight = selection.to(logits.dtype)
            start[:, self.lesion_class] = lesion * weight
            for other in range(classes):
                if other != self.lesion_class:
                    start[:, other] = -logits[:, other] * weight / (classes - 1)
        else:
            start[:, self.lesion_class] = lesion * selection.to(logits.dtype)
        return self._checked(start, f"the lesion logit is 0 on every voxel of the {kind.value} selection")

    # ------------------------------------------------------------------------------------------------------------
    def _selection(self, logits: torch.Tensor) -> torch.Tensor:
        """Boolean (N, D, H, W) voxels that carry the starting relevance (non-empty, or TargetError)."""
        spatial = tuple(logits.shape[2:])
        kind = self.kind
        predicted = predicted_lesion(logits, self.lesion_class)
        if kind in (TargetKind.LESION_LOGITS, TargetKind.EQUAL, TargetKind.CONTRASTIVE):
            if not bool(predicted.any()):
                raise TargetError(
                    f"The model predicts no lesion voxel, so target {kind.value!r} has nothing to explain: choose "
                    "'lesion-logits' (shows the lesion evidence), 'probability', 'voxel' or 'mask' instead."
                )
            return predicted
        if kind is TargetKind.MASK:
            mask = self._spatial(self.mask, "mask", spatial, logits.device)  # type: ignore[arg-type]
            if not bool(mask.any()):
                raise TargetError("The target mask is empty: draw at least one voxel, or choose 'lesion-logits'.")
            return mask.expand(logits.shape[0], *spatial)
        if kind in _NEEDS_GT:
            truth = self._spatial(self.ground_truth, "ground_truth", spatial, logits.device)  # type: ignore[arg-type]
            if kind is TargetKind.FALSE_POSITIVE:
                selection = predicted & ~truth
                missing = "no false-positive voxel (every predicted voxel is in the ground truth)"
            else:
                selection = truth & ~predicted
                missing = "no false-negative voxel (the prediction covers the whole ground truth)"
            if not bool(selection.any()):
                raise TargetError(f"There is {missing}: choose 'lesion-logits' or the other error target instead.")
            return selection
        if kind is TargetKind.COMPONENT:
            return self._component(predicted, spatial)
        raise AssertionError(f"unhandled target kind {kind}")  # pragma: no cover

    def _component(self, predicted: torch.Tensor, spatial: tuple[int, ...]) -> torch.Tensor:
        if predicted.shape[0] != 1:
            raise TargetError(
                f"Target 'component' works on one case at a time; got a batch of {predicted.shape[0]}. "
                "Explain the cases one by one."
            )
        components = connected_components(predicted[0].cpu().numpy())
        if not components:
            raise TargetError(
                "The model predicts no lesion voxel, so there is no component to explain: choose 'lesion-logits' "
                "(shows the lesion evidence), 'whole-output', 'voxel' or 'mask' instead."
            )
        if self.voxel is not None:
            self._check_voxel_shape(spatial)
            hits = [c for c in components if c[self.voxel]]
            if not hits:
                raise TargetError(
                    f"Seed voxel {self.voxel} is not in the predicted lesion: pick a voxel inside a predicted "
                    "component, or give component=<rank> (0 = largest)."
                )
            chosen = hits[0]
        else:
            rank = 0 if self.component is None else int(self.component)
            if rank >= len(components):
                raise TargetError(
                    f"Component rank {rank} does not exist: the prediction has {len(components)} component(s); "
                    f"use a rank from 0 (largest) to {len(components) - 1}."
                )
            chosen = components[rank]
        return torch.from_numpy(chosen).to(predicted.device).unsqueeze(0)

    def _spatial(self, mask: np.ndarray, name: str, spatial: tuple[int, ...], device: torch.device) -> torch.Tensor:
        if mask.shape != spatial:
            raise TargetError(
                f"Target {name} has shape {mask.shape} but the logits' grid is {spatial}: resample the {name} to the "
                "model grid first."
            )
        return torch.from_numpy(np.ascontiguousarray(mask)).to(device)

    def _check_voxel_shape(self, spatial: tuple[int, ...]) -> None:
        voxel = self.voxel
        if voxel is None or not all(0 <= v < s for v, s in zip(voxel, spatial)):
            raise TargetError(f"Target voxel {voxel} lies outside the logits' grid {spatial} (0-based d, h, w).")

    def _check_voxel(self, logits: torch.Tensor) -> None:
        self._check_voxel_shape(tuple(logits.shape[2:]))

    def _checked(self, start: torch.Tensor, why: str) -> torch.Tensor:
        if not bool(torch.isfinite(start).all()):
            raise TargetError("The logits contain NaN or infinite values; the model output is broken.")
        if not bool(start.any()):
            raise TargetError(f"The starting relevance is all zero: {why}.")
        return start
