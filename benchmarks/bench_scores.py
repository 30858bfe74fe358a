"""Time the live filter-slider path: re-filter a cached (6, 19, 192, 192) float32 map and recompute every score.

Run: ``python benchmarks/bench_scores.py [--repeats N]``. For each filter it prints the median wall time and the
median CPU time of this process (numpy runs single-threaded here, so CPU time is what an idle machine would
show as wall time; on a shared machine wall time includes waiting for a core), split into the re-filter step and
re-filter + all scores, and the ratio to the 30 ms target. Also times the one-off steps done when a new map
arrives (normalising the map, binarising the inputs).
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable

import numpy as np

from LRPSegmentationLib.analysis.filters import AmplitudeFilter, normalise_map
from LRPSegmentationLib.analysis.metrics import EmptyMaskWarning
from LRPSegmentationLib.analysis.scores import reference_masks, score_explanation

TARGET_MS = 30.0
SHAPE = (6, 19, 192, 192)


def _median_ms(step: Callable[[], object], repeats: int) -> tuple[float, float]:
    walls, cpus = [], []
    step()  # warm-up (first-touch allocations)
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        step()
        cpus.append(time.process_time() - cpu)
        walls.append(time.perf_counter() - wall)
    return 1e3 * float(np.median(walls)), 1e3 * float(np.median(cpus))


def _synthetic_case(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Heavy-tailed relevance (like raw LRP: a few spikes, much low-amplitude signal), images and a lesion."""
    rng = np.random.default_rng(seed)
    relevance = (rng.standard_normal(SHAPE, dtype=np.float32) ** 3).astype(np.float32)
    images = rng.random(SHAPE, dtype=np.float32)
    images[:, :, :20] = 0.0  # background that the input binarisation removes
    truth = np.zeros(SHAPE[1:], dtype=bool)
    truth[6:13, 70:130, 80:120] = True
    return relevance, images, truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=31, help="timed repeats per filter (median reported)")
    args = parser.parse_args()
    relevance, images, truth = _synthetic_case()
    warnings.simplefilter("ignore", EmptyMaskWarning)

    print(f"map {SHAPE} float32, {args.repeats} repeats, target {TARGET_MS:.0f} ms for re-filter + all scores")
    wall, cpu = _median_ms(lambda: normalise_map(relevance), max(5, args.repeats // 4))
    print(f"one-off  normalise_map          wall {wall:6.1f} ms   cpu {cpu:6.1f} ms")
    wall, cpu = _median_ms(lambda: normalise_map(relevance, presort=True), 5)
    print(f"one-off  normalise_map(presort) wall {wall:6.1f} ms   cpu {cpu:6.1f} ms")
    wall, cpu = _median_ms(lambda: reference_masks(images, truth), max(5, args.repeats // 4))
    print(f"one-off  reference_masks        wall {wall:6.1f} ms   cpu {cpu:6.1f} ms")

    wall, cpu = _median_ms(lambda: score_explanation(relevance, images, truth, filt="pass:0.2"), 5)
    print(f"uncached score_explanation(map, images, gt, filt=pass:0.2)  wall {wall:6.1f} ms   cpu {cpu:6.1f} ms")

    cached = normalise_map(relevance, presort=True)
    references = reference_masks(images, truth)
    filters = ["none", "pass:0.2", "pass:0.1,1", "clamp:0.05", "clamp:0.05,1"]
    header = ("filter", "re-filter wall/cpu", "+ scores wall/cpu", "ratio (cpu)", "ratio (wall)")
    print(f"{header[0]:16s} {header[1]:>20s} {header[2]:>20s} {header[3]:>12s} {header[4]:>13s}")
    for spec in filters:
        filt = AmplitudeFilter.parse(spec)
        state = {"last": None}

        def refilter() -> object:
            state["last"] = cached.filtered(filt, reuse=state["last"])
            return state["last"]

        f_wall, f_cpu = _median_ms(refilter, args.repeats)
        s_wall, s_cpu = _median_ms(lambda: score_explanation(refilter(), references), args.repeats)
        print(
            f"{filt.label:16s} {f_wall:8.1f} / {f_cpu:5.1f} ms  {s_wall:8.1f} / {s_cpu:5.1f} ms"
            f" {s_cpu / TARGET_MS:11.2f}x {s_wall / TARGET_MS:12.2f}x"
        )


if __name__ == "__main__":
    main()
