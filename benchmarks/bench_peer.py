"""LRP engine cost on networks researchers train (MONAI, nnU-Net v2), side by side with one input gradient.

For each network (random weights, eval mode, float32 CPU) prints F+B (forward + backward to the input: one input
gradient, the cost floor of gradient-style LRP) and, per preset, the engine's time / (F+B). Targets: epsilon
<= 1.3x; rules with a modified forward (z+, alpha-beta) <= 1.1 x the floor (2F+B)/(F+B) of one extra forward per
layer. Times are medians of per-repeat ratios to a gradient timed right before each run, so a drifting load on a
shared machine cancels out as far as possible. The canonical copy is built (and cached) before timing.

Usage: python benchmarks/bench_peer.py [--size 32 64 64] [--repeats 5] [--threads N] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "LRPSegmentation"))

from LRPSegmentationLib.lrp import explain  # noqa: E402
from LRPSegmentationLib.lrp.convolution import fast_convolutions  # noqa: E402
from LRPSegmentationLib.lrp.outputs import full_resolution  # noqa: E402

PRESETS = ("epsilon", "epsilon-zplus", "epsilon-alpha1beta0")
MODIFIED = {"epsilon-zplus", "epsilon-alpha1beta0"}


def networks(channels: int) -> dict:
    from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet
    from monai.networks import nets

    dna = dict(input_channels=channels, n_stages=4, features_per_stage=[16, 32, 64, 128], conv_op=nn.Conv3d,
               kernel_sizes=3, strides=[1, 2, 2, 2], num_classes=2, conv_bias=True, norm_op=nn.InstanceNorm3d,
               norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True})
    return {
        "MONAI BasicUNet": lambda: nets.BasicUNet(3, channels, 2, features=(16, 16, 32, 64, 128, 16)),
        "MONAI UNet (residual)": lambda: nets.UNet(3, channels, 2, channels=(16, 32, 64, 128), strides=(2, 2, 2),
                                                   num_res_units=2),
        "MONAI DynUNet": lambda: nets.DynUNet(3, channels, 2, [3, 3, 3, 3], [1, 2, 2, 2], [2, 2, 2],
                                              filters=[16, 32, 64, 128]),
        "MONAI DynUNet res": lambda: nets.DynUNet(3, channels, 2, [3, 3, 3, 3], [1, 2, 2, 2], [2, 2, 2],
                                                  filters=[16, 32, 64, 128], res_block=True),
        "MONAI SegResNet": lambda: nets.SegResNet(3, 16, channels, 2, blocks_down=(1, 2, 2), blocks_up=(1, 1)),
        "MONAI AttentionUnet": lambda: nets.AttentionUnet(3, channels, 2, channels=(16, 32, 64, 128),
                                                          strides=(2, 2, 2)),
        "nnU-Net PlainConvUNet": lambda: PlainConvUNet(**dna, n_conv_per_stage=2, n_conv_per_stage_decoder=2),
        "nnU-Net ResidualEncoderUNet": lambda: ResidualEncoderUNet(**dna, n_blocks_per_stage=[1, 3, 4, 6],
                                                                   n_conv_per_stage_decoder=1),
    }


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def gradient(model: nn.Module, x: torch.Tensor, start: torch.Tensor) -> None:
    """One input gradient, on the convolution kernels the engine uses (fast_convolutions), so the ratio measures
    the engine, not a kernel choice."""
    xr = x.detach().requires_grad_(True)
    with fast_convolutions():
        torch.autograd.grad(full_resolution(model(xr)), xr, start)


def forward(model: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad(), fast_convolutions():
        model(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=3, default=(32, 64, 64), help="D H W of the input")
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--only", nargs="*", help="network names containing these words")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    x = torch.rand(1, args.channels, *args.size, generator=torch.Generator().manual_seed(0))
    print(f"input {tuple(x.shape)}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"median of {args.repeats} repeats")
    header = f"{'network':30s} {'F+B s':>7s} {'floor':>6s} " + " ".join(f"{p:>20s}" for p in PRESETS)
    print(header)
    for name, build in networks(args.channels).items():
        if args.only and not any(word.lower() in name.lower() for word in args.only):
            continue
        torch.manual_seed(0)
        model = build().eval()
        model.requires_grad_(False)
        with torch.no_grad():
            start = full_resolution(model(x)).abs()
        for preset in PRESETS:  # warm up: builds and caches the canonical copy
            explain(model, x, start, preset)
        gradient(model, x, start)
        grads, floors, ratios = [], [], {p: [] for p in PRESETS}
        for _ in range(args.repeats):
            for preset in PRESETS:
                g = _timed(lambda: gradient(model, x, start))
                ratios[preset].append(_timed(lambda: explain(model, x, start, preset)) / g)
                grads.append(g)
            f = _timed(lambda: forward(model, x))
            floors.append((grads[-1] + f) / grads[-1])
        floor = statistics.median(floors)
        cells = []
        for preset in PRESETS:
            ratio = statistics.median(ratios[preset])
            target = 1.1 * floor if preset in MODIFIED else 1.3
            cells.append(f"{ratio:5.2f}x ({'ok' if ratio <= target else 'over'} <={target:.2f})")
        print(f"{name:30s} {statistics.median(grads):7.3f} {floor:6.2f} " + " ".join(f"{c:>20s}" for c in cells))


if __name__ == "__main__":
    main()
