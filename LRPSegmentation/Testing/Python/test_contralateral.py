"""The contralateral check: predicted regions that the other hemisphere shows as well are dropped from the mask
(numerics on hand-made maps; the bundled model on a healthy and a lesion case of the held-out ellipsoid family, in
predict, explain and the model file's metadata)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from LRPSegmentationLib.analysis.contralateral import contralateral_check, left_right_axis
from LRPSegmentationLib.data.modalities import MODALITIES
from LRPSegmentationLib.data.synthetic import generate_case, write_isles_case
from LRPSegmentationLib.net.predict import predict_case
from LRPSegmentationLib.net.weights import bundled_model_path, load_model, read_metadata, set_contralateral_check
from LRPSegmentationLib.pipeline.cli import main

LESION_SHIFT = np.array([-1.0, 1.0, -1.0, -1.0, 1.0, 1.0])  # per map, in MODALITIES order
HEALTHY_ELLIPSOID = 132370812  # version 7's network predicts 25.2 ml (1.6% of the brain) in its central white matter
ELLIPSOID_WITH_LESION = 1022510077  # a 39.6 ml lesion, and 1.5 ml predicted in symmetric white matter


def hand_made_maps(rng):
    """(6, 8, 32, 32) maps: a brain, white matter lesion-like on both sides, a lesion on one side, and a lesion on
    each side at mirror-image places."""
    shape = (8, 32, 32)
    images = 1.0 + 0.05 * rng.standard_normal((6, *shape))
    brain = np.zeros(shape, bool)
    brain[:, 2:30, 2:30] = True
    white, lesion, pair = (np.zeros(shape, bool) for _ in range(3))
    white[2:6, 12:20, 8:24] = True  # crosses the midline (15.5) symmetrically
    lesion[2:6, 3:8, 4:10] = True  # left only
    pair[2:6, 24:28, 4:8] = True
    pair[2:6, 24:28, 24:28] = True  # its mirror image
    for channel, sign in enumerate(LESION_SHIFT):
        images[channel] += sign * (0.4 * white + 1.5 * lesion + 1.5 * pair)
    return np.where(brain, images, 0.0), white, lesion, pair


def test_regions_mirrored_in_the_other_hemisphere_are_dropped():
    images, white, lesion, pair = hand_made_maps(np.random.default_rng(0))
    left_white = white.copy()
    left_white[..., 16:] = False  # the model calls one side's white matter
    checked, regions = contralateral_check(left_white | lesion | pair, images, MODALITIES, 2, 0.5)
    assert not (checked.astype(bool) & white).any()
    assert checked[lesion].all() and checked[pair].all()
    by_size = {region.voxels: region for region in regions}
    assert abs(by_size[int(left_white.sum())].contrast) < 0.2 and not by_size[int(left_white.sum())].kept
    assert by_size[int(lesion.sum())].contrast > 2 and by_size[int(lesion.sum())].kept
    assert [r.contrast for r in regions if r.voxels == int(pair.sum()) // 2] == [None, None]  # nothing to compare
    # maps without a lesion direction are not used; with none at all the check says what it needs
    unused = contralateral_check(left_white, images, ("DWI", "FLAIR", *MODALITIES[2:]), 2, 0.5)[1][0]
    assert unused.contrast == pytest.approx(np.mean([r.contrast for r in regions if not r.kept]), abs=0.2)
    with pytest.raises(ValueError, match="ADC"):
        contralateral_check(left_white, images[:2], ("DWI", "FLAIR"), 2, 0.5)
    # the mirror axis follows the direction cosines: a volume whose index axis j runs left-right mirrors axis 1
    assert left_right_axis(np.eye(3)) == 2
    assert left_right_axis([0, 1, 0, 1, 0, 0, 0, 0, 1]) == 1
    assert left_right_axis([0, 0, -1, 0, 1, 0, 1, 0, 0]) == 0


@pytest.fixture(scope="module")
def checked_and_raw(tmp_path_factory):
    """The bundled model's weights with the check at 0.5 and without it (whatever the bundled file says)."""
    folder = tmp_path_factory.mktemp("models")
    return (set_contralateral_check(bundled_model_path(), folder / "checked.safetensors", 0.5),
            set_contralateral_check(bundled_model_path(), folder / "raw.safetensors", None))


def test_the_bundled_model_checks_its_masks():
    assert read_metadata(bundled_model_path()).postprocess == {"contralateral_min_contrast": 0.5}


def test_the_check_clears_a_healthy_held_out_case(checked_and_raw):
    checked, raw = checked_and_raw
    case = generate_case(HEALTHY_ELLIPSOID, family="ellipsoid").to_case()
    brain = int(case.images.any(axis=0).sum())
    unchecked = predict_case(case, load_model(raw), "cpu")
    assert unchecked.mask.sum() > 0.001 * brain and unchecked.regions == ()
    prediction = predict_case(case, load_model(checked), "cpu")
    assert prediction.mask.sum() == 0 and len(prediction.removed) >= 2
    np.testing.assert_array_equal(prediction.probability, unchecked.probability)  # the network's output is kept
    assert "contralateral check: removed" in prediction.check_note(case.geometry.spacing)


def test_explain_shows_the_lesion_the_check_kept(checked_and_raw, tmp_path, capsys):
    checked, raw = checked_and_raw
    folder = write_isles_case(generate_case(ELLIPSOID_WITH_LESION, family="ellipsoid"), tmp_path, 1)
    for model, name in ((raw, "raw"), (checked, "checked")):
        assert main(["explain", str(folder), "--model", str(model), "--out", str(tmp_path / name), "--device", "cpu",
                     "--progress", "none"]) == 0
    err = capsys.readouterr().err
    assert "contralateral check: removed 1 predicted region(s)" in err
    scores = {name: json.loads((tmp_path / name / "scores.json").read_text()) for name in ("raw", "checked")}
    assert scores["raw"]["note"] is None and scores["checked"]["note"].startswith("contralateral check")
    assert scores["checked"]["dice"] > scores["raw"]["dice"]
    provenance = json.loads((tmp_path / "checked" / "provenance.json").read_text())
    assert provenance["explanation"]["target"]["kind"] == "lesion-logits"
    assert provenance["explained_target"]["kind"] == "mask"  # the kept lesion, not the dropped region
    assert [r["kept"] for r in provenance["contralateral_check"]["regions"]].count(False) == 1
    assert json.loads((tmp_path / "raw" / "provenance.json").read_text())["contralateral_check"] is None


def test_postprocess_writes_a_new_file_and_refuses_bad_values(checked_and_raw, tmp_path, capsys):
    checked, _ = checked_and_raw
    out = tmp_path / "off.safetensors"
    assert main(["postprocess", str(checked), "--no-contralateral-check", "--out", str(out)]) == 0
    assert read_metadata(out).postprocess == {} and read_metadata(checked).postprocess
    assert main(["postprocess", str(checked), "--contralateral-check", "0.5", "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err and read_metadata(out).postprocess == {}
    assert main(["postprocess", str(checked), "--contralateral-check", "9", "--out", str(tmp_path / "x")]) == 2
    assert "(0, 5]" in capsys.readouterr().err and not (tmp_path / "x").exists()
