"""``lrpseg check`` on small models whose answer is known: an ignored modality, a fully randomised network, a
linear model, and the exact check.json layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from LRPSegmentationLib.analysis.similarity import aopc, ranks, spearman, ssim
from LRPSegmentationLib.data.caseio import Case
from LRPSegmentationLib.lrp.targets import Target
from LRPSegmentationLib.net.model import UNet3D, UNetConfig
from LRPSegmentationLib.net.preprocess import PreprocessSpec
from LRPSegmentationLib.pipeline.check import CheckOptions, road_replace, run_check
from LRPSegmentationLib.pipeline.cli import main

GRID = PreprocessSpec(size=(8, 16, 16))
PROBABILITY = Target("probability")


@pytest.fixture(scope="module")
def case(synthetic_case):
    return Case("synthetic_7", synthetic_case.images, synthetic_case.geometry, synthetic_case.ground_truth)


def tiny_unet(seed: int = 3) -> UNet3D:
    torch.manual_seed(seed)
    return UNet3D(UNetConfig(base_width=2)).eval()


def test_similarity_numbers():
    assert ranks(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [2.5, 0.0, 2.5, 1.0]
    values = np.random.default_rng(0).random(200)
    assert spearman(values, values**3) == pytest.approx(1.0)
    assert spearman(values, -values) == pytest.approx(-1.0)
    assert abs(spearman(values, np.random.default_rng(1).random(200))) < 0.2
    volume = np.random.default_rng(2).random((6, 12, 12))
    assert ssim(volume, 3 * volume) == pytest.approx(1.0)
    assert ssim(volume, np.random.default_rng(3).random((6, 12, 12))) < 0.2
    assert aopc([2.0, 1.0, 0.0]) == pytest.approx(0.5) and aopc([2.0, 2.0]) == 0.0


def test_road_replacement_is_the_mean_of_the_kept_brain_voxels_nearby():
    """Each removed voxel gets the mean of the kept brain voxels in the smallest box that has one, else the
    channel's in-brain mean (checked voxel by voxel against the definition)."""
    rng = np.random.default_rng(4)
    x = torch.from_numpy(rng.normal(size=(1, 2, 5, 9, 11)).astype(np.float32))
    brain = torch.from_numpy(rng.random((1, 1, 5, 9, 11)) > 0.2).expand_as(x)
    remove = torch.from_numpy(rng.random((1, 2, 5, 9, 11)) < 0.3)
    remove[0, 1, 1:5, 1:8, 1:10] = True  # a hole wider than the small box, one beyond both: both fallbacks
    sizes = ((3, 3, 3), (3, 5, 5))
    out = road_replace(x, remove, brain, sizes).numpy()[0]
    xv, kept, gone = x.numpy()[0], (~remove & brain).numpy()[0], remove.numpy()[0]
    for c, k, j, i in zip(*np.nonzero(gone)):
        for size in sizes:
            box = tuple(slice(max(0, p - s // 2), p + s // 2 + 1) for p, s in zip((k, j, i), size))
            if kept[c][box].any():
                expected = xv[c][box][kept[c][box]].mean()
                break
        else:
            expected = xv[c][brain.numpy()[0, c]].mean()
        assert out[c, k, j, i] == pytest.approx(expected, abs=1e-5)
    assert np.array_equal(out[~gone], xv[~gone])


def test_an_ignored_modality_has_no_ablation_effect_and_no_share(case):
    model = tiny_unet()
    ignored = 2  # rCBF
    with torch.no_grad():
        model.encoders[0][0].weight[:, ignored] = 0
    result = run_check(case, model, GRID, CheckOptions(target=PROBABILITY, parts=("ablation",),
                                                       methods=("lrp-epsilon", "gradient", "input-x-gradient")))
    drops = result.modality_ablation
    assert drops["rCBF"] == pytest.approx(0.0, abs=1e-12)
    assert min(abs(v) for k, v in drops.items() if k != "rCBF") > 1e-7  # the other modalities matter
    for name, entry in result.methods.items():
        assert abs(entry.share[ignored]) < 1e-6, name
        assert result.share_vs_ablation_spearman[name] is not None


def test_a_fully_randomised_model_loses_similarity_for_weight_dependent_methods(case):
    result = run_check(case, tiny_unet(), GRID, CheckOptions(target=PROBABILITY, parts=("randomisation",), depths=3,
                                                             methods=("gradient", "lrp-epsilon")))
    for name, entry in result.methods.items():
        randomisation = entry.randomisation
        assert randomisation["layers"][-1] == "encoders.0" and len(randomisation["layers"]) == 3
        assert randomisation["spearman"][-1] < 0.5, name
        assert randomisation["ssim"][-1] < 0.5, name


class Linear(nn.Sequential):
    """Lesion logit = sum_c w_c x_c (weights 1..6), background logit 0: relevance w_c x_c is known exactly."""

    def __init__(self) -> None:
        super().__init__(nn.Conv3d(6, 2, kernel_size=1))
        with torch.no_grad():
            self[0].weight.zero_()
            self[0].weight[1, :, 0, 0, 0] = torch.arange(1.0, 7.0)
            self[0].bias.zero_()


def test_most_relevant_first_removes_more_score_than_random_for_a_linear_model(case):
    result = run_check(case, Linear().eval(), GRID,
                       CheckOptions(target=Target("whole-output"), parts=("flipping",),
                                    methods=("input-x-gradient", "lrp-epsilon")))
    for name, entry in result.methods.items():
        flipping = entry.flipping
        assert flipping["morf_aopc"] > flipping["random_aopc"] + 0.02 > flipping["lerf_aopc"] + 0.02, name
        assert entry.curves["morf"][0] == entry.curves["random"][0]


def test_baseline_methods_give_the_known_answer_on_a_linear_model():
    from LRPSegmentationLib.net import attribution

    model = Linear().eval()
    x = torch.rand(1, 6, 4, 8, 8)
    weights = torch.zeros(1, 2, 4, 8, 8)
    weights[:, 1] = 1.0
    target = attribution.ScalarTarget(model, weights)
    w = torch.arange(1.0, 7.0).view(1, 6, 1, 1, 1).expand_as(x)
    torch.testing.assert_close(attribution.gradient(target, x), w)
    torch.testing.assert_close(attribution.integrated_gradients(target, x, steps=3), x * w)
    torch.testing.assert_close(attribution.smoothgrad(target, x, samples=5), w)
    fill = torch.zeros(6)
    region = np.zeros((4, 8, 8), bool)
    region[1, 2, 3] = True
    occluded = attribution.occlusion(target, x, fill, region, patch=(2, 4, 4), margin=1)
    expected = torch.zeros_like(x)
    for c in range(6):  # patches tile the region's box grown by the margin, [0:3, 1:4, 2:5], cut to it
        for depth in (slice(0, 2), slice(2, 3)):
            box = (0, c, depth, slice(1, 4), slice(2, 5))
            expected[box] = (w * x)[box].sum() / (w * x)[box].numel()
    torch.testing.assert_close(occluded, expected, rtol=1e-3, atol=1e-4)  # drops of float32 sums


# the layout, plus the floor of the randomisation test (null_spearman)
LAYOUT_METHOD = {"randomisation": {"layers", "spearman", "ssim", "null_spearman"}, "random_logit": {"spearman"},
                 "flipping": {"morf_aopc", "lerf_aopc", "random_aopc"},
                 "localisation": {"gt_inclusivity", "mass_accuracy", "pointing_game"}}


def test_check_command_writes_the_documented_layout(synthetic_case_dir, tiny_model_file, tmp_path):
    out = tmp_path / "check"
    assert main(["check", str(synthetic_case_dir), "--model", str(tiny_model_file), "--out", str(out),
                 "--device", "cpu", "--progress", "none", "--target", "probability", "--depths", "2",
                 "--methods", "lrp-epsilon,lrp-epsilon+clamp[0,0.2],gradient,grad-cam"]) == 0
    report = json.loads((out / "check.json").read_text())
    assert set(report) == {"case", "target", "methods", "modality_ablation", "share_vs_ablation_spearman"}
    assert list(report["methods"]) == ["lrp-epsilon", "lrp-epsilon+clamp[0,0.2]", "gradient", "grad-cam"]
    for name, entry in report["methods"].items():
        assert set(entry) == {*LAYOUT_METHOD, "seconds"}, name
        for part, keys in LAYOUT_METHOD.items():
            assert set(entry[part]) == keys, (name, part)
        assert len(entry["randomisation"]["layers"]) == len(entry["randomisation"]["spearman"]) == 2
        assert isinstance(entry["flipping"]["morf_aopc"], float) and entry["seconds"] >= 0
        assert entry["localisation"]["gt_inclusivity"] is not None
    assert set(report["modality_ablation"]) == {"ADC", "MTT", "rCBF", "rCBV", "Tmax", "TTP"}
    assert set(report["share_vs_ablation_spearman"]) == set(report["methods"])
    assert (out / "check.csv").stat().st_size > 1000
    assert {p.name for p in (out / "plots").iterdir()} == {"randomisation.png", "flipping.png", "ablation.png"}
    skipped = tmp_path / "skipped"
    assert main(["check", str(synthetic_case_dir), "--model", str(tiny_model_file), "--out", str(skipped),
                 "--progress", "none", "--target", "probability", "--methods", "gradient", "--no-randomisation",
                 "--no-flipping", "--no-plots", "--no-random-logit"]) == 0
    entry = json.loads((skipped / "check.json").read_text())["methods"]["gradient"]
    assert entry["randomisation"] == {"layers": [], "spearman": [], "ssim": []}
    assert entry["flipping"]["morf_aopc"] is None
    assert not (skipped / "plots").exists()
