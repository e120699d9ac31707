"""dmcore.lab.models: shapes, sizes, and the by-name constructor."""

import pytest
import torch

from dmcore.kernels.cnn1d_cpu import CNNKernel
from dmcore.lab import models


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
    _assert_stacked_is_each_copy(nets, params, x, upstream, rtol=1e-12, atol=1e-12)


def _assert_stacked_is_each_copy(nets, params, x, upstream, **tolerance):
    """``forward_stacked`` of the copies ``nets`` (their stacked ``params``) on ``x (R, B, ...)`` gives each
    copy's logits and, for the upstream gradient ``upstream``, each copy's parameter gradients."""
    out = nets[0].forward_stacked(params, x)
    (out * upstream).sum().backward()
    for r, net in enumerate(nets):
        alone = net(x[r])
        torch.testing.assert_close(out[r], alone, **tolerance)
        (alone * upstream[r]).sum().backward()
        for name, p in net.named_parameters():
            torch.testing.assert_close(params[name].grad[r], p.grad, **tolerance, msg=name)


@pytest.mark.parametrize("depth, blocks, parameters", [(20, 9, 269_722), (44, 21, 658_586), (56, 27, 853_018)])
def test_cifar_resnets_are_he_et_al(depth, blocks, parameters):
    model = models.build(f"resnet{depth}", 10)
    assert len(model.blocks) == blocks
    assert sum(p.numel() for p in model.parameters()) == parameters
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_build_names_the_problem():
    with pytest.raises(ValueError, match="unknown model .vgg.; expected mnist1d_cnn, mnist1d_cnn_w<channels>, fashion_cnn"):
        models.build("vgg", 10)
    with pytest.raises(ValueError, match="needs in_features"):
        models.build("mlp", 10)
    with pytest.raises(ValueError, match="depth 6n \\+ 2"):
        models.CifarResNet(21)


def _stacked_copies(runs, dtype, seed=0, **architecture):
    """``runs`` MNIST-1D CNNs (``architecture``: their arguments) from ``torch.manual_seed(seed)``, with
    LayerNorm gains and biases drawn too, and their stacked parameters, each requiring grad."""
    torch.manual_seed(seed)
    nets = [models.MNIST1DCNN(**architecture).to(dtype) for _ in range(runs)]
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
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=2e-5, atol=2e-5)
    _assert_stacked_is_each_copy(nets, params, x, upstream, **tol)


CNN_SHAPES = [   # (channels, classes, length): the book's CNN, narrow and odd, the widest, a short input
    (25, 10, 40), (7, 3, 23), (32, 32, 64), (5, 17, 9)]


@pytest.mark.parametrize("channels, classes, length", CNN_SHAPES)
@pytest.mark.parametrize("runs, batch, shared", [(1, 1, False), (3, 7, False), (2, 9, False), (2, 20, True)])
def test_cnn_kernel_against_float64(channels, classes, length, runs, batch, shared):
    """The compiled whole-network kernel (float32) against the PyTorch path in float64: logits and the
    gradient of every parameter, for batches that fill a vector of 8 examples partly, once or twice and
    a half, and for inputs shared by every copy (as in evaluation)."""
    from dmcore import kernels
    if kernels.cnn1d() is None:
        pytest.skip("no C compiler: the PyTorch path is the one in use")
    nets, p32 = _stacked_copies(runs, torch.float32, seed=3, num_classes=classes, channels=channels, length=length)
    p64 = {k: v.detach().double().requires_grad_() for k, v in p32.items()}
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(batch, length, generator=gen).expand(runs, batch, length) if shared else \
        torch.randn(runs, batch, length, generator=gen)
    upstream = torch.randn(runs, batch, classes, generator=gen)
    assert CNNKernel.get(nets[0], x) is not None
    ours = nets[0].forward_stacked(p32, x)
    (ours * upstream).sum().backward()
    ref = nets[0].forward_stacked(p64, x.double())
    (ref * upstream.double()).sum().backward()
    torch.testing.assert_close(ours.double(), ref, rtol=1e-5, atol=1e-5)
    for name in p32:
        scale = p64[name].grad.abs().max().item()
        torch.testing.assert_close(p32[name].grad.double(), p64[name].grad, rtol=1e-5, atol=1e-5 * scale, msg=name)
    with torch.no_grad():                                   # evaluation: the same logits, bit for bit
        assert torch.equal(nets[0].forward_stacked(p32, x), ours.detach())


def test_cnn_kernel_copies_and_threads_do_not_change_a_copy(monkeypatch):
    """A copy's logits and gradients are the same bits alone, among other copies, and on 1 or 2 threads."""
    monkeypatch.setenv("DMCORE_CPU_KERNEL", "1")          # the kernel's property, whatever the suite runs under
    torch.manual_seed(5)
    nets, params = _stacked_copies(4, torch.float32)
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(4, 100, 40, generator=gen)
    upstream = torch.randn(4, 100, 10, generator=gen)

    def run(selection, threads):
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            chosen = {k: v.detach()[selection].clone().requires_grad_() for k, v in params.items()}
            out = nets[0].forward_stacked(chosen, x[selection])
            (out * upstream[selection]).sum().backward()
            return out.detach(), {k: v.grad for k, v in chosen.items()}
        finally:
            torch.set_num_threads(previous)

    together, grads = run([0, 1, 2, 3], 2)
    for threads in (1, 2):
        for r in range(4):
            alone, alone_grads = run([r], threads)
            assert torch.equal(alone[0], together[r])
            assert all(torch.equal(alone_grads[k][0], grads[k][r]) for k in grads)


def test_cnn_without_layer_norm_takes_the_pytorch_path():
    nets, params = _stacked_copies(2, torch.float32)
    plain = models.MNIST1DCNN(norm=False)
    x = torch.randn(2, 5, 40)
    assert CNNKernel.get(plain, x) is None and CNNKernel.get(nets[0], x.double()) is None
    params = {k: v for k, v in params.items() if not k.startswith("norms")}
    out = plain.forward_stacked(params, x)
    for r, net in enumerate(nets):
        solo = models.MNIST1DCNN(norm=False)
        solo.load_state_dict({k: v[r] for k, v in params.items()})
        torch.testing.assert_close(out[r], solo(x[r]))


def test_the_cnn_width_is_part_of_its_name():
    wide = models.build("mnist1d_cnn_w48", 10)
    assert wide.convs[1].out_channels == 48 and models.build("mnist1d_cnn", 10).convs[1].out_channels == 25
    with pytest.raises(ValueError, match="unknown model 'mnist1d_cnn_w0'"):
        models.build("mnist1d_cnn_w0", 10)


# --- the Fashion-MNIST CNN ---------------------------------------------------------------------------

FASHION_LAYERS = {   # (kernel, stride, padding) per convolution: the default; the 3x3 stride-2 stack; odd ones
    "patchify": ((4, 4, 0), (3, 2, 1), (3, 1, 1)),
    "3x3-stride2": ((3, 2, 1), (3, 2, 1), (3, 2, 1)),
    "5x5-then-odd": ((5, 2, 2), (2, 1, 0), (3, 3, 1)),
}


def test_fashion_cnn_shapes_and_size():
    model = models.FashionCNN()
    assert model(torch.randn(7, 1, 28, 28)).shape == (7, 10) and model(torch.randn(7, 784)).shape == (7, 10)
    assert sum(p.numel() for p in model.parameters()) == 7578
    assert [c.kernel_size + c.stride + c.padding for c in model.convs] == [(4, 4, 4, 4, 0, 0), (3, 3, 2, 2, 1, 1),
                                                                            (3, 3, 1, 1, 1, 1)]
    assert model.out_size == 4 and model.linear.in_features == 16 * 4 * 4
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # no running statistics
    for bad in (torch.randn(7, 1, 28, 27), torch.randn(7)):
        with pytest.raises(ValueError, match=r"FashionCNN takes images \(\.\.\., 1, 28, 28\) or \(\.\.\., 784\)"):
            model(bad)
    with pytest.raises(ValueError, match="got shape \\(3, 784\\)"):
        model.forward_stacked(dict(model.named_parameters()), torch.randn(3, 784))    # no copy dimension
    with pytest.raises(ValueError, match="leave nothing of a 28x28 image"):
        models.FashionCNN(layers=((7, 7, 0), (3, 2, 0), (3, 2, 0)))


def _fashion_copies(runs, dtype, layers=FASHION_LAYERS["patchify"], channels=5, classes=10, seed=0):
    """``runs`` Fashion-MNIST CNNs from ``torch.manual_seed(seed)``, LayerNorm gains and biases drawn too, and
    their stacked parameters, each requiring grad."""
    torch.manual_seed(seed)
    nets = [models.FashionCNN(classes, channels=channels, layers=layers).to(dtype) for _ in range(runs)]
    for net in nets:                                   # LayerNorm affine away from (1, 0): negative gains too
        for p in net.norms.parameters():
            p.data.normal_()
    params, _ = torch.func.stack_module_state(nets)
    return nets, {k: v.detach().requires_grad_() for k, v in params.items()}


@pytest.mark.parametrize("layers", FASHION_LAYERS.values(), ids=FASHION_LAYERS.keys())
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_fashion_cnn_forward_stacked_equals_each_copy(layers, dtype):
    """R copies at once (unfolds and batched matrix products) give each copy's logits and, by autograd,
    each copy's parameter gradients as its ``forward`` of ``nn.Conv2d`` layers does: float64 to 1e-10,
    float32 to 1e-4 relative and 2e-5 of the largest gradient entry (measured: at most 5e-6)."""
    nets, params = _fashion_copies(3, dtype, layers, classes=7)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 6, 1, 28, 28, generator=gen, dtype=torch.float64).to(dtype)
    upstream = torch.randn(3, 6, 7, generator=gen, dtype=torch.float64).to(dtype)
    if dtype == torch.float64:
        _assert_stacked_is_each_copy(nets, params, x, upstream, rtol=1e-10, atol=1e-10)
        return
    out = nets[0].forward_stacked(params, x)
    (out * upstream).sum().backward()
    for r, net in enumerate(nets):
        alone = net(x[r])
        torch.testing.assert_close(out[r], alone, rtol=1e-4, atol=2e-5 * alone.abs().max().item())
        (alone * upstream[r]).sum().backward()
        for name, p in net.named_parameters():
            scale = p.grad.abs().max().item()
            torch.testing.assert_close(params[name].grad[r], p.grad, rtol=1e-4, atol=2e-5 * scale, msg=name)


def test_fashion_cnn_forward_stacked_flat_shared_input_and_input_gradient():
    """Flat ``(R, B, 784)`` input; an input expanded over the copies (evaluation: unfolded once) gives the
    logits of the same input repeated; and the gradient with respect to the input is each copy's."""
    nets, params = _fashion_copies(3, torch.float64, FASHION_LAYERS["3x3-stride2"])
    x = torch.randn(5, 1, 28, 28, dtype=torch.float64)
    with torch.no_grad():
        shared = nets[0].forward_stacked(params, x.expand(3, *x.shape))
        repeated = nets[0].forward_stacked(params, x.repeat(3, 1, 1, 1, 1).reshape(3, 5, 784))
    assert torch.equal(shared, repeated)
    for r, net in enumerate(nets):
        torch.testing.assert_close(shared[r], net(x), rtol=1e-10, atol=1e-10)
    fixed = {k: v.detach() for k, v in params.items()}
    xs = torch.randn(3, 4, 1, 28, 28, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(3, 4, 10, dtype=torch.float64)
    (nets[0].forward_stacked(fixed, xs) * upstream).sum().backward()
    for r, net in enumerate(nets):
        alone = xs.detach()[r].clone().requires_grad_()
        (net(alone) * upstream[r]).sum().backward()
        torch.testing.assert_close(xs.grad[r], alone.grad, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("size, spec", [(5, (3, 2, 1)), (6, (4, 4, 0)), (4, (3, 1, 1)), (7, (2, 3, 0))])
def test_patches_gradcheck(size, spec):
    """The unfold of a 2-D convolution and its hand-written backward (col2im), against finite differences."""
    h = torch.randn(2, 3, size, size + 1, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: models._Patches.apply(t, *spec), (h,))


def test_fashion_cnn_by_name():
    model = models.build("fashion_cnn", 10)
    assert isinstance(model, models.FashionCNN) and model.convs[1].out_channels == 16
    wide = models.build("fashion_cnn_w24", 3, in_features=784)      # in_features, which train passes, is ignored
    assert wide.convs[2].out_channels == 24 and wide.linear.out_features == 3
    with pytest.raises(ValueError, match="unknown model 'fashion_cnn_w0'.*fashion_cnn, fashion_cnn_w<channels>"):
        models.build("fashion_cnn_w0", 10)


def test_fashion_cnn_trains_through_train_runs():
    """``dmcore.lab.train`` trains the model through its ``forward_stacked`` (a few hundred random 28x28 images,
    a handful of steps): runs trained together equal runs trained alone, in float64."""
    from dmcore.lab import data, train

    gen = torch.Generator().manual_seed(0)
    tiny = data.Dataset("tiny-28x28", torch.randn(200, 1, 28, 28, generator=gen), torch.randint(0, 10, (200,), generator=gen),
                        torch.randn(50, 1, 28, 28, generator=gen), torch.randint(0, 10, (50,), generator=gen), 10)
    protocol = train.Protocol(steps=4, batch_size=50, eval_every=2)
    runs = [train.Run("cce", "symmetric", 0.2, 0), train.Run("dm", "symmetric", 0.4, 1)]
    together = train.train_runs("fashion_cnn", tiny, runs, protocol, dtype=torch.float64)
    for run, batched in zip(runs, together):
        (alone,) = train.train_runs("fashion_cnn", tiny, [run], protocol, dtype=torch.float64)
        assert [h["step"] for h in batched["history"]] == [0, 2, 4] and batched["model"] == "fashion_cnn"
        for got, expected in zip(batched["history"], alone["history"]):
            for key, value in got.items():
                assert value == pytest.approx(expected[key], rel=1e-9, abs=1e-12, nan_ok=True), (run, key)
