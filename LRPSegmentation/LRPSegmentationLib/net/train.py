"""Training the U-Net on ISLES 2017 or synthetic case folders, with resumable safetensors checkpoints."""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.nn import functional as F

from LRPSegmentationLib import __version__
from LRPSegmentationLib.analysis.metrics import dice
from LRPSegmentationLib.data.caseio import Case, load_case
from LRPSegmentationLib.lrp.convolution import fast_convolutions
from LRPSegmentationLib.net.devices import resolve_device
from LRPSegmentationLib.net.model import UNet3D, UNetConfig
from LRPSegmentationLib.net.predict import predict_case
from LRPSegmentationLib.net.preprocess import SERIES_GRIDS, PreprocessSpec, normalize, prepare_input, prepare_label
from LRPSegmentationLib.net.weights import LoadedModel, ModelInfo, WeightsError, load_model, load_unet, save_model
from LRPSegmentationLib.options import IntensityNormalization


class LossKind(str, Enum):
    CROSS_ENTROPY = "ce"  # the paper
    DICE_CROSS_ENTROPY = "dice-ce"  # soft Dice on the lesion class + cross-entropy


@dataclass(frozen=True)
class TrainConfig:
    """Every training choice; stored in the checkpoint metadata."""

    epochs: int = 80
    learning_rate: float = 2e-4
    cosine_schedule: bool = False  # decay the learning rate to 0 over the epochs (a pure function of the epoch)
    betas: tuple[float, float] = (0.5, 0.9)
    batch_size: int = 1
    loss: LossKind = LossKind.CROSS_ENTROPY
    augment: bool = False  # light: left-right flips, intensity scaling, noise
    randomise: bool = False  # domain randomisation on every step (LRPSegmentationLib.data.randomise); wins over augment
    partial_volume_labels: bool = False  # targets = each model voxel's lesion share (soft), not nearest classes
    validation_fraction: float = 0.0
    amp: bool = True  # mixed precision, CUDA only
    seed: int = 0
    base_width: int = 32
    preprocess: PreprocessSpec = PreprocessSpec(size=SERIES_GRIDS["B"])

    def to_dict(self) -> dict:
        values = asdict(self)
        values["loss"] = self.loss.value
        values["preprocess"] = self.preprocess.to_dict()
        return values


PRESETS: dict[str, TrainConfig] = {
    # The paper: series grid, 80 epochs, batch 1, Adam 2e-4 (0.5, 0.9), cross-entropy, no augmentation.
    "paper": TrainConfig(),
    # Small, fast and robust: what the bundled model uses.
    "small": TrainConfig(epochs=25, base_width=8, loss=LossKind.DICE_CROSS_ENTROPY, augment=True,
                         validation_fraction=0.2, learning_rate=1e-3, betas=(0.9, 0.999),
                         cosine_schedule=True),
    # Small, with domain randomisation, for fine-tuning (--init) on procedural + anatomy cases; the bundled model
    # (version 7) is such stages with normalization zscore on partial-volume labels, the last ones on grid 0x96x96
    # (MODEL_CARD.md).
    "robust": TrainConfig(epochs=3, base_width=8, loss=LossKind.DICE_CROSS_ENTROPY, randomise=True,
                          validation_fraction=0.1, learning_rate=5e-4, betas=(0.9, 0.999), cosine_schedule=True),
}


@dataclass
class EpochReport:
    epoch: int
    loss: float
    dice_train: float
    dice_validation: float | None


@dataclass
class TrainResult:
    model_path: Path
    history: list[EpochReport] = field(default_factory=list)


def find_case_folders(data_dir: Path) -> list[Path]:
    """Case folders under ``data_dir``: ``training_N`` / ``case_*`` style sub-folders holding image files."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise ValueError(f"{data_dir}: training data folder not found.")
    folders = sorted((p for p in data_dir.iterdir() if p.is_dir()), key=_natural_key)
    if not folders:
        raise ValueError(f"{data_dir}: no case folders inside (expected training_1/, training_2/, ...). "
                         "Generate synthetic ones with: lrpseg synth DIR --count 40")
    return folders


def _natural_key(path: Path) -> tuple:
    digits = "".join(ch for ch in path.name if ch.isdigit())
    return (path.name.rstrip("0123456789"), int(digits) if digits else -1, path.name)


def split_cases(cases: list[Case], validation_fraction: float, seed: int) -> tuple[list[Case], list[Case]]:
    """Seeded split into training and held-out cases (at least one of each when a fraction is asked for)."""
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation fraction must be in [0, 1), got {validation_fraction}")
    order = list(range(len(cases)))
    random.Random(seed).shuffle(order)
    count = 0 if validation_fraction == 0 else min(len(cases) - 1, max(1, round(validation_fraction * len(cases))))
    held = set(order[:count])
    return [c for i, c in enumerate(cases) if i not in held], [c for i, c in enumerate(cases) if i in held]


def augment(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-right flip, per-channel intensity scaling and Gaussian noise (label follows the flip)."""
    if torch.rand((), generator=generator) < 0.5:
        x, y = x.flip(-1), y.flip(-1)
    scale = 1.0 + 0.1 * (2 * torch.rand((x.shape[0], x.shape[1], 1, 1, 1), generator=generator) - 1)
    noise = 0.02 * torch.randn(x.shape, generator=generator)
    return x * scale + noise * (x != 0), y


def randomise_batch(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator,
                    normalization: IntensityNormalization = IntensityNormalization.MINMAX,
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Domain randomisation of each item of a min-max scaled batch, seeded from ``generator`` (so a resumed run
    repeats it); each view is then normalised with ``normalization`` unless that is min-max (its range is the
    randomised one's)."""
    from LRPSegmentationLib.data.randomise import randomise_sample

    views = [randomise_sample(np.random.default_rng(int(torch.randint(2**31 - 1, (), generator=generator))),
                              x[i].numpy(), y[i].numpy()) for i in range(x.shape[0])]
    images = [v[0] if normalization is IntensityNormalization.MINMAX else normalize(v[0], normalization)
              for v in views]
    return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack([v[1] for v in views]))


def epoch_learning_rate(config: TrainConfig, epoch: int) -> float:
    """Learning rate of an epoch: constant, or cosine-decayed from the configured rate towards 0."""
    if not config.cosine_schedule:
        return config.learning_rate
    return config.learning_rate * 0.5 * (1.0 + math.cos(math.pi * epoch / config.epochs))


def lesion_share(target: torch.Tensor, lesion_class: int = 1) -> torch.Tensor:
    """The lesion share of each voxel of a target: class labels (int) or partial-volume shares (float)."""
    return target.float() if target.is_floating_point() else (target == lesion_class).float()


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, lesion_class: int = 1) -> torch.Tensor:
    probability = torch.softmax(logits.float(), dim=1)[:, lesion_class]
    truth = lesion_share(target, lesion_class)
    intersection = (probability * truth).sum()
    return 1.0 - (2 * intersection + 1.0) / (probability.sum() + truth.sum() + 1.0)


def compute_loss(logits: torch.Tensor, target: torch.Tensor, kind: LossKind) -> torch.Tensor:
    """Cross-entropy (+ soft Dice) against class labels, or against two-class shares for partial-volume targets."""
    if target.is_floating_point():
        share = target.float().clamp(0.0, 1.0)
        loss = F.cross_entropy(logits.float(), torch.stack([1.0 - share, share], dim=1))
    else:
        loss = F.cross_entropy(logits.float(), target)
    if kind == LossKind.DICE_CROSS_ENTROPY:
        loss = loss + soft_dice_loss(logits, target)
    return loss


def mean_dice(loaded: LoadedModel, cases: list[Case], device: torch.device) -> float | None:
    """Dice on the native grid (predictions mapped back), averaged over cases with ground truth."""
    scores = [predict_case(case, loaded, device).dice for case in cases if case.ground_truth is not None]
    return float(np.mean(scores)) if scores else None


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Flatten an optimizer state into named tensors + JSON, so it saves as safetensors (no pickle)."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], extra: dict) -> None:
    state: dict[int, dict] = {}
    for name, value in list(tensors.items()) + list(extra["scalars"].items()):
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": extra["param_groups"]})


def save_optimizer(optimizer: torch.optim.Optimizer, path: Path, epoch: int, generator: torch.Generator) -> None:
    """Save the optimizer and the data-order/augmentation RNG, so a resumed run continues like an uninterrupted one."""
    from safetensors.torch import save_file

    tensors, extra = _optimizer_tensors(optimizer)
    tensors["generator_state"] = generator.get_state()
    temporary = path.with_name(path.name + ".partial")
    save_file(tensors, str(temporary), metadata={"optimizer": json.dumps({**extra, "epoch": epoch})})
    temporary.replace(path)


def load_optimizer(optimizer: torch.optim.Optimizer, path: Path, generator: torch.Generator) -> int:
    """Restore what :func:`save_optimizer` saved; returns the number of finished epochs."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            extra = json.loads(handle.metadata()["optimizer"])
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        generator.set_state(tensors.pop("generator_state"))
        _load_optimizer(optimizer, tensors, extra)
    except Exception as error:  # safetensors raises several types for corrupt files
        raise WeightsError(f"{path}: cannot resume from this optimizer state ({error}).") from None
    return int(extra["epoch"])


def train(data_dir: Path | str, out_dir: Path | str, config: TrainConfig = PRESETS["paper"], *,
          device: str = "auto", resume: bool = False, preset_name: str = "custom", init: Path | str | None = None,
          progress: Callable[[EpochReport], None] | None = None, show_bar: bool = True,
          keep_epochs: bool = False) -> TrainResult:
    """Train on every case folder of ``data_dir``; writes ``model.safetensors`` (+ optimizer state) to ``out_dir``.

    The checkpoint is rewritten after each epoch, so an interrupted run resumes with ``resume=True``. ``init``
    starts from the weights of a model file of the same architecture (fine-tuning) instead of random ones.
    ``keep_epochs`` also keeps each epoch's model as ``epoch-N.safetensors`` (for :func:`average_checkpoints`).
    """
    from tqdm.auto import tqdm

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    target_device = resolve_device(device)

    cases = [load_case(folder) for folder in find_case_folders(data_dir)]
    missing_truth = [c.case_id for c in cases if c.ground_truth is None]
    if missing_truth:
        raise ValueError(f"{data_dir}: cases without ground truth (OT) cannot be used for training: "
                         f"{', '.join(missing_truth)}.")
    if not config.preprocess.fixed and config.batch_size > 1:
        raise ValueError("Batches larger than 1 need a fixed grid size (--size A, B, C, X or DxHxW, no 0).")
    train_cases, held_cases = split_cases(cases, config.validation_fraction, config.seed)
    # Domain randomisation works on min-max scaled views; other normalisations are applied after it.
    view_spec = replace(config.preprocess, normalization=IntensityNormalization.MINMAX) if config.randomise \
        else config.preprocess
    samples = [(prepare_input(c.images, view_spec),
                prepare_label(c.ground_truth, config.preprocess, config.partial_volume_labels)) for c in train_cases]

    model = UNet3D(UNetConfig(base_width=config.base_width)).to(target_device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, betas=config.betas)
    model_path, optimizer_path = out_dir / "model.safetensors", out_dir / "optimizer.safetensors"
    start_epoch = 0
    initialised_from = None
    if init is not None and not resume:
        start = load_model(init, target_device)
        if start.info.config != model.config.to_dict():
            raise ValueError(f"{init}: its architecture differs from this run's (--base-width); choose a matching "
                             "model to start from.")
        model.load_state_dict(start.model.state_dict())
        initialised_from = {"path": str(start.path), "sha256": start.sha256}
    if resume:
        if not (model_path.is_file() and optimizer_path.is_file()):
            raise ValueError(f"{out_dir}: nothing to resume (model.safetensors and optimizer.safetensors missing).")
        previous = load_model(model_path, target_device)
        if previous.info.config != model.config.to_dict():
            raise ValueError(f"{model_path}: its architecture differs from this run's; resume with the same options.")
        model.load_state_dict(previous.model.state_dict())
        initialised_from = previous.info.training.get("initialised_from")
        start_epoch = load_optimizer(optimizer, optimizer_path, generator)

    use_amp = config.amp and target_device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    info = ModelInfo(
        config=model.config.to_dict(),
        preprocess=config.preprocess.to_dict(),
        training={
            "preset": preset_name,
            "config": config.to_dict(),
            "data_dir": str(data_dir),
            "synthetic": all((Path(c.sources["ADC"]).parents[1] / "explanation.json").is_file() for c in cases),
            "train_cases": [c.case_id for c in train_cases],
            "validation_cases": [c.case_id for c in held_cases],
            "device": str(target_device),
            "initialised_from": initialised_from,
            "package_version": __version__,
            "torch_version": torch.__version__,
        },
    )
    result = TrainResult(model_path)
    for epoch in range(start_epoch, config.epochs):
        model.train()
        for group in optimizer.param_groups:
            group["lr"] = epoch_learning_rate(config, epoch)
        order = torch.randperm(len(samples), generator=generator).tolist()
        batches = [order[i:i + config.batch_size] for i in range(0, len(order), config.batch_size)]
        losses, dices = [], []
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch", disable=not show_bar,
                   leave=False)
        for batch in bar:
            x = torch.cat([samples[i][0] for i in batch])
            y = torch.cat([samples[i][1] for i in batch])
            if config.randomise:
                x, y = randomise_batch(x, y, generator, config.preprocess.normalization)
            elif config.augment:
                x, y = augment(x, y, generator)
            x, y = x.to(target_device), y.to(target_device)
            with fast_convolutions():  # CPU float32 only; autocast stays around the forward, as PyTorch advises
                with torch.autocast(target_device.type, enabled=use_amp):
                    logits = model(x)
                    loss = compute_loss(logits, y, config.loss)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            losses.append(float(loss.detach()))
            dices.append(dice(logits.argmax(1).cpu().numpy(), lesion_share(y).cpu().numpy() >= 0.5))
            bar.set_postfix(loss=f"{np.mean(losses):.4f}", dice=f"{np.mean(dices):.3f}")
        bar.close()
        model.eval()
        loaded = LoadedModel(model, info, model_path, "")
        dice_validation = mean_dice(loaded, held_cases, target_device) if held_cases else None
        report = EpochReport(epoch + 1, float(np.mean(losses)), float(np.mean(dices)), dice_validation)
        result.history.append(report)
        info.training["epochs"] = epoch + 1
        info.metrics = {"dice_train_batches": report.dice_train, "dice_validation": dice_validation}
        save_model(model, info, model_path)
        if keep_epochs:
            save_model(model, info, out_dir / f"epoch-{epoch + 1}.safetensors")
        save_optimizer(optimizer, optimizer_path, epoch + 1, generator)
        if progress:
            progress(report)
    # Final scores on the native grid, as users will see them.
    loaded = LoadedModel(model.eval(), info, model_path, "")
    info.metrics = {"dice_train": mean_dice(loaded, train_cases, target_device),
                    "dice_validation": mean_dice(loaded, held_cases, target_device) if held_cases else None,
                    "dice_measured_on": "native grid, hard Dice of the mask at probability >= 0.5"}
    save_model(model, info, model_path)
    return result


def with_overrides(config: TrainConfig, **overrides) -> TrainConfig:
    """A copy of ``config`` with the non-None overrides applied."""
    return replace(config, **{k: v for k, v in overrides.items() if v is not None})


def average_checkpoints(paths: list[Path | str], out: Path | str) -> Path:
    """Write the mean of the weights (and BatchNorm statistics) of checkpoints of one architecture to ``out``: the
    average of one run's later epochs, which steadies a fine-tuning whose epochs trade one family for another.
    The metadata is the last checkpoint's, with its sources recorded and its metrics cleared."""
    out = Path(out)
    if len(paths) < 2:
        raise ValueError("Averaging needs at least two model files.")
    if out.exists():
        raise ValueError(f"{out} exists: choose a new file name (an existing model is never overwritten).")
    loaded = [load_unet(path) for path in paths]
    configs = {json.dumps(m.info.config, sort_keys=True) for m in loaded}
    if len(configs) > 1 or len({json.dumps(m.info.preprocess, sort_keys=True) for m in loaded}) > 1:
        raise ValueError("These models differ in architecture or preprocessing; average checkpoints of one run.")
    states = [m.model.state_dict() for m in loaded]
    mean = {name: torch.stack([s[name] for s in states]).mean(0) if tensor.is_floating_point() else tensor
            for name, tensor in states[-1].items()}
    last = loaded[-1]
    last.model.load_state_dict(mean)
    sources = [{"path": str(m.path), "sha256": m.sha256} for m in loaded]
    info = ModelInfo(config=last.info.config, preprocess=last.info.preprocess, modalities=last.info.modalities,
                     training={**last.info.training, "averaged_from": sources})
    return save_model(last.model, info, out)
