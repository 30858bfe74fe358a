"""The ``lrpseg`` command line: thin wrappers that parse, call the library and report progress."""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, Sequence

from . import __version__


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
    from .preprocess import parse_size
    from .synthetic import generate_dataset

    shape = parse_size(args.shape) if args.shape else None
    folders = generate_dataset(Path(args.out), args.count, args.seed, start=args.start, shape=shape)
    print(f"wrote {len(folders)} synthetic case(s) to {args.out}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .preprocess import PreprocessSpec, Normalization, parse_size
    from .train import PRESETS, LossKind, train, with_overrides

    config = PRESETS[args.preset]
    preprocess = config.preprocess
    if args.size or args.normalization:
        preprocess = PreprocessSpec(size=parse_size(args.size) if args.size else preprocess.size,
                                    normalization=Normalization(args.normalization or preprocess.normalization))
    config = with_overrides(
        config, epochs=args.epochs, learning_rate=args.lr, batch_size=args.batch_size,
        loss=LossKind(args.loss) if args.loss else None, augment=args.augment,
        validation_fraction=args.validation_fraction, amp=args.amp, seed=args.seed, base_width=args.base_width,
        preprocess=preprocess)

    def report(epoch) -> None:
        held = "-" if epoch.dice_validation is None else f"{epoch.dice_validation:.3f}"
        print(f"epoch {epoch.epoch}/{config.epochs}: loss {epoch.loss:.4f}, Dice train {epoch.dice_train:.3f}, "
              f"held-out {held}", file=sys.stderr, flush=True)

    result = train(args.data_dir, args.out, config, device=args.device, resume=args.resume,
                   preset_name=args.preset, progress=report)
    from .weights import read_metadata

    metrics = read_metadata(result.model_path).metrics
    print(json.dumps({"model": str(result.model_path), **metrics}, indent=2))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .caseio import load_case
    from .outputs import ResultWriter
    from .predict import predict_case
    from .weights import load_model

    progress = Progress(args.progress)
    progress("load", 0.1, f"reading {args.case}")
    case = load_case(args.case)
    loaded = load_model(args.model)
    progress("predict", 0.3, f"model {loaded.path.name}")
    prediction = predict_case(case, loaded, args.device, notify=progress.note)
    progress("write", 0.9, f"writing to {args.out}")
    with ResultWriter(args.out, overwrite=args.overwrite) as out:
        out.volume("prediction_probability.nii.gz", prediction.probability, case.geometry)
        out.volume("prediction_mask.nii.gz", prediction.mask, case.geometry)
        out.json("prediction.json", {"case": case.case_id, "dice": prediction.dice, "device": prediction.device,
                                     "lesion_voxels": int(prediction.mask.sum()), "model": str(loaded.path),
                                     "model_sha256": loaded.sha256, "package_version": __version__})
    dice = "no ground truth" if prediction.dice is None else f"Dice {prediction.dice:.3f}"
    progress("done", 1.0, f"{case.case_id}: {int(prediction.mask.sum())} lesion voxels, {dice}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .weights import bundled_model_path, read_metadata

    info = read_metadata(args.model or bundled_model_path())
    print(info.to_json() if args.json else json.dumps(json.loads(info.to_json()), indent=2))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The README's main job: a fresh synthetic case through the bundled model."""
    from .synthetic import generate_case, write_isles_case

    out = Path(args.out)
    case_dir = write_isles_case(generate_case(args.seed), out / "case", 1)
    print(f"synthetic case written to {case_dir}", file=sys.stderr)
    return cmd_predict(argparse.Namespace(case=case_dir, model=args.model, device=args.device,
                                          out=out / "prediction", progress=args.progress, overwrite=args.overwrite))


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
    train.add_argument("--normalization", choices=("minmax", "zscore"))
    train.add_argument("--base-width", type=int)
    train.add_argument("--loss", choices=("ce", "dice-ce"))
    train.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None)
    train.add_argument("--validation-fraction", type=float, help="share of cases held out for Dice (e.g. 0.2)")
    train.add_argument("--lr", type=float)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None, help="mixed precision on CUDA")
    train.add_argument("--seed", type=int)
    train.add_argument("--device", default="auto")
    train.add_argument("--resume", action="store_true", help="continue from --out/model.safetensors")

    predict = add("predict", cmd_predict, "segment the lesion of one case; writes NIfTI on the native grid")
    predict.add_argument("case", help="ISLES case folder, or a folder of ADC/MTT/rCBF/rCBV/Tmax/TTP files")
    common(predict, "folder for prediction_probability/mask.nii.gz and prediction.json")

    info = add("info", cmd_info, "print a model file's metadata (architecture, training, Dice)")
    info.add_argument("model", nargs="?", help="model file; default: the bundled model")
    info.add_argument("--json", action="store_true", help="one line of JSON")

    demo = add("demo", cmd_demo, "generate a synthetic case and run the pipeline on it with the bundled model")
    common(demo, "folder for the synthetic case and all results")
    demo.add_argument("--seed", type=int, default=2017)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.simplefilter("default")
    try:
        return args.handler(args)
    except (ValueError, FileNotFoundError) as error:  # every user-facing error type derives from these
        print(f"lrpseg {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lrpseg {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
