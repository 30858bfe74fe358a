"""What ``lrpseg check`` writes: check.json (the layout scripts read), check.csv (tidy rows) and the plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from LRPSegmentationLib.data.modalities import MODALITIES
from LRPSegmentationLib.pipeline.check import CheckResult

PLOTS = ("randomisation.png", "flipping.png", "ablation.png")


def check_rows(result: CheckResult) -> list[dict[str, Any]]:
    """One row per (method, part, step, modality, metric) value; modality "all" for whole-map numbers."""
    rows: list[dict[str, Any]] = []

    def add(method: str, part: str, step: Any, modality: str, metric: str, value: Any) -> None:
        rows.append({"case": result.case, "method": method, "part": part, "step": step, "modality": modality,
                     "metric": metric, "value": value})

    names = MODALITIES
    for method, entry in result.methods.items():
        for detail in entry.per_modality:
            for metric in ("spearman", "ssim", "spearman_signed"):
                for modality, value in zip(names, detail.get(metric, ())):
                    add(method, detail["part"], detail["step"], modality, metric, value)
        for layer, rho, structural in zip(*(entry.randomisation[k] for k in ("layers", "spearman", "ssim"))):
            add(method, "randomisation", layer, "all", "spearman", rho)
            add(method, "randomisation", layer, "all", "ssim", structural)
        if "null_spearman" in entry.randomisation:
            add(method, "randomisation", "two independent re-draws", "all", "spearman",
                entry.randomisation["null_spearman"])
        add(method, "random_logit", "", "all", "spearman", entry.random_logit["spearman"])
        for order, curve in entry.curves.items():
            for fraction, value in zip((0.0, *result.fractions), curve):
                add(method, "flipping", fraction, "all", f"{order}_score", value)
        for key, value in entry.flipping.items():
            add(method, "flipping", "", "all", key, value)
        for key, value in entry.localisation.items():
            add(method, "localisation", "", "all", key, value)
        for modality, value in zip(names, entry.share):
            add(method, "share", "", modality, "relevance_share", value)
        add(method, "ablation", "", "all", "share_vs_ablation_spearman",
            result.share_vs_ablation_spearman.get(method))
        add(method, "time", "", "all", "seconds", round(entry.seconds, 3))
    for modality, value in result.modality_ablation.items():
        add("", "ablation", "", modality, "relative_score_drop", value)
    for part, seconds in result.part_seconds.items():
        add("", "time", part, "all", "seconds", round(seconds, 3))
    return rows


def plot_check(result: CheckResult, out_dir: Path | str) -> list[Path]:
    """randomisation.png (similarity vs depth randomised), flipping.png (perturbation curves), ablation.png
    (score drop per modality next to each method's relevance share)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    methods = result.methods

    randomised = {n: m.randomisation for n, m in methods.items() if m.randomisation["layers"]}
    if randomised:
        figure, axes = plt.subplots(1, 2, figsize=(13, 4.8), constrained_layout=True)
        for name, entry in randomised.items():
            for axis, metric in zip(axes, ("spearman", "ssim")):
                line, = axis.plot(range(len(entry["layers"])), entry[metric], marker="o", label=name)
                if metric == "spearman" and "null_spearman" in entry:
                    axis.axhline(entry["null_spearman"], color=line.get_color(), linestyle=":", linewidth=1)
        layers = next(iter(randomised.values()))["layers"]
        for axis, title in zip(axes, ("Spearman of |R| (brain voxels); dotted: two random networks", "SSIM of |R|")):
            axis.set_xticks(range(len(layers)), [f"to {layer}" for layer in layers], rotation=20)
            axis.axhline(0, color="grey", linewidth=0.5)
            axis.set_ylim(-1.05, 1.05)
            axis.set_title(title)
            axis.set_xlabel("randomised from the head down to")
        axes[0].set_ylabel("similarity to the original map (mean over modalities)")
        axes[1].legend(fontsize=8)
        figure.suptitle(f"{result.case}: model-parameter randomisation (a trustworthy map loses similarity)")
        paths.append(out_dir / PLOTS[0])
        figure.savefig(paths[-1], dpi=80)
        plt.close(figure)

    curved = {n: m.curves for n, m in methods.items() if m.curves}
    if curved:
        fractions = [0.0, *result.fractions]
        columns = min(3, len(curved))
        rows = -(-len(curved) // columns)
        figure, axes = plt.subplots(rows, columns, figsize=(4.4 * columns, 3.4 * rows), squeeze=False,
                                    constrained_layout=True, sharey=True)
        for axis, (name, curves) in zip(axes.flat, curved.items()):
            for order, style in (("morf", "r-o"), ("lerf", "b-o"), ("random", "k--")):
                axis.plot(fractions, curves[order], style, label=order.upper() if order != "random" else "random",
                          markersize=3)
            flip = methods[name].flipping
            axis.set_title(f"{name}\nAOPC MoRF {flip['morf_aopc']:.2f}, random {flip['random_aopc']:.2f}",
                           fontsize=9)
            axis.set_xscale("symlog", linthresh=0.01)
            axis.set_xlabel("share of brain voxels replaced")
        for axis in axes.flat[len(curved):]:
            axis.set_axis_off()
        axes[0, 0].set_ylabel("target score")
        axes[0, 0].legend(fontsize=8)
        figure.suptitle(f"{result.case}: region perturbation, ROAD-style replacement (MoRF should fall fastest)")
        paths.append(out_dir / PLOTS[1])
        figure.savefig(paths[-1], dpi=80)
        plt.close(figure)

    if result.modality_ablation:
        import numpy as np

        names = list(result.modality_ablation)
        figure, axis = plt.subplots(figsize=(11, 4.5), constrained_layout=True)
        width = 0.8 / (len(methods) + 1)
        axis.bar(np.arange(len(names)), list(result.modality_ablation.values()), width, color="black",
                 label="ablation: relative score drop")
        for k, (name, entry) in enumerate(methods.items(), start=1):
            rho = result.share_vs_ablation_spearman.get(name)
            label = f"{name} share (rho {rho:.2f})" if rho is not None else f"{name} share"
            axis.bar(np.arange(len(names)) + k * width, entry.share, width, label=label)
        axis.set_xticks(np.arange(len(names)) + 0.4, names)
        axis.axhline(0, color="grey", linewidth=0.5)
        axis.legend(fontsize=7, ncol=2)
        axis.set_title(f"{result.case}: per-modality ablation vs relevance share")
        paths.append(out_dir / PLOTS[2])
        figure.savefig(paths[-1], dpi=80)
        plt.close(figure)
    return paths
