"""The ``lrpseg`` command line: thin wrappers that parse, call the library and report progress."""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, Sequence

from LRPSegmentationLib import __version__, options
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
    from LRPSegmentationLib.data.synthetic import generate_dataset
    from LRPSegmentationLib.net.preprocess import parse_size

    shape = parse_size(args.shape) if args.shape else None
    folders = generate_dataset(Path(args.out), args.count, args.seed, start=args.start, shape=shape)
    print(f"wrote {len(folders)} synthetic case(s) to {args.out}")
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
        loss=LossKind(args.loss) if args.loss else None, augment=args.augment,
        validation_fraction=args.validation_fraction, amp=args.amp, seed=args.seed, base_width=args.base_width,
        preprocess=preprocess)

    def report(epoch) -> None:
        held = "-" if epoch.dice_validation is None else f"{epoch.dice_validation:.3f}"
        print(f"epoch {epoch.epoch}/{config.epochs}: loss {epoch.loss:.4f}, Dice train {epoch.dice_train:.3f}, "
              f"held-out {held}", file=sys.stderr, flush=True)

    result = train(args.data_dir, args.out, config, device=args.device, resume=args.resume,
                   preset_name=args.preset, progress=report)
    from LRPSegmentationLib.net.weights import read_metadata

    metrics = read_metadata(result.model_path).metrics
    print(json.dumps({"model": str(result.model_path), **metrics}, indent=2))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from LRPSegmentationLib.data.caseio import load_case
    from LRPSegmentationLib.net.predict import predict_case
    from LRPSegmentationLib.net.weights import load_model
    from LRPSegmentationLib.pipeline.outputs import ResultWriter

    progress = Progress(args.progress)
    progress("load", 0.1, f"reading {args.case}")
    case = load_case(args.case)
    loaded = load_model(args.model)
    progress("predict", 0.3, f"model {loaded.path.name}")
    prediction = predict_case(case, loaded, args.device, notify=progress.note)
    progress("write", 0.9, f"writing to {args.out}")
    with ResultWriter(args.out, overwrite=args.overwrite) as out:
        out.prediction(prediction.probability, prediction.mask, case.geometry)
        out.json("prediction.json", {"case": case.case_id, "dice": prediction.dice, "device": prediction.device,
                                     "lesion_voxels": int(prediction.mask.sum()), "model": str(loaded.path),
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
    from LRPSegmentationLib.data.modalities import MODALITIES
    from LRPSegmentationLib.net.weights import load_model
    from LRPSegmentationLib.pipeline.explain_case import explain_case
    from LRPSegmentationLib.pipeline.outputs import ResultWriter, relevance_file

    progress = Progress(args.progress)
    progress("load", 0.05, f"reading {args.case}")
    case = load_case(args.case)
    settings = explain_settings(args, case)
    loaded = load_model(args.model)
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
        for channel, modality in enumerate(MODALITIES):
            out.volume(relevance_file(modality), result.relevance[channel], case.geometry)
            out.volume(relevance_file(modality, filtered=True), filtered.normalised[channel], case.geometry)
        out.json("scores.json", {"case": case.case_id, "dice": result.prediction.dice, **scores.to_dict()})
        write_csv(out.path("scores.csv"), [{"case": case.case_id, **row} for row in scores.to_rows()])
        out.json("provenance.json", {**result.provenance, "in_chain_removed_fraction": result.tap_removed,
                                     "final_map": filtered.describe()})
        save_preview(out.path("preview.png"), case.images, filtered.normalised, prediction=result.prediction.mask,
                     ground_truth=case.ground_truth, spacing=case.geometry.spacing,
                     title=f"{case.case_id}: {settings.preset}, {settings.filter.label} ({settings.where.value})")
    total = scores.total
    dice = "no ground truth" if result.prediction.dice is None else f"Dice {result.prediction.dice:.3f}"
    gt = "-" if total.gt_inclusivity is None else f"{total.gt_inclusivity:.3f}"
    progress("done", 1.0, f"{case.case_id}: {dice}; mean D(LRP,x) {total.input_inclusivity:.3f}, "
                          f"D(LRP,y_OT) {gt}, conservation {result.conservation:.3f}")
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
    case = load_case(args.case)
    settings = explain_settings(args, case)
    bands = (band_grid(args.step) if args.bands is None else
             tuple(dict.fromkeys(AmplitudeFilter.parse(s) for s in args.bands.split(";") if s.strip())))
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}.")
    loaded = load_model(args.model)
    progress("explain", 0.05, f"{len(bands)} in-chain bands, {settings.preset} rules, batches of {args.batch_size}")
    relevance, seconds = explain_case_bands(
        case, loaded, settings, bands, args.device, args.batch_size, notify=progress.note,
        progress=lambda done, total: progress("explain", 0.05 + 0.85 * done / total, f"{done}/{total} bands"))
    with ResultWriter(args.out, overwrite=args.overwrite) as out:
        write_bands(out.path(BANDS_FILE), bands, relevance)
        out.json(BANDS_JSON, {"case": case.case_id, "model": str(loaded.path), "settings": settings.describe(),
                                "bands": [b.label for b in bands], "seconds": round(seconds, 3),
                                "scores": band_scores(relevance, case)})
    progress("done", 1.0, f"{case.case_id}: {len(bands)} bands in {seconds:.1f} s")
    return 0


def collect_cases(paths: Sequence[str]) -> list[Path]:
    """Case folders from arguments that are case folders or folders of case folders."""
    from LRPSegmentationLib.data.caseio import CaseError, find_case_files
    from LRPSegmentationLib.net.train import find_case_folders

    folders: list[Path] = []
    for text in paths:
        path = Path(text)
        try:
            find_case_files(path)
            folders.append(path)
        except CaseError:
            folders.extend(find_case_folders(path))
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
    folders = collect_cases(args.cases)
    cases = [load_case(folder) for folder in folders]
    models = [load_model(path) for path in (args.model or [None])]
    filters = (default_filters() if args.filters == "paper"
               else tuple(AmplitudeFilter.parse(spec) for spec in args.filters.split(";")))
    settings = explain_settings(args, cases[0])
    rows = sweep_rows(cases, models, filters, settings, args.device, progress=lambda f, m: progress("sweep", f, m),
                      lrp_threshold=args.lrp_threshold, input_threshold=args.input_threshold, smoothing=args.smoothing)
    chosen = sweet_spot(rows)
    with ResultWriter(args.out, overwrite=args.overwrite) as out:
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
    """Dice of a model on case folders and/or freshly generated synthetic cases (held out by construction)."""
    import numpy as np

    from LRPSegmentationLib.data.caseio import load_case
    from LRPSegmentationLib.data.synthetic import dataset_seeds, generate_case
    from LRPSegmentationLib.net.predict import predict_case
    from LRPSegmentationLib.net.weights import load_model

    loaded = load_model(args.model)
    cases = [load_case(folder) for folder in collect_cases(args.cases)] if args.cases else []
    for seed in dataset_seeds(args.seed, args.synthetic) if args.synthetic else []:
        cases.append(generate_case(seed).to_case())
    if not cases:
        raise ValueError("Nothing to evaluate: give case folders and/or --synthetic N.")
    scores = {}
    for case in cases:
        scores[case.case_id] = predict_case(case, loaded, args.device).dice
        print(f"{case.case_id}: Dice {scores[case.case_id]:.4f}" if scores[case.case_id] is not None
              else f"{case.case_id}: no ground truth", file=sys.stderr, flush=True)
    values = [v for v in scores.values() if v is not None]
    print(json.dumps({"model": str(loaded.path), "model_sha256": loaded.sha256, "cases": len(values),
                      "mean_dice": float(np.mean(values)) if values else None,
                      "min_dice": float(np.min(values)) if values else None, "dice": scores}, indent=2))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from LRPSegmentationLib.net.weights import bundled_model_path, read_metadata

    info = read_metadata(args.model or bundled_model_path())
    print(info.to_json() if args.json else json.dumps(json.loads(info.to_json()), indent=2))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The README's main job: a fresh synthetic case, predicted and explained by the bundled model, with the
    paper's clamp filter C[0, 0.2] on the final map (its Figure 1C)."""
    from LRPSegmentationLib.data.synthetic import generate_case, write_isles_case

    out = Path(args.out)
    case_dir = write_isles_case(generate_case(args.seed), out / "case", 1, replace_synthetic=args.overwrite)
    print(f"synthetic case written to {case_dir}", file=sys.stderr)
    explain_args = ["explain", str(case_dir), "--out", str(out / "explanation"), "--device", args.device,
                    "--progress", args.progress, "--filter", "clamp", "--alpha", "0.2"]
    explain_args += ["--model", args.model] if args.model else []
    explain_args += ["--overwrite"] if args.overwrite else []
    return cmd_explain(build_parser().parse_args(explain_args))


# --------------------------------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lrpseg", description=__doc__)
    parser.add_argument("--version", action="version", version=f"lrpseg {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    def add(name: str, handler: Callable, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    def common(sub: argparse.ArgumentParser, out_help: str) -> None:
        sub.add_argument("--model", help="model file (.safetensors); default: the bundled model")
        sub.add_argument("--device", default="auto", help="auto (GPU when there is one), cpu or cuda")
        sub.add_argument("--out", required=True, help=out_help)
        sub.add_argument("--progress", choices=("bar", "json", "none"), default="bar")
        sub.add_argument("--overwrite", action="store_true", help="replace result files already in --out")

    synth = add("synth", cmd_synth, "write seeded synthetic ISLES-like cases in the ISLES 2017 folder layout")
    synth.add_argument("out", help="folder to create training_N/ case folders in")
    synth.add_argument("--count", type=int, default=1)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--start", type=int, default=1, help="number of the first case folder")
    synth.add_argument("--shape", help="DxHxW of every case (default: varied ISLES-like grids)")

    train = add("train", cmd_train, "train the U-Net on ISLES 2017 or synthetic case folders")
    train.add_argument("data_dir")
    train.add_argument("--out", required=True, help="folder for model.safetensors and the optimizer state")
    train.add_argument("--preset", choices=("paper", "small"), default="paper",
                       help="paper: series grid B, 80 epochs, Adam 2e-4 (0.5, 0.9), CE; small: the bundled model's")
    train.add_argument("--epochs", type=int)
    train.add_argument("--size", help="A, B, C, X (the paper's series grids), native, or DxHxW")
    train.add_argument("--normalization", choices=options.values(options.IntensityNormalization))
    train.add_argument("--base-width", type=int)
    train.add_argument("--loss", choices=("ce", "dice-ce"))
    train.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None)
    train.add_argument("--validation-fraction", type=float, help="share of cases held out for Dice (e.g. 0.2)")
    train.add_argument("--lr", type=float)
    train.add_argument("--cosine-schedule", action=argparse.BooleanOptionalAction, default=None,
                       help="decay the learning rate to 0 over the epochs (small preset: on)")
    train.add_argument("--batch-size", type=int)
    train.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None, help="mixed precision on CUDA")
    train.add_argument("--seed", type=int)
    train.add_argument("--device", default="auto")
    train.add_argument("--resume", action="store_true", help="continue from --out/model.safetensors")

    predict = add("predict", cmd_predict, "segment the lesion of one case; writes NIfTI on the native grid")
    predict.add_argument("case", help="ISLES case folder, or a folder of ADC/MTT/rCBF/rCBV/Tmax/TTP files")
    common(predict, "folder for prediction_probability/mask.nii.gz and prediction.json")

    explain = add("explain", cmd_explain, "explain the lesion segmentation of one case with (filtered) LRP")
    explain.add_argument("case", help="ISLES case folder, or a folder of ADC/MTT/rCBF/rCBV/Tmax/TTP files")
    common(explain, "folder for relevance_<MOD>[_filtered].nii.gz, prediction_*.nii.gz, scores.json/csv, "
                    "provenance.json, preview.png")
    add_explain_options(explain)

    bands = add("bands", cmd_bands, "compute a grid of in-chain filter bands of one case in batched explanations")
    bands.add_argument("case", help="ISLES case folder, or a folder of ADC/MTT/rCBF/rCBV/Tmax/TTP files")
    common(bands, "folder for bands.npz (float16 maps, float32 maxima) and bands.json (settings, scores)")
    bands.add_argument("--bands", help="e.g. 'pass:0.2;clamp:0.1' (default: the paper's grids plus --step steps)")
    bands.add_argument("--step", type=float, default=0.05, help="alpha step of the default grid")
    bands.add_argument("--batch-size", type=int, default=4, help="bands per batched explanation")
    add_explain_options(bands, with_filter=False)

    sweep = add("sweep", cmd_sweep, "run a grid of filters over cases and models: sweep.csv, plots, sweet spot")
    sweep.add_argument("cases", nargs="+", help="case folders, or folders of case folders")
    sweep.add_argument("--model", action="append", help="model file; repeat for several (default: the bundled)")
    sweep.add_argument("--device", default="auto")
    sweep.add_argument("--out", required=True, help="folder for sweep.csv, plots/ and sweet_spot.json")
    sweep.add_argument("--progress", choices=("bar", "json", "none"), default="bar")
    sweep.add_argument("--overwrite", action="store_true")
    sweep.add_argument("--filters", default="paper",
                       help="'paper' (none + the paper's pass and clamp grids) or e.g. 'pass:0.2;clamp:0.1'")
    add_explain_options(sweep, with_filter=False)

    evaluate = add("evaluate", cmd_evaluate, "Dice of a model on case folders and/or fresh synthetic cases")
    evaluate.add_argument("cases", nargs="*", help="case folders, or folders of case folders")
    evaluate.add_argument("--model", help="model file; default: the bundled model")
    evaluate.add_argument("--synthetic", type=int, default=0, help="also generate N fresh synthetic cases")
    evaluate.add_argument("--seed", type=int, default=9000, help="dataset seed of the synthetic cases")
    evaluate.add_argument("--device", default="auto")

    info = add("info", cmd_info, "print a model file's metadata (architecture, training, Dice)")
    info.add_argument("model", nargs="?", help="model file; default: the bundled model")
    info.add_argument("--json", action="store_true", help="one line of JSON")

    demo = add("demo", cmd_demo, "generate a synthetic case and run the pipeline on it with the bundled model")
    common(demo, "folder for the synthetic case and all results")
    demo.add_argument("--seed", type=int, default=2017)
    return parser


def add_explain_options(sub: argparse.ArgumentParser, with_filter: bool = True) -> None:
    sub.add_argument("--rule", choices=options.PRESET_NAMES, default=options.DEFAULT_PRESET, help="LRP rule preset")
    sub.add_argument("--target", choices=options.values(options.TargetKind), default=options.DEFAULT_TARGET.value,
                     help="what is explained (the starting relevance on the logits)")
    sub.add_argument("--mask", help="mask file for --target mask (on the case's grid, or on the model grid)")
    sub.add_argument("--voxel", help="d,h,w model-grid index for --target voxel (or the seed of component)")
    sub.add_argument("--component", type=int, help="rank by size for --target component (0 = largest)")
    if with_filter:
        sub.add_argument("--filter", choices=options.values(options.FilterKind), default=options.FilterKind.NONE.value)
        sub.add_argument("--alpha", type=float, default=1.0, help="upper band edge a2 of the filter")
        sub.add_argument("--alpha-low", type=float, default=0.0, help="lower band edge a1 of the filter")
    sub.add_argument("--where", choices=options.values(options.FilterPlacement),
                     default=options.FilterPlacement.OUTPUT.value,
                     help="filter the final map (output) or inside the relevance chain at the paper's taps (layers)")
    sub.add_argument("--taps", help="comma-separated tap names for --where layers (default: the paper's taps)")
    sub.add_argument("--normalization", choices=options.values(options.RelevanceNormalization),
                     default=options.RelevanceNormalization.PER_CHANNEL.value,
                     help="final-map normalisation before filtering")
    sub.add_argument("--lrp-threshold", type=float, default=0.5, help="binarise |R_c|/max|R_c| above this")
    sub.add_argument("--input-threshold", type=float, default=0.1, help="binarise |x_c|/max|x_c| above this")
    sub.add_argument("--smoothing", type=float, default=0.0, help="added to inclusivity denominators")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.simplefilter("default")
    try:
        return args.handler(args)
    except ModuleNotFoundError as error:
        print(f"lrpseg {args.command}: error: the Python package {error.name!r} is missing; install it with pip "
              "(in Slicer, the LRPSegmentation module installs it when you press Run).", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, FileExistsError) as error:  # every user-facing error derives from these
        print(f"lrpseg {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lrpseg {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
