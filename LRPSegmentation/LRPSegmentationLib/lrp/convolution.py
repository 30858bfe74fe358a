"""3-D convolutions on the CPU through oneDNN (mkldnn) where PyTorch's own choice falls back to its slow kernel.

PyTorch picks oneDNN for a CPU convolution only when the batch is above 1 or ``N * C * D * H`` exceeds 20480, a
rule made for 2-D images: a 3-D volume of 8 channels at 24 x 96 x 96 (the bundled model's first layers) gets the
reference kernel, which is about 20 times slower there. :func:`fast_convolutions` routes such ``conv3d`` calls to
``torch.mkldnn_convolution`` (same result to float rounding, autograd intact), and :func:`conv3d_input_grad` computes
a stride-1 convolution's input gradient as a oneDNN convolution with the flipped kernel. Nothing changes on other
devices, dtypes or layouts.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.overrides import TorchFunctionMode

__all__ = ["conv3d_input_grad", "fast_convolutions"]


def _triple(value: int | Sequence[int]) -> list[int]:
    return [int(value)] * 3 if isinstance(value, int) else [int(v) for v in value]


def _eligible(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (torch.backends.mkldnn.is_available() and x.device.type == "cpu" and x.dtype == torch.float32
            and weight.dtype == torch.float32 and x.dim() == 5 and not x.is_mkldnn)


class fast_convolutions(TorchFunctionMode):  # noqa: N801 - used as a context manager, like torch.no_grad
    """Within this context, CPU float32 ``conv3d`` calls with numeric padding run on oneDNN."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.conv3d and args and isinstance(args[0], torch.Tensor):
            names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
            values = dict(zip(names, args)) | kwargs
            x, weight = values["input"], values["weight"]
            padding = values.get("padding", 0)
            if _eligible(x, weight) and not isinstance(padding, str):
                return torch.mkldnn_convolution(
                    x.contiguous(), weight.contiguous(), values.get("bias"), _triple(padding),
                    _triple(values.get("stride", 1)), _triple(values.get("dilation", 1)), int(values.get("groups", 1)))
        return func(*args, **kwargs)


def conv3d_input_grad(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, stride: Sequence[int],
                      padding: Sequence[int], dilation: Sequence[int], groups: int) -> torch.Tensor | None:
    """d conv3d(x, weight) / d x applied to ``grad``, as one oneDNN convolution with the flipped, transposed kernel
    (stride 1, dilation 1, one group, padding below the kernel size); None when that does not apply."""
    kernel = weight.shape[2:]
    if (not _eligible(grad, weight) or tuple(stride) != (1, 1, 1) or tuple(dilation) != (1, 1, 1) or groups != 1
            or any(p > k - 1 for p, k in zip(padding, kernel)) or grad.shape[0] != x.shape[0]):
        return None
    full = [k - 1 - p for k, p in zip(kernel, padding)]
    return torch.mkldnn_convolution(grad.contiguous(), _flipped(weight), None, full, [1, 1, 1], [1, 1, 1], 1)


_FLIPPED: dict[int, tuple[torch.Tensor, int, torch.Tensor]] = {}


def _flipped(weight: torch.Tensor) -> torch.Tensor:
    """The transposed, flipped kernel of ``weight``, made once per weight version (a few layers' worth kept)."""
    kept = _FLIPPED.get(id(weight))
    if kept is None or kept[0] is not weight or kept[1] != weight._version:
        if len(_FLIPPED) >= 64:
            _FLIPPED.clear()
        kept = _FLIPPED[id(weight)] = (weight, weight._version, weight.transpose(0, 1).flip(2, 3, 4).contiguous())
    return kept[2]
