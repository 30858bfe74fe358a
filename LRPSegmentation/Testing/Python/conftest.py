"""Shared fixtures: small synthetic ISLES-layout cases written once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from LRPSegmentationLib.data.synthetic import SyntheticCase, generate_case, generate_dataset, write_isles_case

SMALL_SHAPE = (8, 32, 32)
"""(D, H, W) of the shared fixture cases: tiny, so that every test file stays fast."""


@pytest.fixture(scope="session")
def synthetic_case() -> SyntheticCase:
    """One small generated case (seed 7), in memory; do not modify its arrays."""
    return generate_case(7, shape=SMALL_SHAPE)


@pytest.fixture(scope="session")
def synthetic_case_dir(tmp_path_factory: pytest.TempPathFactory, synthetic_case: SyntheticCase) -> Path:
    """``synthetic_case`` written in the ISLES 2017 layout: the folder ``.../training_7`` (read-only by convention)."""
    return write_isles_case(synthetic_case, tmp_path_factory.mktemp("isles_case"), 7)


@pytest.fixture(scope="session")
def synthetic_dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset root holding ``training_1`` and ``training_2`` (seed 2017, shape (8, 32, 32)).

    Read-only by convention: tests that change files copy a case first.
    """
    root = tmp_path_factory.mktemp("isles_dataset")
    generate_dataset(root, count=2, seed=2017, shape=SMALL_SHAPE)
    return root


@pytest.fixture(scope="session")
def tiny_model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained UNet3D of base width 2 on a (8, 16, 16) grid, saved as a model file (seeded)."""
    import torch

    from LRPSegmentationLib.net.model import UNet3D, UNetConfig
    from LRPSegmentationLib.net.preprocess import PreprocessSpec
    from LRPSegmentationLib.net.weights import ModelInfo, save_model

    torch.manual_seed(3)
    model = UNet3D(UNetConfig(base_width=2)).eval()
    info = ModelInfo(config=model.config.to_dict(), preprocess=PreprocessSpec(size=(8, 16, 16)).to_dict())
    return save_model(model, info, tmp_path_factory.mktemp("model") / "tiny.safetensors")


@pytest.fixture(scope="session")
def silent_model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Like ``tiny_model_file``, but its head's bias is set strongly to background: it predicts no lesion voxel."""
    import torch

    from LRPSegmentationLib.net.model import UNet3D, UNetConfig
    from LRPSegmentationLib.net.preprocess import PreprocessSpec
    from LRPSegmentationLib.net.weights import ModelInfo, save_model

    torch.manual_seed(3)
    model = UNet3D(UNetConfig(base_width=2)).eval()
    with torch.no_grad():
        model.head[0].bias.copy_(torch.tensor([20.0, -20.0]))
    info = ModelInfo(config=model.config.to_dict(), preprocess=PreprocessSpec(size=(8, 16, 16)).to_dict())
    return save_model(model, info, tmp_path_factory.mktemp("silent") / "silent.safetensors")


@pytest.fixture(scope="session")
def tiny_case_args(synthetic_case_dir: Path, tiny_model_file: Path) -> list[str]:
    """The synthetic case and the tiny model as ``lrpseg`` arguments (CPU, no progress bar, probability target):
    what the replay fixtures run real child commands with."""
    return [str(synthetic_case_dir), "--model", str(tiny_model_file), "--device", "cpu", "--progress", "none",
            "--target", "probability"]
