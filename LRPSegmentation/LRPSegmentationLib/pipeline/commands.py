"""The ``lrpseg`` subcommands: thin wrappers that call the library and report progress (parsing is in cli.py)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

from LRPSegmentationLib import __version__
from LRPSegmentationLib.pipeline.outputs import write_csv


class Progress:
    """Progress lines for people (``bar``), for programs such as the Slicer module (``json``), or none."""

    def __init__(self, style: str = "bar") -> None:
        self.style = style
        self.start = time.perf_counter()

    def __call__(self, stage: str, fraction: float, message: str = "") -> None:
        if self.style == "json":
            print(json.dumps({"stage": stage, "fraction": round(fraction, 4), "message": message}), flush=True)
        elif self.style == "bar":
            filled = int(round(20 * fraction))
            elapsed = time.perf_counter() - self.start
            print(f"[{'#' * filled}{'.' * (20 - filled)}] {fraction:4.0%} {stage}: {message} ({elapsed:.1f} s)",
                  file=sys.stderr, flush=True)

    def note(self, message: str) -> None:
        """A message that is no progress step (e.g. the CPU fallback); shown even with ``none``."""
        if self.style == "json":
            print(json.dumps({"stage": "note", "fraction": None, "message": message}), flush=True)
        else:
            print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------- commands

def cmd_synth(args: argparse.Namespace) -> int:
    from LRPSegmentationLib.data.synthetic import default_family, generate_dataset
    from LRPSegmentationLib.net.preprocess import parse_size

    shape = parse_size(args.shape, allow_native_axes=False) if args.shape else None
    family = args.family or default_family()
    chosen = {"jitter": args.tissue_jitter, "white_gain": args.white_contrast}
    chosen = {name: value for name, value in chosen.items() if value is not None}
    contrast = None
    if chosen:
        from LRPSegmentationLib.data.perfusion import TissueContrast

        contrast = TissueContrast(**chosen)
    folders = generate_dataset(Path(args.out), args.count, args.seed, start=args.start, shape=shape, family=family,
                               contrast=contrast)
    print(f"wrote {len(folders)} synthetic {family} case(s) to {args.out}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from LRPSegmentationLib.net.preprocess import PreprocessSpec, parse_size
    from LRPSegmentationLib.net.train import PRESETS, LossKind, train, with_overrides
    from LRPSegmentationLib.options import IntensityNormalization

    config = PRESETS[args.preset]
    preprocess = config.preprocess
    if args.size or args.normalization:
        preprocess = PreprocessSpec(size=parse_size(args.size) if args.size else preprocess.size,
                                    normalization=IntensityNormalization(args.normalization
                                                                         or preprocess.normalization))
    config = with_overrides(
        config, epochs=args.epochs, learning_rate=args.lr, cosine_schedule=args.cosine_schedule,
        batch_size=args.batch_size,
        loss=LossKind(args.loss) if args.loss else None, augment=args.augment, randomise=args.randomise,
        partial_volume_labels=args.partial_volume_labels,
        validation_fraction=args.validation_fraction, amp=args.amp, seed=args.seed, base_width=args.base_width,
        preprocess=preprocess)

    def report(epoch) -> None:
        held = "-" if epoch.dice_validation is None else f"{epoch.dice_validation:.3f}"
        print(f"epoch {epoch.epoch}/{config.epochs}: loss {epoch.loss:.4f}, Dice train {epoch.dice_train:.3f}, "
              f"held-out {held}", file=sys.stderr, flush=True)

    result = train(args.data_dir, args.out, config, device=args.device, resume=args.resume,
                   preset_name=args.preset, progress=report, init=args.init, keep_epochs=args.keep_epochs)
    from LRPSegmentationLib.net.weights import read_metadata

    metrics = read_metadata(result.model_path).metrics
    print(json.dumps({"model": str(result.model_path), **metrics}, indent=2))
    return 0


def cmd_average(args: argparse.Namespace) -> int:
    from LRPSegmentationLib.net.train import average_checkpoints

    print(f"wrote {average_checkpoints(args.models, args.out)} (the mean of {len(args.models)} models)")
    return 0


def cmd_postprocess(args: argparse.Namespace) -> int:
    from LRPSegmentationLib.net.weights import set_contralateral_check

    written = set_contralateral_check(args.model, args.out, None if args.no_contralateral_check
                                      else args.contralateral_check)
    state = "off" if args.no_contralateral_check else f"minimum contrast {args.contralateral_check}"
    print(f"wrote {written} (contralateral check {state})")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from LRPSegmentationLib.data.caseio import load_case
    from LRPSegmentationLib.net.predict import predict_case
    from LRPSegmentationLib.net.weights import load_model
    from LRPSegmentationLib.pipeline.outputs import ResultWriter

    progress = Progress(args.progress)
    progress("load", 0.1, f"reading {args.case}")
    loaded = load_model(args.model)
    case = load_case(args.case, modalities=loaded.modalities)
    progress("predict", 0.3, f"model {loaded.path.name}")
    prediction = predict_case(case, loaded, args.device, notify=progress.note)
    check_note = prediction.check_note(case.geometry.spacing)
    if check_note:
        progress.note(check_note)
    progress("write", 0.9, f"writing to {args.out}")
    with ResultWriter(args.out, overwrite=args.overwrite) as out:
        out.prediction(prediction.probability, prediction.mask, case.geometry)
        out.json("prediction.json", {"case": case.case_id, "dice": prediction.dice, "device": prediction.device,
                                     "lesion_voxels": int(prediction.mask.sum()), "note": check_note,
                                     "model": str(loaded.path),
                                     "model_sha256": loaded.sha256, "package_version": __version__})
    dice = "no ground truth" if prediction.dice is None else f"Dice {prediction.dice:.3f}"
    progress("done", 1.0, f"{case.case_id}: {int(prediction.mask.sum())} lesion voxels, {dice}")
    return 0


def explain_settings(args: argparse.Namespace, case):
    """Translate the explain/sweep options into :class:`~.explain.ExplainSettings`."""
    from LRPSegmentationLib.analysis.filters import AmplitudeFilter
    from LRPSegmentationLib.data.caseio import read_volume
    from LRPSegmentationLib.lrp.targets import Target
    from LRPSegmentationLib.options import FilterPlacement, RelevanceNormalization
    from LRPSegmentationLib.pipeline.explain_case import ExplainSettings

    mask = read_volume(args.mask)[0] if getattr(args, "mask", None) else None
    voxel = tuple(int(v) for v in args.voxel.split(",")) if getattr(args, "voxel", None) else None
    target = Target(kind=args.target, mask=mask, voxel=voxel, component=getattr(args, "component", None),
                    ground_truth=case.ground_truth if args.target in ("false-positive", "false-negative") else None)
    kind = getattr(args, "filter", "none")  # sweep has no --filter: it sweeps a grid of them
    filt = AmplitudeFilter(kind, args.alpha_low, args.alpha) if kind != "none" else AmplitudeFilter()
    taps = tuple(args.taps.split(",")) if getattr(args, "taps", None) else None
    return ExplainSettings(preset=args.rule, target=target, filter=filt, where=FilterPlacement(args.where),
                           taps=taps, normalization=RelevanceNormalization(args.normalization))


def cmd_explain(args: argparse.Namespace) -> int:
    from LRPSegmentationLib.analysis.preview import save_preview
    from LRPSegmentationLib.data.caseio import load_case
    from LRPSegmentationLib.net.weights import load_model
    from LRPSegmentationLib.pipeline.explain_case import explain_case
    from LRPSegmentationLib.pipeline.outputs import PROVENANCE_FILE, SCORES_FILE, ResultWriter, relevance_file

    progress = Progress(args.progress)
    progress("load", 0.05, f"reading {args.case}")
    loaded = load_model(args.model)
    case = load_case(args.case, modalities=loaded.modalities)
    settings = explain_settings(args, case)
    progress("explain", 0.2, f"{settings.preset} rules, target {settings.target.kind.value}, "
                             f"filter {settings.filter.label} on {settings.where.value}")
    result = explain_case(case, loaded, settings, args.device, notify=progress.note)
    progress("score", 0.7, "inclusivity and heatmap scores")
    filtered = result.filtered()
    scores = result.scores(lrp_threshold=args.lrp_threshold, input_threshold=args.input_threshold,
                           smoothing=args.smoothing)
    progress("write", 0.8, f"writing to {args.out}")
    with ResultWriter(args.out, overwrite=args.overwrite) as out:
        out.prediction(result.prediction.probability, result.prediction.mask, case.geometry)
        for channel, modality in enumerate(case.modalities):
            out.volume(relevance_file(modality), result.relevance[channel], case.geometry)
            out.volume(relevance_file(modality, filtered=True), filtered.normalised[channel], case.geometry)
        out.json(SCORES_FILE, {"case": case.case_id, "dice": result.prediction.dice, "note": result.note,
                               **scores.to_dict()})
        write_csv(out.path("scores.csv"), [{"case": case.case_id, **row} for row in scores.to_rows()])
        out.json(PROVENANCE_FILE, {**result.provenance, "in_chain_removed_fraction": result.tap_removed,
                                     "final_map": filtered.describe()})
        save_preview(out.path("preview.png"), case.images, filtered.normalised, prediction=result.prediction.mask,
                     ground_truth=case.ground_truth, geometry=case.geometry, modalities=case.modalities,
                     title=f"{case.case_id}: {settings.preset}, {settings.filter.label} ({settings.where.value})")
    total = scores.total
    dice = "no ground truth" if result.prediction.dice is None else f"Dice {result.prediction.dice:.3f}"
    gt = "-" if total.gt_inclusivity is None else f"{total.gt_inclusivity:.3f}"
    progress("done", 1.0, f"{case.case_id}: {dice}; mean D(LRP,x) {total.input_inclusivity:.3f}, "
                          f"D(LRP,y_OT) {gt}, conservation {result.conservation:.3f}"
                          + (f" ({result.note})" if result.note else ""))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Sanity checks, faithfulness and baselines for one case (see :mod:`LRPSegmentationLib.pipeline.check`)."""
    from LRPSegmentationLib.analysis.filters import AmplitudeFilter
    from LRPSegmentationLib.data.caseio import load_case
    from LRPSegmentationLib.net.preprocess import PreprocessSpec
    from LRPSegmentationLib.net.weights import load_model
    from LRPSegmentationLib.pipeline.check import PAPER_FILTER, PARTS, CheckOptions, run_check
    from LRPSegmentationLib.pipeline.check_report import check_rows, plot_check
    from LRPSegmentationLib.pipeline.outputs import ResultWriter

    progress = Progress(args.progress)
    if args.device not in ("auto", "cpu"):
        progress.note(f"lrpseg check runs on the CPU (--device {args.device} is not used)")
    progress("load", 0.0, f"reading {args.case}")
    loaded = load_model(args.model)
    if loaded.kind != "lrpseg":
        raise ValueError(f"lrpseg check takes our U-Net model files only, not this {loaded.kind} model (its "
                         "preprocessing is not in the check yet); explain it with lrpseg explain.")
    case = load_case(args.case)
    settings = explain_settings(args, case)
    filt = settings.filter if args.filter != "none" else PAPER_FILTER
    parts = tuple(part for part in PARTS if getattr(args, part))
    import re

    methods = tuple(m.strip() for m in re.split(r",(?![^\[]*\])", args.methods) if m.strip()) if args.methods else None
    if loaded.model.training:
        loaded.model.eval()
    options = CheckOptions(preset=settings.preset, filter=AmplitudeFilter.parse(filt), target=settings.target,
                           methods=methods, parts=parts, independent=args.independent, depths=args.depths,
                           randomise_all=args.randomise_all, seed=args.seed)
    result = run_check(case, loaded.model.cpu(), PreprocessSpec.from_dict(loaded.info.preprocess), options,
                       progress=progress)
    with ResultWriter(args.out, overwrite=args.overwrite) as out:
        out.json("check.json", result.to_json())
        write_csv(out.path("check.csv"), check_rows(result))
        if args.plots:
            plot_check(result, out.path("plots"))
    for name, entry in result.methods.items():
        flip, rand = entry.flipping, entry.randomisation["spearman"]
        morf = "-" if flip["morf_aopc"] is None else f"{flip['morf_aopc']:.3f} (random {flip['random_aopc']:.3f})"
        print(f"{name}: randomised similarity {rand[-1]:.2f}" if rand else f"{name}: not randomised", "| MoRF AOPC",
              morf, "| share vs ablation rho", result.share_vs_ablation_spearman.get(name), file=sys.stderr)
    return 0


def cmd_bands(args: argparse.Namespace) -> int:
    from LRPSegmentationLib.analysis.filters import AmplitudeFilter
    from LRPSegmentationLib.data.caseio import load_case
    from LRPSegmentationLib.lrp.bands import band_grid
    from LRPSegmentationLib.net.weights import load_model
    from LRPSegmentationLib.pipeline.band_files import (
        BANDS_FILE,
        BANDS_JSON,
        band_scores,
        explain_case_bands,
        write_bands,
    )
    from LRPSegmentationLib.pipeline.outputs import ResultWriter

    progress = Progress(args.progress)
    loaded = load_model(args.model)
    case = load_case(args.case, modalities=loaded.modalities)
    settings = explain_settings(args, case)
    bands = (band_grid(args.step) if args.bands is None else
             tuple(dict.fromkeys(AmplitudeFilter.parse(s) for s in args.bands.split(";") if s.strip())))
    if args.chunk < 1:
        raise ValueError(f"--chunk must be at least 1, got {args.chunk}.")
    progress("explain", 0.05, f"{len(bands)} in-chain bands, {settings.preset} rules, {args.chunk} per forward pass")
    relevance, seconds = explain_case_bands(
        case, loaded, settings, bands, args.device, args.chunk, notify=progress.note,
        progress=lambda done, total: progress("explain", 0.05 + 0.85 * done / total, f"{done}/{total} bands"))
    with ResultWriter(args.out, overwrite=args.overwrite) as out:
        write_bands(out.path(BANDS_FILE), bands, relevance)
        out.json(BANDS_JSON, {"case": case.case_id, "model": str(loaded.path), "settings": settings.describe(),
                                "bands": [b.label for b in bands], "seconds": round(seconds, 3),
                                "scores": band_scores(relevance, case)})
    progress("done", 1.0, f"{case.case_id}: {len(bands)} bands in {seconds:.1f} s")
    return 0


def collect_cases(paths: Sequence[str], modalities: Sequence[str] | None = None) -> list[Path]:
    """Case folders from arguments that are case folders or folders of case folders (an ISLES 2022 dataset root:
    its ``sub-*`` folders; ``derivatives`` is no case)."""
    from LRPSegmentationLib.data.caseio import CaseError, find_case_files
    from LRPSegmentationLib.net.train import find_case_folders

    folders: list[Path] = []
    for text in paths:
        path = Path(text)
        try:
            find_case_files(path, *([tuple(modalities)] if modalities else []))
            folders.append(path)
        except CaseError:
            folders.extend(p for p in find_case_folders(path) if p.name != "derivatives")
    return folders


def cmd_sweep(args: argparse.Namespace) -> int:
    from LRPSegmentationLib.analysis.filters import AmplitudeFilter
    from LRPSegmentationLib.data.caseio import load_case
    from LRPSegmentationLib.net.weights import load_model
    from LRPSegmentationLib.pipeline.outputs import ResultWriter
    from LRPSegmentationLib.pipeline.sweep import (
        SWEET_SPOT_CRITERION,
        default_filters,
        plot_sweep,
        sweep_rows,
        sweet_spot,
    )

    progress = Progress(args.progress)
    models = [load_model(path) for path in (args.model or [None])]
    modalities = models[0].modalities
    if any(m.modalities != modalities for m in models):
        raise ValueError("The models of one sweep must take the same modalities: "
                         + "; ".join(f"{m.path}: {', '.join(m.modalities)}" for m in models))
    folders = collect_cases(args.cases, modalities)
    cases = [load_case(folder, modalities=modalities) for folder in folders]
    filters = (default_filters() if args.filters == "paper"
               else tuple(AmplitudeFilter.parse(spec) for spec in args.filters.split(";")))
    settings = explain_settings(args, cases[0])
    with ResultWriter(args.out, overwrite=args.overwrite) as out:
        rows = sweep_rows(cases, models, filters, settings, args.device,
                          progress=lambda f, m: progress("sweep", f, m), example_dir=out.path("plots") / "examples",
                          lrp_threshold=args.lrp_threshold, input_threshold=args.input_threshold,
                          smoothing=args.smoothing)
        chosen = sweet_spot(rows)
        write_csv(out.path("sweep.csv"), rows)
        plot_sweep(rows, out.path("plots"))
        out.json("sweet_spot.json", {"criterion": SWEET_SPOT_CRITERION, "where": settings.where.value,
                                     "cases": [c.case_id for c in cases], "models": [str(m.path) for m in models],
                                     "sweet_spot": chosen})
    for kind, spot in chosen.items():
        print(f"sweet spot ({kind}): {spot['filter']}: mean D(LRP,x) {spot['mean_input_inclusivity']:.3f} "
              f"(unfiltered {spot['unfiltered_input_inclusivity']:.3f})")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Dice, lesion-wise detection and healthy-case false positives of a model, per generator family and lesion
    size class, on case folders and/or freshly generated synthetic cases (held out by construction)."""
    import numpy as np

    from LRPSegmentationLib.analysis.evaluation import markdown_table, score_case, summarise
    from LRPSegmentationLib.data.caseio import load_case
    from LRPSegmentationLib.data.synthetic import EXPLANATION_FILE, dataset_seeds, evaluation_families, generate_case
    from LRPSegmentationLib.net.predict import predict_case
    from LRPSegmentationLib.net.weights import load_model

    loaded = load_model(args.model)
    folders = collect_cases(args.cases, loaded.modalities) if args.cases else []
    families = evaluation_families(args.family) if args.synthetic else []
    if not folders and not families:
        raise ValueError("Nothing to evaluate: give case folders and/or --synthetic N.")

    def cases():  # one at a time: (case, family)
        for folder in folders:
            info_path = Path(folder) / EXPLANATION_FILE
            family = json.loads(info_path.read_text()).get("family", "procedural") if info_path.is_file() else "folders"
            yield load_case(folder, modalities=loaded.modalities), family
        for family in families:
            for seed in dataset_seeds(args.seed, args.synthetic):
                yield generate_case(seed, family=family).to_case(f"{family}-{seed}"), family

    records, scores = [], {}
    for case, family in cases():
        prediction = predict_case(case, loaded, args.device)
        scores[case.case_id] = prediction.dice
        if case.ground_truth is not None:
            record = score_case(case.case_id, family, prediction.mask, case.ground_truth, case.images,
                                float(np.prod(case.geometry.spacing)) / 1000.0)
            records.append(record)
            what = "healthy" if record.healthy else f"Dice {record.dice:.4f}, lesion {record.lesion_ml:.1f} ml"
            print(f"{case.case_id}: {what}, predicted {record.predicted_ml:.2f} ml", file=sys.stderr, flush=True)
        else:
            print(f"{case.case_id}: no ground truth", file=sys.stderr, flush=True)
    summary = summarise(records)
    lesion_dice = [r.dice for r in records if r.dice is not None]
    print(markdown_table(summary), file=sys.stderr)
    print(json.dumps({"model": str(loaded.path), "model_sha256": loaded.sha256, "cases": len(records),
                      "mean_dice": float(np.mean(lesion_dice)) if lesion_dice else None,
                      "min_dice": float(np.min(lesion_dice)) if lesion_dice else None, "dice": scores,
                      "by_family": summary["families"], "all": summary["all"], "records": summary["cases"]},
                     indent=2))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from LRPSegmentationLib.net.weights import bundled_model_path, load_model, read_metadata

    path = Path(args.model) if args.model else bundled_model_path()
    if path.is_dir() or path.suffix.lower() == ".json":  # nnU-Net folder or MONAI description: load to describe
        loaded = load_model(path)
        values = {**loaded.describe(), "network": type(loaded.model).__name__,
                  "parameters": sum(p.numel() for p in loaded.model.parameters())}
        print(json.dumps(values, sort_keys=True) if args.json else json.dumps(values, indent=2, sort_keys=True))
        return 0
    info = read_metadata(path)
    print(info.to_json() if args.json else json.dumps(json.loads(info.to_json()), indent=2))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The README's main job: a fresh synthetic case, predicted and explained by the bundled model, with the
    paper's clamp filter C[0, 0.2] on the final map (its Figure 1C)."""
    from LRPSegmentationLib.data.synthetic import generate_case, write_isles_case

    out = Path(args.out)
    case_dir = write_isles_case(generate_case(args.seed, family=args.family), out / "case", 1,
                                replace_synthetic=args.overwrite)
    print(f"synthetic case written to {case_dir}", file=sys.stderr)
    explain_args = ["explain", str(case_dir), "--out", str(out / "explanation"), "--device", args.device,
                    "--progress", args.progress, "--filter", "clamp", "--alpha", "0.2"]
    explain_args += ["--model", args.model] if args.model else []
    explain_args += ["--overwrite"] if args.overwrite else []
    from LRPSegmentationLib.pipeline.cli import build_parser  # the demo is the explain command on its own case

    return cmd_explain(build_parser().parse_args(explain_args))


# --------------------------------------------------------------------------------------------- parser
