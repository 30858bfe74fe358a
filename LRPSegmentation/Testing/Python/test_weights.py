"""Model files load safely: safetensors + metadata; pickles, corrupt, truncated and mismatched files are refused."""

import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

from LRPSegmentationLib.net.model import UNet3D, UNetConfig
from LRPSegmentationLib.net.preprocess import PreprocessSpec
from LRPSegmentationLib.net.weights import (
    ModelInfo,
    WeightsError,
    bundled_model_path,
    load_model,
    read_metadata,
    save_model,
)


def tiny_model(**config) -> UNet3D:
    torch.manual_seed(0)
    return UNet3D(UNetConfig(base_width=2, **config)).eval()


def tiny_info(model: UNet3D) -> ModelInfo:
    return ModelInfo(config=model.config.to_dict(), preprocess=PreprocessSpec(size=(8, 16, 16)).to_dict(),
                     training={"epochs": 1}, metrics={"dice_validation": 0.5})


@pytest.fixture
def model_file(tmp_path):
    model = tiny_model()
    return model, save_model(model, tiny_info(model), tmp_path / "tiny.safetensors")


def test_round_trip_rebuilds_the_same_network(model_file):
    model, path = model_file
    loaded = load_model(path)
    x = torch.rand(1, 6, 8, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), loaded.model(x))
    assert loaded.info.metrics["dice_validation"] == 0.5
    assert len(loaded.sha256) == 64 and not loaded.model.training


def test_metadata_reads_without_loading_tensors(model_file):
    _, path = model_file
    info = read_metadata(path)
    assert info.config["base_width"] == 2 and info.modalities[0] == "ADC"


def test_no_partial_file_is_left(model_file, tmp_path):
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.safetensors"]


def test_pickle_checkpoint_is_refused_without_being_executed(tmp_path):
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (marker.touch, ())

    for name, writer in (("zip.pt", lambda p: torch.save({"x": Payload()}, p)),
                         ("raw.pkl", lambda p: p.write_bytes(pickle.dumps(Payload())))):
        path = tmp_path / name
        writer(path)
        marker.unlink(missing_ok=True)
        with pytest.raises(WeightsError, match="pickle-based.*weights_only=True"):
            load_model(path)
        assert not marker.exists()


def test_truncated_file_is_refused(model_file, tmp_path):
    _, path = model_file
    data = path.read_bytes()
    for cut in (4, 200, len(data) - 10):
        broken = tmp_path / f"cut{cut}.safetensors"
        broken.write_bytes(data[:cut])
        with pytest.raises(WeightsError, match=str(broken.name)):
            load_model(broken)


def test_corrupt_header_and_missing_file(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes((20).to_bytes(8, "little") + b"{not json at all....")
    with pytest.raises(WeightsError, match="corrupt safetensors header"):
        read_metadata(bad)
    with pytest.raises(WeightsError, match="not found"):
        load_model(tmp_path / "absent.safetensors")


def test_safetensors_without_our_metadata(tmp_path):
    path = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(WeightsError, match="without LRPSegmentation metadata"):
        load_model(path)


def test_wrong_channel_count_is_refused(tmp_path):
    model = tiny_model(in_channels=4)
    path = save_model(model, tiny_info(model), tmp_path / "four.safetensors")
    with pytest.raises(WeightsError, match="expects 4 input channels"):
        load_model(path)


def test_tensors_not_matching_the_stated_architecture(tmp_path):
    model = tiny_model()
    info = tiny_info(model)
    info.config = {**info.config, "base_width": 4}
    path = save_model(model, info, tmp_path / "mismatch.safetensors")
    with pytest.raises(WeightsError, match="do not match the architecture.*wrong shape"):
        load_model(path)


def test_unknown_architecture_key(tmp_path):
    model = tiny_model()
    info = tiny_info(model)
    info.config = {**info.config, "attention": True}
    path = save_model(model, info, tmp_path / "odd.safetensors")
    with pytest.raises(WeightsError, match="unusable architecture"):
        load_model(path)


def test_bundled_model_is_small_and_documented():
    path = bundled_model_path()
    assert path.is_file(), "the bundled model is missing from Resources/Models"
    assert path.stat().st_size <= 10 * 1024 * 1024
    info = read_metadata(path)
    assert info.training["synthetic"] is True
    assert (path.parent / "MODEL_CARD.md").is_file()
    assert json.loads(info.to_json())["format"] == "lrpseg-weights"
