"""Small networks for the experiments: the MNIST-1D CNN, an MLP, and CIFAR ResNet-20/44/56.

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

The CIFAR ResNets are those of He et al. (CVPR 2016, section 4.2): 3 stages of ``n`` basic blocks
with 16, 32, 64 channels and identity shortcuts padded with zeros ("option A"), depth ``6n + 2``.
"""

from __future__ import annotations

import re

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..kernels.cnn1d_cpu import CNN_PARAMS, CNNKernel, StackedCNN

__all__ = ["MNIST1DCNN", "MLP", "CifarResNet", "resnet20", "resnet44", "resnet56", "build"]


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


def build(name: str, num_classes: int, in_features: int | None = None) -> nn.Module:
    """A model by name: ``mnist1d_cnn`` (25 channels), ``mnist1d_cnn_w48`` (48 channels, or any other
    width after ``_w``), ``mlp`` (needs ``in_features``), ``resnet20``, ``resnet44``, ``resnet56``."""
    width = re.fullmatch(r"mnist1d_cnn(?:_w([1-9][0-9]*))?", name)
    if width:
        return MNIST1DCNN(num_classes, channels=int(width.group(1) or 25))
    if name == "mlp":
        if in_features is None:
            raise ValueError("the MLP needs in_features")
        return MLP(in_features, num_classes)
    if name in ("resnet20", "resnet44", "resnet56"):
        return CifarResNet(int(name[6:]), num_classes)
    raise ValueError(f"unknown model {name!r}; expected mnist1d_cnn, mnist1d_cnn_w<channels>, mlp, resnet20, "
                     "resnet44 or resnet56")
