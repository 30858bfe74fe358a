"""LRPSegmentation: stroke lesion segmentation of multi-modal MRI (our 3D U-Net's six maps, or your model's list)
explained by filtered LRP. Thin Slicer layer: the Widget connects the .ui to the parameter node and the Logic
(LRPSegmentationLib.mrml.session). Only the child processes that run ``lrpseg explain``/``check`` import torch.
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

from LRPSegmentationLib import options
from LRPSegmentationLib.data.modalities import MODALITIES
from LRPSegmentationLib.mrml import dependencies, display, panel, run, session

MODULE_DIR = Path(__file__).resolve().parent


class LRPSegmentation(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("LRP Segmentation")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.contributors = ["LRPSegmentation developers (LRPSegmentation project)"]
        self.parent.helpText = _(
            "Segments stroke lesions from the model's MRI maps (the bundled U-Net: six ISLES 2017 maps) and explains "
            "the prediction per modality with LRP; drag alpha to filter the relevance, heatmaps and scores follow. "
            "See the <a href=\"https://github.com/lrpsegmentation/SlicerLRPSegmentation#readme\">README</a>.")
        self.parent.acknowledgementText = _(
            "Method after E. Tjoa et al., arXiv:1911.08136. The bundled model is trained on synthetic ISLES-like "
            "cases, not on patient data; it is not a medical device.")
        slicer.app.connect("startupCompleted()", registerLayout)
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerLayout():
    """The grid layouts (2x3 for six modalities, one per view count) are known from startup on (saved scenes)."""
    display.register_grid_layouts(slicer.mrmlScene)


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
    adcVolume: Optional[vtkMRMLScalarVolumeNode]
    mttVolume: Optional[vtkMRMLScalarVolumeNode]
    rcbfVolume: Optional[vtkMRMLScalarVolumeNode]
    rcbvVolume: Optional[vtkMRMLScalarVolumeNode]
    tmaxVolume: Optional[vtkMRMLScalarVolumeNode]
    ttpVolume: Optional[vtkMRMLScalarVolumeNode]
    groundTruth: Optional[Union[vtkMRMLLabelMapVolumeNode, vtkMRMLSegmentationNode]]
    modelPath: str = ""
    device: Annotated[str, Choice(list(options.DEVICE_CHOICES))] = "auto"
    rule: Annotated[str, Choice(list(options.PRESET_NAMES))] = options.DEFAULT_PRESET
    target: Annotated[str, Choice(options.values(options.PANEL_TARGETS))] = options.DEFAULT_TARGET.value
    filterKind: Annotated[str, Choice(options.values(options.FilterKind))] = "none"
    alpha: Annotated[float, WithinRange(0.0, 1.0)] = 0.2
    useAlphaLow: bool = False
    alphaLow: Annotated[float, WithinRange(0.0, 1.0)] = 0.0
    where: Annotated[str, Choice(options.values(options.FilterPlacement))] = "output"
    opacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.6
    singleView: bool = False
    viewModality: str = "ADC"  # one of the model's modalities (the combo box follows the model: no fixed Choice)
    showOutlines: bool = True


class LRPSegmentationWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = self._parameterNode = self._parameterNodeGuiTag = self._seen = None
        self._timer = qt.QTimer()
        self._timer.connect("timeout()", self.onPoll)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/LRPSegmentation.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = LRPSegmentationLogic()
        self.logic.controller.precompute_bands = True  # the panel's in-chain slider reads a background band grid
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndImportEvent, self.onSceneEndImport)
        self.ui.loadCaseButton.connect("clicked(bool)", self.onLoadCase)
        self.ui.bundledModelButton.connect("clicked(bool)", lambda: self.setParameter("modelPath", ""))
        path = self.ui.modelPathLineEdit  # emptying it emits validInputChanged but no currentPathChanged (CTK)
        path.connect("currentPathChanged(QString)", lambda p: self.setParameter("modelPath", p))
        path.connect("validInputChanged(bool)", lambda ok: ok or self.setParameter("modelPath", path.currentPath))
        self.ui.applyButton.connect("clicked(bool)", lambda: self.onStart(self.logic.startFromParameters))
        self.ui.checkButton.connect("clicked(bool)", lambda: self.onStart(self.logic.startCheckFromParameters))
        self.ui.showCurvesButton.connect("clicked(bool)", lambda: self.logic.showCurves(slicer.modules.plots.logic()))
        self.ui.cancelButton.connect("clicked(bool)", self.logic.cancel)
        self.ui.viewModalityComboBox.connect("textActivated(QString)", lambda t: self.setParameter("viewModality", t))
        self.ui.exportScoresButton.connect("clicked(bool)", self.onExportScores)
        for name, group, vocabulary in (("filterKind", "filter", options.FilterKind),
                                        ("where", "where", options.FilterPlacement)):
            for value in options.values(vocabulary):
                getattr(self.ui, f"{group}{value.capitalize()}RadioButton").connect(
                    "toggled(bool)", lambda on, n=name, v=value: on and self.setParameter(n, v))
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.logic.cancel()  # a running job must not outlive the module
        self._timer.stop()
        self.removeObservers()

    def exit(self) -> None:
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        self.logic.closeScene()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        self.parent.isEntered and self.initializeParameterNode()

    def onSceneEndImport(self, caller, event) -> None:
        with slicer.util.tryWithErrorDisplay(_("Restoring the saved explanation failed.")):
            self.logic.restoreFromScene() and self.initializeParameterNode()  # heatmaps, table, a working slider
        self.logic.busy and self._timer.start(100)  # the band grid is recomputed in the background

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    enter = initializeParameterNode  # entering the module shows (and binds) its parameter node

    def setParameterNode(self, parameterNode: Optional[LRPSegmentationParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterChanged)
        self._parameterNode, self._seen = parameterNode, None
        if parameterNode:
            self._parameterNodeGuiTag = parameterNode.connectGui(self.ui)
            self.addObserver(parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterChanged)
            self.onParameterChanged()

    def setParameter(self, name: str, value) -> None:
        if self._parameterNode and getattr(self._parameterNode, name) != value:
            setattr(self._parameterNode, name, value)

    def onParameterChanged(self, caller=None, event=None) -> None:
        """Show the parameters (also those set from the console or a loaded scene) and route the change."""
        p = self._parameterNode
        if p is None:
            return
        seen = panel.snapshot(p)
        change, self._seen = panel.changes(self._seen, seen), seen
        getattr(self.ui, f"filter{p.filterKind.capitalize()}RadioButton").checked = True
        getattr(self.ui, f"where{p.where.capitalize()}RadioButton").checked = True
        if self.ui.modelPathLineEdit.currentPath != p.modelPath:
            self.ui.modelPathLineEdit.currentPath = p.modelPath
        if change & panel.Change.SETTINGS:
            self.ui.modelInfoLabel.text = self.logic.modelSummary(p.modelPath)
            self.showModalities(panel.modalities(p))
        self.ui.viewModalityComboBox.setCurrentText(panel.view_modality(p, panel.modalities(p)))
        with slicer.util.tryWithErrorDisplay(_("Updating the explanation failed.")):
            self.logic.update(p, change)
        change & panel.Change.FILTER and qt.QTimer.singleShot(300, self.logic.flushWhenIdle)  # the rest once it rests
        self.logic.running and not self._timer.isActive() and self._timer.start(100)  # an in-chain band computes
        self.showResult()

    def showModalities(self, names) -> None:
        """The input rows and the single view's choices follow the model's modality list."""
        for row in panel.selector_rows(names):
            selector, label = getattr(self.ui, row.selector), getattr(self.ui, row.label)
            selector.visible = label.visible = row.text is not None
            label.text, selector.toolTip = row.text or "", row.tooltip
        self.ui.viewModalityComboBox.clear()  # the user's choice comes back by textActivated, never from here
        self.ui.viewModalityComboBox.addItems(list(names))

    def updateButtons(self) -> None:
        p = self._parameterNode
        problems = panel.input_problems(p)  # the model's modalities still without a volume of their own
        for name, enabled in panel.enabled_widgets(p, self.logic, problems).items():
            getattr(self.ui, name).enabled = enabled
        self.ui.applyButton.toolTip = _("Select a volume of its own for: {m}").format(m=", ".join(problems)) \
            if problems else _("Segment and explain.")

    def showResult(self) -> None:
        live, p = self.logic.live, self._parameterNode
        if p is None:
            return  # the panel is bound to no parameter node (e.g. a job ended after the scene closed)
        self.updateButtons()
        self.ui.trustLabel.text = self.logic.trustSummary
        self.ui.trustTableView.setMRMLTableNode(self.logic.trustTable)
        if live is not None:
            self.ui.scoresTableView.setMRMLTableNode(live.table)
            self.ui.diceLabel.text = _("Dice: {value}").format(value="-" if live.dice is None else f"{live.dice:.3f}")
            if not self.logic.running:  # stale, or "no lesion predicted: showing lesion evidence"
                self.ui.statusLabel.text = self.logic.staleReason(p) or live.note or self.ui.statusLabel.text

    def onLoadCase(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), _("ISLES case folder"))
        if folder:
            with slicer.util.tryWithErrorDisplay(_("Loading the case failed."), waitCursor=True):
                self.logic.loadCaseIntoPanel(self._parameterNode, folder)

    def onStart(self, start) -> None:
        with slicer.util.tryWithErrorDisplay(_("Starting the computation failed."), waitCursor=True):
            if self.logic.ensureDependencies(modelPath=self._parameterNode.modelPath):
                start(self._parameterNode)
                self.updateButtons()
                self._timer.start(100)

    def onPoll(self) -> None:
        ran, status = self.logic.running, self.logic.poll(self._parameterNode)  # ran: it ran before this poll
        self.ui.progressBar.value = int(100 * (status.fraction or 0.0))
        self.ui.statusLabel.text = f"{status.stage}: {status.message}" if status.running else status.message
        self.ui.timeLabel.text = f"{status.elapsed:.1f} s"
        self.ui.trustLabel.text = self.logic.trustSummary  # the check's progress, then its headline
        if ran and status.state is run.RunState.FAILED:
            slicer.util.errorDisplay(_("The computation failed: {reason}").format(reason=status.message))
        self.logic.ended and self.showResult()  # the explanation or the check ended in this poll
        self.logic.busy or self._timer.stop()  # the in-chain band grid and the check are imported by polls too

    def onExportScores(self) -> None:
        path = qt.QFileDialog.getSaveFileName(slicer.util.mainWindow(), _("Export scores"), "scores.csv", "CSV (*.csv)")
        if path:
            with slicer.util.tryWithErrorDisplay(_("Export failed.")):
                self.logic.exportScores(path)


class LRPSegmentationLogic(session.ExplanationSession, ScriptedLoadableModuleLogic):
    """Console API (LRPSegmentationLib.mrml.session); ``explain`` keeps Slicer responsive while it waits::

        logic = slicer.util.getModuleLogic("LRPSegmentation")
        nodes = logic.loadSyntheticSample()                  # or logic.loadCaseFolder("/data/training_4")
        live = logic.explain(nodes.volumes, nodes.ground_truth, device="cpu")   # a LiveExplanation
        rows = logic.applyFilter("pass", alpha=0.2)           # live filter: heatmaps + scores table rows
        logic.showViews(singleView=False, opacity=0.6)
        live.heatmaps["Tmax"], live.table, live.dice          # the module's output nodes and the case's Dice
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        session.ExplanationSession.__init__(self, slicer.mrmlScene, self.workFolder(),
                                            run.child_process_jobs(MODULE_DIR), idle=slicer.app.processEvents)

    def getParameterNode(self):
        return LRPSegmentationParameterNode(super().getParameterNode())

    def workFolder(self) -> Path:
        """User-writable folder for runs and generated samples (Slicer's cache; never the install folder)."""
        return Path(slicer.app.cachePath) / "LRPSegmentation"

    def onCaseLoaded(self, nodes):
        slicer.util.setSliceViewerLayers(background=next(iter(nodes.volumes.values())), fit=True)
        return nodes


class LRPSegmentationTest(ScriptedLoadableModuleTest):
    def setUp(self):  # "Reload and Test" calls runTest; ctest runs each test_* alone: each starts on a clear scene
        slicer.mrmlScene.Clear()

    def runTest(self):
        import unittest  # (stdlib; imported here like every non-Slicer import of this file)
        for test in (self.test_LoadSyntheticCase, self.test_ExplainAndFilter):
            self.setUp()
            try:
                test()
            except unittest.SkipTest as reason:  # no unittest runner here to report it
                self.delayDisplay(_("Skipped: {reason}").format(reason=reason))

    def test_LoadSyntheticCase(self):
        nodes = LRPSegmentationLogic().loadSyntheticSample(seed=7)
        self.assertEqual((list(nodes.volumes), nodes.ground_truth is None), (list(MODALITIES), False))

    def test_ExplainAndFilter(self):
        if dependencies.skip_reason():
            self.skipTest(dependencies.skip_reason())
        logic = LRPSegmentationLogic()
        nodes = logic.loadSyntheticSample(seed=7)
        live = logic.explain(nodes.volumes, nodes.ground_truth, device="cpu", timeout=1800)
        self.assertEqual(set(live.heatmaps), set(MODALITIES))
        before = [row["D(LRP,x)"] for row in logic.applyFilter("none")]
        after = logic.applyFilter("pass", alpha=0.1)
        self.assertLessEqual(float(abs(slicer.util.arrayFromVolume(live.heatmaps["ADC"])).max()), 0.1 + 1e-6)
        self.assertNotEqual(before, [row["D(LRP,x)"] for row in after])
