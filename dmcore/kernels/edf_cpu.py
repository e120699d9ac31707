"""The Python driver of ``edf_cpu.c``: the EDF losses' per-element parts and gradient, float32 on CPU,
with class-index targets (``impl='c'`` in :mod:`dmcore.losses`; the PyTorch path there is the
reference it is tested against)."""

from __future__ import annotations

import ctypes
import math

import torch

_i64, _ptr, _f32, _int = ctypes.c_int64, ctypes.c_void_p, ctypes.c_float, ctypes.c_int
#: ``{function: (restype, argtypes)}``
SIGNATURES = {"edf_forward_f32": (None, [_ptr, _ptr, _i64, _i64, _i64, _i64, _ptr, _ptr, _ptr, _ptr, _int]),
              "edf_scale_f32": (None, [_ptr, _ptr, _i64, _i64, _i64, _i64, _ptr, _ptr, _f32, _int])}


def parts(lib, input: torch.Tensor, target: torch.Tensor, ignore_index: int):
    """One pass over the logits ``(N, C, d...)``: ``(buf, p, log p, norm, target)``.

    ``buf`` holds ``exp(z_c - m)`` for the classes other than the label (0 at the label and for
    ignored elements) and ``norm`` their sum, so that ``buf / norm`` is the softmax over the other
    classes; ``p`` is -1 for a target outside ``[0, C)`` and NaN for bad logits (the caller checks);
    ``log p = -log1p(odds)`` is accurate at both ends. No synchronisation.
    """
    x = input.contiguous()
    t = target.contiguous().long()
    n, num_classes, spatial = x.shape[0], x.shape[1], math.prod(x.shape[2:])
    buf = torch.empty_like(x)
    p, odds, norm = (torch.empty(t.shape, dtype=x.dtype) for _ in range(3))
    lib.edf_forward_f32(x.data_ptr(), t.data_ptr(), n, num_classes, spatial, ignore_index, buf.data_ptr(),
                        p.data_ptr(), odds.data_ptr(), norm.data_ptr(), torch.get_num_threads())
    return buf, p, odds.log1p_().neg_(), norm, t


def scale(lib, buf: torch.Tensor, target: torch.Tensor, k: torch.Tensor, norm: torch.Tensor, ignore_index: int):
    """The gradient, in place: ``buf * k / norm`` off the label and ``-k`` at it (0 where ignored)."""
    k, norm = k.contiguous(), norm.contiguous()
    lib.edf_scale_f32(buf.data_ptr(), target.data_ptr(), buf.shape[0], buf.shape[1], math.prod(buf.shape[2:]),
                      ignore_index, k.data_ptr(), norm.data_ptr(), 1.0, torch.get_num_threads())
    return buf
