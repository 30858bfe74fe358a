"""Time in-chain filter bands computed in batches against explaining each band alone, side by side in one run.

Run: ``python benchmarks/bench_bands.py [--bands K] [--batch B ...] [--repeats N]``. The bundled model explains a
synthetic 19x96x96 case on the CPU: once per band alone (the in-chain filter at the paper's taps, the way a
background run computes one band), then K bands with ``explain_bands`` at each batch size. Prints the per-band cost
of each batched run relative to one single-band explanation (target at most 0.5x).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

TARGET = 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bands", type=int, default=8, help="bands K (the first K of the default grid)")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 2, 4], help="batch sizes to time")
    parser.add_argument("--repeats", type=int, default=2, help="single-band explanations timed (median)")
    parser.add_argument("--seed", type=int, default=2017)
    args = parser.parse_args()

    import torch

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
    singles = []
    for k in range(args.repeats):
        began = time.perf_counter()
        explain(loaded.model, x, start, tap_filter=tap_filter(bands[k % len(bands)]))
        singles.append(time.perf_counter() - began)
    single = float(np.median(singles))
    print(f"one band alone: {single:.2f} s (median of {args.repeats})")
    for batch in args.batch:
        began = time.perf_counter()
        explain_bands(loaded.model, x, start, bands, batch_size=batch)
        per_band = (time.perf_counter() - began) / len(bands)
        print(f"bands: batch {batch}: {per_band:.2f} s per band = {per_band / single:.2f} x one single-band "
              f"explanation (target {TARGET:.1f}x)")


if __name__ == "__main__":
    main()
