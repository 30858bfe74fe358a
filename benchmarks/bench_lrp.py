"""LRP engine cost on CPU, side by side with one input gradient of the same model.

Prints, per volume size (U-Net3D, base width 16, BatchNorm, random weights, eval mode):
- F (forward with autograd recording), B (backward to the input), F+B (one input gradient), and the
  peak memory of the input gradient;
- for every rule preset, with and without a filter at every tap: time / (F+B), the floor
  (2F+B)/(F+B) of one extra modified forward per layer, and peak memory / the gradient's.

Times are medians of ``--repeats`` warm runs (the canonized copy is cached before timing). Each
preset's ratio is the median of per-repeat ratios to an input gradient timed right before it, so a
shared, drifting machine load cancels out as far as possible.
Peak memory is measured honestly for CPU tensors: the process's peak resident set size (VmHWM, reset
through /proc/self/clear_refs before each run, after ``malloc_trim``) minus its resident size just before
the run. It counts everything the run allocates (tensors, autograd graph, allocator slack), not only torch
tensors; tracemalloc cannot see torch's CPU allocations.

Usage: python benchmarks/bench_lrp.py [--quick | --sizes 96 192] [--baseline-only] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "LRPSegmentation"))

from LRPSegmentationLib.lrp import PRESETS, explain  # noqa: E402
from LRPSegmentationLib.lrp.canonize import cached_canonical  # noqa: E402
from LRPSegmentationLib.lrp.convolution import fast_convolutions  # noqa: E402
from LRPSegmentationLib.lrp.taps import tap_filter as make_tap_filter  # noqa: E402
from LRPSegmentationLib.net.model import UNet3D, UNetConfig  # noqa: E402

PAPER_TAP_FILTER = make_tap_filter("pass:0.4")  # the library's in-chain filter, pass [0, 0.4] at every tap

SIZES = [(1, 6, 19, 96, 96), (1, 6, 19, 192, 192)]
QUICK_SIZES = [(1, 6, 19, 48, 48)]

_LIBC = ctypes.CDLL("libc.so.6") if sys.platform.startswith("linux") else None


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_memory_mib(fn: Callable[[], object]) -> float:
    """Peak RSS growth (MiB) while running ``fn`` once; NaN where the peak cannot be reset."""
    gc.collect()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
    try:
        start = _status_kib("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return float("nan")
    result = fn()
    peak = _status_kib("VmHWM")
    del result
    return (peak - start) / 1024


def median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def make_model(seed: int = 0) -> UNet3D:
    torch.manual_seed(seed)
    model = UNet3D(UNetConfig(base_width=16))
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            with torch.no_grad():
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _start(out: torch.Tensor) -> torch.Tensor:
    start = torch.zeros_like(out)
    start[:, 1] = out[:, 1]
    return start


def _gradient_fn(model: torch.nn.Module, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    """One input gradient on the convolution kernels the engine uses (fast_convolutions): the ratios then measure
    the engine, not a kernel choice."""
    def gradient():
        xr = x.detach().requires_grad_(True)
        with fast_convolutions():
            out = model(xr)
            return torch.autograd.grad(out, xr, _start(out.detach()))[0]
    return gradient


def paired_ratio(fn: Callable[[], object], reference: Callable[[], object], repeats: int) -> float:
    """Median over repeats of time(fn) / time(reference), the two timed back to back."""
    ratios = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        reference()
        t1 = time.perf_counter()
        fn()
        ratios.append((time.perf_counter() - t1) / (t1 - t0))
    return statistics.median(ratios)


def baseline(model: torch.nn.Module, x: torch.Tensor, repeats: int) -> dict[str, float]:
    def forward():
        xr = x.detach().requires_grad_(True)
        with fast_convolutions():
            return xr, model(xr)

    gradient = _gradient_fn(model, x)

    forward(), gradient()  # warm-up
    state = {}

    def timed_backward() -> float:
        xr, out = forward()
        start = _start(out.detach())
        t0 = time.perf_counter()
        with fast_convolutions():
            torch.autograd.grad(out, xr, start)
        return time.perf_counter() - t0

    f = median_time(forward, repeats)
    b = statistics.median(timed_backward() for _ in range(repeats))
    fb = median_time(gradient, repeats)
    state.update(F=f, B=b, FB=fb, mem=peak_memory_mib(gradient))
    return state


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"one small size {QUICK_SIZES[0]} instead of {SIZES}")
    parser.add_argument("--sizes", type=int, nargs="*", help="in-plane sizes to run, e.g. 96 192 (depth 19)")
    parser.add_argument("--baseline-only", action="store_true", help="only forward, input gradient, peak memory")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--presets", nargs="*", default=list(PRESETS))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}, repeats {args.repeats} (median)")
    model = make_model()
    shapes = QUICK_SIZES if args.quick else SIZES
    if args.sizes:
        shapes = [(1, 6, 19, size, size) for size in args.sizes]
    for shape in shapes:
        x = torch.rand(shape)
        base = baseline(model, x, args.repeats)
        floor = (2 * base["F"] + base["B"]) / (base["F"] + base["B"])
        print(f"\ninput {shape}, UNet3D base width 16")
        print(f"  forward F {base['F']:.3f} s | backward B {base['B']:.3f} s | input gradient F+B {base['FB']:.3f} s"
              f" | peak memory of the gradient {base['mem']:.0f} MiB | floor (2F+B)/(F+B) {floor:.2f}")
        if args.baseline_only:
            continue
        cached_canonical(model, x)  # fill the cache outside the timings
        print(f"  {'preset':<22}{'filters':<9}{'time/(F+B)':>11}{'floor':>7}{'memory/grad':>13}")
        for preset in args.presets:
            for tap_filter in (None, PAPER_TAP_FILTER):
                def run():
                    return explain(model, x, _start, preset, tap_filter=tap_filter).relevance
                run()
                ratio = paired_ratio(run, _gradient_fn(model, x), args.repeats)
                mem = peak_memory_mib(run)
                print(f"  {preset:<22}{'all' if tap_filter else 'none':<9}{ratio:>11.2f}{floor:>7.2f}"
                      f"{mem / base['mem']:>13.2f}", flush=True)


if __name__ == "__main__":
    main()
