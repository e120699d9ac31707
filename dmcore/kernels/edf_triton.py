"""Triton kernels for the EDF losses with class-index targets (``impl='triton'`` in :mod:`dmcore.losses`).

Two kernels, one program per element (a row of ``C`` logits, strided by ``S`` for ``(N, C, d...)``
inputs), each looping over the classes in blocks and computing in float32 whatever the logits'
dtype:

- :func:`statistics` reads the row once, with an online softmax over the classes other than the
  label (a running maximum ``m`` and a running sum rescaled whenever ``m`` grows), and writes four
  numbers per element: ``p``, ``log p``, ``1 - p`` and ``L = log sum_{j != y} exp(z_j)``, from
  ``d = L - z_y = log((1 - p) / p)``, so that ``p`` and ``1 - p`` are both exact to rounding as
  ``p -> 1``. A target outside ``[0, C)`` gets ``p = -1``, a NaN or ``+inf`` logit (or only ``-inf``)
  ``p = NaN``; the caller raises. Ignored elements get ``p = 0``.
- :func:`gradient` reads the row again and writes the manipulated gradient
  ``k exp(z_j - L)`` off the label and ``-k`` at it, for the per-element scale ``k`` the caller
  computed from ``w(p)``, the class weight, the normaliser and ``eps`` (:mod:`dmcore.edf_operator`).

The weight ``w(p)``, the reductions and the normaliser act on ``N`` numbers in PyTorch, so any EDF
of :mod:`dmcore.edf` runs unchanged. Memory: the gradient (the output) and four numbers per element;
traffic: the logits read twice, the gradient written once.

Without a GPU the kernels run on CPU tensors under Triton's interpreter (``TRITON_INTERPRET=1`` set
before this module is imported), which is how the tests check them.
"""

from __future__ import annotations

import math
import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:     # an optional dependency: pip install dmcore[triton]
    triton = None

__all__ = ["available", "usable_on", "statistics", "gradient"]


def available() -> bool:
    """True where Triton is installed."""
    return triton is not None


def interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def usable_on(device: torch.device) -> bool:
    """The kernels run on CUDA tensors, and on CPU tensors under the interpreter."""
    return available() and (device.type == "cuda" or (device.type == "cpu" and interpreted()))


def _block(num_classes: int) -> int:
    return min(triton.next_power_of_2(num_classes), 64 if interpreted() else 4096)


if triton is not None:
    @triton.jit
    def _statistics_kernel(x_ptr, t_ptr, p_ptr, log_p_ptr, rest_ptr, lse_ptr, C, S, ignore_index,
                           BLOCK: tl.constexpr):
        e = tl.program_id(0).to(tl.int64)
        n = e // S
        s = e - n * S
        row = x_ptr + n * C * S + s
        y = tl.load(t_ptr + e)
        inside = (y >= 0) & (y < C)
        y_safe = tl.where(inside, y, 0)
        m = tl.zeros((), dtype=tl.float32) - float("inf")       # running maximum over the other classes
        total = tl.zeros((), dtype=tl.float32)                   # running sum of exp(z_j - m)
        bad = tl.zeros((), dtype=tl.int32)                       # a NaN or +inf logit seen
        for start in range(0, C, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            z = tl.load(row + cols * S, mask=cols < C, other=float("-inf")).to(tl.float32)
            bad = bad | tl.max(((z != z) | (z == float("inf"))).to(tl.int32), 0)
            z = tl.where(cols == y_safe, float("-inf"), z)
            m_new = tl.maximum(m, tl.max(z, 0))
            finite = m_new > float("-inf")
            rescale = tl.where(finite, tl.exp(m - m_new), 0.0)
            terms = tl.where(z > float("-inf"), tl.exp(z - tl.where(finite, m_new, 0.0)), 0.0)
            total = total * rescale + tl.sum(terms, 0)
            m = m_new
        z_y = tl.load(row + y_safe * S).to(tl.float32)
        lse = tl.where(total > 0, m + tl.log(total), float("-inf"))
        d = lse - z_y                                            # log((1 - p) / p)
        softplus = tl.maximum(d, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(d)))   # log(1 + e^d)
        softplus = tl.where(d == float("-inf"), 0.0, softplus)
        p = 1.0 / (1.0 + tl.exp(d))
        rest = 1.0 / (1.0 + tl.exp(-d))
        bad = bad | ((z_y == float("-inf")) & (lse == float("-inf"))).to(tl.int32)   # only -inf
        ignored = y == ignore_index
        p = tl.where(ignored, 0.0, tl.where(inside, tl.where(bad != 0, float("nan"), p), -1.0))
        tl.store(p_ptr + e, p)
        tl.store(log_p_ptr + e, tl.where(ignored | ~inside, 0.0, -softplus))
        tl.store(rest_ptr + e, tl.where(ignored | ~inside, 0.0, rest))
        tl.store(lse_ptr + e, tl.where(ignored | ~inside, 0.0, lse))

    @triton.jit
    def _gradient_kernel(x_ptr, t_ptr, lse_ptr, k_ptr, g_ptr, C, S, BLOCK: tl.constexpr):
        e = tl.program_id(0).to(tl.int64)
        n = e // S
        s = e - n * S
        row = n * C * S + s
        y = tl.load(t_ptr + e)
        k = tl.load(k_ptr + e)
        lse = tl.load(lse_ptr + e)
        alone = lse == float("-inf")                             # no other class: the direction is -e_y
        for start in range(0, C, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            mask = cols < C
            z = tl.load(x_ptr + row + cols * S, mask=mask, other=float("-inf")).to(tl.float32)
            share = tl.where(z == float("-inf"), 0.0, tl.exp(z - tl.where(alone, 0.0, lse)))
            share = tl.where(alone, 0.0, share)
            g = tl.where(k == 0, 0.0, tl.where(cols == y, -k, k * share))   # k = 0: ignored, whatever its logits
            tl.store(g_ptr + row + cols * S, g, mask=mask)


def statistics(input: torch.Tensor, target: torch.Tensor, ignore_index: int):
    """``(p, log p, 1 - p, L, target)`` per element, from one read of the logits ``(N, C, d...)``."""
    x = input.contiguous()
    t = target.contiguous().long()
    num_classes, spatial = x.shape[1], math.prod(x.shape[2:])
    p, log_p, rest, lse = (torch.empty(t.shape, dtype=torch.float32, device=x.device) for _ in range(4))
    if t.numel():
        _statistics_kernel[(t.numel(),)](x, t, p, log_p, rest, lse, num_classes, spatial, ignore_index,
                                         BLOCK=_block(num_classes))
    return p, log_p, rest, lse, t


def gradient(input: torch.Tensor, target: torch.Tensor, lse: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The gradient ``(N, C, d...)`` in float32: ``k exp(z_j - L)`` off the label, ``-k`` at it."""
    x = input.contiguous()
    grad = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    if target.numel():
        _gradient_kernel[(target.numel(),)](x, target, lse.contiguous(), k.to(torch.float32).contiguous(), grad,
                                            x.shape[1], math.prod(x.shape[2:]), BLOCK=_block(x.shape[1]))
    return grad
