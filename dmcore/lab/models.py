"""Small networks for the experiments: the MNIST-1D CNN, a Fashion-MNIST CNN, an MLP, and CIFAR ResNet-20/44/56.

The MNIST-1D CNN is Greydanus's (*Scaling down deep learning*, 2020): three 1-D convolutions of 25
channels and a linear layer, here with a LayerNorm over the channels after each convolution. The
EDF losses keep the total length of their gradient fixed (derivative normalisation), so their
implied objective has no minimum (chapter "Derivative manipulation") and only weight decay and
normalisation layers hold the logits back. LayerNorm rather than BatchNorm keeps no running
statistics, so many copies of the network can be trained together with ``torch.func``
(:mod:`dmcore.lab.train`).

:meth:`MNIST1DCNN.forward_stacked` computes ``R`` copies at once from stacked parameters (as
``torch.func.stack_module_state`` makes them), each on its own inputs: on CPU in float32 the whole
network, forward and backward, in a compiled kernel (:mod:`dmcore.kernels.cnn1d_cpu`) that carries each
example through every layer in cache; elsewhere as batched matrix products in PyTorch ops.

:class:`FashionCNN` is a 2-D CNN of the same make for Fashion-MNIST's 28x28 images (three convolutions
with a LayerNorm over the channels after each, and a linear layer), whose
:meth:`~FashionCNN.forward_stacked` computes ``R`` copies as unfolds and batched matrix products.

The CIFAR ResNets are those of He et al. (CVPR 2016, section 4.2): 3 stages of ``n`` basic blocks
with 16, 32, 64 channels and identity shortcuts padded with zeros ("option A"), depth ``6n + 2``.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..kernels.cnn1d_cpu import CNN_PARAMS, CNNKernel, StackedCNN

__all__ = ["MNIST1DCNN", "FashionCNN", "MLP", "ByteMLP", "CifarResNet", "resnet20", "resnet44", "resnet56", "build"]


class MNIST1DCNN(nn.Module):
    """Input ``(N, 40)`` or ``(N, 1, 40)``, output logits ``(N, num_classes)``; 5,360 parameters.

    Each convolution is computed channels-last as an unfold and a matrix product, followed by a
    LayerNorm over the channels and a ReLU. The parameters are those of ``nn.Conv1d`` (same shapes,
    same initialisation), and the result is the convolution's; written this way, ``torch.func.vmap``
    over many copies turns every layer into one batched matrix product, which on CPU is several
    times faster than the grouped convolutions that ``vmap`` makes of ``nn.Conv1d``.
    """

    def __init__(self, num_classes: int = 10, channels: int = 25, length: int = 40, norm: bool = True):
        super().__init__()
        self.length = length
        self.convs = nn.ModuleList([nn.Conv1d(1, channels, 5, stride=2, padding=1),
                                    nn.Conv1d(channels, channels, 3, stride=2, padding=1),
                                    nn.Conv1d(channels, channels, 3, stride=2, padding=1)])
        self.norms = nn.ModuleList([nn.LayerNorm(channels) if norm else nn.Identity() for _ in self.convs])
        out = length
        for conv in self.convs:
            out = (out + 2 * conv.padding[0] - conv.kernel_size[0]) // conv.stride[0] + 1
        self.linear = nn.Linear(channels * out, num_classes)

    @staticmethod
    def conv(h: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
        """``conv`` applied to channels-last ``h (N, L, C_in)``: ``(N, L_out, C_out)``."""
        k, stride, pad = conv.kernel_size[0], conv.stride[0], conv.padding[0]
        cols = F.pad(h, (0, 0, pad, pad)).unfold(1, k, stride)          # (N, L_out, C_in, k)
        rows = cols.reshape(-1, cols.shape[2] * k)                       # one row per output position
        out = F.linear(rows, conv.weight.reshape(conv.out_channels, -1), conv.bias)
        return out.view(cols.shape[0], cols.shape[1], conv.out_channels)

    def forward(self, x):
        h = x.reshape(x.shape[0], self.length, 1)
        for conv, norm in zip(self.convs, self.norms):
            h = F.relu(norm(self.conv(h, conv)))
        return self.linear(h.flatten(1))

    def forward_stacked(self, params: dict, x: torch.Tensor) -> torch.Tensor:
        """``R`` copies at once: ``params`` as from ``stack_module_state`` (each ``(R, *shape)``),
        ``x (R, B, 40)``, one batch per copy (an ``expand``-ed ``x`` is read once for all copies);
        returns logits ``(R, B, num_classes)``. Equals ``forward`` of each copy on its batch (tested);
        ``self`` supplies only the architecture. On CPU in float32 the whole network, forward and
        backward, runs in :mod:`dmcore.kernels.cnn1d_cpu` (:class:`StackedCNN`); elsewhere, and where
        the input itself needs a gradient, in PyTorch ops (:func:`_conv_layer_norm_relu`)."""
        kernel = CNNKernel.get(self, x)
        if kernel is not None:
            flat = [params[name] for name in CNN_PARAMS]
            if torch.is_grad_enabled() and any(p.requires_grad for p in flat):
                return StackedCNN.apply(x, kernel, *flat)
            with torch.no_grad():
                return kernel.forward(x, flat)[0]
        runs, batch = x.shape[0], x.shape[1]
        h = x.reshape(runs, batch, self.length, 1)
        for i, conv in enumerate(self.convs):
            spec = (conv.kernel_size[0], conv.stride[0], conv.padding[0])
            h = _conv_layer_norm_relu(h, params[f"convs.{i}.weight"], params[f"convs.{i}.bias"],
                                      params.get(f"norms.{i}.weight"), params.get(f"norms.{i}.bias"), spec)
        feats = h.reshape(runs, batch, -1)
        return torch.baddbmm(params["linear.bias"].unsqueeze(1), feats, params["linear.weight"].transpose(1, 2))


def _conv_layer_norm_relu(h, weight, bias, gamma, beta, spec):
    """R stacked ``relu(LayerNorm(conv1d(h)) * gamma + beta)`` layers in PyTorch ops, the reference for the
    compiled kernel: ``h (R, B, L, Cin)`` -> ``(R, B, Lout, Cout)``; ``gamma = None``: no LayerNorm."""
    k, stride, pad = spec
    runs, batch, _, c_in = h.shape
    cols = F.pad(h, (0, 0, pad, pad)).unfold(2, k, stride)                 # (R, B, Lout, Cin, k)
    length = cols.shape[2]
    out = torch.baddbmm(bias.unsqueeze(1), cols.reshape(runs, batch * length, c_in * k),
                        weight.reshape(runs, weight.shape[1], -1).transpose(1, 2))
    if gamma is not None:
        out = F.layer_norm(out, out.shape[-1:]) * gamma.unsqueeze(1) + beta.unsqueeze(1)
    return out.relu().view(runs, batch, length, -1)


class FashionCNN(nn.Module):
    r"""Input ``(N, 1, 28, 28)`` or ``(N, 784)``, output logits ``(N, num_classes)``: a small 2-D CNN for
    Fashion-MNIST (Xiao et al., 2017; :func:`dmcore.lab.data.fashion_mnist`); 7,578 parameters with the
    default 16 channels.

    Three convolutions of ``channels`` channels, each followed by a LayerNorm over the channels at every
    position and a ReLU, then a linear layer on the flattened ``(C, H, W)`` features:

    .. math:: h_{l+1} = \mathrm{ReLU}(\mathrm{LN}_C(W_l * h_l + b_l)), \qquad z = A\,\mathrm{vec}(h_3) + a

    ``layers`` gives each convolution's ``(kernel, stride, padding)``. The default is a 4x4 stride-4
    "patchify" stem (28x28 -> 7x7, as in ConvNeXt: Liu et al., CVPR 2022), a 3x3 stride-2 convolution
    (-> 4x4) and a 3x3 stride-1 one (4x4), then the linear layer on ``16 * 4 * 4`` features. Measured on
    Fashion-MNIST (3000 steps of SGD at batch 100, clean labels, one seed) it reached the test accuracy
    of three 3x3 stride-2 convolutions (0.890 and 0.891) at about half the CPU time, since its first
    activation is 7x7 rather than 14x14 (``python -m dmcore bench --model fashion_cnn`` times it).

    LayerNorm rather than BatchNorm keeps no running statistics, so ``torch.func.stack_module_state``
    stacks the copies for :mod:`dmcore.lab.train`. The parameters are those of ``nn.Conv2d``,
    ``nn.LayerNorm`` and ``nn.Linear`` (same shapes, same initialisation), and :meth:`forward` is the plain
    PyTorch model built of them, the reference that :meth:`forward_stacked` is tested against.

    >>> FashionCNN()(torch.randn(5, 1, 28, 28)).shape
    torch.Size([5, 10])
    """

    #: :mod:`dmcore.lab.train` evaluates the copies one at a time with :meth:`forward` (measured: 0.09 s
    #: per copy per 10,000 images against 0.29 s stacked, one thread).
    evaluate_each = True

    def __init__(self, num_classes: int = 10, channels: int = 16, size: int = 28,
                 layers: tuple = ((4, 4, 0), (3, 2, 1), (3, 1, 1))):
        super().__init__()
        self.size = size
        widths = [1] + [channels] * len(layers)
        self.convs = nn.ModuleList([nn.Conv2d(c_in, c_out, k, stride=s, padding=p)
                                    for c_in, c_out, (k, s, p) in zip(widths, widths[1:], layers)])
        self.norms = nn.ModuleList([nn.LayerNorm(channels) for _ in self.convs])
        side = size
        for conv in self.convs:
            side = (side + 2 * conv.padding[0] - conv.kernel_size[0]) // conv.stride[0] + 1
        if side < 1:
            raise ValueError(f"the convolutions {layers} leave nothing of a {size}x{size} image")
        self.out_size = side
        self.linear = nn.Linear(channels * side * side, num_classes)

    def _images(self, x: torch.Tensor, leading: int) -> torch.Tensor:
        """``x`` with ``leading`` batch dimensions, each entry an image of ``size * size`` pixels, as
        ``(*batch, size, size, 1)``; a clear error for any other shape."""
        if x.dim() <= leading or math.prod(x.shape[leading:]) != self.size ** 2:
            raise ValueError(f"FashionCNN takes images (..., 1, {self.size}, {self.size}) or (..., {self.size ** 2}) "
                             f"with {leading} batch dimension(s), got shape {tuple(x.shape)}")
        return x.reshape(*x.shape[:leading], self.size, self.size, 1)

    def forward(self, x):
        """One copy, of ``nn.Conv2d`` layers on ``(N, C, H, W)``: the reference for :meth:`forward_stacked`."""
        h = self._images(x, 1).permute(0, 3, 1, 2)                     # (N, 1, size, size)
        for conv, norm in zip(self.convs, self.norms):
            h = F.relu(norm(conv(h).permute(0, 2, 3, 1))).permute(0, 3, 1, 2)   # LayerNorm over the channels
        return self.linear(h.flatten(1))

    def forward_stacked(self, params: dict, x: torch.Tensor) -> torch.Tensor:
        """``R`` copies at once: ``params`` as from ``stack_module_state`` (each ``(R, *shape)``), ``x (R, B,
        1, 28, 28)`` or ``(R, B, 784)``, one batch per copy (an ``expand``-ed ``x`` is unfolded once for all
        copies); returns logits ``(R, B, num_classes)``. Equals :meth:`forward` of each copy on its batch
        (tested); ``self`` supplies only the architecture.

        Channels-last throughout: each convolution is an unfold into one row of ``k * k * C_in`` values
        per output position (:class:`_Patches`) and one batched matrix product over the copies
        (``baddbmm``), then the LayerNorm over the last dimension (:func:`_conv2d_layer_norm_relu`).

        Unlike MNIST-1D's, this model gains little from stacking: one copy's batch of 100 images already
        makes operations large enough to amortise their overhead, and on CPU a training step of ``R``
        copies costs about what ``R`` separate models cost, while the evaluation forward pass is slower
        than ``R`` calls of :meth:`forward` (``python -m dmcore bench --model fashion_cnn`` measures both),
        so training evaluates one copy at a time (:attr:`evaluate_each`)."""
        h = self._images(x, 2)
        runs, batch = h.shape[0], h.shape[1]
        for i, conv in enumerate(self.convs):
            spec = (conv.kernel_size[0], conv.stride[0], conv.padding[0])
            h = _conv2d_layer_norm_relu(h, params[f"convs.{i}.weight"], params[f"convs.{i}.bias"],
                                        params[f"norms.{i}.weight"], params[f"norms.{i}.bias"], spec)
        # the linear weight reads forward's (C, H, W) order; h is flattened as (H, W, C)
        weight = params["linear.weight"]
        side, channels = self.out_size, self.convs[-1].out_channels
        weight = weight.view(runs, -1, channels, side, side).permute(0, 1, 3, 4, 2).reshape(weight.shape)
        return torch.baddbmm(params["linear.bias"].unsqueeze(1), h.reshape(runs, batch, -1), weight.transpose(1, 2))


class _Patches(torch.autograd.Function):
    r"""The rows of a 2-D convolution (im2col), channels-last: ``h (R, B, H, W, C)`` ->
    ``(R, B * Ho * Wo, k * k * C)``, each row the ``k x k`` window (zero padded by ``pad``) of one output
    position, ordered ``(dy, dx, c)``; ``Ho = (H + 2 pad - k) // stride + 1``, likewise ``Wo``:

    .. math:: \mathrm{rows}[(i, j), (d_y, d_x, c)] = h_{\mathrm{pad}}[s i + d_y,\ s j + d_x,\ c], \qquad
              \frac{\partial L}{\partial h_{\mathrm{pad}}[y, x, c]} = \sum_{s i + d_y = y,\ s j + d_x = x}
              \frac{\partial L}{\partial \mathrm{rows}[(i, j), (d_y, d_x, c)]}

    Forward is one copy of a strided view (its innermost ``k * C`` values contiguous); backward is the
    sum on the right (col2im) as ``k * k`` strided in-place additions, on CPU about 4 times faster than
    the backward PyTorch derives for the strided view (measured at the second layer's shapes)."""

    @staticmethod
    def forward(ctx, h, k: int, stride: int, pad: int):
        runs, batch, height, width, channels = h.shape
        padded = F.pad(h, (0, 0, pad, pad, pad, pad)) if pad else h
        view = padded.unfold(2, k, stride).unfold(3, k, stride)          # (R, B, Ho, Wo, C, k, k)
        ctx.shape, ctx.spec = h.shape, (k, stride, pad)
        ctx.out = view.shape[2:4]
        return view.permute(0, 1, 2, 3, 5, 6, 4).reshape(runs, -1, k * k * channels)

    @staticmethod
    def backward(ctx, grad):
        runs, batch, height, width, channels = ctx.shape
        k, stride, pad = ctx.spec
        out_h, out_w = ctx.out
        rows = grad.reshape(runs, batch, out_h, out_w, k, k, channels)
        padded = grad.new_zeros(runs, batch, height + 2 * pad, width + 2 * pad, channels)
        for dy in range(k):
            for dx in range(k):
                padded[:, :, dy:dy + stride * (out_h - 1) + 1:stride, dx:dx + stride * (out_w - 1) + 1:stride] += \
                    rows[:, :, :, :, dy, dx]
        return padded[:, :, pad:pad + height, pad:pad + width], None, None, None


def _conv2d_layer_norm_relu(h, weight, bias, gamma, beta, spec):
    """R stacked ``relu(LayerNorm(conv2d(h)) * gamma + beta)`` layers, channels-last: ``h (R, B, H, W, Cin)``
    -> ``(R, B, Ho, Wo, Cout)``; ``weight (R, Cout, Cin, k, k)`` as ``nn.Conv2d``'s. An ``h`` expanded over
    the copies (stride 0) is unfolded once."""
    k, stride, pad = spec
    runs, batch = h.shape[0], h.shape[1]
    if runs > 1 and h.stride(0) == 0:
        cols = _Patches.apply(h[:1], k, stride, pad).expand(runs, -1, -1)
    else:
        cols = _Patches.apply(h, k, stride, pad)
    c_out = weight.shape[1]
    kernel = weight.permute(0, 3, 4, 2, 1).reshape(runs, -1, c_out)          # rows ordered (dy, dx, c_in)
    out = torch.baddbmm(bias.unsqueeze(1), cols, kernel)
    out = torch.addcmul(beta.unsqueeze(1), F.layer_norm(out, (c_out,)), gamma.unsqueeze(1)).relu_()
    out_h, out_w = ((n + 2 * pad - k) // stride + 1 for n in h.shape[2:4])
    return out.view(runs, batch, out_h, out_w, c_out)


class MLP(nn.Module):
    """Input ``(N, features)``; hidden layers with LayerNorm and ReLU; output logits ``(N, num_classes)``."""

    def __init__(self, in_features: int, num_classes: int, hidden: tuple[int, ...] = (128, 128)):
        super().__init__()
        layers, width = [], in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.LayerNorm(h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x.flatten(1))

    def forward_stacked(self, params: dict, x: torch.Tensor) -> torch.Tensor:
        """``R`` copies at once, as :meth:`MNIST1DCNN.forward_stacked`: ``params`` each ``(R, *shape)``,
        ``x (R, B, ...)``; returns ``(R, B, num_classes)``. Each linear layer is one batched matrix
        product (``baddbmm``) over the copies."""
        h = x.flatten(2)
        for i, layer in enumerate(self.net):
            if isinstance(layer, nn.Linear):
                h = torch.baddbmm(params[f"net.{i}.bias"].unsqueeze(1), h, params[f"net.{i}.weight"].transpose(1, 2))
            elif isinstance(layer, nn.LayerNorm):
                h = F.layer_norm(h, layer.normalized_shape, eps=layer.eps)
                h = h * params[f"net.{i}.weight"].unsqueeze(1) + params[f"net.{i}.bias"].unsqueeze(1)
            else:
                h = layer(h)
        return h


class _Block(nn.Module):
    def __init__(self, inputs: int, outputs: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(outputs)
        self.conv2 = nn.Conv2d(outputs, outputs, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(outputs)
        self.pad = outputs - inputs
        self.stride = stride

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x[:, :, ::self.stride, ::self.stride] if self.stride > 1 else x
        if self.pad:
            shortcut = F.pad(shortcut, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return F.relu(out + shortcut)


class CifarResNet(nn.Module):
    """ResNet of depth ``6 n + 2`` for 32x32 images: input ``(N, 3, 32, 32)``, logits ``(N, num_classes)``."""

    def __init__(self, depth: int, num_classes: int = 10):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"a CIFAR ResNet has depth 6n + 2 (20, 32, 44, 56, ...), got {depth}")
        n = (depth - 2) // 6
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        blocks, width = [], 16
        for stage, channels in enumerate((16, 32, 64)):
            for i in range(n):
                blocks.append(_Block(width, channels, 2 if stage > 0 and i == 0 else 1))
                width = channels
        self.blocks = nn.Sequential(*blocks)
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x):
        return self.linear(self.blocks(self.stem(x)).mean((2, 3)))


def resnet20(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(20, num_classes)


def resnet44(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(44, num_classes)


def resnet56(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(56, num_classes)


class ByteMLP(nn.Module):
    """A byte-level language model after Bengio et al. (*A neural probabilistic language model*, JMLR
    2003): the ``context`` bytes before a position ``(N, context)`` (indices into ``vocab`` bytes), each
    embedded in ``embed`` numbers, concatenated, one hidden layer of ``hidden`` units with a LayerNorm
    and GELU (:meth:`features`, ``(N, hidden)``), and a linear read-out :attr:`head` to the logits
    ``(N, vocab)``. Training takes the loss from :meth:`features` and :attr:`head`'s parameters with
    :func:`dmcore.linear_edf.linear_edf_loss`, without forming the logits."""

    def __init__(self, vocab: int, context: int = 32, embed: int = 16, hidden: int = 256):
        super().__init__()
        self.context = context
        self.embed = nn.Embedding(vocab, embed)
        self.hidden = nn.Linear(context * embed, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, vocab)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.context or x.dtype != torch.long:
            raise ValueError(f"ByteMLP takes (N, {self.context}) int64 byte indices, got {tuple(x.shape)} {x.dtype}")
        return F.gelu(self.norm(self.hidden(self.embed(x).flatten(1))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build(name: str, num_classes: int, in_features: int | None = None) -> nn.Module:
    """A model by name: ``mnist1d_cnn`` (25 channels), ``mnist1d_cnn_w48`` (48 channels, or any other
    width after ``_w``), ``fashion_cnn`` (:class:`FashionCNN`, 16 channels; ``fashion_cnn_w32``: 32),
    ``mlp`` (needs ``in_features``), ``resnet20``, ``resnet44``, ``resnet56``, ``byte_mlp``
    (:class:`ByteMLP`, ``num_classes`` bytes, a context of ``in_features`` bytes, default 32)."""
    width = re.fullmatch(r"mnist1d_cnn(?:_w([1-9][0-9]*))?", name)
    if width:
        return MNIST1DCNN(num_classes, channels=int(width.group(1) or 25))
    width = re.fullmatch(r"fashion_cnn(?:_w([1-9][0-9]*))?", name)
    if width:
        return FashionCNN(num_classes, channels=int(width.group(1) or 16))
    if name == "mlp":
        if in_features is None:
            raise ValueError("the MLP needs in_features")
        return MLP(in_features, num_classes)
    if name in ("resnet20", "resnet44", "resnet56"):
        return CifarResNet(int(name[6:]), num_classes)
    if name == "byte_mlp":
        return ByteMLP(num_classes, **({} if in_features is None else {"context": in_features}))
    raise ValueError(f"unknown model {name!r}; expected mnist1d_cnn, mnist1d_cnn_w<channels>, fashion_cnn, "
                     "fashion_cnn_w<channels>, mlp, resnet20, resnet44, resnet56 or byte_mlp")
