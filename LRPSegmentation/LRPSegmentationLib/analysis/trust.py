"""A compact trust summary of a check.json (written by ``lrpseg check``) for the Slicer side panel; no torch, no numpy.

One row per method: whether it passed model-parameter randomisation (its map must stop resembling the original
once the whole network is re-drawn), its faithfulness (MoRF AOPC against the random order's) and its rank among the
checked methods, the random-logit similarity and how its modality shares agree with the ablation.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RANDOMISATION_PASS = 0.5
"""Randomisation passes when the mean Spearman of |R| at full depth is below this (Adebayo et al. call maps that
keep rank correlation above ~0.5 after full randomisation insensitive to the model) ..."""

FLOOR_MARGIN = 0.05
"""... or no more than this above ``null_spearman``, the similarity two independent random networks already share
(for a target confined to the lesion it is high for every map that decays with the distance from the target)."""

FAITHFULNESS_MARGIN = 0.0
"""MoRF AOPC must exceed the random order's AOPC by more than this to count as faithful."""

TRUST_COLUMNS = ("Method", "Randomisation", "Similarity after randomisation", "Similarity of two random networks",
                 "MoRF AOPC", "Random AOPC", "Faithful", "Faithfulness rank", "Random logit similarity",
                 "Share vs ablation")


class CheckFileError(ValueError):
    """A check.json that cannot be read; the message says what to do."""


def read_check(path: Path | str) -> dict[str, Any]:
    """The check.json at ``path`` (a file or the folder holding it), with its layout checked."""
    path = Path(path)
    path = path / "check.json" if path.is_dir() else path
    try:
        report = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CheckFileError(f"Cannot read {path}: {error}; run 'lrpseg check' again.") from None
    missing = [key for key in ("case", "methods", "modality_ablation", "share_vs_ablation_spearman")
               if key not in report]
    if missing or not isinstance(report.get("methods"), dict):
        raise CheckFileError(f"{path} is not a check.json (missing {', '.join(missing) or 'methods'}).")
    return report


@dataclass(frozen=True)
class CheckCurves:
    """The perturbation curves of a check (check.csv; check.json keeps only their AOPC): the target score after
    removing each fraction of the brain voxels (0 first), per method and order ("morf", "lerf", "random")."""

    fractions: tuple[float, ...] = ()
    scores: dict[str, dict[str, list[float]]] = field(default_factory=dict)


def read_curves(path: Path | str) -> CheckCurves:
    """The flipping curves in the check.csv at ``path`` (a file or the folder holding it); empty when flipping was
    not run."""
    path = Path(path)
    path = path / "check.csv" if path.is_dir() else path
    try:
        with open(path, newline="") as stream:
            rows = [row for row in csv.DictReader(stream)
                    if row.get("part") == "flipping" and row.get("metric", "").endswith("_score")]
        fractions = tuple(dict.fromkeys(float(row["step"]) for row in rows))
        scores: dict[str, dict[str, list[float]]] = {}
        for row in rows:
            scores.setdefault(row["method"], {}).setdefault(row["metric"][:-len("_score")], []).append(
                float(row["value"]))
    except (OSError, KeyError, ValueError) as error:
        raise CheckFileError(f"Cannot read the curves in {path}: {error}; run 'lrpseg check' again.") from None
    if any(len(curve) != len(fractions) for orders in scores.values() for curve in orders.values()):
        raise CheckFileError(f"{path}: each curve needs one score per removed fraction; run 'lrpseg check' again.")
    return CheckCurves(fractions, scores)


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def trust_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of :data:`TRUST_COLUMNS`, one per method in the report's order (None where a part was not run)."""
    methods = report["methods"]
    aopcs = {name: _number(entry["flipping"].get("morf_aopc")) for name, entry in methods.items()}
    ranked = sorted((value, name) for name, value in aopcs.items() if value is not None)[::-1]
    rank = {name: position for position, (_, name) in enumerate(ranked, start=1)}
    rows = []
    for name, entry in methods.items():
        similarity = entry["randomisation"]["spearman"]
        last = _number(similarity[-1]) if similarity else None
        floor = _number(entry["randomisation"].get("null_spearman"))
        at_floor = floor is not None and last is not None and last <= floor + FLOOR_MARGIN
        passed = last is not None and (last < RANDOMISATION_PASS or at_floor)
        morf, random = aopcs[name], _number(entry["flipping"].get("random_aopc"))
        rows.append({
            "Method": name,
            "Randomisation": "not run" if last is None else ("passed" if passed else "failed"),
            "Similarity after randomisation": last,
            "Similarity of two random networks": floor,
            "MoRF AOPC": morf,
            "Random AOPC": random,
            "Faithful": None if morf is None or random is None else ("yes" if morf > random + FAITHFULNESS_MARGIN
                                                                    else "no"),
            "Faithfulness rank": f"{rank[name]} of {len(ranked)}" if name in rank else None,
            "Random logit similarity": _number(entry["random_logit"].get("spearman")),
            "Share vs ablation": _number(report["share_vs_ablation_spearman"].get(name)),
        })
    return rows


def trust_headline(report: dict[str, Any], method: str | None = None) -> str:
    """One sentence about ``method`` (default: the first, i.e. the explanation's own LRP preset) for the panel."""
    rows = {row["Method"]: row for row in trust_rows(report)}
    if not rows:
        return "The check holds no method."
    row = rows[method] if method in rows else next(iter(rows.values()))
    parts = [row["Method"]]
    if row["Randomisation"] == "not run":
        parts.append("randomisation not run")
    else:
        parts.append(f"randomisation {row['Randomisation']} (similarity {row['Similarity after randomisation']:.2f} "
                     "with the whole network randomised)")
    if row["MoRF AOPC"] is not None:
        parts.append(f"MoRF AOPC {row['MoRF AOPC']:.2f} vs random {row['Random AOPC']:.2f}, rank "
                     f"{row['Faithfulness rank']} by faithfulness")
    if row["Share vs ablation"] is not None:
        parts.append(f"modality shares vs ablation rho {row['Share vs ablation']:.2f}")
    return "; ".join(parts) + "."
