"""The scores table node: create, update values in place, read rows back."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import vtk

from LRPSegmentationLib.analysis.scores import ExplanationScores
from LRPSegmentationLib.mrml.nodes import SceneError, owned_output, place_next_to
from LRPSegmentationLib.pipeline.outputs import write_csv

# -------------------------------------------------------------------------------------------------- tables

def _column_kind(values: list) -> str:
    return "string" if any(isinstance(v, str) for v in values) else "double"


SCORE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("modality", "Modality"),
    ("input_inclusivity", "D(LRP,x)"),
    ("gt_inclusivity", "D(LRP,y_OT)"),
    ("input_precision", "D(x,LRP)"),
    ("gt_precision", "D(y_OT,LRP)"),
    ("share", "Share"),
    ("abs_share", "|Share|"),
)
"""(score field, table column) of the side-panel table; "Retained", "Conservation" and "Dice" columns follow."""

def score_rows(scores: ExplanationScores, dice: float | None = None) -> list[dict[str, Any]]:
    """The table rows of ``scores``: one per modality, then "all"; retained relevance = 1 - removed fraction.

    Conservation (sum of the unfiltered input relevance over the start relevance; the same on the model and the
    native grid) and Dice are whole-case values, repeated on every row as in ``scores.csv``.
    """
    rows = []
    for row in (*scores.modalities, scores.total):
        values: dict[str, Any] = {label: getattr(row, key) for key, label in SCORE_COLUMNS}
        values["Retained"] = 1.0 - row.removed_fraction
        values["Conservation"] = scores.conservation
        values["Dice"] = dice
        rows.append(values)
    return rows


def scores_table(scene, rows: Sequence[Mapping[str, Any]], role: str = "scores", name: str = "LRP scores",
                 reference=None):
    """The module's table node holding ``rows`` (one dict per row; str columns as text, others as numbers).

    When the columns are unchanged the values are overwritten in place (cheap; for slider moves).
    None and non-finite numbers become NaN.
    """
    if not rows:
        raise SceneError("No score rows to show; compute the explanation first.")
    columns: list[str] = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    kinds = {c: _column_kind([row.get(c) for row in rows]) for c in columns}
    node = owned_output(scene, "vtkMRMLTableNode", role, name)
    table = node.GetTable()
    reuse = table.GetNumberOfColumns() == len(columns) and table.GetNumberOfRows() == len(rows) and all(
        table.GetColumn(i).GetName() == c
        and (table.GetColumn(i).IsA("vtkStringArray") == (kinds[c] == "string"))
        for i, c in enumerate(columns)
    )
    if not reuse:
        node.RemoveAllColumns()
        for column in columns:
            array = vtk.vtkStringArray() if kinds[column] == "string" else vtk.vtkDoubleArray()
            array.SetName(column)
            array.SetNumberOfValues(len(rows))
            table.AddColumn(array)
    update_table_values(node, [{c: row.get(c) for c in columns} for row in rows])
    place_next_to(scene, node, reference, "LRPSegmentation")
    return node


def update_table_values(node, rows: Sequence[Mapping[str, Any]]) -> None:
    """Overwrite the values of a table made by :func:`scores_table` with rows of the same columns (slider path).

    No column or row is added, renamed or re-typed (raises SceneError when ``rows`` do not fit); one Modified
    event per column plus one for the node.
    """
    table = node.GetTable()
    if table.GetNumberOfRows() != len(rows):
        raise SceneError(f"Table {node.GetName()!r} has {table.GetNumberOfRows()} rows, not {len(rows)}.")
    for i in range(table.GetNumberOfColumns()):
        array = table.GetColumn(i)
        column, text = array.GetName(), array.IsA("vtkStringArray")
        for r, row in enumerate(rows):
            if column not in row:
                raise SceneError(f"Row {r} has no value for column {column!r} of table {node.GetName()!r}.")
            value = row[column]
            if text:
                array.SetValue(r, "" if value is None else str(value))
            else:
                number = float("nan") if value is None else float(value)
                array.SetValue(r, number if math.isfinite(number) else float("nan"))
        array.Modified()
    table.Modified()
    node.Modified()


def table_rows(node) -> list[dict[str, Any]]:
    """The rows of a table node as dicts (numbers as float, text as str)."""
    table = node.GetTable()
    rows = []
    for r in range(table.GetNumberOfRows()):
        row = {}
        for c in range(table.GetNumberOfColumns()):
            array = table.GetColumn(c)
            row[array.GetName()] = array.GetValue(r) if array.IsA("vtkStringArray") else float(array.GetValue(r))
        rows.append(row)
    return rows


def export_csv(node, path: Path | str) -> Path:
    """Write a table's rows as CSV; the node's own storage (it saves with the scene) is left as it is."""
    return write_csv(Path(path), table_rows(node))
