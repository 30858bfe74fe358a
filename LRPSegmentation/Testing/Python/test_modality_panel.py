"""Any modality set on the Slicer side: the panel follows the model's modality list, the Logic runs a three-modality
(DWI/ADC/FLAIR) nnU-Net v2 model, and Run offers the model's own packages.

The model is the nnU-Net v2 folder written by nnU-Net's own code (fixtures/nnunet/), its test case laid out as an
ISLES 2022 BIDS case; the Logic is the module file's, through Slicer's own Python layer (slicer_testbed.py), with a
real ``lrpseg explain`` child process. The six-modality path is covered unchanged by test_slicer_layer.py and
test_run.py; here it follows a three-modality result in the same scene.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

slicer_core = pytest.importorskip("slicer", reason="slicer-core is needed for the MRML tests")
if not hasattr(slicer_core, "vtkMRMLScene"):
    pytest.skip("the installed 'slicer' package has no MRML (install slicer-core)", allow_module_level=True)

import slicer_testbed  # noqa: E402

from LRPSegmentationLib.analysis.filters import AmplitudeFilter, filter_map  # noqa: E402
from LRPSegmentationLib.data.modalities import ISLES2022_MODALITIES, MODALITIES  # noqa: E402
from LRPSegmentationLib.mrml import display, headless, job, panel  # noqa: E402
from LRPSegmentationLib.mrml import nodes as scene_nodes  # noqa: E402
from LRPSegmentationLib.mrml.run import RunState  # noqa: E402
from LRPSegmentationLib.net.weights import ModelRoute, model_modalities, model_route  # noqa: E402
from LRPSegmentationLib.pipeline.outputs import read_relevance  # noqa: E402

TESTBED_DIR = Path(__file__).resolve().parent
FIXTURE = TESTBED_DIR / "fixtures" / "nnunet"
NNUNET = FIXTURE / "nnUNetTrainer__nnUNetPlans__3d_fullres"
UI_FILE = slicer_testbed.MODULE_DIR / "Resources" / "UI" / "LRPSegmentation.ui"


@pytest.fixture(scope="module")
def isles2022_case(tmp_path_factory) -> Path:
    """The fixture's test case in the ISLES 2022 BIDS layout (mask in the dataset's derivatives)."""
    root = tmp_path_factory.mktemp("isles2022")
    sub, ses = "sub-strokecase0001", "ses-0001"
    for name, folder in (("DWI", "dwi"), ("ADC", "dwi"), ("FLAIR", "anat")):
        target = root / sub / ses / folder / f"{sub}_{ses}_{name.lower() if folder == 'dwi' else name}.nii.gz"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(FIXTURE / "case" / f"{name}.nii.gz", target)
    mask = root / "derivatives" / sub / ses / f"{sub}_{ses}_msk.nii.gz"
    mask.parent.mkdir(parents=True)
    shutil.copy(FIXTURE / "case" / "OT.nii.gz", mask)
    return root / sub


@pytest.fixture(scope="module")
def monai_description(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("monai") / "basicunet.json"
    path.write_text(json.dumps({"format": "lrpseg-monai", "class": "BasicUNet", "weights": "basicunet.safetensors",
                                "args": {"spatial_dims": 3, "in_channels": 2, "out_channels": 2},
                                "modalities": ["T1", "T2"]}))
    return path


# ------------------------------------------------------------------------------------------ model metadata

def test_the_modality_list_comes_from_the_models_metadata(monai_description):
    assert model_modalities() == MODALITIES and model_route(None) is ModelRoute.LRPSEG
    assert model_modalities(NNUNET) == ISLES2022_MODALITIES == model_modalities(NNUNET / "fold_0")
    assert panel.model_path(str(NNUNET / "plans.json")) == NNUNET  # the file dialog picks the folder's plans.json
    assert model_modalities(monai_description) == ("T1", "T2") and model_route(monai_description) is ModelRoute.MONAI
    assert job.model_summary(NNUNET) == f"{NNUNET.name}: nnU-Net v2 trained model, inputs DWI, ADC, FLAIR"
    assert job.model_summary(monai_description) == "basicunet.json: MONAI BasicUNet, inputs T1, T2"
    assert job.model_summary(None).startswith("lrpseg-synthetic-b8.safetensors: base width")  # as before


def test_the_selectors_follow_the_models_modalities():
    six = panel.selector_rows(MODALITIES)
    assert [(r.slot, r.text) for r in six] == [(panel.VOLUME_PARAMETERS[m], f"{m}:") for m in MODALITIES]
    three = panel.selector_rows(ISLES2022_MODALITIES)
    assert [r.text for r in three] == ["DWI:", "ADC:", "FLAIR:", None, None, None]
    assert [r.slot for r in three[:3]] == ["adcVolume", "mttVolume", "rcbfVolume"]  # by position
    assert three[0].tooltip == "Diffusion-weighted image (DWI) volume, input 1 of the model's 3."
    assert six[4].tooltip == "Time to maximum of the residue function (Tmax) volume, input 5 of the model's 6."
    widgets = {w.get("name"): w.get("class") for w in ET.parse(UI_FILE).getroot().iter("widget")}
    for row in three:
        assert widgets[row.selector] == "qMRMLNodeComboBox" and widgets[row.label] == "QLabel"
    state = type("State", (), {"running": False, "checkRunning": False, "live": None, "checkNodes": None})()
    values = type("Values", (), {"filterKind": "clamp", "useAlphaLow": False, "singleView": True})()
    enabled = panel.enabled_widgets(values, state, ["FLAIR"])
    assert set(enabled) <= set(widgets) and not enabled["applyButton"] and enabled["alphaSlider"]


def test_grid_layouts_for_any_number_of_views():
    assert [display.grid_shape(n) for n in (1, 2, 3, 4, 5, 6, 8, 9, 10)] == [
        (1, 1), (1, 2), (1, 3), (2, 2), (2, 3), (2, 3), (2, 4), (3, 3), (3, 4)]
    assert display.grid_layout_id(MODALITIES) == display.GRID_LAYOUT_ID
    assert display.grid_view_names(MODALITIES) == display.GRID_VIEW_NAMES
    three = ET.fromstring(display.grid_layout_xml(ISLES2022_MODALITIES))
    tags = [view.get("singletontag") for view in three.iter("view")]
    assert tags == ["LRPView1", "LRPView2", "LRPView3"] == list(display.grid_view_names(ISLES2022_MODALITIES))
    assert len(three.findall("item")) == 1  # one row of three
    six = ET.fromstring(display.grid_layout_xml())
    assert [v.get("singletontag") for v in six.iter("view")] == [f"LRP{m}" for m in MODALITIES]
    assert [p.text for p in six.iter("property") if p.get("name") == "viewlabel"] == list(MODALITIES)


# ------------------------------------------------------------------------------------------- dependencies

def test_run_offers_the_packages_of_the_models_route(monai_description):
    assert job.child_requirements(None) == job.PIP_REQUIREMENTS
    nnunet = job.child_requirements(NNUNET)
    assert set(nnunet) - set(job.PIP_REQUIREMENTS) == {"dynamic_network_architectures", "einops"}
    assert set(job.child_requirements(monai_description)) - set(job.PIP_REQUIREMENTS) == {"monai", "einops"}
    assert job.pip_calls(["scipy>=1.10", "dynamic-network-architectures>=0.4.4", "einops>=0.6"]) == [
        ["scipy>=1.10", "einops>=0.6"], ["dynamic-network-architectures>=0.4.4", "--no-deps"]]
    assert job.pip_calls([]) == []


WITHOUT_PEER_PACKAGES = '''
import importlib.abc, json, sys

class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("monai", "dynamic_network_architectures", "einops"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Missing())
from LRPSegmentationLib.mrml.session import ExplanationSession
print(json.dumps([ExplanationSession.dependencyPlan(p) for p in sys.argv[1:]]))
'''


def test_the_logics_install_plan_without_the_peer_packages(monai_description):
    """In a Python without monai / dynamic-network-architectures / einops (as a stock Slicer): what Run would install
    for each model (nothing is installed here)."""
    models = ["", str(NNUNET / "plans.json"), str(monai_description)]
    result = subprocess.run([sys.executable, "-c", WITHOUT_PEER_PACKAGES, *models], capture_output=True, text=True,
                            timeout=120, cwd=slicer_testbed.MODULE_DIR)
    assert result.returncode == 0, result.stderr[-2000:]
    bundled, nnunet, monai = json.loads(result.stdout.splitlines()[-1])
    assert bundled == []
    assert nnunet == [["einops>=0.6"], ["dynamic-network-architectures>=0.4.4", "--no-deps"]]
    assert monai == [["einops>=0.6"], ["monai>=1.3", "--no-deps"]]


# ------------------------------------------------------------------------------------- the Logic, end to end

@pytest.fixture(scope="module")
def module(tmp_path_factory):
    if slicer_testbed.slicer_python_dir() is None:
        pytest.skip("../shared/slicer-python (Slicer's own Python layer) is not beside this clone")
    slicer_testbed.install(tmp_path_factory.mktemp("slicer-cache"))
    return slicer_testbed.module_file()


def poll_like_the_panel(logic, parameters, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    logic.poll(parameters)
    while logic.busy:
        assert time.monotonic() < deadline, logic.controller.status
        time.sleep(0.05)
        logic.poll(parameters)


def blended(env, view: str) -> np.ndarray:
    return headless.blend_view(env.slice_logic(view, 48, 48))[..., :3].astype(int)


def test_a_three_modality_nnunet_model_through_the_panel_and_the_logic(module, isles2022_case, tiny_model_file,
                                                                        synthetic_case_dir, tmp_path):
    pytest.importorskip("dynamic_network_architectures.architectures.unet")
    env = headless.headless_scene()
    logic = module.LRPSegmentationLogic()
    p = logic.getParameterNode()
    p.modelPath, p.device = str(NNUNET / "plans.json"), "cpu"
    assert panel.modalities(p) == ISLES2022_MODALITIES
    assert panel.input_problems(p) == list(ISLES2022_MODALITIES)  # the Run button's tooltip names them
    nodes = logic.loadCaseIntoPanel(p, isles2022_case)
    assert list(nodes.volumes) == list(ISLES2022_MODALITIES) and nodes.ground_truth is not None
    assert (p.adcVolume, p.mttVolume, p.rcbfVolume) == tuple(nodes.volumes.values())
    assert (p.rcbvVolume, p.tmaxVolume, p.ttpVolume) == (None, None, None) and panel.input_problems(p) == []
    p.mttVolume = p.adcVolume  # the ADC slot (DWI) given to the second modality too
    assert panel.input_problems(p) == ["ADC (same volume as DWI)"]
    p.mttVolume = nodes.volumes["ADC"]

    logic.startFromParameters(p)  # a real `lrpseg explain` child with the nnU-Net folder as model
    poll_like_the_panel(logic, p)
    assert logic.controller.status.state is RunState.DONE, logic.controller.status.message
    live = logic.live
    assert live.modalities == ISLES2022_MODALITIES and list(live.heatmaps) == list(ISLES2022_MODALITIES)
    assert set(live.overlays) == set(live.raw_nodes) == set(ISLES2022_MODALITIES)
    assert [row["Modality"] for row in live.rows] == [*ISLES2022_MODALITIES, "all"] and live.dice is not None
    reference = tmp_path / "cli"
    from LRPSegmentationLib.pipeline.cli import main as cli_main

    assert cli_main(["explain", str(isles2022_case), "--model", str(NNUNET), "--out", str(reference), "--device",
                     "cpu", "--progress", "none"]) == 0
    np.testing.assert_allclose(live.relevance, read_relevance(reference, ISLES2022_MODALITIES), rtol=1e-4,
                               atol=1e-6 * float(np.abs(live.relevance).max()))
    assert logic.staleReason(p) is None

    logic.update(p, panel.Change.DISPLAY)  # the grid of three views, labelled with the model's modalities
    layout = display.layout_node(env.scene)
    assert layout.GetViewArrangement() == display.grid_layout_id(ISLES2022_MODALITIES)
    views = display.grid_view_names(ISLES2022_MODALITIES)
    for modality, view in zip(ISLES2022_MODALITIES, views):
        composite = display.composite_node(env.scene, view)
        assert (composite.GetBackgroundVolumeID(), composite.GetLabelVolumeID()) == (
            nodes.volumes[modality].GetID(), live.overlays[modality].GetID())
    flair_view = views[2]
    plain = blended(env, flair_view)
    p.filterKind, p.alpha = "clamp", 0.05  # the slider
    logic.update(p, panel.Change.FILTER)
    assert not np.array_equal(plain, blended(env, flair_view))
    live.flush()
    expected = filter_map(live.relevance, AmplitudeFilter.clamp_band(0.05))
    for channel, modality in enumerate(ISLES2022_MODALITIES):
        np.testing.assert_array_equal(scene_nodes.array_from_node(live.heatmaps[modality]),
                                      expected.normalised[channel])
    p.where, p.alpha = "layers", 0.3  # an in-chain band: computed on demand in a child, then shown
    logic.update(p, panel.Change.FILTER)
    assert logic.running and logic.bandStatus("clamp", 0.3) == "pending"
    poll_like_the_panel(logic, p)
    assert logic.live is live and live.where == "layers" and logic.bandStatus("clamp", 0.3) == "shown"
    assert [row["Modality"] for row in live.rows] == [*ISLES2022_MODALITIES, "all"]
    p.where, p.alpha = "output", 0.05
    logic.update(p, panel.Change.FILTER)
    p.singleView, p.viewModality = True, "FLAIR"
    logic.update(p, panel.Change.DISPLAY)
    red = display.composite_node(env.scene, "Red")
    assert red.GetForegroundVolumeID() == live.heatmaps["FLAIR"].GetID()
    p.viewModality = "Tmax"  # not one of this model's: the single view shows its first modality
    logic.update(p, panel.Change.DISPLAY)
    assert red.GetForegroundVolumeID() == live.heatmaps["DWI"].GetID()

    saved = headless.save_scene(env.scene, tmp_path / "three.mrml")  # reopened: the slider works again
    again = headless.headless_scene()
    again.scene.SetURL(str(saved.scene_file))
    assert again.scene.Import()
    reopened = module.LRPSegmentationLogic()
    assert reopened.restoreFromScene() and reopened.live.modalities == ISLES2022_MODALITIES
    rows = reopened.applyFilter("clamp", alpha=0.05)
    assert [row["Modality"] for row in rows] == [*ISLES2022_MODALITIES, "all"]
    assert reopened.staleReason(reopened.getParameterNode()) is None

    p = reopened.getParameterNode()  # back to our U-Net: six rows again, in the same scene
    p.modelPath = str(tiny_model_file)
    assert "model" in reopened.staleReason(p)  # not "inputs": the model with other inputs changed
    six = reopened.loadCaseIntoPanel(p, synthetic_case_dir)
    assert list(six.volumes) == list(MODALITIES) and panel.input_problems(p) == []
    reopened.startFromParameters(p)
    poll_like_the_panel(reopened, p)
    live = reopened.live
    assert live.modalities == MODALITIES and [row["Modality"] for row in live.rows] == [*MODALITIES, "all"]
    roles = {node.GetAttribute(scene_nodes.OUTPUT_ATTRIBUTE) for node in scene_nodes.output_nodes(again.scene)}
    assert {"relevance_Tmax", "overlay_Tmax", "raw_relevance_Tmax", "relevance_colors"} <= roles
    assert not {"relevance_DWI", "overlay_FLAIR", "raw_relevance_DWI"} & roles  # the earlier model's outputs went
    reopened.closeScene()


def test_the_panels_model_line_for_an_nnunet_folder_needs_no_torch(tmp_path):
    """The panel's model line and modality list for an nnU-Net folder need no torch (Slicer's process never
    imports it)."""
    code = ("import sys\nfrom LRPSegmentationLib.mrml import panel, session\n"
            f"print(session.ExplanationSession.modelSummary({str(NNUNET)!r}))\n"
            f"assert session.ExplanationSession.modelModalities({str(NNUNET)!r}) == ('DWI', 'ADC', 'FLAIR')\n"
            "assert 'torch' not in sys.modules and 'dynamic_network_architectures' not in sys.modules\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=slicer_testbed.MODULE_DIR, env={**os.environ})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "inputs DWI, ADC, FLAIR" in result.stdout


def test_the_band_grid_job_takes_the_models_modalities(isles2022_case, tmp_path):
    """``lrpseg bands`` (the panel's background in-chain grid) reads the case with the model's modality list."""
    pytest.importorskip("dynamic_network_architectures.architectures.unet")
    from LRPSegmentationLib.pipeline.band_files import BANDS_FILE, BANDS_JSON, BandFile, read_band_scores
    from LRPSegmentationLib.pipeline.cli import main as cli_main

    out = tmp_path / "bands"
    assert cli_main(["bands", str(isles2022_case), "--model", str(NNUNET), "--out", str(out), "--device", "cpu",
                     "--progress", "none", "--bands", "clamp:0.2"]) == 0
    band = AmplitudeFilter.clamp_band(0.2)
    grid = BandFile(out / BANDS_FILE)
    scores = read_band_scores(out / BANDS_JSON)
    assert grid.bands == (band,) and [row.modality for row in scores[band].modalities] == list(ISLES2022_MODALITIES)
    own = tmp_path / "explain"  # the band's own explanation: same preprocessing (nnU-Net's), same map
    assert cli_main(["explain", str(isles2022_case), "--model", str(NNUNET), "--out", str(own), "--device", "cpu",
                     "--progress", "none", "--where", "layers", "--filter", "clamp", "--alpha", "0.2"]) == 0
    expected = read_relevance(own, ISLES2022_MODALITIES)
    peak = np.abs(expected).reshape(3, -1).max(axis=1)[:, None, None, None]
    np.testing.assert_allclose(grid.relevance(band) / peak, expected / peak, atol=2e-3)  # stored as float16


def test_check_this_explanation_refuses_a_peer_model_in_one_line(isles2022_case, tmp_path, capsys):
    """``lrpseg check`` (the panel's "Check this explanation") does not yet apply nnU-Net's preprocessing: it says so
    instead of checking a wrongly preprocessed input."""
    pytest.importorskip("dynamic_network_architectures.architectures.unet")
    from LRPSegmentationLib.pipeline.cli import main as cli_main

    assert cli_main(["check", str(isles2022_case), "--model", str(NNUNET), "--out", str(tmp_path / "check"),
                     "--progress", "none"]) != 0
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "takes our U-Net model files only, not this nnunet model" in error[0]
    assert not (tmp_path / "check").exists()


def test_a_model_of_more_modalities_than_the_panel_has_inputs_is_refused_in_one_line(tmp_path):
    from LRPSegmentationLib.mrml.run import RunError, child_process_jobs
    from LRPSegmentationLib.mrml.session import ExplanationSession

    names = [f"M{k}" for k in range(7)]
    description = tmp_path / "seven.json"
    description.write_text(json.dumps({"format": "lrpseg-monai", "class": "BasicUNet", "weights": "w.safetensors",
                                       "args": {"in_channels": 7}, "modalities": names}))
    env = headless.headless_scene()
    logic = ExplanationSession(env.scene, tmp_path / "work", child_process_jobs())
    values = type("Values", (), {"modelPath": str(description), "groundTruth": None, "device": "cpu",
                                 "rule": "epsilon", "target": "lesion-logits",
                                 **{slot: None for slot in panel.VOLUME_SLOTS}})()
    assert panel.modalities(values) == MODALITIES  # the rows stay as they are; the model line names its inputs
    with pytest.raises(RunError, match="takes 7 modalities but the panel has 6 inputs"):
        logic.startFromParameters(values)
    assert not logic.running
