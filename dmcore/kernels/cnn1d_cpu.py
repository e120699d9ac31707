"""The Python driver of ``cnn1d_cpu.c``: R stacked MNIST-1D CNNs (:class:`dmcore.lab.models.MNIST1DCNN`),
forward and backward, float32 on CPU. :func:`dmcore.lab.models.MNIST1DCNN.forward_stacked` uses it where
it applies and its PyTorch ops elsewhere; they are the reference it is tested against."""

from __future__ import annotations

import ctypes

import torch
import torch.nn as nn

from . import cnn1d

_i64, _ptr, _int = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
#: ``{function: (restype, argtypes)}``; the int results are 0 where a buffer could not be allocated
SIGNATURES = {"cnn_sizes": (None, [_ptr, _ptr]),
              "cnn_forward": (_int, [_ptr, _i64, _ptr, _i64, _i64, _ptr, _ptr, _ptr, _int]),
              "cnn_backward": (_int, [_ptr, _i64, _ptr, _ptr, _ptr, _i64, _i64, _ptr, _ptr, _ptr, _int])}

# the stacked parameters in the order the kernel takes them: per layer conv weight, conv bias, LayerNorm
# weight and bias; then the linear layer's weight and bias
CNN_PARAMS = [f"{module}.{i}.{name}" for i in range(3)
               for module, name in (("convs", "weight"), ("convs", "bias"), ("norms", "weight"), ("norms", "bias"))]
CNN_PARAMS += ["linear.weight", "linear.bias"]


class CNNKernel:
    """The compiled whole-network kernel (``dmcore/kernels/cnn1d_cpu.c``) for one architecture.

    :meth:`get` returns it where it applies (CPU, float32, LayerNorm, every convolution with the same
    number of channels, the kernel built) and None otherwise."""

    _cache: dict = {}

    def __init__(self, lib, spec: list[int]):
        self.lib = lib
        self.spec = (ctypes.c_int64 * len(spec))(*spec)
        sizes = (ctypes.c_int64 * 5)()
        lib.cnn_sizes(self.spec, sizes)
        self.saved_per_group, self.group, self.parts = sizes[0], sizes[2], sizes[3]
        self.num_classes = spec[3]

    @classmethod
    def get(cls, model, x: torch.Tensor):
        """The kernel for ``model`` (a :class:`dmcore.lab.models.MNIST1DCNN`) on ``x``, or None."""
        if x.device.type != "cpu" or x.dtype != torch.float32 or x.requires_grad:
            return None
        if not all(isinstance(n, nn.LayerNorm) for n in model.norms):
            return None
        channels = model.convs[0].out_channels
        if any(c.out_channels != channels for c in model.convs):
            return None
        lib = cnn1d()
        if lib is None:
            return None
        spec = [model.length, 1, channels, model.linear.out_features]
        for conv in model.convs:
            spec += [conv.kernel_size[0], conv.stride[0], conv.padding[0]]
        key = tuple(spec)
        if key not in cls._cache:
            cls._cache[key] = cls(lib, spec)
        return cls._cache[key]

    @staticmethod
    def _pointers(tensors):
        return (ctypes.c_void_p * len(tensors))(*[t.data_ptr() for t in tensors])

    @staticmethod
    def _input(x):
        """``x (R, B, L)`` -> (a contiguous base, the elements between copies: 0 for an expanded ``x``)."""
        if x.stride(0) == 0:
            return x[0].contiguous(), 0
        x = x.contiguous()
        return x, x[0].numel()

    def forward(self, x, params, keep=False):
        """``(logits (R, B, K), saved activations or None)``; ``params`` in :data:`CNN_PARAMS` order."""
        runs, batch = x.shape[0], x.shape[1]
        raw = [p.detach().contiguous() for p in params]
        base, run_stride = self._input(x)
        logits = torch.empty(runs, batch, self.num_classes)
        groups = -(-batch // self.group)
        saved = torch.empty(runs, groups, self.saved_per_group) if keep else None
        ok = self.lib.cnn_forward(base.data_ptr(), run_stride, self._pointers(raw), runs, batch, self.spec,
                                  logits.data_ptr(), None if saved is None else saved.data_ptr(),
                                  torch.get_num_threads())
        if not ok:
            raise MemoryError("dmcore's CNN kernel could not allocate its buffers")
        return logits, saved

    def backward(self, x, params, saved, grad):
        """The gradients of ``params`` (in :data:`CNN_PARAMS` order) for ``grad = dLoss/dlogits``."""
        runs, batch = x.shape[0], x.shape[1]
        raw = [p.detach().contiguous() for p in params]
        base, run_stride = self._input(x)
        grad = grad.contiguous()
        parts = torch.empty(runs, self.parts, sum(p[0].numel() for p in raw))
        grads = [torch.empty(p.shape) for p in raw]
        ok = self.lib.cnn_backward(base.data_ptr(), run_stride, self._pointers(raw), saved.data_ptr(),
                                   grad.data_ptr(), runs, batch, self.spec, parts.data_ptr(),
                                   self._pointers(grads), torch.get_num_threads())
        if not ok:
            raise MemoryError("dmcore's CNN kernel could not allocate its buffers")
        return grads


class StackedCNN(torch.autograd.Function):
    """R stacked MNIST-1D CNNs, float32 on CPU, forward and backward in the compiled kernel:
    ``x (R, B, L)`` and the parameters in :data:`CNN_PARAMS` order (each ``(R, *shape)``) ->
    logits ``(R, B, K)``. The forward pass saves each example's normalised rows and their 1/std;
    the backward pass recomputes the activations from them. A copy's gradients are summed over its
    batch in a fixed order, so they do not depend on the other copies (tested bitwise) nor on the
    number of threads."""

    @staticmethod
    def forward(ctx, x, kernel, *params):
        logits, saved = kernel.forward(x, params, keep=True)
        ctx.save_for_backward(x, saved, *params)
        ctx.kernel = kernel
        return logits

    @staticmethod
    def backward(ctx, grad):
        x, saved, *params = ctx.saved_tensors
        return (None, None, *ctx.kernel.backward(x, params, saved, grad))
