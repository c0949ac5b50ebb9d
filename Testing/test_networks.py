"""Network shapes for the paper's configurations, initialisation, and the 2D geometry."""

import pytest

from conftest import require_torch

torch = require_torch()

from FemurSegLib.networks import SoftmaxHead, UNet2D, UNet3D, build_network, default_pooling


@pytest.mark.parametrize("features,levels", [(16, 3), (16, 4), (32, 3), (32, 4)])
@pytest.mark.slow
def test_unet3d_paper_configs_keep_shape(features, levels):
    net = UNet3D(1, 2, features, levels)
    d = 2 ** (levels - 1)
    x = torch.zeros(1, 1, d, 2 * d, d)
    with torch.no_grad():
        y = net(x)
    assert y.shape == (1, 2, d, 2 * d, d)
    # feature maps double per level
    assert net.down[-1][0].out_channels == features * 2 ** (levels - 1)


def test_unet3d_anisotropic_pooling_divisor_and_shape():
    net = UNet3D(1, 2, 4, 4, pooling=[[1, 2, 2], [1, 2, 2], [2, 2, 2]])
    assert net.divisor == (2, 8, 8)
    with torch.no_grad():
        y = net(torch.zeros(2, 1, 4, 16, 24))
    assert y.shape == (2, 2, 4, 16, 24)


@pytest.mark.parametrize("features,levels,size,out", [
    (64, 4, 188, 100),   # 3 poolings: 188 -> 100
    (64, 3, 92, 52),     # 2 poolings
    pytest.param(64, 5, 572, 388, marks=pytest.mark.slow),  # the original U-Net paper's numbers
])
def test_unet2d_valid_output_size(features, levels, size, out):
    net = UNet2D(3, 2, features, levels)
    assert net.output_size(size) == out


@pytest.mark.parametrize("levels", [3, 4])
def test_unet2d_forward_matches_output_size(levels):
    net = UNet2D(3, 2, 4, levels)  # small width: the shape logic is what matters
    size = net.valid_input_size(20)
    with torch.no_grad():
        y = net(torch.zeros(1, 3, size, size))
    assert y.shape == (1, 2, net.output_size(size), net.output_size(size))


def test_unet2d_rejects_invalid_size():
    with pytest.raises(ValueError, match="not valid"):
        UNet2D(3, 2, 4, 4).output_size(101)


def test_xavier_init_and_bias():
    net = UNet3D(1, 2, 4, 2)
    conv = net.down[0][0]
    assert torch.all(conv.bias == 0.1)
    fan_in, fan_out = 1 * 27, 4 * 27
    bound = (6 / (fan_in + fan_out)) ** 0.5
    assert conv.weight.abs().max() <= bound + 1e-6
    assert conv.weight.std() > bound / 4  # not all zero / not a degenerate init


def test_softmax_head_sums_to_one():
    net = SoftmaxHead(UNet3D(1, 2, 4, 2))
    with torch.no_grad():
        p = net(torch.rand(1, 1, 2, 4, 4))
    assert torch.allclose(p.sum(1), torch.ones(1, 2, 4, 4), atol=1e-6)


def test_build_network_validates():
    assert isinstance(build_network({"type": "UNet2D", "features": 4, "levels": 2}), UNet2D)
    with pytest.raises(ValueError, match="unknown architecture"):
        build_network({"type": "VNet"})
    with pytest.raises(ValueError, match="unknown UNet3D parameters: depth"):
        build_network({"type": "UNet3D", "depth": 3})
    with pytest.raises(ValueError, match="pooling needs 3 entries"):
        UNet3D(levels=4, pooling=[[2, 2, 2]])


def test_default_pooling_anisotropic():
    assert default_pooling(4, anisotropic=True) == [(1, 2, 2), (1, 2, 2), (2, 2, 2)]
    assert default_pooling(3) == [(2, 2, 2), (2, 2, 2)]
