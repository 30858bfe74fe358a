"""GPU figures: predict + explain of a (6,19,192,192) case, the in-chain band grid, and training the paper preset.

Run on a machine with an NVIDIA GPU: ``python benchmarks/bench_gpu.py [--repeats N] [--epochs 80]
[--max-seconds 300] [--skip explain bands train]``. ``--device cpu --quick`` is a smoke test with tiny sizes
(19x48x48 cases and grids, 3 training cases of 1 epoch, base width 8); its figures mean nothing. Measures, on the
device, each figure printed on one line with its target and the card that gave it:

1. ``explain_case`` (the whole flow the CLI and the Slicer module run: the model's preprocessing, forward, LRP with
   the default settings, the prediction and the relevance mapped back to the native grid) of a synthetic
   (6,19,192,192) case with the bundled model: one warm-up, then the median wall time of ``--repeats`` calls, each
   between ``torch.cuda.synchronize()`` calls (target 0.2 s on an H100-class card). Beside it the LRP engine alone
   on the device, and the paper-width network (``UNet3D(UNetConfig(base_width=32))``, random weights) explained at
   19x192x192, the case's own grid.
2. The default band grid (``band_grid()``, 45 in-chain bands) with ``explain_bands`` on the bundled model at its
   19x96x96 grid, as ``bench_bands.py`` times it on the CPU: total and per-band time for each ``--chunk`` (bands per
   explained forward pass), and the ratio to one single-band explanation (``explain`` with that band's filter).
3. ``train`` of the paper preset (base width 32, grid B 19x96x96, batch 1, Adam, cross-entropy, mixed precision on
   CUDA) on 43 synthetic cases written to a temporary folder: the first epoch (which includes loading the cases and
   the warm-up), the median later epoch, the time projected for 80 epochs and the speed-up over the paper's about
   5 h per network (target at least 20x). With ``--max-seconds`` the run stops after the epoch that crosses the
   budget and the 80 epochs are projected from the epochs measured (the line says so).
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "LRPSegmentation"))

EXPLAIN_TARGET_S = 0.2
TRAIN_TARGET_SPEEDUP = 20.0
PAPER_HOURS = 5.0
PAPER_EPOCHS = 80
PARTS = ("explain", "bands", "train")


class _BudgetReached(Exception):
    """Raised from train()'s progress callback to stop after the epoch that crossed --max-seconds."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu for a smoke test")
    parser.add_argument("--quick", action="store_true", help="tiny sizes for a CPU smoke test (figures mean nothing)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed runs per figure after one warm-up (median; band grid at most 3; quick 1)")
    parser.add_argument("--chunk", type=int, nargs="+", default=None,
                        help="bands per explained forward pass (default: the library's BAND_CHUNK and all at once)")
    parser.add_argument("--epochs", type=int, default=PAPER_EPOCHS, help="epochs to train (paper: 80)")
    parser.add_argument("--max-seconds", type=float, default=300.0,
                        help="stop training after the epoch that crosses this many seconds and project (0: no limit)")
    parser.add_argument("--cases", type=int, default=None, help="synthetic training cases (default 43, quick 3)")
    parser.add_argument("--skip", nargs="+", choices=PARTS, default=[], help="parts to leave out")
    parser.add_argument("--seed", type=int, default=2017)
    return parser.parse_args(argv)


def choose_device(name: str) -> torch.device:
    """The device asked for; exits 2 with one line when CUDA is asked for and PyTorch sees no GPU."""
    if name.lower().startswith("cuda") and not torch.cuda.is_available():
        print(f"bench_gpu: --device {name} asked for, but PyTorch {torch.__version__} (CUDA build "
              f"{torch.version.cuda or 'none'}) sees no CUDA GPU; run it on a GPU machine, or use --device cpu "
              "--quick for a smoke test.", file=sys.stderr)
        raise SystemExit(2)
    try:
        device = torch.device(name)
    except RuntimeError as error:
        print(f"bench_gpu: unknown device {name!r} ({error}); use cuda, cuda:N or cpu.", file=sys.stderr)
        raise SystemExit(2) from None
    if device.type not in ("cuda", "cpu"):
        print(f"bench_gpu: unsupported device {name!r}; use cuda, cuda:N or cpu.", file=sys.stderr)
        raise SystemExit(2)
    return device


def card_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    began = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - began


def median_time(fn: Callable[[], object], device: torch.device, repeats: int) -> tuple[float, list[float]]:
    times = [timed(fn, device) for _ in range(repeats)]
    return statistics.median(times), times


def print_peak_memory(device: torch.device, label: str) -> None:
    if device.type == "cuda":
        print(f"{label}: peak GPU memory so far {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")


def spread(times: list[float]) -> str:
    return f"median of {len(times)}, range {min(times):.3f}-{max(times):.3f} s"


def bench_explain(args, device: torch.device, label: str, card: str) -> None:
    from LRPSegmentationLib.data.synthetic import generate_case
    from LRPSegmentationLib.lrp import explain
    from LRPSegmentationLib.lrp.targets import Target
    from LRPSegmentationLib.net.model import UNet3D, UNetConfig, count_parameters
    from LRPSegmentationLib.net.preprocess import PreprocessSpec, prepare_input
    from LRPSegmentationLib.net.weights import load_model
    from LRPSegmentationLib.pipeline.explain_case import ExplainSettings, explain_case

    shape = (19, 48, 48) if args.quick else (19, 192, 192)
    case = generate_case(args.seed, shape=shape).to_case()
    loaded = load_model(None, device)
    if args.quick:  # the bundled model's own grid is 19x96x96; the smoke test explains on the case's 19x48x48
        loaded.info = dataclasses.replace(loaded.info, preprocess={**loaded.info.preprocess, "size": list(shape)})
    settings = ExplainSettings()
    grid = tuple(loaded.info.preprocess["size"]) if loaded.info.preprocess.get("size") else shape
    result = explain_case(case, loaded, settings, device)  # warm-up (cuDNN plans, the canonized copy)
    used = result.provenance["device"]
    if torch.device(used).type != device.type:
        print(f"{label}: predict + explain fell back to {used} (out of GPU memory?); figure not measured")
        return
    median, times = median_time(lambda: explain_case(case, loaded, settings, device), device, args.repeats)
    print(f"{label}: predict + explain {median:.3f} s (target {EXPLAIN_TARGET_S} s on an H100-class card; "
          f"{spread(times)}; explain_case of a (6,{','.join(map(str, shape))}) case, bundled model "
          f"{loaded.path.name}, base width {loaded.model.config.base_width}, model grid {'x'.join(map(str, grid))}, "
          f"preset {settings.preset}) on {card}")

    x = loaded.prep().prepare(case.images, case.geometry.spacing).to(device)
    start = Target().start_relevance
    model = loaded.model.to(device).eval()
    explain(model, x, start)
    engine, times = median_time(lambda: explain(model, x, start), device, args.repeats)
    print(f"{label}: of which the LRP engine alone (forward + relevance, input already on the device) {engine:.3f} s "
          f"({spread(times)}) on {card}")

    width = 8 if args.quick else 32
    paper = UNet3D(UNetConfig(base_width=width)).to(device).eval()
    x = prepare_input(case.images, PreprocessSpec(size=shape)).to(device)
    explain(paper, x, start)
    wide, times = median_time(lambda: explain(paper, x, start), device, args.repeats)
    print(f"{label}: paper-width network explain {wide:.3f} s at (1,6,{','.join(map(str, shape))}) (base width "
          f"{width}, {count_parameters(paper) / 1e6:.2f} M parameters, random weights, preset {settings.preset}; "
          f"{spread(times)}) on {card}")
    print_peak_memory(device, label)


def bench_bands(args, device: torch.device, label: str, card: str) -> None:
    from LRPSegmentationLib.data.synthetic import generate_case
    from LRPSegmentationLib.lrp import explain
    from LRPSegmentationLib.lrp.bands import band_grid, explain_bands
    from LRPSegmentationLib.lrp.taps import tap_filter
    from LRPSegmentationLib.lrp.targets import Target
    from LRPSegmentationLib.net.preprocess import PreprocessSpec, prepare_input
    from LRPSegmentationLib.net.weights import load_model
    from LRPSegmentationLib.options import BAND_CHUNK

    loaded = load_model(None, device)
    model = loaded.model.to(device).eval()
    grid = (19, 48, 48) if args.quick else (19, 96, 96)
    spec = PreprocessSpec.from_dict(loaded.info.preprocess)
    if args.quick:
        spec = PreprocessSpec(size=grid, normalization=spec.normalization)
    x = prepare_input(generate_case(args.seed, shape=grid).images, spec).to(device)
    start = Target().start_relevance
    bands = band_grid()[:4] if args.quick else band_grid()
    chunks = args.chunk or sorted({min(BAND_CHUNK, len(bands)), len(bands)})
    repeats = max(1, min(args.repeats, 3))

    explain(model, x, start, tap_filter=tap_filter(bands[0]))  # warm-up
    singles = [timed(lambda k=k: explain(model, x, start, tap_filter=tap_filter(bands[k % len(bands)])), device)
               for k in range(max(args.repeats, 1))]
    single = statistics.median(singles)
    grid_name = f"the first {len(bands)} bands of the grid" if args.quick else f"band grid {len(bands)} bands"
    print(f"{label}: one band alone {single:.3f} s ({spread(singles)}; explain with the in-chain filter, bundled "
          f"model at (1,6,{','.join(map(str, grid))})) on {card}")
    for chunk in chunks:
        if not args.quick:
            explain_bands(model, x, start, bands, chunk=chunk)  # warm-up for this chunk size
        total, times = median_time(lambda c=chunk: explain_bands(model, x, start, bands, chunk=c), device, repeats)
        per_band = total / len(bands)
        print(f"{label}: {grid_name}, {chunk} per forward pass: {total:.3f} s total, "
              f"{per_band:.4f} s per band = {per_band / single:.2f} x one single-band explanation ({spread(times)}; "
              f"CPU target 0.5x) on {card}")
    print_peak_memory(device, label)


def bench_train(args, device: torch.device, label: str, card: str) -> None:
    from LRPSegmentationLib.data.synthetic import generate_dataset
    from LRPSegmentationLib.net.preprocess import PreprocessSpec
    from LRPSegmentationLib.net.train import PRESETS, EpochReport, train, with_overrides

    count = args.cases or (3 if args.quick else 43)
    case_shape = (19, 48, 48) if args.quick else (25, 128, 128)  # ISLES 2017's smallest grid (128x128x25)
    overrides = {"epochs": 1 if args.quick else args.epochs}
    if args.quick:
        overrides.update(base_width=8, preprocess=PreprocessSpec(size=(19, 48, 48)))
    config = with_overrides(PRESETS["paper"], **overrides)
    with tempfile.TemporaryDirectory(prefix="bench_gpu_") as tmp:
        began = time.perf_counter()
        generate_dataset(Path(tmp) / "data", count, args.seed, shape=case_shape)
        print(f"{label}: wrote {count} synthetic cases of {'x'.join(map(str, case_shape))} in "
              f"{time.perf_counter() - began:.1f} s (CPU; not part of the training figure)")
        ends: list[float] = []

        def progress(report: EpochReport) -> None:
            synchronize(device)
            ends.append(time.perf_counter())
            took = ends[-1] - (ends[-2] if len(ends) > 1 else started)
            print(f"  epoch {report.epoch}/{config.epochs}: {took:.2f} s, "
                  f"loss {report.loss:.4f}, dice (train batches) {report.dice_train:.3f}", flush=True)
            if args.max_seconds > 0 and ends[-1] - started >= args.max_seconds and report.epoch < config.epochs:
                raise _BudgetReached

        started = time.perf_counter()
        stopped = False
        try:
            train(Path(tmp) / "data", Path(tmp) / "model", config, device=str(device), preset_name="paper",
                  progress=progress, show_bar=False)
        except _BudgetReached:
            stopped = True
        finished = time.perf_counter()
    first = ends[0] - started
    epochs_run = f"{len(ends)} epoch{'s' if len(ends) != 1 else ''}"
    later = [b - a for a, b in zip(ends, ends[1:])]
    steady = statistics.median(later) if later else first
    projected = first + (PAPER_EPOCHS - 1) * steady
    speedup = PAPER_HOURS * 3600 / projected
    how = (f"projected from {len(ends)} measured epochs (stopped at the {args.max_seconds:.0f} s budget)" if stopped
           else f"projected from all {epochs_run} run" if len(ends) != PAPER_EPOCHS
           else "80 epochs run")
    if not later:
        how += ", every epoch costed as the first (an overestimate)"
    print(f"{label}: train paper preset: first epoch {first:.2f} s (with loading {count} cases and warm-up), later "
          f"epochs {steady:.2f} s each (median of {len(later)}), base width {config.base_width}, grid "
          f"{'x'.join(map(str, config.preprocess.size))}, batch {config.batch_size}, "
          f"amp {config.amp and device.type == 'cuda'}; {epochs_run} took {ends[-1] - started:.1f} s"
          + ("" if stopped else f" ({finished - started:.1f} s with the final scoring)") + f" on {card}")
    print(f"{label}: train 80 epochs {projected:.1f} s = {projected / 60:.1f} min ({how}) -> {speedup:.1f}x faster "
          f"than the paper's about {PAPER_HOURS:.0f} h per network (target >= {TRAIN_TARGET_SPEEDUP:.0f}x) on {card}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.quick:
        args.repeats = 1
    device = choose_device(args.device)
    from LRPSegmentationLib.pipeline.cli import keep_freed_cpu_memory

    keep_freed_cpu_memory()  # as the lrpseg processes do
    card = card_name(device)
    label = "gpu" if device.type == "cuda" else "cpu"
    cudnn = torch.backends.cudnn.version() if device.type == "cuda" else None
    quick = "; --quick: tiny sizes, figures mean nothing" if args.quick else ""
    print(f"device {device}: {card}; torch {torch.__version__}, CUDA {torch.version.cuda or 'none'}, cuDNN "
          f"{cudnn or 'n/a'}, Python {platform.python_version()}{quick}", flush=True)
    parts = {"explain": bench_explain, "bands": bench_bands, "train": bench_train}
    for name, part in parts.items():
        if name not in args.skip:
            part(args, device, label, card)
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
