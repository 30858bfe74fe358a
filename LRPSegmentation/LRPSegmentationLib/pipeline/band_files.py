"""A grid of in-chain bands for one case: computed in batches, stored compactly, read back for the live slider.

``bands.npz`` holds, per band (one member each), the relevance on the case's native grid divided by its
per-channel max |R| as float16 (half the size of float32; the live slider normalises per channel anyway), with
those maxima as float32, the band labels and the grid shape. ``bands.json`` records the settings and, per band,
the scores computed from the float32 map before quantising. Torch-free at import (the Slicer process reads bands files).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from LRPSegmentationLib.analysis.compact import compact_map
from LRPSegmentationLib.analysis.filters import AmplitudeFilter
from LRPSegmentationLib.analysis.scores import ExplanationScores, score_explanation
from LRPSegmentationLib.data.caseio import Case
from LRPSegmentationLib.options import BAND_CHUNK

if TYPE_CHECKING:
    import torch

    from LRPSegmentationLib.net.weights import LoadedModel
    from LRPSegmentationLib.pipeline.explain_case import ExplainSettings

BANDS_FILE = "bands.npz"
BANDS_JSON = "bands.json"


class BandFileError(ValueError):
    """A bands file that cannot be read (missing, damaged, another grid)."""


def explain_case_bands(case: Case, loaded: LoadedModel, settings: ExplainSettings,
                       bands: Sequence[AmplitudeFilter], device: str | torch.device = "auto", chunk: int = BAND_CHUNK,
                       notify: Callable[[str], None] | None = None,
                       progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, float]:
    """(relevance (K, C, D, H, W) float32 on the native grid, seconds) of ``case`` (C: the model's modalities) for
    each in-chain band.

    torch is imported here: the reader and writer of this module serve the Slicer process, which has none."""
    from LRPSegmentationLib.lrp.bands import explain_bands
    from LRPSegmentationLib.net.devices import resolve_device, run_with_cpu_fallback
    from LRPSegmentationLib.net.preprocess import Interpolation
    from LRPSegmentationLib.pipeline.explain_case import target_on_model_grid

    prep = loaded.prep()  # the model's own preprocessing (resize, or nnU-Net's), as explain_case
    x = prep.prepare(case.images, case.geometry.spacing)
    target = target_on_model_grid(settings.target, case, prep)
    started = time.perf_counter()

    def run(target_device: torch.device) -> torch.Tensor:
        return explain_bands(loaded.model.to(target_device), x.to(target_device), target.start_relevance, bands,
                             settings.preset, taps=settings.taps, chunk=chunk, progress=progress)

    relevance, _ = run_with_cpu_fallback(run, resolve_device(device), notify)
    seconds = time.perf_counter() - started
    native = np.stack([prep.to_native(r, case.geometry.shape, Interpolation.MASS) for r in relevance])  # sums kept
    return native.astype(np.float32), seconds


def band_scores(relevance: np.ndarray, case: Case) -> list[dict]:
    """The scores of each band's (unfiltered) map, from float32, as JSON-ready dicts."""
    return [score_explanation(r, case.images, case.ground_truth, modalities=case.modalities).to_dict()
            for r in relevance]


def write_bands(path: Path | str, bands: Sequence[AmplitudeFilter], relevance: np.ndarray) -> Path:
    """Write ``relevance`` (K, C, D, H, W) of ``bands`` as normalised float16 with float32 per-channel maxima, one
    member per band (a reader decompresses only the bands it shows)."""
    relevance = np.asarray(relevance, dtype=np.float32)
    if relevance.ndim != 5 or relevance.shape[0] != len(bands):
        raise BandFileError(f"{len(bands)} bands need relevance shaped (K, C, D, H, W), got {relevance.shape}.")
    compact = [compact_map(r) for r in relevance]
    members = {f"normalised_{k}": values for k, (values, _) in enumerate(compact)}
    path = Path(path)
    np.savez_compressed(path, peak=np.stack([peak for _, peak in compact]), labels=np.array([b.label for b in bands]),
                        shape=np.array(relevance.shape[2:]), **members)
    return path


def read_band_scores(path: Path | str) -> dict[AmplitudeFilter, ExplanationScores]:
    """The float32 scores of each band's unfiltered map kept in a ``bands.json`` (empty when there is none)."""
    try:
        values = json.loads(Path(path).read_text())
        return {AmplitudeFilter.parse(label): ExplanationScores.from_dict(scores)
                for label, scores in zip(values["bands"], values["scores"], strict=True)}
    except (OSError, ValueError, KeyError, TypeError):
        return {}  # the maps alone still serve the slider (scores then from the float16 maps)


class BandFile:
    """A bands file written by :func:`write_bands`, read band by band: :attr:`bands` at once, each map on demand
    with :meth:`relevance` (so a grid of many bands costs memory only for the bands shown)."""

    def __init__(self, path: Path | str, shape: Sequence[int] | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise BandFileError(f"{self.path}: no such bands file; run 'lrpseg bands' first.")
        try:
            with np.load(self.path, allow_pickle=False) as data:
                self.peak, grid = data["peak"], tuple(int(v) for v in data["shape"])
                self.bands = tuple(AmplitudeFilter.parse(str(v)) for v in data["labels"])
        except (OSError, KeyError, ValueError) as error:
            raise BandFileError(f"{self.path}: not a bands file ({error}); run 'lrpseg bands' again.") from None
        if shape is not None and grid != tuple(shape):
            raise BandFileError(f"{self.path}: bands on grid {grid}, the case is {tuple(shape)}; run again.")

    def compact(self, band: AmplitudeFilter | str) -> tuple[np.ndarray, np.ndarray]:
        """(float16 map / per-channel peak, peak) of ``band``, decompressed from the file now (see
        :func:`~LRPSegmentationLib.analysis.compact.compact_map`)."""
        k = self.bands.index(AmplitudeFilter.parse(band))
        try:
            with np.load(self.path, allow_pickle=False) as data:
                return data[f"normalised_{k}"], self.peak[k]
        except (OSError, KeyError, ValueError) as error:
            raise BandFileError(f"{self.path}: band {self.bands[k].label} unreadable ({error}).") from None

    def relevance(self, band: AmplitudeFilter | str) -> np.ndarray:
        """The (C, D, H, W) float32 map of ``band`` (decompressed from the file now)."""
        values, peak = self.compact(band)
        return values.astype(np.float32) * peak[:, None, None, None]


def read_bands(path: Path | str, shape: Sequence[int] | None = None) -> dict[AmplitudeFilter, np.ndarray]:
    """Every band of a file written by :func:`write_bands`: band -> relevance (C, D, H, W) float32."""
    grid = BandFile(path, shape)
    return {band: grid.relevance(band) for band in grid.bands}
