"""Time of ``lrpseg check`` with its default settings on one synthetic case with the bundled model, per part and
per method, next to one plain explanation measured in the same run (target: the whole check within 2 minutes on 2
CPU cores).

    python benchmarks/bench_check.py [--model M] [--seed 9000] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from LRPSegmentationLib.data.synthetic import dataset_seeds, generate_case
from LRPSegmentationLib.net.preprocess import PreprocessSpec
from LRPSegmentationLib.net.weights import load_model
from LRPSegmentationLib.pipeline.check import CheckOptions, run_check
from LRPSegmentationLib.pipeline.explain_case import ExplainSettings, explain_case

TARGET_SECONDS = 120.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model file (default: the bundled model)")
    parser.add_argument("--seed", type=int, default=9000, help="dataset seed of the (held-out) synthetic case")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load_model(args.model)
    case = generate_case(dataset_seeds(args.seed, 1)[0]).to_case()
    explain_case(case, loaded, ExplainSettings(), "cpu")  # warm-up
    started = time.perf_counter()
    explain_case(case, loaded, ExplainSettings(), "cpu")
    single = time.perf_counter() - started
    started = time.perf_counter()
    result = run_check(case, loaded.model.cpu(), PreprocessSpec.from_dict(loaded.info.preprocess), CheckOptions())
    total = time.perf_counter() - started
    print(f"model {loaded.path.name}; case {case.case_id} {case.geometry.shape}; {args.threads} threads, CPU")
    print(f"one explanation (lrpseg explain's core): {single:.1f} s")
    for part, seconds in result.part_seconds.items():
        print(f"  part {part:14s} {seconds:6.1f} s")
    for name, entry in result.methods.items():
        print(f"  method {name:26s} {entry.seconds:6.1f} s")
    print(f"whole check: {total:.1f} s = {total / single:.0f} x one explanation; target {TARGET_SECONDS:.0f} s: "
          f"{'met' if total <= TARGET_SECONDS else 'NOT met'}")


if __name__ == "__main__":
    main()
