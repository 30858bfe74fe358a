"""Baseline attribution methods for a segmentation network, on one scalar target score (a few lines each, in torch).

The segmentation output (N, classes, D, H, W) becomes one number per case, ``score(x) = sum(weights * model(x))``
with fixed ``weights`` (e.g. 1 on the lesion logit of the target voxels): the scalar-target wrapper the Captum
maintainers advise for segmentation. Every method returns a (C, D, H, W) float32 map on the model grid:

- gradient d score / d x; input x gradient; integrated gradients from a zero baseline (Riemann midpoints);
- SmoothGrad: the mean gradient at noisy copies of x (noise ``sigma`` times each channel's range);
- occlusion: the score drop when a patch of one channel is replaced by that channel's in-brain mean, spread
  over the patch (patches only where the target is, plus a margin; elsewhere 0);
- Grad-CAM at a layer (default the finest decoder block): ReLU(sum_k mean(dS/dA_k) A_k), resized to the input
  grid; it has no input channels, so every channel gets the same map.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from LRPSegmentationLib.lrp.convolution import fast_convolutions


@dataclass(frozen=True)
class ScalarTarget:
    """``score(x) = sum(weights * model(x))`` per case; ``weights`` is shaped like the output (1, K, D, H, W)."""

    model: nn.Module
    weights: torch.Tensor

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Scores of a batch (N,)."""
        with fast_convolutions():
            return (self.model(x) * self.weights).flatten(1).sum(1)

    def scores(self, batch: torch.Tensor, chunk: int = 4) -> np.ndarray:
        """Scores of many inputs without gradients, ``chunk`` at a time."""
        with torch.no_grad():
            return np.concatenate([self(part).double().cpu().numpy() for part in torch.split(batch, chunk)])


def gradient(target: ScalarTarget, x: torch.Tensor) -> torch.Tensor:
    """d score / d x at x (1, C, D, H, W) -> (1, C, D, H, W)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(target(x).sum(), x)
    return grad.detach()


def input_x_gradient(target: ScalarTarget, x: torch.Tensor, grad: torch.Tensor | None = None) -> torch.Tensor:
    return x.detach() * (gradient(target, x) if grad is None else grad)


def _mean_gradient(target: ScalarTarget, batch: torch.Tensor, chunk: int = 4) -> torch.Tensor:
    """Mean over a batch of inputs of d score / d x, ``chunk`` inputs per pass (cases are independent in eval mode)."""
    total = sum(gradient(target, part).sum(0, keepdim=True) for part in torch.split(batch, chunk))
    return total / batch.shape[0]


def integrated_gradients(target: ScalarTarget, x: torch.Tensor, steps: int = 8) -> torch.Tensor:
    """(x - 0) * mean gradient on the straight path from 0 to x, at ``steps`` midpoints."""
    alphas = (torch.arange(steps, dtype=x.dtype) + 0.5) / steps
    return x.detach() * _mean_gradient(target, x.detach() * alphas.view(-1, 1, 1, 1, 1))


def smoothgrad(target: ScalarTarget, x: torch.Tensor, samples: int = 8, sigma: float = 0.1,
               seed: int = 0) -> torch.Tensor:
    """Mean gradient over ``samples`` copies of x with Gaussian noise of ``sigma`` x each channel's range."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    spread = (x.amax(dim=(2, 3, 4), keepdim=True) - x.amin(dim=(2, 3, 4), keepdim=True)) * sigma
    noise = torch.randn((samples, *x.shape[1:]), generator=generator).to(x.device, x.dtype)
    return _mean_gradient(target, x.detach() + noise * spread)


def occlusion(target: ScalarTarget, x: torch.Tensor, fill: torch.Tensor, region: np.ndarray,
              patch: tuple[int, int, int] = (8, 32, 32), margin: int = 0, chunk: int = 4) -> torch.Tensor:
    """Score drop per (channel, patch) spread evenly over the patch; ``fill`` (C,) the replacement per channel,
    ``region`` a (D, H, W) bool mask: only patches within its bounding box grown by ``margin`` are occluded."""
    _, channels, *shape = x.shape
    result = torch.zeros_like(x)
    if not region.any():
        return result
    lows = [max(0, int(i.min()) - margin) for i in np.nonzero(region)]
    highs = [min(n, int(i.max()) + 1 + margin) for i, n in zip(np.nonzero(region), shape)]
    boxes = [tuple(slice(s, min(s + p, h)) for s, p, h in zip(start, patch, highs))
             for start in np.stack(np.meshgrid(*(range(lo, hi, p) for lo, hi, p in zip(lows, highs, patch)),
                                               indexing="ij"), -1).reshape(-1, 3)]
    jobs = [(c, box) for c in range(channels) for box in boxes]
    base = float(target.scores(x)[0])
    for begin in range(0, len(jobs), chunk):
        part = jobs[begin:begin + chunk]
        batch = x.detach().repeat(len(part), 1, 1, 1, 1)
        for n, (c, box) in enumerate(part):
            batch[(n, c, *box)] = fill[c]
        drops = base - target.scores(batch, chunk)
        for (c, box), drop in zip(part, drops):
            size = int(np.prod([b.stop - b.start for b in box]))
            result[(0, c, *box)] = float(drop) / size
    return result


def default_cam_layer(model: nn.Module) -> str | None:
    """The finest decoder block of a :class:`~.model.UNet3D` ("decoders.0"), else None."""
    names = dict(model.named_modules())
    return "decoders.0" if "decoders.0" in names else None


def grad_cam(target: ScalarTarget, x: torch.Tensor, layer: str) -> torch.Tensor:
    """Grad-CAM at module ``layer`` (3-D), resized to x's grid and repeated over its channels."""
    module = dict(target.model.named_modules()).get(layer)
    if module is None:
        raise ValueError(f"Grad-CAM layer {layer!r} is not a module of the model.")
    seen: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, out: seen.append(out))
    try:
        with torch.enable_grad():
            x_req = x.detach().requires_grad_(True)
            score = target(x_req).sum()
            (grad,) = torch.autograd.grad(score, seen[-1])
    finally:
        handle.remove()
    activation = seen[-1].detach()
    cam = F.relu((grad.mean(dim=(2, 3, 4), keepdim=True) * activation).sum(1, keepdim=True))
    cam = cam[..., : x.shape[2], : x.shape[3], : x.shape[4]]  # the U-Net pads to a multiple of 8
    if tuple(cam.shape[2:]) != tuple(x.shape[2:]):
        cam = F.interpolate(cam, size=tuple(x.shape[2:]), mode="trilinear", align_corners=False)
    return cam.expand(-1, x.shape[1], -1, -1, -1).contiguous()
