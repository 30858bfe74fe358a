"""Which output of a model is explained: the logits tensor, or the full-resolution one of several.

Deep-supervision networks (nnU-Net v2's ``deep_supervision=True``, MONAI ``DynUNet`` in training mode) return
one output per decoder level; the explanation is of the full-resolution output (nnU-Net's is the first).
"""

from __future__ import annotations

from typing import Any

import torch

from LRPSegmentationLib.lrp.errors import UnsupportedModelError


def full_resolution(output: Any) -> torch.Tensor:
    """``output`` itself if a tensor; of a list/tuple of tensors the largest (the first of equal ones)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (list, tuple)) and output and all(isinstance(t, torch.Tensor) for t in output):
        return max(output, key=lambda t: t.numel())  # max keeps the first of equal sizes
    raise UnsupportedModelError(
        f"The model returns {type(output).__name__}, not the logits tensor (or a list of deep-supervision outputs); "
        "wrap it in a module whose forward returns the logits."
    )
