"""Starting relevance for each target option, on small hand-built logits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from LRPSegmentationLib.lrp.targets import Target, TargetError, connected_components
from LRPSegmentationLib.options import TargetKind

SPATIAL = (2, 4, 4)


def _logits() -> torch.Tensor:
    """Background logit 1 everywhere; lesion logit 0.5 except a 3-voxel and a 1-voxel predicted component."""
    logits = torch.ones((1, 2, *SPATIAL))
    logits[0, 1] = 0.5
    logits[0, 1, 0, 0, 0:3] = torch.tensor([2.0, 3.0, 4.0])  # component of 3 voxels (largest)
    logits[0, 1, 1, 3, 3] = 5.0  # isolated single voxel
    return logits


def _predicted() -> torch.Tensor:
    mask = torch.zeros(SPATIAL, dtype=torch.bool)
    mask[0, 0, 0:3] = True
    mask[1, 3, 3] = True
    return mask


def test_lesion_logits_default():
    logits = _logits()
    start = Target().start_relevance(logits)
    assert start.shape == logits.shape and start.dtype == logits.dtype
    assert torch.equal(start[0, 0], torch.zeros(SPATIAL))
    assert torch.equal(start[0, 1], logits[0, 1] * _predicted())
    assert float(start.sum()) == 14.0


def test_probability_is_a_soft_mask_everywhere():
    logits = _logits()
    start = Target(TargetKind.PROBABILITY).start_relevance(logits)
    probability = torch.exp(logits[0, 1]) / (torch.exp(logits[0, 0]) + torch.exp(logits[0, 1]))
    assert torch.allclose(start[0, 1], logits[0, 1] * probability)
    assert float(start[0, 1, 1, 0, 0]) > 0  # also outside the predicted lesion
    assert torch.equal(start[0, 0], torch.zeros(SPATIAL))


def test_equal_and_whole_output():
    logits = _logits()
    equal = Target("equal").start_relevance(logits)
    assert torch.equal(equal[0, 1], _predicted().float()) and float(equal[0, 0].abs().sum()) == 0
    whole = Target(TargetKind.WHOLE_OUTPUT).start_relevance(logits)
    assert torch.equal(whole, logits) and whole.data_ptr() != logits.data_ptr()


def test_component_by_rank_and_seed():
    logits = _logits()
    largest = Target(TargetKind.COMPONENT).start_relevance(logits)
    assert float(largest.sum()) == 9.0 and int((largest != 0).sum()) == 3
    second = Target(TargetKind.COMPONENT, component=1).start_relevance(logits)
    assert float(second.sum()) == 5.0 and float(second[0, 1, 1, 3, 3]) == 5.0
    seeded = Target(TargetKind.COMPONENT, voxel=(0, 0, 1)).start_relevance(logits)
    assert torch.equal(seeded, largest)
    with pytest.raises(TargetError, match="rank 2 does not exist"):
        Target(TargetKind.COMPONENT, component=2).start_relevance(logits)
    with pytest.raises(TargetError, match="not in the predicted lesion"):
        Target(TargetKind.COMPONENT, voxel=(1, 0, 0)).start_relevance(logits)
    with pytest.raises(TargetError, match="one case at a time"):
        Target(TargetKind.COMPONENT).start_relevance(torch.cat([logits, logits]))


def test_connected_components_use_26_connectivity():
    mask = np.zeros((4, 4, 4), dtype=bool)
    mask[0, 0, 0] = mask[1, 1, 1] = True  # corner neighbours: one component
    mask[3, 0, 3] = True
    sizes = [int(c.sum()) for c in connected_components(mask)]
    assert sizes == [2, 1]


def test_mask_target_and_shape_checks():
    logits = _logits()
    mask = np.zeros(SPATIAL, dtype=np.uint8)
    mask[1, 0, 0] = 1
    mask[0, 0, 2] = 7
    start = Target(TargetKind.MASK, mask=mask).start_relevance(logits)
    assert float(start[0, 1, 1, 0, 0]) == 0.5 and float(start[0, 1, 0, 0, 2]) == 4.0
    assert float(start.sum()) == 4.5
    with pytest.raises(TargetError, match="resample"):
        Target(TargetKind.MASK, mask=np.ones((2, 4, 5))).start_relevance(logits)
    with pytest.raises(TargetError, match="mask is empty"):
        Target(TargetKind.MASK, mask=np.zeros(SPATIAL)).start_relevance(logits)
    with pytest.raises(TargetError, match="needs mask"):
        Target(TargetKind.MASK)


def test_voxel_target():
    logits = _logits()
    start = Target(TargetKind.VOXEL, voxel=(0, 0, 1)).start_relevance(logits)
    assert float(start.sum()) == 3.0 and int((start != 0).sum()) == 1
    with pytest.raises(TargetError, match="outside"):
        Target(TargetKind.VOXEL, voxel=(2, 0, 0)).start_relevance(logits)
    zero = logits.clone()
    zero[0, 1, 1, 1, 1] = 0.0
    with pytest.raises(TargetError, match="all zero"):
        Target(TargetKind.VOXEL, voxel=(1, 1, 1)).start_relevance(zero)


def test_false_positive_and_false_negative():
    logits = _logits()
    truth = np.zeros(SPATIAL, dtype=bool)
    truth[0, 0, 0:3] = True  # the large component is right, the single voxel is a false positive
    truth[1, 2, 2] = True  # missed lesion voxel (lesion logit 0.5 < background 1)
    fp = Target(TargetKind.FALSE_POSITIVE, ground_truth=truth).start_relevance(logits)
    assert float(fp.sum()) == 5.0 and float(fp[0, 1, 1, 3, 3]) == 5.0
    fn = Target(TargetKind.FALSE_NEGATIVE, ground_truth=truth).start_relevance(logits)
    assert float(fn.sum()) == 0.5 and float(fn[0, 1, 1, 2, 2]) == 0.5
    assert float(fn[0, 0].abs().sum()) == 0
    with pytest.raises(TargetError, match="no false-negative"):
        Target(TargetKind.FALSE_NEGATIVE, ground_truth=_predicted().numpy()).start_relevance(logits)
    with pytest.raises(TargetError, match="no false-positive"):
        Target("false-positive", ground_truth=np.ones(SPATIAL)).start_relevance(logits)
    with pytest.raises(TargetError, match="needs ground_truth"):
        Target(TargetKind.FALSE_NEGATIVE)


def test_contrastive_sums_to_lesion_minus_background():
    logits = _logits()
    start = Target(TargetKind.CONTRASTIVE).start_relevance(logits)
    predicted = _predicted()
    assert torch.equal(start[0, 1], logits[0, 1] * predicted)
    assert torch.equal(start[0, 0], -logits[0, 0] * predicted)
    assert float(start.sum()) == float(((logits[0, 1] - logits[0, 0]) * predicted).sum())


def test_no_predicted_lesion_says_what_to_choose():
    logits = torch.ones((1, 2, *SPATIAL))
    logits[0, 1] = 0.25
    for kind in ["equal", "contrastive", "component"]:
        with pytest.raises(TargetError, match="'lesion-logits' \\(shows the lesion evidence\\)"):
            Target(kind).start_relevance(logits)
    assert float(Target("whole-output").start_relevance(logits).sum()) > 0
    assert float(Target("lesion-logits").start_relevance(logits).sum()) > 0  # the default falls back to evidence


def test_inputs_are_checked_and_results_detached():
    logits = _logits().requires_grad_(True)
    start = Target().start_relevance(logits)
    assert not start.requires_grad
    with pytest.raises(TargetError, match="lesion_class 2"):
        Target(lesion_class=2).start_relevance(logits)
    with pytest.raises(TargetError, match=r"\(N, classes, D, H, W\)"):
        Target().start_relevance(torch.ones(2, 3, 3))
    with pytest.raises(ValueError, match="Unknown target"):
        Target("everything")
    broken = _logits()
    broken[0, 1, 0, 0, 0] = float("nan")
    with pytest.raises(TargetError, match="NaN"):
        Target("whole-output").start_relevance(broken)


def test_describe_is_json_ready_and_hashes_masks():
    mask = np.zeros(SPATIAL, dtype=bool)
    mask[0, 1, 1] = True
    described = Target(TargetKind.MASK, mask=mask).describe()
    text = json.dumps(described)
    assert described["kind"] == "mask" and described["mask"]["voxels"] == 1
    assert described["mask"]["shape"] == list(SPATIAL)
    other = mask.copy()
    other[1, 1, 1] = True
    assert Target(TargetKind.MASK, mask=other).describe()["mask"]["sha256"] != described["mask"]["sha256"]
    assert "array" not in text
    assert Target().describe() == {
        "kind": "lesion-logits", "lesion_class": 1, "mask": None, "voxel": None, "component": None,
        "ground_truth": None,
    }
