"""Time in-chain filter bands sharing one forward pass against explaining each band alone, side by side in one run.

Run: ``python benchmarks/bench_bands.py [--bands K] [--chunk C ...] [--repeats N]``. The bundled model explains a
synthetic 19x96x96 case on the CPU: once per band alone (the in-chain filter at the paper's taps, the way a
background run computes one band), then K bands with ``explain_bands``, C bands per forward pass (one backward
sweep each). Prints the per-band cost relative to one single-band explanation (target at most 0.5x).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

TARGET = 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bands", type=int, default=16, help="bands K (the first K of the default grid)")
    parser.add_argument("--chunk", type=int, nargs="+", default=[4, 8, 16], help="bands per forward pass to time")
    parser.add_argument("--repeats", type=int, default=3, help="paired runs per chunk size (median ratio)")
    parser.add_argument("--seed", type=int, default=2017)
    args = parser.parse_args()

    import torch

    from LRPSegmentationLib.pipeline.cli import keep_freed_cpu_memory

    keep_freed_cpu_memory()  # as in the lrpseg processes that compute a band alone or the grid

    from LRPSegmentationLib.data.synthetic import generate_case
    from LRPSegmentationLib.lrp import explain
    from LRPSegmentationLib.lrp.bands import band_grid, explain_bands
    from LRPSegmentationLib.lrp.taps import tap_filter
    from LRPSegmentationLib.lrp.targets import Target
    from LRPSegmentationLib.net.preprocess import PreprocessSpec, prepare_input
    from LRPSegmentationLib.net.weights import load_model

    loaded = load_model(None)
    case = generate_case(args.seed, shape=(19, 96, 96))
    x = prepare_input(case.images, PreprocessSpec.from_dict(loaded.info.preprocess))
    start = Target().start_relevance
    bands = band_grid()[: args.bands]
    print(f"bundled model {loaded.path.name}, input {tuple(x.shape)}, CPU, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; {len(bands)} bands: {', '.join(b.label for b in bands)}")
    explain(loaded.model, x, start, tap_filter=tap_filter(bands[0]))  # warm-up (canonized copy cached)

    def one_band_alone(k: int) -> float:
        began = time.perf_counter()
        explain(loaded.model, x, start, tap_filter=tap_filter(bands[k % len(bands)]))
        return time.perf_counter() - began

    singles, ratios = [], {chunk: [] for chunk in args.chunk}
    for repeat in range(args.repeats):  # interleaved, so a busy spell on a shared machine hits both sides
        for chunk in args.chunk:
            single = float(np.median([one_band_alone(repeat + j) for j in range(2)]))
            began = time.perf_counter()
            explain_bands(loaded.model, x, start, bands, chunk=chunk)
            ratios[chunk].append((time.perf_counter() - began) / len(bands) / single)
            singles.append(single)
    print(f"one band alone: {float(np.median(singles)):.2f} s (median of {len(singles)}, each the median of 2)")
    for chunk, values in ratios.items():
        print(f"bands: {chunk} per forward pass: {float(np.median(values)):.2f} x one single-band explanation per "
              f"band (median of {len(values)} paired runs, range {min(values):.2f}-{max(values):.2f}; target "
              f"{TARGET:.1f}x)")


if __name__ == "__main__":
    main()
