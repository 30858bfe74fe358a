"""The 3D U-Net: the paper's architecture, any grid size, gradients through the skips."""

import pytest
import torch

from LRPSegmentationLib.net.model import Concatenate, UNet3D, UNetConfig, count_parameters


def test_paper_width_has_the_papers_parameter_count():
    assert count_parameters(UNet3D(UNetConfig(base_width=32))) == pytest.approx(19.1e6, rel=0.005)


def test_paper_widths_and_layers():
    model = UNet3D(UNetConfig(base_width=32))
    convs = [m for m in model.encoders[0] if isinstance(m, torch.nn.Conv3d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [(6, 32, (3, 3, 3)), (32, 64, (3, 3, 3))]
    assert model.decoders[2][0].in_channels == 256 + 512
    assert all(up.bias is None and up.stride == (2, 2, 2) for up in model.ups)
    assert isinstance(model.encoders[0][2], torch.nn.LeakyReLU) and model.encoders[0][2].negative_slope == 0.2
    assert len(model.head) == 1 and model.head[0].out_channels == 2


def test_paper_head_option_adds_batchnorm_relu():
    head = UNet3D(UNetConfig(base_width=4, paper_head=True)).head
    assert [type(m) for m in head] == [torch.nn.Conv3d, torch.nn.BatchNorm3d, torch.nn.ReLU]


@pytest.mark.parametrize("shape", [(19, 48, 48), (24, 40, 36), (25, 17, 30), (1, 9, 9)])
def test_any_grid_size_gives_logits_of_the_same_size(shape):
    model = UNet3D(UNetConfig(base_width=2)).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 6, *shape))
    assert out.shape == (1, 2, *shape)


def test_gradients_flow_through_the_skips():
    torch.manual_seed(0)
    model = UNet3D(UNetConfig(base_width=2))
    captured = {}
    model.concats[0].register_full_backward_hook(lambda m, gin, gout: captured.update(skip=gin[0]))
    model(torch.rand(1, 6, 8, 16, 16)).sum().backward()
    assert captured["skip"] is not None and captured["skip"].abs().sum() > 0
    # the first encoder's weights receive gradient both through the skip and the deep path
    assert model.encoders[0][0].weight.grad.abs().sum() > 0


def test_every_layer_is_its_own_module_instance():
    model = UNet3D(UNetConfig(base_width=2))
    modules = [m for m in model.modules() if not list(m.children())]
    assert len({id(m) for m in modules}) == len(modules)
    assert sum(isinstance(m, Concatenate) for m in modules) == 3


def test_bad_input_shape_is_explained():
    with pytest.raises(ValueError, match=r"\(N, 6, D, H, W\)"):
        UNet3D(UNetConfig(base_width=2))(torch.rand(1, 5, 8, 8, 8))


def test_config_round_trip_and_unknown_keys():
    config = UNetConfig(base_width=8, paper_head=True)
    assert UNetConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="Unknown U-Net config keys"):
        UNetConfig.from_dict({**config.to_dict(), "dropout": 0.1})
