"""LRPSegmentation: stroke lesion segmentation of six-modality MRI with a 3D U-Net, explained by filtered LRP.

Thin Slicer layer: the Widget gathers GUI state, the Logic translates it into calls of LRPSegmentationLib
(scene: MRML nodes; job: the child process running ``lrpseg explain``; live: the cached map, heatmaps and scores
table the sliders update). torch is imported only by LRPSegmentationLib functions called after the dependency
check, so the module loads (and Slicer's generic tests run) without it.
"""

from pathlib import Path
from typing import Annotated, Optional, Union

import qt
import slicer
import vtk
from slicer import vtkMRMLLabelMapVolumeNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from LRPSegmentationLib.data.modalities import MODALITIES
from LRPSegmentationLib.mrml import case as case_nodes
from LRPSegmentationLib.mrml import job as lrpjob
from LRPSegmentationLib.mrml import nodes as scene_nodes

MODULE_DIR = Path(__file__).resolve().parent
SELECTOR_KEYS = {"ADC": "adc", "MTT": "mtt", "rCBF": "rcbf", "rCBV": "rcbv", "Tmax": "tmax", "TTP": "ttp"}


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

    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="LRPSegmentation", sampleName="LRPSegmentationSynthetic", uris="generated:lrpsegmentation-synthetic",
        fileNames="LRPSegmentationSynthetic", nodeNames="LRPSegmentationSynthetic_ADC",
        thumbnailFileName=str(MODULE_DIR / "Resources" / "Icons" / "LRPSegmentationSample.png"),
        customDownloader=lambda source: LRPSegmentationLogic().loadSyntheticSample())


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
    rule: Annotated[str, Choice(["epsilon", "epsilon-zb", "epsilon-zplus", "zplus", "epsilon-alpha1beta0",
                                 "epsilon-gamma-zb", "paper"])] = "epsilon"
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
        self.logic = self._parameterNode = self._parameterNodeGuiTag = None
        self._timer = qt.QTimer()
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
        for kind in ("none", "pass", "clamp"):
            getattr(self.ui, f"filter{kind.capitalize()}RadioButton").connect(
                "toggled(bool)", lambda checked, k=kind: checked and self.setParameter("filterKind", k))
        for where in ("output", "layers"):
            getattr(self.ui, f"where{where.capitalize()}RadioButton").connect(
                "toggled(bool)", lambda checked, w=where: checked and self.setParameter("where", w))
        self.initializeParameterNode()
        self.onModelPathChanged(self.ui.modelPathLineEdit.currentPath)

    def cleanup(self) -> None:
        self._timer.stop()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        self.onCancel()
        self.logic.live = None  # its nodes go with the scene
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, parameterNode: Optional[LRPSegmentationParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterChanged)
        self._parameterNode = parameterNode
        if parameterNode:
            self._parameterNodeGuiTag = parameterNode.connectGui(self.ui)
            self.addObserver(parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterChanged)
            getattr(self.ui, f"filter{parameterNode.filterKind.capitalize()}RadioButton").checked = True
            getattr(self.ui, f"where{parameterNode.where.capitalize()}RadioButton").checked = True
            self.ui.modelPathLineEdit.currentPath = parameterNode.modelPath
            self.onParameterChanged()

    def inputVolumes(self) -> dict:
        return {m: getattr(self._parameterNode, f"{SELECTOR_KEYS[m]}Volume") for m in MODALITIES}

    def band(self) -> tuple:
        p = self._parameterNode
        return p.filterKind, p.alpha, p.alphaLow if p.useAlphaLow else 0.0

    def onParameterChanged(self, caller=None, event=None) -> None:
        p = self._parameterNode
        if p is None:
            return
        ready, running = all(self.inputVolumes().values()), self.logic.running
        self.ui.applyButton.enabled = ready and not running
        self.ui.applyButton.toolTip = _("Segment and explain.") if ready else _("Select a volume for each modality.")
        self.ui.cancelButton.enabled = running
        self.ui.alphaSlider.enabled = p.filterKind != "none"
        self.ui.alphaLowSlider.enabled = p.useAlphaLow and p.filterKind != "none"
        self.ui.viewModalityComboBox.enabled = p.singleView
        if self.logic.live is None:
            return
        with slicer.util.tryWithErrorDisplay(_("Updating the explanation failed.")):
            if p.where == "output":
                self.logic.applyFilter(*self.band())
            elif self.logic.showLayerFiltered(*self.band()) is None and not running:
                self.startRun(*self.band())  # computed in the background, then cached for this band
            self.logic.showViews(p.singleView, p.viewModality, p.opacity, p.showOutlines)
            self.ui.scoresTableView.setMRMLTableNode(self.logic.live.table)
            dice = self.logic.live.dice
            self.ui.diceLabel.text = _("Dice: {value}").format(value="-" if dice is None else f"{dice:.3f}")

    def setParameter(self, name: str, value) -> None:
        if self._parameterNode:
            setattr(self._parameterNode, name, value)

    def onModelPathChanged(self, path: str) -> None:
        self.setParameter("modelPath", path)
        try:
            self.ui.modelInfoLabel.text = lrpjob.model_summary(path or None)
        except ValueError as error:
            self.ui.modelInfoLabel.text = str(error)

    def onLoadCase(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), _("ISLES case folder"))
        if folder:
            with slicer.util.tryWithErrorDisplay(_("Loading the case failed."), waitCursor=True):
                nodes = self.logic.loadCaseFolder(folder)
                for modality, node in nodes.volumes.items():
                    setattr(self._parameterNode, f"{SELECTOR_KEYS[modality]}Volume", node)
                self._parameterNode.groundTruth = nodes.ground_truth

    def onApply(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Starting the computation failed."), waitCursor=True):
            if self.logic.ensureDependencies():
                self.startRun("none", 1.0, 0.0)  # the raw map; in-chain bands follow on demand

    def startRun(self, kind: str, alpha: float, alphaLow: float) -> None:
        p = self._parameterNode
        self.logic.start(self.inputVolumes(), p.groundTruth, modelPath=p.modelPath or None, device=p.device,
                         rule=p.rule, target=p.target, where=p.where if kind != "none" else "output",
                         filterKind=kind, alpha=alpha, alphaLow=alphaLow)
        self.ui.progressBar.value = 0
        self.ui.statusLabel.text = _("Running...")
        self._timer.start(100)
        self.onParameterChanged()

    def onPoll(self) -> None:
        for event in self.logic.job.poll():
            if event.fraction is not None:
                self.ui.progressBar.value = int(100 * event.fraction)
            self.ui.statusLabel.text = f"{event.stage}: {event.message}"
        self.ui.timeLabel.text = f"{self.logic.job.elapsed:.1f} s"
        if self.logic.job.finished:
            self._timer.stop()
            with slicer.util.tryWithErrorDisplay(_("The computation failed."), waitCursor=True):
                self.logic.finish()
                self.ui.statusLabel.text = _("Done in {seconds:.1f} s.").format(seconds=self.logic.job.elapsed)
                self.ui.progressBar.value = 100
            self.onParameterChanged()

    def onCancel(self) -> None:
        if self.logic and self.logic.running:
            self.logic.job.cancel()
            self.ui.statusLabel.text = _("Cancelled.")

    def onExportScores(self) -> None:
        if self.logic.live is None:
            return
        path = qt.QFileDialog.getSaveFileName(slicer.util.mainWindow(), _("Export scores"), "lrp_scores.csv",
                                              "CSV (*.csv)")
        if path:
            with slicer.util.tryWithErrorDisplay(_("Export failed.")):
                slicer.util.saveNode(self.logic.live.table, path)


class LRPSegmentationLogic(ScriptedLoadableModuleLogic):
    """Console API, e.g.::

        logic = slicer.util.getModuleLogic("LRPSegmentation")
        nodes = logic.loadSyntheticSample()                  # or logic.loadCaseFolder("/data/training_4")
        live = logic.explain(nodes.volumes, nodes.ground_truth, device="cpu")   # blocking; a LiveExplanation
        rows = logic.applyFilter("pass", alpha=0.2)           # live filter: heatmaps + scores table rows
        logic.showViews(singleView=False, opacity=0.6)
        live.heatmaps["Tmax"], live.table, live.dice          # the module's output nodes and the case's Dice
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.job = None  # the running or last ChildJob
        self.live = None  # the LiveExplanation of the last result (LRPSegmentationLib.mrml.live)
        self._pending = None
        self._dependenciesChecked = False

    def getParameterNode(self):
        return LRPSegmentationParameterNode(super().getParameterNode())

    @property
    def running(self) -> bool:
        return self.job is not None and not self.job.finished

    def workFolder(self) -> Path:
        """User-writable folder for runs and generated samples (Slicer's cache; never the install folder)."""
        return Path(slicer.app.cachePath) / "LRPSegmentation"

    def loadCaseFolder(self, folder):
        """Load an ISLES (or flat ADC.nii.gz ...) case folder as six named volumes (+ OT labelmap): CaseNodes."""
        nodes = case_nodes.load_case_folder(slicer.mrmlScene, folder)
        slicer.util.setSliceViewerLayers(background=nodes.volumes["ADC"], fit=True)
        return nodes

    def loadSyntheticSample(self, seed: int = 2017):
        """Generate (once, in the work folder) and load a synthetic ISLES-like case: CaseNodes."""
        nodes = case_nodes.load_synthetic_case(slicer.mrmlScene, self.workFolder() / "SampleData", seed)
        slicer.util.setSliceViewerLayers(background=nodes.volumes["ADC"], fit=True)
        return nodes

    def ensureDependencies(self, askUser: bool = True) -> bool:
        """torch through the PyTorch extension, other packages with pip (version floors), asking once."""
        if self._dependenciesChecked:
            return True
        try:
            import PyTorchUtils
        except ModuleNotFoundError:
            raise RuntimeError(_("This module needs the PyTorch extension: install 'PyTorch' from the Extensions "
                                 "Manager and restart Slicer.")) from None
        torchLogic, missing = PyTorchUtils.PyTorchUtilsLogic(), lrpjob.missing_requirements()
        names = ", ".join((["PyTorch"] if not torchLogic.torchInstalled() else []) + missing)
        if names and askUser and not slicer.util.confirmOkCancelDisplay(
                _("LRPSegmentation needs {names}. Install now? (This can take minutes.)").format(names=names)):
            return False
        if not torchLogic.torchInstalled() and torchLogic.installTorch(
                askConfirmation=False, torchVersionRequirement=">=2.1") is None:
            raise RuntimeError(_("PyTorch could not be installed; see the PyTorch Utils module."))
        if missing:
            slicer.util.pip_install(missing)
        self._dependenciesChecked = True
        return True

    def start(self, volumes: dict, groundTruth=None, *, modelPath=None, device="auto", rule="epsilon",
              target="lesion-logits", where="output", filterKind="none", alpha=1.0, alphaLow=0.0):
        """Write the inputs to a new run folder and start ``lrpseg explain`` in a child process (non-blocking).

        With ``where="layers"`` the filter band acts inside the chain (the result is cached per band); a final-map
        filter is never sent to the child: :meth:`applyFilter` applies it live.
        """
        from LRPSegmentationLib.mrml.live import slider_filter

        if self.running:
            raise RuntimeError(_("A computation is already running; cancel it first."))
        band = slider_filter(filterKind if where == "layers" else "none", alpha, alphaLow)
        request = lrpjob.ExplainRequest.in_new_run_folder(
            self.workFolder(), model=Path(modelPath) if modelPath else None, device=device, rule=rule,
            target=target, filter=band.kind.value, alpha=band.high, alpha_low=band.low, where=where)
        case_nodes.write_case_folder(volumes, request.case_dir, groundTruth)
        self.job, self._pending = lrpjob.start_explain(request, MODULE_DIR), (request, dict(volumes))
        return self.job

    def finish(self):
        """Import a finished job on the main thread: a new LiveExplanation, or an in-chain band for the current one."""
        from LRPSegmentationLib.mrml.live import LiveExplanation

        if not self.job.succeeded:
            raise RuntimeError(self.job.error_message())
        self.live = LiveExplanation.import_run(slicer.mrmlScene, *self._pending, current=self.live)
        return self.live

    def explain(self, volumes: dict, groundTruth=None, timeout: float = 3600, onProgress=None, **options):
        """Blocking :meth:`start` + wait + :meth:`finish` (console, self-test); returns the LiveExplanation."""
        self.start(volumes, groundTruth, **options).wait(timeout=timeout, on_progress=onProgress)
        return self.finish()

    def applyFilter(self, kind: str = "none", alpha: float = 1.0, alphaLow: float = 0.0) -> list:
        """Filter the final map live (heatmap voxels and table updated in place); returns the table rows."""
        from LRPSegmentationLib.mrml.live import score_rows, slider_filter

        if self.live is None:
            raise ValueError(_("No explanation yet: run the model first."))
        return score_rows(self.live.apply(slider_filter(kind, alpha, alphaLow)), self.live.dice)

    def showLayerFiltered(self, kind: str, alpha: float, alphaLow: float = 0.0):
        """Show the cached in-chain result of this band: its rows, or None when it must be computed first."""
        from LRPSegmentationLib.mrml.live import score_rows, slider_filter

        scores = self.live.apply_layers(slider_filter(kind, alpha, alphaLow))
        return None if scores is None else score_rows(scores, self.live.dice)

    def showViews(self, singleView: bool = False, modality: str = "ADC", opacity: float = 0.6,
                  showOutlines: bool = True) -> None:
        """The linked 2x3 layout (or one view of ``modality``) with each heatmap over its modality."""
        if self.live is not None:
            self.live.show(singleView, modality, opacity, showOutlines)


class LRPSegmentationTest(ScriptedLoadableModuleTest):
    def runTest(self):
        for test in (self.test_LoadSyntheticCase, self.test_ExplainAndFilter):
            slicer.mrmlScene.Clear()
            test()

    def test_LoadSyntheticCase(self):
        nodes = LRPSegmentationLogic().loadSyntheticSample(seed=7)
        self.assertEqual(list(nodes.volumes), list(MODALITIES))
        self.assertIsNotNone(nodes.ground_truth)
        self.assertEqual(scene_nodes.output_nodes(slicer.mrmlScene), [])
        self.delayDisplay("Synthetic case loaded")

    def test_ExplainAndFilter(self):
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            self.skipTest("PyTorch is not installed (install the PyTorch extension)")
        logic = LRPSegmentationLogic()
        nodes = logic.loadSyntheticSample(seed=7)
        live = logic.explain(nodes.volumes, nodes.ground_truth, device="cpu", timeout=1800)
        self.assertEqual(set(live.heatmaps), set(MODALITIES))
        self.assertIsNotNone(live.dice)
        before = [row["D(LRP,x)"] for row in logic.applyFilter("none")]
        after = logic.applyFilter("pass", alpha=0.1)
        self.assertLessEqual(float(abs(slicer.util.arrayFromVolume(live.heatmaps["ADC"])).max()), 0.1 + 1e-6)
        self.assertEqual(len(after), len(MODALITIES) + 1)
        self.assertNotEqual(before, [row["D(LRP,x)"] for row in after])
        rerun = logic.explain(nodes.volumes, nodes.ground_truth, device="cpu", timeout=1800)
        self.assertIs(rerun.heatmaps["ADC"], live.heatmaps["ADC"])  # outputs reused, never duplicated
        logic.showViews(singleView=True, modality="Tmax", opacity=0.5)
        self.delayDisplay("Test passed")
