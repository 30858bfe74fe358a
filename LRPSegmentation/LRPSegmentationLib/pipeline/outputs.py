"""Writing a job's result files so that partial outputs never look complete and nothing is overwritten silently."""

from __future__ import annotations

import csv
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from LRPSegmentationLib.data.caseio import read_volume, write_volume
from LRPSegmentationLib.data.geometry import Geometry
from LRPSegmentationLib.data.modalities import MODALITIES

PROBABILITY_FILE = "prediction_probability.nii.gz"
MASK_FILE = "prediction_mask.nii.gz"
SCORES_FILE = "scores.json"
PROVENANCE_FILE = "provenance.json"


def relevance_file(modality: str, filtered: bool = False) -> str:
    """Name of a modality's relevance map in a result folder: raw, or filtered and normalised to [-1, 1]."""
    return f"relevance_{modality}{'_filtered' if filtered else ''}.nii.gz"


def read_provenance(out_dir: Path | str) -> dict:
    """The ``provenance.json`` of an explanation run ({} when there is none). Torch-free, for the Slicer side."""
    path = Path(out_dir) / PROVENANCE_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def read_note(out_dir: Path | str) -> str | None:
    """The one-line note of an explanation run (e.g. "no lesion predicted: showing lesion evidence"), read from
    its scores file; None when the run has none (or wrote no scores). Torch-free, for the Slicer side."""
    path = Path(out_dir) / SCORES_FILE
    try:
        note = json.loads(path.read_text(encoding="utf-8")).get("note")
    except (OSError, ValueError, AttributeError):
        return None
    return str(note) if note else None


class MissingOutputError(ValueError):
    """A result folder without the files a reader needs; says which run to make."""


def read_relevance(out_dir: Path | str, modalities: tuple[str, ...] = MODALITIES) -> np.ndarray:
    """The raw (C, D, H, W) float32 relevance ``lrpseg explain`` wrote as ``relevance_<MOD>.nii.gz`` in ``out_dir``.
    Torch-free, for the Slicer side."""
    out_dir = Path(out_dir)
    missing = [m for m in modalities if not (out_dir / relevance_file(m)).is_file()]
    if missing:
        raise MissingOutputError(f"{out_dir}: no {relevance_file(missing[0])}; run 'lrpseg explain' into this "
                                 "folder first.")
    return np.stack([read_volume(out_dir / relevance_file(m))[0] for m in modalities]).astype(np.float32)


class OutputExistsError(ValueError):
    """Result files would replace existing ones."""


class ResultWriter:
    """Stage files in a hidden folder under ``out_dir`` and move them into place only when the job succeeds.

    Use as a context manager: on an exception the staged files are deleted and ``out_dir`` is left as it was.
    Existing files are replaced only with ``overwrite=True``.
    """

    def __init__(self, out_dir: Path | str, overwrite: bool = False) -> None:
        self.out_dir = Path(out_dir)
        self.overwrite = overwrite
        self._staging: Path | None = None
        self.written: list[Path] = []

    def __enter__(self) -> "ResultWriter":
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=self.out_dir))
        return self

    def path(self, name: str) -> Path:
        """Where to write ``name`` while the job runs (inside the staging folder)."""
        assert self._staging is not None, "use ResultWriter as a context manager"
        target = self._staging / name
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def volume(self, name: str, array: np.ndarray, geometry: Geometry) -> None:
        write_volume(array, geometry, self.path(name))

    def prediction(self, probability: np.ndarray, mask: np.ndarray, geometry: Geometry) -> None:
        """The lesion probability and mask on the native grid."""
        self.volume(PROBABILITY_FILE, probability, geometry)
        self.volume(MASK_FILE, mask, geometry)

    def json(self, name: str, values: Any) -> None:
        self.path(name).write_text(json.dumps(values, indent=2, default=_json_default) + "\n")

    def __exit__(self, kind, error, traceback) -> None:
        assert self._staging is not None
        try:
            if error is None:
                staged = sorted(p for p in self._staging.rglob("*") if p.is_file())
                targets = [self.out_dir / p.relative_to(self._staging) for p in staged]
                clashes = [t for t in targets if t.exists()]
                if clashes and not self.overwrite:
                    raise OutputExistsError(
                        f"{self.out_dir}: would replace {len(clashes)} existing file(s) such as {clashes[0].name}; "
                        "choose another --out folder or pass --overwrite.")
                for source, target in zip(staged, targets):
                    target.parent.mkdir(parents=True, exist_ok=True)
                    source.replace(target)
                self.written = targets
        finally:
            shutil.rmtree(self._staging, ignore_errors=True)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_csv(path: Path, rows: list[dict]) -> Path:
    """Rows of dicts as CSV with the union of their keys as columns (first-seen order)."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return Path(path)
