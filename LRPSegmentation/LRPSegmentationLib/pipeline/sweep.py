"""The paper's alpha sweeps: a grid of filters over cases and models, a tidy table, Figure 3/5-style plots and a
sweet-spot alpha chosen by a stated criterion."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from LRPSegmentationLib.analysis.filters import AmplitudeFilter, paper_filters
from LRPSegmentationLib.data.caseio import Case
from LRPSegmentationLib.net.weights import LoadedModel
from LRPSegmentationLib.options import FilterKind, FilterPlacement
from LRPSegmentationLib.pipeline.explain_case import ExplainSettings, explain_case

SWEET_SPOT_CRITERION = (
    "per filter kind, the band with the highest mean D(LRP_alpha, x) over cases and modalities among those whose "
    "mean D(LRP_alpha, y_OT) is at least that of the unfiltered map (when there is no ground truth: the highest mean "
    "D(LRP_alpha, x)); ties go to the wider band")


def default_filters() -> tuple[AmplitudeFilter, ...]:
    """The unfiltered map, then the paper's pass and clamp grids."""
    return (AmplitudeFilter(), *paper_filters())


def sweep_rows(cases: Iterable[Case], models: Iterable[LoadedModel], filters: Iterable[AmplitudeFilter],
               settings: ExplainSettings = ExplainSettings(), device: str = "auto",
               progress: Callable[[float, str], None] | None = None, example_dir: Path | str | None = None,
               **score_options) -> list[dict]:
    """One row per (model, case, filter, modality), plus the 'all' row of each. A final-map sweep explains each
    case once and re-filters the cached map; an in-chain sweep (settings.where == LAYERS) explains once per filter.
    With ``example_dir``, the first case of each model gets radiological preview figures (see
    :func:`example_filters`)."""
    cases, models, filters = list(cases), list(models), list(filters)
    rows: list[dict] = []
    steps = max(1, len(cases) * len(models))
    for m, loaded in enumerate(models):
        for c, case in enumerate(cases):
            done = (m * len(cases) + c) / steps
            if progress:
                progress(done, f"{loaded.path.name} on {case.case_id}")
            if settings.where == FilterPlacement.OUTPUT:
                result = explain_case(case, loaded, replace(settings, filter=AmplitudeFilter()), device)
                runs = [(filt, result, filt) for filt in filters]
            else:
                runs = [(filt, explain_case(case, loaded, replace(settings, filter=filt), device), None)
                        for filt in filters]
            for filt, result, final_filter in runs:
                scores = result.scores(final_filter, **score_options)
                if example_dir is not None and c == 0 and filt in example_filters(filters):
                    save_example(Path(example_dir), loaded, result, filt, final_filter)
                for row in scores.to_rows():
                    rows.append({"model": loaded.path.name, "case": case.case_id, "dice": result.prediction.dice,
                                 "note": result.note or "", "where": settings.where.value,
                                 "kind": filt.kind.value, "low": filt.low, "high": filt.high, **row,
                                 "filter": filt.label})
    if progress:
        progress(1.0, "sweep done")
    return rows


def example_filters(filters: list[AmplitudeFilter]) -> list[AmplitudeFilter]:
    """The filters shown as example figures: none, P[0, 0.2] and C[0, 0.2] where swept (else the first three)."""
    wanted = [f for f in (AmplitudeFilter(), AmplitudeFilter.pass_band(0.2), AmplitudeFilter.clamp_band(0.2))
              if f in filters]
    return wanted or list(filters)[:3]


def save_example(out_dir: Path, loaded: LoadedModel, result, filt: AmplitudeFilter,
                 final_filter: AmplitudeFilter | None) -> Path:
    """One radiological preview (slice through the largest part of the prediction) of ``result`` under ``filt``."""
    from LRPSegmentationLib.analysis.preview import save_preview

    case = result.case
    name = f"{Path(loaded.path).stem}_{case.case_id}_{filt.label}.png".replace("[", "_").replace("]", "")
    return save_preview(out_dir / name.replace(",", "-"), case.images, result.filtered(final_filter).normalised,
                        prediction=result.prediction.mask, ground_truth=case.ground_truth, geometry=case.geometry,
                        modalities=case.modalities,
                        title=f"{case.case_id}: {result.settings.preset}, {filt.label}")


def _mean_by_filter(rows: list[dict], column: str) -> dict[str, float]:
    values: dict[str, list[float]] = {}
    for row in rows:
        if row["modality"] != "all" and row.get(column) is not None:
            values.setdefault(row["filter"], []).append(float(row[column]))
    return {label: float(np.mean(v)) for label, v in values.items() if v}


def sweet_spot(rows: list[dict]) -> dict[str, dict]:
    """The sweet-spot band per filter kind under :data:`SWEET_SPOT_CRITERION`."""
    input_mean = _mean_by_filter(rows, "input_inclusivity")
    gt_mean = _mean_by_filter(rows, "gt_inclusivity")
    floor = gt_mean.get("none")
    bands = {row["filter"]: (row["kind"], row["low"], row["high"]) for row in rows}
    chosen: dict[str, dict] = {}
    for kind in (FilterKind.PASS.value, FilterKind.CLAMP.value):
        candidates = [label for label, (k, _, _) in bands.items() if k == kind and label in input_mean
                      and (floor is None or gt_mean.get(label, -1.0) >= floor)]
        if not candidates:
            continue
        best = max(candidates, key=lambda label: (round(input_mean[label], 12), bands[label][2] - bands[label][1]))
        chosen[kind] = {"filter": best, "low": bands[best][1], "high": bands[best][2],
                        "mean_input_inclusivity": input_mean[best], "mean_gt_inclusivity": gt_mean.get(best),
                        "unfiltered_input_inclusivity": input_mean.get("none"), "unfiltered_gt_inclusivity": floor}
    return chosen


def plot_sweep(rows: list[dict], out_dir: Path | str) -> list[Path]:
    """Figure 3 style (inclusivity per filter, box plots with points) and Figure 5 D1/D2 style (mu per filter)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    channel_rows = [r for r in rows if r["modality"] != "all"]
    order = list(dict.fromkeys(r["filter"] for r in channel_rows))
    groups = {"pass": [f for f in order if f == "none" or f.startswith("pass")],
              "clamp": [f for f in order if f == "none" or f.startswith("clamp")]}
    paths = []

    def values(label: str, column: str) -> list[float]:
        return [float(r[column]) for r in channel_rows if r["filter"] == label and r.get(column) is not None]

    def boxes(axis, labels: list[str], column: str, title: str) -> None:
        data = [values(label, column) for label in labels]
        axis.boxplot(data, showfliers=False)
        rng = np.random.default_rng(0)
        for i, points in enumerate(data, start=1):
            axis.scatter(i + rng.uniform(-0.15, 0.15, len(points)), points, s=8, alpha=0.5, color="tab:blue")
            if points:
                axis.scatter([i], [np.mean(points)], marker="D", color="tab:red", s=18, zorder=3)
        axis.set_xticks(range(1, len(labels) + 1), labels, rotation=45, ha="right", fontsize=8)
        axis.set_title(title, fontsize=10)
        axis.set_ylim(-0.02, 1.02)

    has_gt = any(r.get("gt_inclusivity") is not None for r in channel_rows)
    columns = [("input_inclusivity", "D(LRP_alpha, x)")]
    columns += [("gt_inclusivity", "D(LRP_alpha, y_OT)")] if has_gt else []
    figure, axes = plt.subplots(len(columns), 2, figsize=(13, 4.2 * len(columns)), squeeze=False,
                                constrained_layout=True)
    for i, (column, name) in enumerate(columns):
        for j, kind in enumerate(("pass", "clamp")):
            boxes(axes[i][j], groups[kind], column, f"{name}, {kind} filters (points: case x modality; red: mean)")
    figure.suptitle("Inclusivity per filter (cf. the paper's Figure 3)")
    paths.append(out_dir / "fig3_inclusivity.png")
    figure.savefig(paths[-1], dpi=80)
    plt.close(figure)

    figure, axes = plt.subplots(2, 2, figsize=(13, 8), constrained_layout=True)
    for j, kind in enumerate(("pass", "clamp")):
        labels = groups[kind]
        for i, label in enumerate(labels):
            points = values(label, "mu")
            axes[0][j].scatter(np.full(len(points), i) + np.random.default_rng(i).uniform(-0.2, 0.2, len(points)),
                               points, s=8, alpha=0.6)
        axes[0][j].set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
        axes[0][j].set_title(f"D1: mu per channel, {kind} filters", fontsize=10)
        axes[1][j].boxplot([values(label, "mu") for label in labels], showfliers=False)
        axes[1][j].set_xticks(range(1, len(labels) + 1), labels, rotation=45, ha="right", fontsize=8)
        axes[1][j].set_title(f"D2: distribution of mu, {kind} filters", fontsize=10)
    figure.suptitle("mu = spatial mean of the filtered map / its max|.| (cf. the paper's Figure 5 D1/D2)")
    paths.append(out_dir / "fig5_mu.png")
    figure.savefig(paths[-1], dpi=80)
    plt.close(figure)
    return paths
