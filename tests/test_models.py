"""dmcore.models: shapes, sizes, and the by-name constructor."""

import pytest
import torch

from dmcore import models


def test_mnist1d_cnn_shapes_and_size():
    model = models.MNIST1DCNN()
    assert model(torch.randn(7, 40)).shape == (7, 10) and model(torch.randn(7, 1, 40)).shape == (7, 10)
    assert sum(p.numel() for p in model.parameters()) == 5360
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules())  # no running statistics


def test_mnist1d_cnn_convolutions_are_conv1d():
    model = models.MNIST1DCNN().double()
    h = torch.randn(6, 40, 1, dtype=torch.float64)
    for conv in model.convs:
        ours = models.MNIST1DCNN.conv(h, conv)
        theirs = torch.nn.functional.conv1d(h.transpose(1, 2), conv.weight, conv.bias, conv.stride, conv.padding)
        torch.testing.assert_close(ours, theirs.transpose(1, 2), rtol=1e-12, atol=1e-12)
        h = torch.randn(6, ours.shape[1], conv.out_channels, dtype=torch.float64)


def test_mlp():
    assert models.MLP(64, 10)(torch.randn(5, 8, 8)).shape == (5, 10)


@pytest.mark.parametrize("depth, blocks, parameters", [(20, 9, 269_722), (44, 21, 658_586), (56, 27, 853_018)])
def test_cifar_resnets_are_he_et_al(depth, blocks, parameters):
    model = models.build(f"resnet{depth}", 10)
    assert len(model.blocks) == blocks
    assert sum(p.numel() for p in model.parameters()) == parameters
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_build_names_the_problem():
    with pytest.raises(ValueError, match="unknown model 'vgg'"):
        models.build("vgg", 10)
    with pytest.raises(ValueError, match="needs in_features"):
        models.build("mlp", 10)
    with pytest.raises(ValueError, match="depth 6n \\+ 2"):
        models.CifarResNet(21)
