"""``lrpseg check``: how far a heatmap can be trusted, by the field's standard tests, for 3-D segmentation.

Everything runs on the model grid, on one scalar target score ``sum(W * logits)`` whose weights ``W`` come from
the explanation target (for the default target: 1 on the lesion logit of the predicted lesion voxels), so every
method explains the same number:

- model-parameter randomisation (Adebayo et al. 2018): the blocks of the network are re-drawn from the head down
  to the first layer (cascading, or one at a time with ``independent``), and each map is compared with the
  original per modality on brain voxels (Spearman of |R|, SSIM of |R|; signed Spearman in the detail rows); a
  method that explains the model must lose its similarity. ``null_spearman`` is the floor of the test: the
  similarity of two independent full re-draws, which a target confined to a lesion keeps high for any method
  whose map decays with the distance from the target;
- random logit: the same score on another class (the background for two classes);
- region perturbation (Samek et al. 2017) with ROAD-style in-distribution replacement (Rong et al. 2022): the
  most relevant (MoRF), least relevant (LeRF) or random brain voxels of each modality are replaced by the local
  mean of the voxels kept; the score is tracked and summarised by AOPC (normalised by the unperturbed score);
- per-modality ablation: each modality replaced by its in-brain mean, the relative score drop, compared (Spearman)
  with each method's per-modality relevance share;
- localisation on the native grid (relevance mapped there keeping its sum): D(R, y_OT), mass accuracy, pointing.
"""

from __future__ import annotations

import copy
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from LRPSegmentationLib.analysis.filters import AmplitudeFilter, filter_map
from LRPSegmentationLib.analysis.metrics import EmptyMaskWarning
from LRPSegmentationLib.analysis.scores import score_explanation
from LRPSegmentationLib.analysis.similarity import aopc, spearman, ssim
from LRPSegmentationLib.data.caseio import Case
from LRPSegmentationLib.data.modalities import MODALITIES
from LRPSegmentationLib.lrp import explain
from LRPSegmentationLib.lrp.targets import Target
from LRPSegmentationLib.net import attribution
from LRPSegmentationLib.net.preprocess import (
    Interpolation,
    PreprocessSpec,
    brain_mask,
    prepare_input,
    relevance_to_native,
    resize,
)
from LRPSegmentationLib.options import DEFAULT_PRESET
from LRPSegmentationLib.pipeline.explain_case import target_on_model_grid

PARTS = ("randomisation", "random_logit", "flipping", "ablation", "localisation")
"""The parts of a check, each switchable off."""

BASELINES = ("gradient", "input-x-gradient", "integrated-gradients", "smoothgrad", "occlusion", "grad-cam")
EXPENSIVE = ("integrated-gradients", "smoothgrad", "occlusion")
"""Methods left out of the randomisation and random-logit tests unless asked for (each costs many passes)."""

PAPER_FILTER = AmplitudeFilter.clamp_band(0.2)
"""The paper's clamp filter C[0, 0.2] (its Figure 1C): the filtered LRP method when no filter is given."""

Progress = Callable[[str, float, str], None]


class CheckError(ValueError):
    """A check that cannot be run as asked; says what to do."""


@dataclass(frozen=True)
class CheckOptions:
    """What a check runs. ``methods`` None: :func:`default_methods`; the LRP names are ``lrp-<preset>`` and
    ``lrp-<preset>+<filter label>`` (final-map filter)."""

    preset: str = DEFAULT_PRESET
    filter: AmplitudeFilter = PAPER_FILTER
    target: Target = field(default_factory=Target)
    methods: tuple[str, ...] | None = None
    parts: tuple[str, ...] = PARTS
    independent: bool = False
    depths: int = 3
    randomise_all: bool = False
    fractions: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3)
    ig_steps: int = 6
    smoothgrad_samples: int = 6
    cam_layer: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = sorted(set(self.parts) - set(PARTS))
        if unknown:
            raise CheckError(f"Unknown check parts {unknown}: use {', '.join(PARTS)}.")
        if self.depths < 1:
            raise CheckError("depths must be at least 1 (the whole network randomised).")
        if not self.fractions or not all(0 < f <= 1 for f in self.fractions):
            raise CheckError("fractions must be a non-empty list of shares in (0, 1].")


def default_methods(preset: str, filt: AmplitudeFilter) -> tuple[str, ...]:
    """Our LRP preset with and without the filter, z+ (known to fail randomisation) and every baseline."""
    lrp = [f"lrp-{preset}", f"lrp-{preset}+{filt.label}"]
    if preset != "zplus":
        lrp.append("lrp-zplus")
    return (*lrp, *BASELINES)


@dataclass
class MethodResult:
    """The numbers of one method (the ``methods[NAME]`` entry of check.json) and its curves for the plots."""

    randomisation: dict[str, list] = field(default_factory=lambda: {"layers": [], "spearman": [], "ssim": []})
    random_logit: dict[str, float | None] = field(default_factory=lambda: {"spearman": None})
    flipping: dict[str, float | None] = field(
        default_factory=lambda: {"morf_aopc": None, "lerf_aopc": None, "random_aopc": None})
    localisation: dict[str, float | None] = field(
        default_factory=lambda: {"gt_inclusivity": None, "mass_accuracy": None, "pointing_game": None})
    seconds: float = 0.0
    share: list[float] = field(default_factory=list)
    curves: dict[str, list[float]] = field(default_factory=dict)
    per_modality: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"randomisation": self.randomisation, "random_logit": self.random_logit, "flipping": self.flipping,
                "localisation": self.localisation, "seconds": round(self.seconds, 3)}


@dataclass
class CheckResult:
    """Everything ``lrpseg check`` reports; :meth:`to_json` is the check.json layout."""

    case: str
    target: dict[str, Any]
    methods: dict[str, MethodResult]
    modality_ablation: dict[str, float]
    share_vs_ablation_spearman: dict[str, float | None]
    fractions: tuple[float, ...]
    part_seconds: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return {"case": self.case, "target": self.target,
                "methods": {name: result.to_dict() for name, result in self.methods.items()},
                "modality_ablation": self.modality_ablation,
                "share_vs_ablation_spearman": self.share_vs_ablation_spearman}


# ------------------------------------------------------------------------------------------------- the maps

class MapMaker:
    """Maps (C, D, H, W) numpy, model grid, of named methods for one model, input and target weights."""

    def __init__(self, model: nn.Module, x: torch.Tensor, weights: torch.Tensor, options: CheckOptions,
                 fill: torch.Tensor, region: np.ndarray) -> None:
        self.model, self.x, self.weights, self.options = model, x, weights, options
        self.fill, self.region = fill, region
        self.cam_layer = options.cam_layer or attribution.default_cam_layer(model)

    def maps(self, names: tuple[str, ...], seconds: dict[str, float] | None = None) -> dict[str, np.ndarray]:
        """The maps of ``names``; the gradient pass is shared by gradient and input x gradient, the LRP pass by a
        preset with and without its filter. ``seconds`` accumulates the time per method."""
        target = attribution.ScalarTarget(self.model, self.weights)
        out: dict[str, np.ndarray] = {}
        lrp_cache: dict[str, np.ndarray] = {}
        grad: torch.Tensor | None = None
        for name in names:
            started = time.perf_counter()
            if name.startswith("lrp-"):
                preset, _, label = name[4:].partition("+")
                if preset not in lrp_cache:
                    result = explain(self.model, self.x, lambda logits: logits * self.weights, preset)
                    lrp_cache[preset] = result.relevance[0].float().cpu().numpy()
                raw = lrp_cache[preset]
                out[name] = raw if not label else np.asarray(filter_map(raw, AmplitudeFilter.parse(label)).relevance)
            elif name in ("gradient", "input-x-gradient"):
                grad = attribution.gradient(target, self.x) if grad is None else grad
                value = grad if name == "gradient" else attribution.input_x_gradient(target, self.x, grad)
                out[name] = value[0].float().cpu().numpy()
            elif name == "integrated-gradients":
                out[name] = attribution.integrated_gradients(target, self.x, self.options.ig_steps)[0].numpy()
            elif name == "smoothgrad":
                out[name] = attribution.smoothgrad(target, self.x, self.options.smoothgrad_samples,
                                                   seed=self.options.seed)[0].numpy()
            elif name == "occlusion":
                out[name] = attribution.occlusion(target, self.x, self.fill, self.region)[0].numpy()
            elif name == "grad-cam":
                if self.cam_layer is None:
                    raise CheckError("This model has no 'decoders.0' block for Grad-CAM: give a layer name.")
                out[name] = attribution.grad_cam(target, self.x, self.cam_layer)[0].numpy()
            else:
                raise CheckError(f"Unknown method {name!r}: use lrp-<preset>[+<filter>] or one of "
                                 f"{', '.join(BASELINES)}.")
            if seconds is not None:
                seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - started
        return out


def parameter_blocks(model: nn.Module, x: torch.Tensor) -> list[tuple[str, list[nn.Parameter]]]:
    """Blocks of parameters in forward order: the parameters of a module's parent (a DoubleConv, the head), or of
    the module itself when its parent is a list or the model (an up-convolution)."""
    names = {module: name for name, module in model.named_modules()}
    containers = {name for name, module in model.named_modules() if isinstance(module, nn.ModuleList)}
    order: list[str] = []

    def record(module, _inputs, _output) -> None:
        name = names[module]
        parent = name.rpartition(".")[0]
        key = name if parent in containers or parent == "" else parent
        if key not in order:
            order.append(key)

    hooks = [m.register_forward_hook(record) for m in model.modules() if any(True for _ in m.parameters(False))]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    modules = dict(model.named_modules())
    return [(key, list(modules[key].parameters())) for key in order]


def randomise(parameters: list[nn.Parameter], generator: torch.Generator) -> None:
    """Re-draw parameters in place from a normal with each tensor's own mean and standard deviation."""
    with torch.no_grad():
        for p in parameters:
            std = float(p.std()) if p.numel() > 1 else 0.0
            noise = torch.randn(p.shape, generator=generator, dtype=torch.float32)
            p.copy_((noise * (std or 0.05) + float(p.mean())).to(p.dtype))


def similarity(original: np.ndarray, other: np.ndarray, brain: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel Spearman of |R| on brain voxels and SSIM of |R| on the grid."""
    rho = [spearman(np.abs(a[brain]), np.abs(b[brain])) for a, b in zip(original, other)]
    structural = [ssim(np.abs(a), np.abs(b)) for a, b in zip(original, other)]
    return rho, structural


def box_mean_parts(values: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
    """Box sums of ``values`` (N, D, H, W) over a centred ``size`` box (zero padding), up to one constant factor:
    three 1-D passes (separable), so a wide box costs its width, not its volume."""
    out = values[:, None]
    for axis, width in enumerate(size):
        kernel, pad = [1, 1, 1], [0, 0, 0]
        kernel[axis], pad[axis] = width, width // 2
        out = F.avg_pool3d(out, tuple(kernel), 1, tuple(pad))
    return out[:, 0]


def road_replace(x: torch.Tensor, remove: torch.Tensor, brain: torch.Tensor, sizes=((3, 7, 7), (5, 15, 15))):
    """x with ``remove`` (N, C, D, H, W) bool replaced by the mean of the kept brain voxels nearby (normalised box
    sums, widening the box where nothing is kept), else by the channel's in-brain mean."""
    keep = (~remove & brain).to(x.dtype)
    stacked = torch.cat([(x * keep).flatten(0, 1), keep.flatten(0, 1)])  # box sums of both in one call
    out, todo = x, remove
    for size in sizes:
        total, weight = box_mean_parts(stacked, size).view(2, *x.shape)
        ready = todo & (weight > 1e-6)
        out = torch.where(ready, total / weight.clamp_min(1e-6), out)
        todo = todo & ~ready
        if not bool(todo.any()):
            return out
    count = brain.sum((2, 3, 4), keepdim=True).clamp_min(1)
    mean = (x * brain).sum((2, 3, 4), keepdim=True) / count
    return torch.where(todo, mean.expand_as(x), out)


def perturbation_curve(score: attribution.ScalarTarget, x: torch.Tensor, order: np.ndarray, brain: torch.Tensor,
                       fractions: tuple[float, ...], base: float) -> list[float]:
    """Scores after removing the first ``fraction`` of the flat brain elements in ``order`` (flat indices of
    (C, D, H, W)), for each fraction; the unperturbed ``base`` first."""
    batch = []
    for fraction in fractions:
        remove = torch.zeros(x[0].numel(), dtype=torch.bool)
        remove[torch.from_numpy(order[: max(1, int(round(fraction * order.size)))])] = True
        batch.append(road_replace(x, remove.view_as(x), brain))
    return [base, *score.scores(torch.cat(batch)).tolist()]


# ------------------------------------------------------------------------------------------------- protocol

def run_check(case: Case, model: nn.Module, preprocess: PreprocessSpec, options: CheckOptions = CheckOptions(),
              progress: Progress | None = None) -> CheckResult:
    """Run the parts of ``options`` on ``case`` with ``model`` (on the CPU, in eval mode; the model is not changed)."""
    say = progress or (lambda stage, fraction, message: None)
    model = model.eval()
    methods = options.methods or default_methods(options.preset, options.filter)
    x = prepare_input(case.images, preprocess)
    grid = tuple(x.shape[2:])
    brain_np = brain_mask(case.images)
    if tuple(brain_np.shape) != grid:
        brain_np = resize(brain_np.astype(np.float32), grid, Interpolation.NEAREST) > 0.5
    brain = torch.from_numpy(np.ascontiguousarray(brain_np))[None, None].expand_as(x)
    count = brain.sum((2, 3, 4)).clamp_min(1)
    fill = ((x * brain).sum((2, 3, 4)) / count)[0]
    target = target_on_model_grid(options.target, case, preprocess)
    with torch.no_grad():
        logits = model(x)
    start = target.start_relevance(logits)
    weights = torch.where(logits != 0, start / torch.where(logits != 0, logits, 1.0), 0.0)
    region = (weights != 0).any(1)[0].numpy()
    score = attribution.ScalarTarget(model, weights)
    base = float(score.scores(x)[0])
    if base == 0:
        raise CheckError("The target score is zero: choose another target (e.g. 'probability').")
    results = {name: MethodResult() for name in methods}
    seconds: dict[str, float] = {}
    parts: dict[str, float] = {}
    maker = MapMaker(model, x, weights, options, fill, region)

    clock = time.perf_counter()
    say("maps", 0.02, f"{len(methods)} methods on the original model")
    maps = maker.maps(methods, seconds)
    parts["maps"] = time.perf_counter() - clock
    sums = {name: m.reshape(m.shape[0], -1).sum(1).astype(np.float64) for name, m in maps.items()}
    for name, s in sums.items():
        total = float(s.sum())
        results[name].share = (s / total).tolist() if total != 0 else [0.0] * len(s)
    cheap = tuple(m for m in methods if options.randomise_all or m not in EXPENSIVE)
    brain_voxels = brain_np.astype(bool)

    if "randomisation" in options.parts:
        clock = time.perf_counter()
        blocks = parameter_blocks(model, x)[::-1]  # head first
        stops = sorted({int(round(v)) for v in np.linspace(0, len(blocks) - 1, min(options.depths, len(blocks)))})
        generator = torch.Generator().manual_seed(options.seed)
        cascade = copy.deepcopy(model)
        cascade_blocks = dict(parameter_blocks(cascade, x))
        for step, stop in enumerate(stops):
            say("randomisation", 0.1 + 0.3 * step / len(stops), f"randomised down to {blocks[stop][0]}")
            if options.independent:
                randomised = copy.deepcopy(model)
                randomise(dict(parameter_blocks(randomised, x))[blocks[stop][0]], generator)
            else:
                done = stops[step - 1] + 1 if step else 0
                for key, _ in blocks[done: stop + 1]:
                    randomise(cascade_blocks[key], generator)
                randomised = cascade
            other = MapMaker(randomised, x, weights, options, fill, region).maps(cheap, seconds)
            for name in cheap:
                rho, structural = similarity(maps[name], other[name], brain_voxels)
                entry = results[name].randomisation
                entry["layers"].append(blocks[stop][0])
                entry["spearman"].append(float(np.mean(rho)))
                entry["ssim"].append(float(np.mean(structural)))
                signed = [spearman(a[brain_voxels], b[brain_voxels]) for a, b in zip(maps[name], other[name])]
                results[name].per_modality.append({"part": "randomisation", "step": blocks[stop][0],
                                                   "spearman": rho, "ssim": structural, "spearman_signed": signed})
            last = other
        # the floor: two independent full re-draws compared with each other (what architecture and target alone give)
        redrawn = copy.deepcopy(model)
        for _, parameters in parameter_blocks(redrawn, x):
            randomise(parameters, generator)
        floor = MapMaker(redrawn, x, weights, options, fill, region).maps(cheap, seconds)
        for name in cheap:
            rho, _ = similarity(last[name], floor[name], brain_voxels)
            results[name].randomisation["null_spearman"] = float(np.mean(rho))
        parts["randomisation"] = time.perf_counter() - clock

    if "random_logit" in options.parts:
        clock = time.perf_counter()
        say("random_logit", 0.4, "the same score on another class")
        classes = weights.shape[1]
        lesion = target.lesion_class
        others = [k for k in range(classes) if k != lesion]
        if others:
            chosen = int(np.random.default_rng(options.seed).choice(others))
            moved = torch.zeros_like(weights)
            moved[:, chosen] = weights[:, lesion]
            other = MapMaker(model, x, moved, options, fill, region).maps(cheap, seconds)
            for name in cheap:
                rho, _ = similarity(maps[name], other[name], brain_voxels)
                results[name].random_logit["spearman"] = float(np.mean(rho))
        parts["random_logit"] = time.perf_counter() - clock

    if "flipping" in options.parts:
        clock = time.perf_counter()
        inside = np.flatnonzero(brain[0].reshape(-1).numpy())
        random_order = np.random.default_rng(options.seed).permutation(inside)
        say("flipping", 0.5, "random order")
        random_curve = perturbation_curve(score, x, random_order, brain, options.fractions, base)
        for n, name in enumerate(methods):
            say("flipping", 0.5 + 0.3 * n / len(methods), f"{name}: most and least relevant first")
            started = time.perf_counter()
            values = maps[name].reshape(-1)[inside]
            jitter = np.random.default_rng(options.seed + 1).random(values.size) * 1e-12  # random tie-break
            morf = inside[np.lexsort((jitter, -values))]
            lerf = inside[np.lexsort((jitter, values))]
            curves = {"morf": perturbation_curve(score, x, morf, brain, options.fractions, base),
                      "lerf": perturbation_curve(score, x, lerf, brain, options.fractions, base),
                      "random": random_curve}
            results[name].curves = curves
            results[name].flipping = {f"{k}_aopc": aopc(v) for k, v in curves.items()}
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - started
        parts["flipping"] = time.perf_counter() - clock

    ablation: dict[str, float] = {}
    agreement: dict[str, float | None] = {}
    names = MODALITIES if x.shape[1] == len(MODALITIES) else tuple(f"channel{c}" for c in range(x.shape[1]))
    if "ablation" in options.parts:
        clock = time.perf_counter()
        say("ablation", 0.8, "each modality replaced by its in-brain mean")
        batch = x.repeat(x.shape[1], 1, 1, 1, 1)
        for c in range(x.shape[1]):
            batch[c, c] = torch.where(brain[0, c], fill[c], x[0, c])
        drops = (base - score.scores(batch)) / abs(base)
        ablation = {m: float(d) for m, d in zip(names, drops)}
        for name in methods:
            agreement[name] = spearman(np.asarray(results[name].share), drops)
        parts["ablation"] = time.perf_counter() - clock

    if "localisation" in options.parts and case.ground_truth is not None:
        clock = time.perf_counter()
        say("localisation", 0.9, "D(R, y_OT), mass accuracy, pointing game on the native grid")
        for name in methods:
            native = relevance_to_native(maps[name], case.geometry.shape)
            with warnings.catch_warnings():  # an all-zero map (Grad-CAM of a dead layer) scores 0: that is the finding
                warnings.simplefilter("ignore", EmptyMaskWarning)
                total = score_explanation(native, case.images, case.ground_truth).total
            results[name].localisation = {"gt_inclusivity": total.gt_inclusivity,
                                          "mass_accuracy": total.mass_accuracy,
                                          "pointing_game": total.pointing_game}
        parts["localisation"] = time.perf_counter() - clock

    for name in methods:
        results[name].seconds = seconds.get(name, 0.0)
    say("done", 1.0, f"{case.case_id}: {len(methods)} methods checked")
    return CheckResult(case.case_id, target.describe(), results, ablation, agreement, tuple(options.fractions), parts)
