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


def test_mlp_forward_stacked_equals_each_copy():
    """R MLPs at once (batched matrix products) give each copy's logits and parameter gradients."""
    torch.manual_seed(0)
    nets = [models.MLP(12, 4, hidden=(9, 7)).double() for _ in range(3)]
    for net in nets:                                   # LayerNorm affine away from (1, 0)
        for m in net.net:
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.data.normal_(), m.bias.data.normal_()
    params, _ = torch.func.stack_module_state(nets)
    params = {k: v.detach().requires_grad_() for k, v in params.items()}
    x = torch.randn(3, 5, 3, 4, dtype=torch.float64)
    upstream = torch.randn(3, 5, 4, dtype=torch.float64)
    out = nets[0].forward_stacked(params, x)
    (out * upstream).sum().backward()
    for r, net in enumerate(nets):
        alone = net(x[r])
        torch.testing.assert_close(out[r], alone, rtol=1e-12, atol=1e-12)
        (alone * upstream[r]).sum().backward()
        for name, p in net.named_parameters():
            torch.testing.assert_close(params[name].grad[r], p.grad, rtol=1e-12, atol=1e-12, msg=name)


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


def _stacked_copies(runs, dtype, seed=0):
    torch.manual_seed(seed)
    nets = [models.MNIST1DCNN().to(dtype) for _ in range(runs)]
    for net in nets:                                   # LayerNorm affine away from (1, 0): negative gains too
        for p in net.norms.parameters():
            p.data.normal_()
    params, _ = torch.func.stack_module_state(nets)
    return nets, {k: v.detach().requires_grad_() for k, v in params.items()}


@pytest.mark.parametrize("dtype, kernel", [(torch.float64, "1"), (torch.float32, "1"), (torch.float32, "0")],
                         ids=["float64-pytorch", "float32-kernel", "float32-pytorch"])
def test_forward_stacked_equals_each_copy(dtype, kernel, monkeypatch):
    """R copies at once give each copy's logits and each copy's parameter gradients, through the
    compiled kernel (float32 on CPU) and through PyTorch ops."""
    monkeypatch.setenv("DMCORE_CPU_KERNEL", kernel)
    nets, params = _stacked_copies(3, dtype)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 7, 40, generator=gen, dtype=torch.float64).to(dtype)
    upstream = torch.randn(3, 7, 10, generator=gen, dtype=torch.float64).to(dtype)
    out = nets[0].forward_stacked(params, x)
    (out * upstream).sum().backward()
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=2e-5, atol=2e-5)
    for r, net in enumerate(nets):
        alone = net(x[r])
        torch.testing.assert_close(out[r], alone, **tol)
        (alone * upstream[r]).sum().backward()
        for name, p in net.named_parameters():
            torch.testing.assert_close(params[name].grad[r], p.grad, **tol, msg=name)


def test_stacked_layer_kernel_against_float64():
    """The compiled convolution / LayerNorm + ReLU layer against PyTorch ops in float64, input
    gradient included, for every layer shape of the CNN, and for widths other than the 25 for which the
    kernel has its own compiled loops."""
    from dmcore import kernels
    lib = kernels.conv1d()
    if lib is None:
        pytest.skip("no C compiler: the PyTorch path is the one in use")
    gen = torch.Generator().manual_seed(2)
    for (c_in, length, k, c_out) in [(1, 40, 5, 25), (25, 19, 3, 25), (25, 10, 3, 25), (1, 40, 5, 7), (7, 19, 3, 32), (33, 12, 4, 40)]:
        h = torch.randn(4, 6, length, c_in, generator=gen, dtype=torch.float64, requires_grad=True)
        weight = torch.randn(4, c_out, c_in, k, generator=gen, dtype=torch.float64, requires_grad=True)
        bias, gamma, beta = (torch.randn(4, c_out, generator=gen, dtype=torch.float64, requires_grad=True)
                             for _ in range(3))
        inputs = (h, weight, bias, gamma, beta)
        ref = models._conv_layer_norm_relu(*inputs, (k, 2, 1))
        upstream = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
        ref_grads = torch.autograd.grad((ref * upstream).sum(), inputs)
        f32 = [t.detach().float().requires_grad_() for t in inputs]
        ours = models._ConvLayerNormReLU.apply(*f32, (k, 2, 1), lib)
        grads = torch.autograd.grad((ours * upstream.float()).sum(), f32)
        torch.testing.assert_close(ours.double(), ref, rtol=1e-5, atol=1e-5)
        for name, a, b in zip(["h", "weight", "bias", "gamma", "beta"], grads, ref_grads):
            torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-4, msg=name)
