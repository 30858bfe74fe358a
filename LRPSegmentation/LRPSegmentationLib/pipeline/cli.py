"""The ``lrpseg`` command line: subcommands and their options; each runs a function of pipeline.commands."""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import sys
import warnings
from typing import Callable, Sequence

from LRPSegmentationLib import __version__, options
from LRPSegmentationLib.pipeline.commands import (
    cmd_average,
    cmd_bands,
    cmd_check,
    cmd_demo,
    cmd_evaluate,
    cmd_explain,
    cmd_info,
    cmd_postprocess,
    cmd_predict,
    cmd_sweep,
    cmd_synth,
    cmd_train,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lrpseg", description=__doc__)
    parser.add_argument("--version", action="version", version=f"lrpseg {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    def add(name: str, handler: Callable, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    def common(sub: argparse.ArgumentParser, out_help: str) -> None:
        sub.add_argument("--model", help="model: our .safetensors file, a MONAI .json description or an nnU-Net v2 "
                                         "trained-model folder; default: the bundled model")
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
    family_help = ("generator family: procedural, anatomy (MNI152 anatomy; needs the 'anatomy' extra) or "
                   "ellipsoid; default: anatomy where nilearn is installed, else procedural")
    synth.add_argument("--family", choices=options.GENERATOR_FAMILIES, help=family_help)
    synth.add_argument("--tissue-jitter", type=float,
                       help="anatomy family: relative spread of each tissue's value per map (default 0.1; wider "
                            "randomises the grey/white/CSF contrasts)")
    synth.add_argument("--white-contrast", type=float,
                       help="anatomy family: raise white matter's ratio to grey matter per map to a power drawn from "
                            "[1, K] (default 1: textbook contrast; larger: healthy white matter nearer a faint lesion)")

    train = add("train", cmd_train, "train the U-Net on ISLES 2017 or synthetic case folders")
    train.add_argument("data_dir")
    train.add_argument("--out", required=True, help="folder for model.safetensors and the optimizer state")
    train.add_argument("--preset", choices=("paper", "small", "robust"), default="paper",
                       help="paper: series grid B, 80 epochs, Adam 2e-4 (0.5, 0.9), CE; small: the first bundled "
                            "model's; robust: domain randomisation, for fine-tuning with --init (the bundled "
                            "model: with --normalization zscore, MODEL_CARD.md)")
    train.add_argument("--epochs", type=int)
    train.add_argument("--size", help="A, B, C, X (the paper's series grids), native, or DxHxW; a 0 keeps that "
                       "axis native (0x96x96: the case's slices, each 96 x 96)")
    train.add_argument("--normalization", choices=options.values(options.IntensityNormalization))
    train.add_argument("--base-width", type=int)
    train.add_argument("--loss", choices=("ce", "dice-ce"))
    train.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None)
    train.add_argument("--randomise", action=argparse.BooleanOptionalAction, default=None,
                       help="domain randomisation on every step (contrast, bias, noise, blur, resolution, flips)")
    train.add_argument("--partial-volume-labels", action=argparse.BooleanOptionalAction, default=None,
                       help="train on each model voxel's lesion share instead of nearest-voxel labels (edges "
                            "finer than a model voxel)")
    train.add_argument("--init", help="start from this model file's weights (fine-tuning; same architecture)")
    train.add_argument("--validation-fraction", type=float, help="share of cases held out for Dice (e.g. 0.2)")
    train.add_argument("--lr", type=float)
    train.add_argument("--cosine-schedule", action=argparse.BooleanOptionalAction, default=None,
                       help="decay the learning rate to 0 over the epochs (small preset: on)")
    train.add_argument("--batch-size", type=int)
    train.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None, help="mixed precision on CUDA")
    train.add_argument("--seed", type=int)
    train.add_argument("--device", default="auto")
    train.add_argument("--resume", action="store_true", help="continue from --out/model.safetensors")
    train.add_argument("--keep-epochs", action="store_true",
                       help="also keep each epoch's model as --out/epoch-N.safetensors (for lrpseg average)")

    average = add("average", cmd_average, "average the weights of checkpoints of one training run into a new file")
    average.add_argument("models", nargs="+", help="two or more model files of one architecture")
    average.add_argument("--out", required=True, help="the new model file (never an existing one)")

    check = add("postprocess", cmd_postprocess, "copy a model file with its masks' contralateral check set")
    check.add_argument("model", help="one of our .safetensors model files")
    check.add_argument("--out", required=True, help="the new model file (never an existing one)")
    switch = check.add_mutually_exclusive_group(required=True)
    switch.add_argument("--contralateral-check", type=float, metavar="Z",
                        help="drop predicted regions whose mean contrast to the mirror-image tissue of the other "
                             "hemisphere is below Z standard deviations (e.g. 0.5)")
    switch.add_argument("--no-contralateral-check", action="store_true", help="masks as the network gives them")

    predict = add("predict", cmd_predict, "segment the lesion of one case; writes NIfTI on the native grid")
    predict.add_argument("case", help="ISLES case folder, or a folder of ADC/MTT/rCBF/rCBV/Tmax/TTP files")
    common(predict, "folder for prediction_probability/mask.nii.gz and prediction.json")

    explain = add("explain", cmd_explain, "explain the lesion segmentation of one case with (filtered) LRP")
    explain.add_argument("case", help="ISLES case folder, or a folder of ADC/MTT/rCBF/rCBV/Tmax/TTP files")
    common(explain, "folder for relevance_<MOD>[_filtered].nii.gz, prediction_*.nii.gz, scores.json/csv, "
                    "provenance.json, preview.png")
    add_explain_options(explain)

    bands = add("bands", cmd_bands, "compute a grid of in-chain filter bands of one case (one forward per chunk)")
    bands.add_argument("case", help="ISLES case folder, or a folder of ADC/MTT/rCBF/rCBV/Tmax/TTP files")
    common(bands, "folder for bands.npz (float16 maps, float32 maxima) and bands.json (settings, scores)")
    bands.add_argument("--bands", help="e.g. 'pass:0.2;clamp:0.1' (default: the paper's grids plus --step steps)")
    bands.add_argument("--step", type=float, default=0.05, help="alpha step of the default grid")
    bands.add_argument("--chunk", type=int, default=options.BAND_CHUNK,
                       help="bands sharing one forward pass (its graph is kept for their backward sweeps)")
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

    check = add("check", cmd_check, "how far to trust the explanation of one case: randomisation, random logit, "
                                    "region perturbation, modality ablation and baseline methods")
    check.add_argument("case", help="ISLES case folder, or a folder of ADC/MTT/rCBF/rCBV/Tmax/TTP files")
    common(check, "folder for check.json, check.csv and plots/")
    add_explain_options(check)
    check.add_argument("--methods", help="comma-separated methods (default: lrp-<rule>, lrp-<rule>+<filter, default "
                                         "clamp[0,0.2]>, lrp-zplus, gradient, input-x-gradient, "
                                         "integrated-gradients, smoothgrad, occlusion, grad-cam)")
    for part in ("randomisation", "random_logit", "flipping", "ablation", "localisation", "plots"):
        check.add_argument(f"--{part.replace('_', '-')}", dest=part, action=argparse.BooleanOptionalAction,
                           default=True, help=f"run the {part.replace('_', ' ')} part (default: on)")
    check.add_argument("--independent", action="store_true",
                       help="randomise one block at a time instead of cascading from the head down")
    check.add_argument("--depths", type=int, default=3, help="randomisation depths evaluated (last: whole network)")
    check.add_argument("--randomise-all", action="store_true",
                       help="also randomise integrated gradients, SmoothGrad and occlusion (slow)")
    check.add_argument("--seed", type=int, default=0)

    evaluate = add("evaluate", cmd_evaluate, "Dice, lesion detection and healthy-case false positives of a model "
                                             "per family and lesion size, on case folders and/or fresh synthetic cases")
    evaluate.add_argument("cases", nargs="*", help="case folders, or folders of case folders")
    evaluate.add_argument("--model", help="model file; default: the bundled model")
    evaluate.add_argument("--synthetic", type=int, default=0,
                          help="also generate N fresh synthetic cases of each --family")
    evaluate.add_argument("--family", action="append", choices=options.GENERATOR_FAMILIES,
                          help="generator family of the synthetic cases (repeat; default: every available family)")
    evaluate.add_argument("--seed", type=int, default=9000, help="dataset seed of the synthetic cases")
    evaluate.add_argument("--device", default="auto")

    info = add("info", cmd_info, "print a model file's metadata (architecture, training, Dice)")
    info.add_argument("model", nargs="?", help="model file; default: the bundled model")
    info.add_argument("--json", action="store_true", help="one line of JSON")

    demo = add("demo", cmd_demo, "generate a synthetic case and run the pipeline on it with the bundled model")
    common(demo, "folder for the synthetic case and all results")
    demo.add_argument("--seed", type=int, default=2017)
    demo.add_argument("--family", choices=options.GENERATOR_FAMILIES, default="procedural",
                      help="generator family of the case (default procedural: the family the bundled model knows best)")
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


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_KEPT_BYTES = 1 << 30


def keep_freed_cpu_memory() -> bool:
    """Let glibc keep freed blocks up to 1 GiB for reuse instead of handing them back to the system (Linux only;
    True when set).

    A CPU explanation allocates and frees tensors of tens of MB at every layer; by default glibc returns each to
    the system and the next one is faulted in page by page again, which costs about as much as the arithmetic on
    it. :func:`main` calls it: the ``lrpseg`` process (Slicer's child process too) runs the network, Slicer's own
    process never does."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _KEPT_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, _KEPT_BYTES))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.simplefilter("default")
    keep_freed_cpu_memory()
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
    except BrokenPipeError:  # the reader left early (`lrpseg info | head`): stop quietly, like other tools
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so that the exit's flush cannot fail again
        return 1


if __name__ == "__main__":
    sys.exit(main())
