"""Triton kernels for the fused linear + EDF loss (:mod:`dmcore.linear_edf`, ``impl='triton'``).

The logits ``z = h W^T + b`` are computed a tile at a time and never stored, in two kernels that
each compute every logit once (the backward pass recomputes them, as fused cross-entropy kernels do):

- :func:`statistics`: one program per block of ``BLOCK_M`` rows, looping over the vocabulary in
  blocks of ``BLOCK_N`` (each logit tile a ``tl.dot`` over the hidden size in blocks of ``BLOCK_K``),
  with an online softmax over the classes other than the label, as
  :func:`dmcore.kernels.edf_triton.statistics` does on stored logits: it writes ``p``, ``log p``,
  ``1 - p`` and ``L = log sum_{j != y} exp(z_j)`` per row (``p = -1`` for a target outside
  ``[0, V)``, ``NaN`` for a NaN or ``+inf`` logit; ``0`` where ignored).
- :func:`gradients`: one program per tile of ``BLOCK_M`` rows by ``BLOCK_N`` classes: it recomputes
  the tile's logits, forms the gradient tile ``G = k exp(z_j - L)`` off the label and ``-k`` at it
  (the per-row scale ``k`` computed by the caller from ``w(p)``, the class weight, the normaliser and
  ``eps``), and adds ``G W`` to ``dL/dh``, ``G^T h`` to ``dL/dW`` and the column sums of ``G`` to
  ``dL/db``, by atomic additions in float32.

Products run in float32 (``input_precision="ieee"``: no TF32) for float32 inputs, and in the
inputs' dtype with float32 accumulation for float16 and bfloat16 (in float32 under the interpreter). Memory: four numbers per row and
the float32 gradient buffers; no tile of logits outlives its program.

Without a GPU the kernels run on CPU tensors under Triton's interpreter (``TRITON_INTERPRET=1`` set
before this module is imported), which is how the tests check them.
"""

from __future__ import annotations

import torch

from .edf_triton import available, interpreted, triton, usable_on

if triton is not None:
    import triton.language as tl

__all__ = ["available", "usable_on", "statistics", "gradients", "DTYPES"]

#: The input dtypes the kernels take.
DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _blocks() -> dict:
    return dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16) if interpreted() else dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=64)


def _cast(h: torch.Tensor) -> bool:
    """Under the interpreter, half-precision products are taken in float32: its ``tl.dot`` misreads
    bfloat16 (NumPy has no such type)."""
    return interpreted() and h.dtype != torch.float32


if triton is not None:
    @triton.jit
    def _tile(h_ptr, w_ptr, b_ptr, rows, cols, N, V, H, HAS_BIAS: tl.constexpr, IEEE: tl.constexpr,
              CAST: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        """The float32 logits of rows ``rows`` and classes ``cols``: ``h W^T + b`` (0 outside)."""
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, H, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            a = tl.load(h_ptr + rows[:, None] * H + ks[None, :], mask=(rows[:, None] < N) & (ks[None, :] < H),
                        other=0.0)
            b = tl.load(w_ptr + cols[:, None] * H + ks[None, :], mask=(cols[:, None] < V) & (ks[None, :] < H),
                        other=0.0)
            if CAST:
                a, b = a.to(tl.float32), b.to(tl.float32)
            if IEEE:
                acc += tl.dot(a, tl.trans(b), input_precision="ieee")
            else:
                acc += tl.dot(a, tl.trans(b))
        if HAS_BIAS:
            acc += tl.load(b_ptr + cols, mask=cols < V, other=0.0).to(tl.float32)[None, :]
        return acc

    @triton.jit
    def _statistics_kernel(h_ptr, w_ptr, b_ptr, t_ptr, p_ptr, log_p_ptr, rest_ptr, lse_ptr, N, V, H, ignore_index,
                           HAS_BIAS: tl.constexpr, IEEE: tl.constexpr, CAST: tl.constexpr, BLOCK_M: tl.constexpr,
                           BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
        live = rows < N
        y = tl.load(t_ptr + rows, mask=live, other=0)
        inside = (y >= 0) & (y < V)
        m = tl.zeros((BLOCK_M,), dtype=tl.float32) - float("inf")    # running maximum over the other classes
        total = tl.zeros((BLOCK_M,), dtype=tl.float32)                # running sum of exp(z_j - m)
        z_y = tl.zeros((BLOCK_M,), dtype=tl.float32)
        bad = tl.zeros((BLOCK_M,), dtype=tl.int32)                    # a NaN or +inf logit seen
        for v0 in range(0, V, BLOCK_N):
            cols = v0 + tl.arange(0, BLOCK_N).to(tl.int64)
            z = _tile(h_ptr, w_ptr, b_ptr, rows, cols, N, V, H, HAS_BIAS, IEEE, CAST, BLOCK_M, BLOCK_N, BLOCK_K)
            z = tl.where(cols[None, :] < V, z, float("-inf"))
            bad = bad | tl.max(((z != z) | (z == float("inf"))).to(tl.int32), 1)
            label = cols[None, :] == y[:, None]
            z_y += tl.sum(tl.where(label, z, 0.0), 1)
            z = tl.where(label, float("-inf"), z)
            m_new = tl.maximum(m, tl.max(z, 1))
            finite = m_new > float("-inf")
            rescale = tl.where(finite, tl.exp(m - m_new), 0.0)
            terms = tl.where(z > float("-inf"), tl.exp(z - tl.where(finite, m_new, 0.0)[:, None]), 0.0)
            total = total * rescale + tl.sum(terms, 1)
            m = m_new
        lse = tl.where(total > 0, m + tl.log(total), float("-inf"))
        d = lse - z_y                                                 # log((1 - p) / p)
        softplus = tl.maximum(d, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(d)))
        softplus = tl.where(d == float("-inf"), 0.0, softplus)
        p = 1.0 / (1.0 + tl.exp(d))
        rest = 1.0 / (1.0 + tl.exp(-d))
        bad = bad | ((z_y == float("-inf")) & (lse == float("-inf"))).to(tl.int32)
        ignored = y == ignore_index
        p = tl.where(ignored, 0.0, tl.where(inside, tl.where(bad != 0, float("nan"), p), -1.0))
        off = ignored | ~inside
        tl.store(p_ptr + rows, p, mask=live)
        tl.store(log_p_ptr + rows, tl.where(off, 0.0, -softplus), mask=live)
        tl.store(rest_ptr + rows, tl.where(off, 0.0, rest), mask=live)
        tl.store(lse_ptr + rows, tl.where(off, 0.0, lse), mask=live)

    @triton.jit
    def _gradients_kernel(h_ptr, w_ptr, b_ptr, t_ptr, lse_ptr, k_ptr, dh_ptr, dw_ptr, db_ptr, N, V, H,
                          HAS_BIAS: tl.constexpr, IEEE: tl.constexpr, CAST: tl.constexpr, WANT_H: tl.constexpr,
                          WANT_W: tl.constexpr,
                          WANT_B: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                          BLOCK_K: tl.constexpr):
        rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = tl.program_id(1).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
        live = rows < N
        y = tl.load(t_ptr + rows, mask=live, other=0)
        k = tl.load(k_ptr + rows, mask=live, other=0.0)
        lse = tl.load(lse_ptr + rows, mask=live, other=0.0)
        alone = lse == float("-inf")                                  # no other class: the direction is -e_y
        z = _tile(h_ptr, w_ptr, b_ptr, rows, cols, N, V, H, HAS_BIAS, IEEE, CAST, BLOCK_M, BLOCK_N, BLOCK_K)
        share = tl.where(z == float("-inf"), 0.0, tl.exp(z - tl.where(alone, 0.0, lse)[:, None]))
        share = tl.where(alone[:, None], 0.0, share)
        g = tl.where(cols[None, :] == y[:, None], -k[:, None], k[:, None] * share)
        g = tl.where((k[:, None] == 0) | (cols[None, :] >= V) | ~live[:, None], 0.0, g)
        if WANT_B:
            tl.atomic_add(db_ptr + cols, tl.sum(g, 0), mask=cols < V)
        gd = g if IEEE or CAST else g.to(h_ptr.dtype.element_ty)
        for k0 in range(0, H, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            if WANT_H:
                wt = tl.load(w_ptr + cols[:, None] * H + ks[None, :], mask=(cols[:, None] < V) & (ks[None, :] < H),
                             other=0.0)
                if CAST:
                    wt = wt.to(tl.float32)
                part = tl.dot(gd, wt, input_precision="ieee") if IEEE else tl.dot(gd, wt)
                tl.atomic_add(dh_ptr + rows[:, None] * H + ks[None, :], part,
                              mask=live[:, None] & (ks[None, :] < H))
            if WANT_W:
                ht = tl.load(h_ptr + rows[:, None] * H + ks[None, :], mask=live[:, None] & (ks[None, :] < H),
                             other=0.0)
                if CAST:
                    ht = ht.to(tl.float32)
                part = tl.dot(tl.trans(gd), ht, input_precision="ieee") if IEEE else tl.dot(tl.trans(gd), ht)
                tl.atomic_add(dw_ptr + cols[:, None] * H + ks[None, :], part,
                              mask=(cols[:, None] < V) & (ks[None, :] < H))


def statistics(hidden: torch.Tensor, weight: torch.Tensor, bias, target: torch.Tensor, ignore_index: int):
    """``(p, log p, 1 - p, L, target)`` per row of ``hidden (N, H)``, for ``weight (V, H)`` and ``bias (V)``."""
    h, w = hidden.contiguous(), weight.contiguous()
    t = target.contiguous().long()
    n, vocab, size = h.shape[0], w.shape[0], h.shape[1]
    p, log_p, rest, lse = (torch.empty(n, dtype=torch.float32, device=h.device) for _ in range(4))
    if n:
        blocks = _blocks()
        _statistics_kernel[(triton.cdiv(n, blocks["BLOCK_M"]),)](
            h, w, bias if bias is not None else w, t, p, log_p, rest, lse, n, vocab, size, ignore_index,
            HAS_BIAS=bias is not None, IEEE=h.dtype == torch.float32, CAST=_cast(h), **blocks)
    return p, log_p, rest, lse, t


def gradients(hidden, weight, bias, target, lse, k, wanted):
    """``[dL/dh, dL/dW, dL/db]`` in float32 (``None`` where ``wanted`` says no) for the per-row scale ``k``."""
    h, w = hidden.contiguous(), weight.contiguous()
    n, vocab, size = h.shape[0], w.shape[0], h.shape[1]
    zeros = lambda shape: torch.zeros(shape, dtype=torch.float32, device=h.device)   # noqa: E731
    want_b = bias is not None and wanted[2]
    out = [zeros(h.shape) if wanted[0] else None, zeros(w.shape) if wanted[1] else None,
           zeros(vocab) if want_b else None]
    if n and any(x is not None for x in out):
        blocks = _blocks()
        dummy = out[0] if out[0] is not None else out[1] if out[1] is not None else out[2]
        grid = (triton.cdiv(n, blocks["BLOCK_M"]), triton.cdiv(vocab, blocks["BLOCK_N"]))
        _gradients_kernel[grid](h, w, bias if bias is not None else w, target, lse.contiguous(),
                                k.to(torch.float32).contiguous(), *(x if x is not None else dummy for x in out),
                                n, vocab, size, HAS_BIAS=bias is not None, IEEE=h.dtype == torch.float32, CAST=_cast(h),
                                WANT_H=wanted[0], WANT_W=wanted[1], WANT_B=want_b, **blocks)
    return out
