"""Compare the LRP rule presets on fresh synthetic cases whose lesion signal is known.

For each preset: run time, conservation (sum of input relevance / sum of start relevance), the share of
positive relevance inside the known lesion territory (hypoperfused region) next to that region's volume share,
and each modality's share of |relevance| next to the generator's modality weights. This is the evidence behind
the recommended default preset (README, "Rules and presets").

    python benchmarks/compare_rules.py [--model M] [--cases 3] [--seed 91000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from LRPSegmentationLib.data.modalities import MODALITIES
from LRPSegmentationLib.data.synthetic import MODALITY_WEIGHTS, dataset_seeds, generate_case
from LRPSegmentationLib.lrp import PRESETS
from LRPSegmentationLib.net.weights import load_model
from LRPSegmentationLib.pipeline.explain_case import ExplainSettings, explain_case


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model file (default: the bundled model)")
    parser.add_argument("--cases", type=int, default=3)
    parser.add_argument("--seed", type=int, default=91000)
    parser.add_argument("--presets", default=",".join(sorted(PRESETS)))
    args = parser.parse_args()
    loaded = load_model(args.model)
    synthetic = [generate_case(seed) for seed in dataset_seeds(args.seed, args.cases)]
    print(f"model {loaded.path.name}; {args.cases} fresh synthetic cases (dataset seed {args.seed}); CPU")
    print("modality weights of the generator: " + " ".join(f"{m} {MODALITY_WEIGHTS[m]:.1f}" for m in MODALITIES))
    header = f"{'preset':22s} {'s/case':>7s} {'conserv.':>9s} {'R+ in lesion':>13s} {'(volume)':>9s}  |share| " + \
        " ".join(f"{m:>5s}" for m in MODALITIES)
    print(header)
    for preset in args.presets.split(","):
        seconds, conservation, inside, volume, shares = [], [], [], [], []
        for index, s in enumerate(synthetic):
            case = s.to_case()
            started = time.perf_counter()
            result = explain_case(case, loaded, ExplainSettings(preset=preset), "cpu")
            seconds.append(time.perf_counter() - started)
            relevance, region = result.relevance, s.explanation.hypoperfused
            positive = np.clip(relevance.sum(axis=0), 0, None)
            conservation.append(result.conservation)
            inside.append(positive[region].sum() / max(positive.sum(), 1e-30))
            volume.append(region.mean())
            magnitude = np.abs(relevance).reshape(len(MODALITIES), -1).sum(axis=1)
            shares.append(magnitude / max(magnitude.sum(), 1e-30))
        share = np.mean(shares, axis=0)
        print(f"{preset:22s} {np.median(seconds):7.1f} {np.median(conservation):9.3f} {np.mean(inside):13.2f} "
              f"{np.mean(volume):9.3f}          " + " ".join(f"{v:5.2f}" for v in share))


if __name__ == "__main__":
    main()
