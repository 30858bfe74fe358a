"""One vocabulary: the engine, the CLI, the child-process request and the Slicer panel use options.py's names."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

from LRPSegmentationLib import options
from LRPSegmentationLib.lrp import PRESETS, get_composite
from LRPSegmentationLib.lrp.targets import Target
from LRPSegmentationLib.mrml.job import ExplainRequest, JobError
from LRPSegmentationLib.pipeline.cli import build_parser

MODULE_FILE = Path(__file__).resolve().parents[2] / "LRPSegmentation.py"


def test_engine_presets_are_the_named_presets():
    assert tuple(PRESETS) == options.PRESET_NAMES
    assert options.DEFAULT_PRESET in PRESETS and get_composite(options.DEFAULT_PRESET).name == options.DEFAULT_PRESET


@pytest.mark.parametrize("kind", options.PANEL_TARGETS, ids=lambda k: k.value)
def test_every_offered_target_gives_a_start_relevance(kind):
    torch.manual_seed(0)
    logits = torch.randn(1, 2, 3, 4, 4)
    truth = np.zeros((3, 4, 4), bool)
    truth[1, 1:3, 1:3] = True
    target = Target(kind=kind.value, ground_truth=truth)
    start = target.start_relevance(logits)
    assert start.shape == logits.shape and torch.isfinite(start).all()


def cli_choices(command: str) -> dict[str, list[str]]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return {a.option_strings[0]: list(a.choices) for a in sub._actions if a.option_strings and a.choices}


def test_cli_offers_the_vocabulary():
    for command in ("explain", "sweep"):
        choices = cli_choices(command)
        assert choices["--rule"] == list(options.PRESET_NAMES)
        assert choices["--target"] == options.values(options.TargetKind)
        assert choices["--where"] == options.values(options.FilterPlacement)
        assert choices["--normalization"] == options.values(options.RelevanceNormalization)
    assert cli_choices("explain")["--filter"] == options.values(options.FilterKind)
    assert cli_choices("train")["--normalization"] == options.values(options.IntensityNormalization)


def test_child_request_accepts_exactly_the_vocabulary(tmp_path):
    for rule in options.PRESET_NAMES:
        for target in options.values(options.PANEL_TARGETS):
            ExplainRequest(tmp_path, tmp_path, rule=rule, target=target)
    for wrong in ({"rule": "lrp-z"}, {"target": "voxel"}, {"filter": "band"}, {"where": "inside"}):
        with pytest.raises(JobError, match=next(iter(wrong))):
            ExplainRequest(tmp_path, tmp_path, **wrong)


def test_panel_choices_come_from_the_vocabulary():
    """Every Choice list of the parameter node is built from options, never spelled out (device, rule, target,
    filter kind, placement; the single view's modality is a plain string: it follows the model's modality list)."""
    tree = ast.parse(MODULE_FILE.read_text(encoding="utf-8"))
    choices = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "Choice"]
    assert len(choices) == 5
    for call in choices:
        assert not any(isinstance(n, ast.Constant) and isinstance(n.value, str) for n in ast.walk(call.args[0])), \
            ast.unparse(call)
