"""How well the anatomy family's ground truth can be predicted at all: Dice of the noise-free perfusion deficit
grade (``severity``), thresholded at one level, against the final infarct, on the cases ``lrpseg evaluate
--synthetic N --seed S --family anatomy`` scores.

The final infarct is the core plus the deeper part of the penumbra: its edge lies at one deficit grade
(``data.lesions.INFARCT_GRADE``) in every lesion, so the acute maps determine it. A reader that saw the grade
perfectly would reach Dice 1 at that level, less through partial volume, CSF and the midline; the best level's
mean bounds what a segmentation model can reach on this family. (Generator version 2 drew the edge per lesion at
23-50% of the grade, and this bound was 0.78.)

With ``--model M`` it also reads the model's masks back in grade terms: for each case, the single grade level
whose threshold matches the mask best (and how well). A spread of those levels means the model misjudges where
each case's edge lies (its physiology is drawn per case: CBF drop and Tmax rise), not the grade's shape.

With ``--grids`` it also bounds what a model grid lets through: the ground truth's partial-volume shares on that
grid (the ``--partial-volume-labels`` targets), mapped back and thresholded at 0.5 as predictions are, against the
ground truth. Resizing 19-30 thick slices to the 19 of grid B blurs lesions one or two slices thick; ``0x96x96``
keeps every slice.

Run: ``python benchmarks/infarct_ceiling.py [--count 20] [--seed 9000] [--model M] [--grids B 0x96x96]``.
"""

from __future__ import annotations

import argparse

import numpy as np

from LRPSegmentationLib.analysis.metrics import dice
from LRPSegmentationLib.data.synthetic import dataset_seeds, generate_case

LEVELS = (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5)
SMALL_ML = 5.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--seed", type=int, default=9000)
    parser.add_argument("--model", help="also read this model's masks as grade levels")
    parser.add_argument("--grids", nargs="*", default=(), help="also bound these model grids (B, 0x96x96, ...)")
    args = parser.parse_args()

    cases = [generate_case(seed, family="anatomy") for seed in dataset_seeds(args.seed, args.count)]
    cases = [c for c in cases if c.ground_truth.any()]
    voxel_ml = [float(np.prod(c.geometry.spacing)) / 1000.0 for c in cases]
    small = [c.ground_truth.sum() * v < SMALL_ML for c, v in zip(cases, voxel_ml)]
    print(f"{len(cases)} anatomy lesion cases (seed {args.seed}, {args.count} drawn), {sum(small)} under {SMALL_ML} ml")
    means = {}
    for level in LEVELS:
        scores = np.array([dice(c.severity > level, c.ground_truth > 0) for c in cases])
        small_mean = small_lesion_mean(scores, small)
        means[level] = float(scores.mean())
        print(f"grade > {level:.2f}: mean Dice {means[level]:.3f} (under {SMALL_ML} ml {small_mean:.3f})")
    level = max(means, key=means.get)
    print(f"ceiling: mean Dice {means[level]:.3f} at grade > {level:.2f} (the target is 0.85)")
    for grid in args.grids:
        bound_grid(cases, small, grid)
    if args.model:
        read_masks_as_levels(cases, args.model)


def small_lesion_mean(scores: np.ndarray, small: list[bool]) -> float:
    """Mean of the scores of the cases under :data:`SMALL_ML` (NaN when there are none)."""
    return float(scores[np.array(small)].mean()) if any(small) else float("nan")


def bound_grid(cases: list, small: list[bool], grid: str) -> None:
    from LRPSegmentationLib.net.preprocess import PreprocessSpec, ResizePreprocessor, parse_size, prepare_label

    spec = PreprocessSpec(size=parse_size(grid))
    scores = []
    for case in cases:
        share = prepare_label(case.ground_truth, spec, partial_volume=True)[0].numpy()
        back = ResizePreprocessor(spec).to_native(share, case.geometry.shape)
        scores.append(dice(back >= 0.5, case.ground_truth > 0))
    print(f"grid {grid}: a perfect model-grid answer reaches mean Dice {np.mean(scores):.3f} "
          f"(under {SMALL_ML} ml {small_lesion_mean(np.array(scores), small):.3f})")


def read_masks_as_levels(cases: list, model: str) -> None:
    from LRPSegmentationLib.net.predict import predict_case
    from LRPSegmentationLib.net.weights import load_model

    loaded = load_model(model)
    fine = np.arange(0.1, 0.6, 0.025)
    levels = []
    for case in cases:
        prediction = predict_case(case.to_case(), loaded, "cpu")
        match, level = max((dice(case.severity > t, prediction.mask > 0), float(t)) for t in fine)
        levels.append(level)
        print(f"anatomy-{case.seed}: Dice {prediction.dice:.3f}; mask = grade > {level:.3f} (match {match:.3f})")
    print(f"the model's masks follow grade levels {min(levels):.3f}-{max(levels):.3f} (median {np.median(levels):.3f}"
          f", sd {np.std(levels):.3f})")


if __name__ == "__main__":
    main()
