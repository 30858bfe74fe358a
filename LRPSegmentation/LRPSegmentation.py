"""LRPSegmentation: stroke lesion segmentation of six-modality MRI with a 3D U-Net, explained by filtered LRP.

Thin Slicer layer: the Widget gathers GUI state, the Logic calls LRPSegmentationLib (scene.py for all MRML work,
job.py for the child process that runs the model, lrp.filters / metrics for the live slider). torch is imported
only inside functions, so the module loads (and Slicer's generic tests run) without it.
"""

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Optional, Union

import numpy as np
import qt
import slicer
import vtk
from slicer import vtkMRMLLabelMapVolumeNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

from LRPSegmentationLib import scene as lrpscene
from LRPSegmentationLib.job import ChildJob, ExplainRequest, child_environment
from LRPSegmentationLib.modalities import MODALITIES

MODULE_DIR = Path(__file__).resolve().parent
SELECTOR_KEYS = {"ADC": "adc", "MTT": "mtt", "rCBF": "rcbf", "rCBV": "rcbv", "Tmax": "tmax", "TTP": "ttp"}
PIP_REQUIREMENTS = {"safetensors": "safetensors>=0.4", "tqdm": "tqdm>=4.60", "SimpleITK": "SimpleITK>=2.2",
                    "scipy": "scipy>=1.10"}
SCORE_COLUMNS = (("modality", "Modality"), ("input_inclusivity", "D(LRP,x)"), ("gt_inclusivity", "D(LRP,y_OT)"),
                 ("input_precision", "D(x,LRP)"), ("gt_precision", "D(y_OT,LRP)"), ("share", "Share"),
                 ("abs_share", "|Share|"))


class LRPSegmentation(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("LRP Segmentation")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["LRPSegmentation contributors"]
        self.parent.helpText = _(
            "Segments ischemic stroke lesions from six MRI maps (ADC, MTT, rCBF, rCBV, Tmax, TTP) with a 3D U-Net and "
            "explains the prediction per modality with Layer-wise Relevance Propagation (LRP). Drag the alpha slider "
            "to filter the relevance (pass / clamp) and watch the heatmaps and inclusivity scores follow. "
            "See the <a href=\"https://github.com/lrpsegmentation/SlicerLRPSegmentation#readme\">README</a>.")
        self.parent.acknowledgementText = _(
            "Method after E. Tjoa et al., LRP on a 3D U-Net for ISLES 2017 ischemic stroke lesion segmentation, "
            "arXiv:1911.08136. The bundled model is trained on synthetic ISLES-like cases, not on patient data; "
            "it is not a medical device.")
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData():
    """A synthetic ISLES-like case in Sample Data, generated locally (no download)."""
    import SampleData

    def generate(source):
        return LRPSegmentationLogic().loadSyntheticSample()

    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="LRPSegmentation", sampleName="LRPSegmentationSynthetic", uris="generated:lrpsegmentation-synthetic",
        fileNames="LRPSegmentationSynthetic", nodeNames="LRPSegmentationSynthetic_ADC",
        thumbnailFileName=str(MODULE_DIR / "Resources" / "Icons" / "LRPSegmentationSample.png"),
        customDownloader=generate)


@parameterNodeWrapper
class LRPSegmentationParameterNode:
    adcVolume: vtkMRMLScalarVolumeNode
    mttVolume: vtkMRMLScalarVolumeNode
    rcbfVolume: vtkMRMLScalarVolumeNode
    rcbvVolume: vtkMRMLScalarVolumeNode
    tmaxVolume: vtkMRMLScalarVolumeNode
    ttpVolume: vtkMRMLScalarVolumeNode
    groundTruth: Union[vtkMRMLLabelMapVolumeNode, vtkMRMLSegmentationNode]
    modelPath: str = ""
    device: Annotated[str, Choice(["auto", "cuda", "cpu"])] = "auto"
    rule: Annotated[str, Choice(["epsilon-zplus", "epsilon", "zplus", "epsilon-alpha1beta0", "epsilon-gamma-zb",
                                 "paper"])] = "epsilon-zplus"
    target: Annotated[str, Choice(["lesion-logits", "probability", "equal", "whole-output", "contrastive",
                                   "false-positive", "false-negative"])] = "lesion-logits"
    filterKind: Annotated[str, Choice(["none", "pass", "clamp"])] = "none"
    alpha: Annotated[float, WithinRange(0.0, 1.0)] = 0.2
    useAlphaLow: bool = False
    alphaLow: Annotated[float, WithinRange(0.0, 1.0)] = 0.0
    where: Annotated[str, Choice(["output", "layers"])] = "output"
    opacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.6
    singleView: bool = False
    viewModality: Annotated[str, Choice(list(MODALITIES))] = "ADC"
    showOutlines: bool = True


class LRPSegmentationWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._timer = qt.QTimer()
        self._timer.setInterval(100)
        self._timer.connect("timeout()", self.onPoll)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/LRPSegmentation.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = LRPSegmentationLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.loadCaseButton.connect("clicked(bool)", self.onLoadCase)
        self.ui.bundledModelButton.connect("clicked(bool)", lambda: self.ui.modelPathLineEdit.setCurrentPath(""))
        self.ui.modelPathLineEdit.connect("currentPathChanged(QString)", self.onModelPathChanged)
        self.ui.applyButton.connect("clicked(bool)", self.onApply)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.exportScoresButton.connect("clicked(bool)", self.onExportScores)
        for kind in ("None", "Pass", "Clamp"):
            getattr(self.ui, f"filter{kind}RadioButton").connect("toggled(bool)", self.onFilterKindToggled)
        for where in ("Output", "Layers"):
            getattr(self.ui, f"where{where}RadioButton").connect("toggled(bool)", self.onWhereToggled)
        self.initializeParameterNode()
        self.onModelPathChanged(self.ui.modelPathLineEdit.currentPath)

    def cleanup(self) -> None:
        self._timer.stop()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterChanged)

    def onSceneStartClose(self, caller, event) -> None:
        self.onCancel()
        self.logic.result = None  # its nodes go with the scene
        self.logic.clearLayerCache()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, inputParameterNode: Optional[LRPSegmentationParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterChanged)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterChanged)
            p = self._parameterNode
            getattr(self.ui, f"filter{p.filterKind.capitalize()}RadioButton").checked = True
            getattr(self.ui, f"where{p.where.capitalize()}RadioButton").checked = True
            self.ui.modelPathLineEdit.currentPath = p.modelPath
            self.onParameterChanged()

    def inputVolumes(self) -> dict:
        return {m: getattr(self._parameterNode, f"{SELECTOR_KEYS[m]}Volume") for m in MODALITIES}

    def onParameterChanged(self, caller=None, event=None) -> None:
        p = self._parameterNode
        if p is None:
            return
        running = self.logic.job is not None and not self.logic.job.finished
        ready = all(self.inputVolumes().values())
        self.ui.applyButton.enabled = ready and not running
        self.ui.applyButton.toolTip = _("Segment and explain.") if ready else _("Select a volume for each modality.")
        self.ui.cancelButton.enabled = running
        self.ui.alphaLowSlider.enabled = p.useAlphaLow and p.filterKind != "none"
        self.ui.alphaSlider.enabled = p.filterKind != "none"
        self.ui.viewModalityComboBox.enabled = p.singleView
        if self.logic.result is not None and not running:
            with slicer.util.tryWithErrorDisplay(_("Updating the explanation failed.")):
                self.updateExplanation()

    def updateExplanation(self) -> None:
        p = self._parameterNode
        if p.where == "output":
            rows = self.logic.applyFilter(p.filterKind, p.alpha, p.alphaLow if p.useAlphaLow else 0.0)
        else:
            rows = self.logic.showLayerFiltered(p.filterKind, p.alpha, p.alphaLow if p.useAlphaLow else 0.0,
                                                onMissing=self.startRun)
        self.logic.showViews(p.singleView, p.viewModality, p.opacity, p.showOutlines)
        if rows is not None:
            self.ui.scoresTableView.setMRMLTableNode(self.logic.result.table)
        dice = self.logic.result.dice
        self.ui.diceLabel.text = _("Dice: {value}").format(value="-" if dice is None else f"{dice:.3f}")

    def onFilterKindToggled(self, checked: bool) -> None:
        if checked and self._parameterNode:
            self._parameterNode.filterKind = ("none" if self.ui.filterNoneRadioButton.checked else
                                              "pass" if self.ui.filterPassRadioButton.checked else "clamp")

    def onWhereToggled(self, checked: bool) -> None:
        if checked and self._parameterNode:
            self._parameterNode.where = "output" if self.ui.whereOutputRadioButton.checked else "layers"

    def onModelPathChanged(self, path: str) -> None:
        if self._parameterNode:
            self._parameterNode.modelPath = path
        try:
            self.ui.modelInfoLabel.text = self.logic.describeModel(path or None)
        except ValueError as error:
            self.ui.modelInfoLabel.text = str(error)

    def onLoadCase(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), _("ISLES case folder"))
        if not folder:
            return
        with slicer.util.tryWithErrorDisplay(_("Loading the case failed."), waitCursor=True):
            self.selectCase(self.logic.loadCaseFolder(folder))

    def selectCase(self, nodes) -> None:
        for modality, node in nodes.volumes.items():
            setattr(self._parameterNode, f"{SELECTOR_KEYS[modality]}Volume", node)
        self._parameterNode.groundTruth = nodes.ground_truth

    def onApply(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Starting the computation failed."), waitCursor=True):
            if not self.logic.ensureDependencies():
                return
            p = self._parameterNode
            if p.where == "layers":
                self.logic.clearLayerCache()
            self.startRun(p.filterKind if p.where == "layers" else "none", p.alpha,
                          p.alphaLow if p.useAlphaLow else 0.0)

    def startRun(self, kind: str, alpha: float, alphaLow: float) -> None:
        p = self._parameterNode
        self.logic.start(self.inputVolumes(), p.groundTruth, modelPath=p.modelPath or None, device=p.device,
                         rule=p.rule, target=p.target, where=p.where, filterKind=kind, alpha=alpha, alphaLow=alphaLow)
        self.ui.progressBar.value = 0
        self.ui.statusLabel.text = _("Running...")
        self._timer.start()
        self.onParameterChanged()

    def onPoll(self) -> None:
        for event in self.logic.job.poll():
            if event.fraction is not None:
                self.ui.progressBar.value = int(100 * event.fraction)
            self.ui.statusLabel.text = f"{event.stage}: {event.message}"
        self.ui.timeLabel.text = f"{self.logic.job.elapsed:.1f} s"
        if not self.logic.job.finished:
            return
        self._timer.stop()
        with slicer.util.tryWithErrorDisplay(_("The computation failed."), waitCursor=True):
            self.logic.finish()
            self.ui.statusLabel.text = _("Done in {seconds:.1f} s.").format(seconds=self.logic.job.elapsed)
            self.ui.progressBar.value = 100
        self.onParameterChanged()

    def onCancel(self) -> None:
        if self.logic and self.logic.job is not None and not self.logic.job.finished:
            self.logic.job.cancel()
            self.ui.statusLabel.text = _("Cancelled.")

    def onExportScores(self) -> None:
        if self.logic.result is None:
            return
        path = qt.QFileDialog.getSaveFileName(slicer.util.mainWindow(), _("Export scores"), "lrp_scores.csv",
                                              "CSV (*.csv)")
        if path:
            with slicer.util.tryWithErrorDisplay(_("Export failed.")):
                slicer.util.saveNode(self.logic.result.table, path)


@dataclass
class ExplanationResult:
    """What one run produced, with the caches the live slider works on (raw relevance, reference masks)."""

    relevance: np.ndarray  # raw (6, D, H, W) on the ADC grid
    geometry: object
    masks: object  # metrics.ReferenceMasks of the inputs and ground truth
    mask: np.ndarray
    dice: Optional[float]
    volumes: dict
    heatmaps: dict = field(default_factory=dict)
    segmentation: object = None
    groundTruthSegmentation: object = None
    table: object = None
    outDir: Optional[Path] = None


class LRPSegmentationLogic(ScriptedLoadableModuleLogic):
    """Console API, e.g.::

        logic = slicer.util.getModuleLogic("LRPSegmentation")
        nodes = logic.loadSyntheticSample()                  # or logic.loadCaseFolder("/data/training_4")
        result = logic.explain(nodes.volumes, nodes.ground_truth, device="cpu")   # blocking
        rows = logic.applyFilter("pass", alpha=0.2)           # live filter: heatmaps + scores table
        logic.showViews(singleView=False, opacity=0.6)
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.job = None
        self.result = None
        self._pending = None
        self._layerCache = {}
        self._dependenciesChecked = False

    def getParameterNode(self):
        return LRPSegmentationParameterNode(super().getParameterNode())

    # ---------------------------------------------------------------------------------------------- inputs
    def workFolder(self) -> Path:
        """User-writable folder for runs and generated samples (never the install folder)."""
        base = Path(slicer.app.cachePath) if hasattr(slicer, "app") else Path(tempfile.gettempdir())
        folder = base / "LRPSegmentation"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def loadCaseFolder(self, folder):
        """Load an ISLES (or flat ADC.nii.gz ...) case folder as six named volumes (+ OT labelmap)."""
        nodes = lrpscene.load_case_folder(slicer.mrmlScene, folder)
        slicer.util.setSliceViewerLayers(background=nodes.volumes["ADC"], fit=True)
        return nodes

    def loadSyntheticSample(self, seed: int = 2017):
        """Generate (once, cached) and load a synthetic ISLES-like case."""
        from LRPSegmentationLib.synthetic import generate_case, write_isles_case

        root = self.workFolder() / "SampleData" / f"seed{seed}"
        folder = root / "training_1"
        if not folder.is_dir():
            write_isles_case(generate_case(seed), root, 1)
        return self.loadCaseFolder(folder)

    def describeModel(self, path=None) -> str:
        """One-line summary of a model file's metadata (needs no torch)."""
        from LRPSegmentationLib import weights

        path = Path(path) if path else weights.bundled_model_path()
        info = weights.read_metadata(path)
        config, metrics = info.config, info.metrics
        dice = metrics.get("validation_dice", metrics.get("dice"))
        return _("{name}: base width {width}, trained {created}{dice}").format(
            name=path.name, width=config.get("base_width", "?"), created=info.created[:10],
            dice="" if dice is None else _(", validation Dice {dice:.3f}").format(dice=float(dice)))

    def ensureDependencies(self, askUser: bool = True) -> bool:
        """torch through the PyTorch extension, other packages with pip (version floors), asking once."""
        if self._dependenciesChecked:
            return True
        try:
            import PyTorchUtils
        except ModuleNotFoundError:
            raise RuntimeError(_("This module needs the PyTorch extension: install 'PyTorch' from the Extensions "
                                 "Manager and restart Slicer.")) from None
        torchLogic = PyTorchUtils.PyTorchUtilsLogic()
        import importlib.util
        missing = [spec for module, spec in PIP_REQUIREMENTS.items() if importlib.util.find_spec(module) is None]
        if not torchLogic.torchInstalled() or missing:
            message = _("LRPSegmentation needs PyTorch{extra}. Install now? (This can take several minutes.)").format(
                extra="" if not missing else " " + _("and") + " " + ", ".join(missing))
            if askUser and not slicer.util.confirmOkCancelDisplay(message):
                return False
            if not torchLogic.torchInstalled() and torchLogic.installTorch(
                    askConfirmation=False, torchVersionRequirement=">=2.1") is None:
                raise RuntimeError(_("PyTorch could not be installed; see the PyTorch Utils module."))
            if missing:
                slicer.util.pip_install(missing)
        self._dependenciesChecked = True
        return True

    # ------------------------------------------------------------------------------------------------- run
    def start(self, volumes: dict, groundTruth=None, *, modelPath=None, device="auto", rule="epsilon-zplus",
              target="lesion-logits", where="output", filterKind="none", alpha=1.0, alphaLow=0.0) -> ChildJob:
        """Write the inputs to a run folder and start ``lrpseg explain`` in a child PythonSlicer (non-blocking)."""
        if self.job is not None and not self.job.finished:
            raise RuntimeError(_("A computation is already running; cancel it first."))
        run = Path(tempfile.mkdtemp(prefix="run-", dir=self.workFolder()))
        lrpscene.write_case_folder(volumes, run / "case", groundTruth)
        request = ExplainRequest(run / "case", run / "out", Path(modelPath) if modelPath else None, device, rule,
                                 target, filterKind, alpha if filterKind != "none" else 1.0,
                                 alphaLow if filterKind != "none" else 0.0, where)
        python = shutil.which("PythonSlicer") or os.path.join(os.path.dirname(sys.executable), "PythonSlicer")
        python = python if os.path.exists(python) else sys.executable
        self.job = ChildJob(request.command(python), cwd=MODULE_DIR, env=child_environment(MODULE_DIR)).start()
        self._pending = (request, volumes, groundTruth)
        return self.job

    def finish(self) -> ExplanationResult:
        """Import a finished job's results on the main thread (raises with the child's message on failure)."""
        request, volumes, groundTruth = self._pending
        if not self.job.succeeded:
            raise RuntimeError(self.job.error_message())
        key = (request.filter, request.alpha_low, request.alpha)
        if self.result is not None and request.where == "layers" and self.result.volumes == volumes:
            self._layerCache[key] = self._readRelevance(request.out_dir)
            return self.result
        self.result = self.importResults(request.out_dir, request.case_dir, volumes, groundTruth)
        if request.where == "layers":
            self._layerCache[key] = self.result.relevance
        return self.result

    def explain(self, volumes: dict, groundTruth=None, timeout: float = 3600, onProgress=None, **options):
        """Blocking run for the console and the self-test; same options as :meth:`start`."""
        self.start(volumes, groundTruth, **options).wait(timeout=timeout, on_progress=onProgress)
        return self.finish()

    def _readRelevance(self, outDir: Path) -> np.ndarray:
        from LRPSegmentationLib import caseio

        return np.stack([caseio.read_volume(outDir / f"relevance_{m}.nii.gz")[0] for m in MODALITIES]).astype(
            np.float32)

    def importResults(self, outDir, caseDir, volumes: dict, groundTruth=None) -> ExplanationResult:
        """Read a run's output folder into module-owned nodes: heatmaps, prediction, scores table."""
        from LRPSegmentationLib import caseio, metrics

        outDir, scene = Path(outDir), slicer.mrmlScene
        case = caseio.load_case(caseDir)
        relevance = self._readRelevance(outDir)
        mask, geometry = caseio.read_volume(outDir / "prediction_mask.nii.gz")
        if relevance.shape[1:] != case.geometry.shape:
            raise RuntimeError(_("Relevance maps in {path} do not match the input grid.").format(path=outDir))
        dice = None if case.ground_truth is None else lrpscene.dice(mask, case.ground_truth)
        result = ExplanationResult(relevance=relevance, geometry=case.geometry,
                                   masks=metrics.reference_masks(case.images, case.ground_truth),
                                   mask=mask, dice=dice, volumes=dict(volumes), outDir=outDir)
        reference = volumes["ADC"]
        for channel, modality in enumerate(MODALITIES):
            result.heatmaps[modality] = lrpscene.heatmap_node(scene, np.zeros_like(relevance[channel]), case.geometry,
                                                              modality, reference=reference)
        result.segmentation = lrpscene.segmentation_node(scene, mask, case.geometry, reference=reference)
        if case.ground_truth is not None:
            result.groundTruthSegmentation = lrpscene.segmentation_node(
                scene, case.ground_truth, case.geometry, "ground_truth", name="Lesion (ground truth)",
                color=(0.2, 0.9, 0.3), reference=reference)
        self.result = result
        self.applyFilter("none")
        return result

    # ------------------------------------------------------------------------------------------- live view
    def _show(self, filtered, scores, window: float) -> list:
        for channel, modality in enumerate(MODALITIES):
            lrpscene.update_heatmap(self.result.heatmaps[modality], filtered.normalised[channel], half_width=window)
        rows = []
        for row in scores.to_rows():
            values = {label: row[key] for key, label in SCORE_COLUMNS}
            values["Retained"] = 1.0 - row["removed_fraction"]
            values["Dice"] = self.result.dice
            rows.append(values)
        self.result.table = lrpscene.scores_table(slicer.mrmlScene, rows, reference=self.result.volumes["ADC"])
        return rows

    def applyFilter(self, kind: str = "none", alpha: float = 1.0, alphaLow: float = 0.0) -> list:
        """Filter the cached raw relevance on the final map, update heatmaps in place and the scores table."""
        from LRPSegmentationLib.lrp.filters import AmplitudeFilter, filter_map
        from LRPSegmentationLib.metrics import score_explanation

        if self.result is None:
            raise ValueError(_("No explanation yet: run the model first."))
        filt = AmplitudeFilter() if kind == "none" else AmplitudeFilter(kind, min(alphaLow, alpha), alpha)
        filtered = filter_map(self.result.relevance, filt)
        return self._show(filtered, score_explanation(filtered, self.result.masks), max(filt.high, 1e-6))

    def clearLayerCache(self) -> None:
        self._layerCache.clear()

    def showLayerFiltered(self, kind: str, alpha: float, alphaLow: float, onMissing=None):
        """Show the in-chain filtered map for this band if cached; else ask ``onMissing`` to compute it."""
        from LRPSegmentationLib.lrp.filters import filter_map
        from LRPSegmentationLib.metrics import score_explanation

        key = (kind, alphaLow if kind != "none" else 0.0, alpha if kind != "none" else 1.0)
        relevance = self._layerCache.get(key)
        if relevance is None:
            if onMissing is not None and (self.job is None or self.job.finished):
                onMissing(kind, alpha, alphaLow)
            return None
        filtered = filter_map(relevance, None)
        return self._show(filtered, score_explanation(filtered, self.result.masks), 1.0)

    def showViews(self, singleView: bool = False, modality: str = "ADC", opacity: float = 0.6,
                  showOutlines: bool = True) -> None:
        """The linked 2x3 layout (or one view of ``modality``) with each heatmap over its modality."""
        if self.result is None:
            return
        scene = slicer.mrmlScene
        if singleView:
            lrpscene.show_single(scene, self.result.volumes[modality], self.result.heatmaps[modality], opacity)
        else:
            lrpscene.show_grid(scene, self.result.volumes, self.result.heatmaps, opacity)
        for node in (self.result.segmentation, self.result.groundTruthSegmentation):
            if node is not None and node.GetDisplayNode() is not None:
                node.GetDisplayNode().SetVisibility(showOutlines)


class LRPSegmentationTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_LoadSyntheticCase()
        self.setUp()
        self.test_ExplainAndFilter()

    def test_LoadSyntheticCase(self):
        self.delayDisplay("Loading a synthetic case")
        nodes = LRPSegmentationLogic().loadSyntheticSample(seed=7)
        self.assertEqual(list(nodes.volumes), list(MODALITIES))
        self.assertIsNotNone(nodes.ground_truth)
        self.assertEqual(lrpscene.output_nodes(slicer.mrmlScene), [])
        self.delayDisplay("Test passed")

    def test_ExplainAndFilter(self):
        try:
            import torch  # noqa: F401
        except ModuleNotFoundError:
            self.skipTest("PyTorch is not installed (install the PyTorch extension)")
        self.delayDisplay("Running the bundled model on a synthetic case")
        logic = LRPSegmentationLogic()
        nodes = logic.loadSyntheticSample(seed=7)
        result = logic.explain(nodes.volumes, nodes.ground_truth, device="cpu", timeout=1800)
        self.assertEqual(set(result.heatmaps), set(MODALITIES))
        self.assertIsNotNone(result.dice)
        before = [row["D(LRP,x)"] for row in logic.applyFilter("none")]
        after = logic.applyFilter("pass", alpha=0.1)
        heatmap = slicer.util.arrayFromVolume(result.heatmaps["ADC"])
        self.assertLessEqual(float(np.abs(heatmap).max()), 0.1 + 1e-6)
        self.assertEqual(len(after), len(MODALITIES) + 1)
        self.assertNotEqual(before, [row["D(LRP,x)"] for row in after])
        rerun = logic.explain(nodes.volumes, nodes.ground_truth, device="cpu", timeout=1800)
        self.assertIs(rerun.heatmaps["ADC"], result.heatmaps["ADC"])  # outputs reused, never duplicated
        logic.showViews(singleView=True, modality="Tmax", opacity=0.5)
        self.delayDisplay("Test passed")
