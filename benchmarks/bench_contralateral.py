"""The contralateral check's cost beside the prediction it follows (bundled model, CPU).

For fresh synthetic cases of each generator family on their native grids, times the bundled model's prediction
without the check (forward pass, mapping back to the native grid, threshold) and the check alone on that mask,
in paired, interleaved runs, and prints the median ratio check / prediction per family.

Usage: python benchmarks/bench_contralateral.py [--count 3] [--seed 9000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

from LRPSegmentationLib.analysis.contralateral import contralateral_check, left_right_axis
from LRPSegmentationLib.data.synthetic import dataset_seeds, evaluation_families, generate_case
from LRPSegmentationLib.net.predict import predict_case
from LRPSegmentationLib.net.weights import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3, help="cases per family")
    parser.add_argument("--seed", type=int, default=9000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    checked = load_model()
    min_contrast = checked.contralateral_min_contrast or 0.5
    raw = replace(checked, info=replace(checked.info, postprocess={}))  # the same network, masks unchecked
    for family in evaluation_families():
        ratios, shapes = [], set()
        for seed in dataset_seeds(args.seed, args.count):
            case = generate_case(seed, family=family).to_case()
            shapes.add(case.geometry.shape)
            axis = left_right_axis(case.geometry.direction)
            predict_case(case, raw, "cpu")  # warm-up
            for _ in range(args.repeats):
                started = time.perf_counter()
                prediction = predict_case(case, raw, "cpu")
                predicted = time.perf_counter() - started
                started = time.perf_counter()
                contralateral_check(prediction.mask, case.images, case.modalities, axis, min_contrast)
                ratios.append((time.perf_counter() - started) / predicted)
        print(f"{family}: check / prediction {statistics.median(ratios):.3f} (median of {len(ratios)} pairs; "
              f"grids {', '.join('x'.join(map(str, s)) for s in sorted(shapes))})")


if __name__ == "__main__":
    main()
