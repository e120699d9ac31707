r"""The EDF loss of a linear layer's output, without ever holding the logits: for language models.

A language model's last layer maps hidden states ``h`` ``(N, H)`` to logits ``z = h W^T + b``
``(N, V)`` over a vocabulary of ``V`` tokens; at ``V = 128k`` and ``N = 8k`` tokens the logits alone
take 4 GB in float32. :func:`linear_edf_loss` gives the EDF loss of those logits
(:func:`dmcore.losses.edf_loss`: any weight ``w(p)``, its value and manipulated gradient) by
computing them a block of rows at a time and keeping only per-row numbers. With ``G`` the gradient
of the loss with respect to the logits (:mod:`dmcore.edf_operator`),

.. math::

    \frac{\partial \mathcal{L}}{\partial h} = G\, W, \qquad
    \frac{\partial \mathcal{L}}{\partial W} = G^\top h, \qquad
    \frac{\partial \mathcal{L}}{\partial b} = \mathbf{1}^\top G,

each a sum over row blocks, and every row of ``G`` is its element's scale ``c w(p) f / (2Z)`` times
the unit-L1 CCE direction. Only the normaliser ``Z`` (for ``normalizer='batch'``, the batch's sum of
``c w(p)``) couples the rows, and it is one number: for ``'mean'`` and ``'sum'`` the forward pass
accumulates the three gradients with ``Z = 1``, block by block, and divides them by ``Z`` at the
end, so the logits are computed once (the backward pass only scales the stored gradients by the
upstream gradient). For ``'none'`` the upstream gradient differs per row and is known only in the
backward pass, which computes the logits again, block by block.

Two ways to run it (:func:`implementation`). **Blocks** (CPU, and wherever Triton is not used): each
block's logits by ``F.linear``, then the same per-element terms as :func:`dmcore.losses.edf_loss` on
them (:func:`dmcore.edf_operator._terms`: the C kernel for float32 on CPU, PyTorch's ops
otherwise), so the two agree to rounding, for every EDF and option. **Fused** (CUDA with Triton,
float16/bfloat16/float32, no label smoothing): the Triton kernels of
:mod:`dmcore.kernels.linear_edf_triton` compute each tile of logits in registers, once for the
per-row statistics and once more for the gradients, which they add up atomically (so the last bits
of a float32 sum may differ from run to run); the logits are kept in float32, not rounded to
half precision as materialised half-precision logits are. Either way the weights ``w(p)``, the
normaliser and the reduction act on ``N`` numbers in PyTorch, so any EDF runs unchanged.

Extra memory, blocks: a block's logits and its gradient (``chunk_size`` rows, about two blocks of
``chunk_size x V`` in the compute dtype, three with label smoothing or a different input dtype), and
a few numbers per row; fused: float32 buffers for the three gradients and four numbers per row;
never ``N x V``. With blocks, float16 and bfloat16 inputs are multiplied in their dtype and the
terms computed in float32, as :func:`~dmcore.losses.edf_loss` computes them for such logits, and the
weight's and bias's gradients are accumulated in their own dtype.

Conventions as for :func:`dmcore.losses.edf_loss` (``ignore_index``, class weights, reductions,
normalisers, ``eps``, label smoothing, the data-parallel normaliser, ``check``), with class-index
targets only (a target distribution over a large vocabulary would itself be ``N x V``). The class
weights are ``class_weight``, since ``weight`` is the linear layer's. The gradient is computed once:
it is not itself differentiable (no ``create_graph``).

Reference: X. Wang et al., *Derivative manipulation for general example weighting*,
arXiv:1905.11233; the blockwise scheme is that of fused linear cross-entropy kernels (Liger-Kernel;
Wijmans et al., *Cut your losses in large-vocabulary language models*, arXiv:2411.09009).

Example::

    >>> import torch
    >>> from dmcore import edf, linear_edf, losses
    >>> h = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    >>> W = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    >>> y = torch.tensor([0, 1, 2, 3, 4, 0])
    >>> fused = linear_edf.linear_edf_loss(h, W, y, edf.dm(0.5, 8), chunk_size=4)
    >>> plain = losses.edf_loss(h @ W.T, y, edf.dm(0.5, 8))
    >>> bool(torch.allclose(fused, plain, rtol=1e-12, atol=0))
    True
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn as nn

from . import edf_operator, losses, targets
from .edf import EDF

__all__ = ["linear_edf_loss", "LinearEDFLoss", "CHUNK_ELEMENTS", "MIN_BLOCKS", "chunk_rows", "implementation"]

#: The default block holds at most this many logits (16 MB in float32), and logits larger than this are cut
#: into at least :data:`MIN_BLOCKS` blocks.
CHUNK_ELEMENTS = 1 << 22
MIN_BLOCKS = 24


def chunk_rows(n: int, vocab: int, chunk_size: int | None = None) -> int:
    """The rows per block: ``chunk_size`` if given; else all ``n`` where the logits hold at most
    :data:`CHUNK_ELEMENTS` numbers, and otherwise at most ``CHUNK_ELEMENTS // vocab`` rows and at most
    ``ceil(n / MIN_BLOCKS)`` (at least 1): a block's logits and gradient then take under 1/8 of the logits
    (2/24 and a few numbers per row)."""
    if chunk_size is None:
        chunk_size = n if n * vocab <= CHUNK_ELEMENTS else min(CHUNK_ELEMENTS // max(vocab, 1), -(-n // MIN_BLOCKS))
    return max(1, min(chunk_size, n))


def _check(hidden, weight, bias, target, chunk_size):
    for name, x in (("hidden", hidden), ("weight", weight)):
        if not torch.is_tensor(x) or not x.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    if hidden.dim() < 1 or weight.dim() != 2 or weight.shape[1] != hidden.shape[-1]:
        raise ValueError(f"weight must have shape (V, H) with H = hidden.shape[-1]: got hidden {tuple(hidden.shape)}, "
                         f"weight {tuple(weight.shape)}")
    if hidden.dtype != weight.dtype or hidden.device != weight.device:
        raise ValueError(f"hidden and weight must share dtype and device, got {hidden.dtype} on {hidden.device} and "
                         f"{weight.dtype} on {weight.device}")
    if bias is not None and (not torch.is_tensor(bias) or tuple(bias.shape) != (weight.shape[0],)
                             or bias.dtype != weight.dtype or bias.device != weight.device):
        raise ValueError(f"bias must be a tensor of shape ({weight.shape[0]},) in weight's dtype and device, got "
                         f"{tuple(bias.shape) if torch.is_tensor(bias) else type(bias).__name__}")
    if torch.is_tensor(target) and target.is_floating_point():
        raise TypeError("linear_edf_loss takes class-index targets only (a target distribution over the vocabulary "
                        "would be as large as the logits it avoids)")
    if torch.is_tensor(target) and tuple(target.shape) != tuple(hidden.shape[:-1]):
        raise ValueError(f"target shape {tuple(target.shape)} does not match hidden {tuple(hidden.shape)}: expected "
                         f"{tuple(hidden.shape[:-1])}")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive integer (rows per block), got {chunk_size!r}")
    # the logits' checks (dmcore.targets.check_call), on a stand-in of their shape that holds one number
    logits = hidden.new_empty((1, 1)).expand(math.prod(hidden.shape[:-1]), weight.shape[0])
    return logits, target.reshape(-1) if torch.is_tensor(target) else target


def _fused():
    """The fused Triton kernels' module, imported on first use (Triton reads ``TRITON_INTERPRET`` then)."""
    from .kernels import linear_edf_triton
    return linear_edf_triton


def implementation(hidden: torch.Tensor, impl: str = "auto", label_smoothing: float = 0.0) -> str:
    """How :func:`linear_edf_loss` runs: ``'fused'`` (the Triton kernels of
    :mod:`dmcore.kernels.linear_edf_triton`, logits never stored) or ``'blocks'`` (blocks of rows, each
    block's logits by ``F.linear`` and its terms on the path ``impl`` chooses for them,
    :func:`dmcore.edf_operator.implementation`).

    ``impl='auto'`` takes the fused kernels for float16, bfloat16 and float32 on CUDA without label
    smoothing where Triton is installed, blocks otherwise; ``'triton'`` requires the fused kernels
    (on CPU tensors under ``TRITON_INTERPRET=1``); ``'c'`` and ``'torch'`` take blocks."""
    if impl not in edf_operator.IMPLS:
        raise ValueError(f"impl must be one of {edf_operator.IMPLS}, got {impl!r}")
    if impl in ("c", "torch"):
        return "blocks"
    from .kernels import edf_triton
    fits = (edf_triton.available() and hidden.dtype in (torch.float16, torch.bfloat16, torch.float32)
            and label_smoothing == 0 and (impl == "triton" or hidden.device.type == "cuda")
            and _fused().usable_on(hidden.device))
    if impl == "triton":
        if not edf_triton.available():
            raise RuntimeError("impl='triton' needs Triton: pip install 'dmcore[triton]'")
        if not fits:
            raise ValueError("impl='triton' needs float16, bfloat16 or float32 inputs without label smoothing, on "
                             f"CUDA (or on CPU under TRITON_INTERPRET=1), got {hidden.dtype} on {hidden.device}"
                             + (f" with label_smoothing={label_smoothing}" if label_smoothing else ""))
    return "fused" if fits else "blocks"


def _blocks(n, rows):
    return [(start, min(start + rows, n)) for start in range(0, n, rows)]


def _block_terms(h, weight, bias, t, p):
    """The logits of one block of rows and their per-element terms (:func:`dmcore.edf_operator._terms`)."""
    logits = nn.functional.linear(h, weight, bias)
    path = edf_operator.implementation(logits, t, p["impl"], p["label_smoothing"])
    return edf_operator._terms(logits, t, p["class_weight"], p["edf"], p["ignore_index"], p["label_smoothing"],
                               p["check"], path)


def _scale(terms, k, eps):
    """The gradient's per-element scale: ``k`` (``c w / 2``, or ``c w g / 2``) times the ``eps`` factor."""
    return k * edf_operator._eps_factor(terms.parts, eps) if eps > 0 else k


def _accumulate(grads, terms, k, h, weight, start, end):
    """Add one block's share to the gradients ``grads = [dh, dW, db]`` (``None`` where not wanted)."""
    g = terms.parts.gradient(k)                        # (rows, V) in the compute dtype
    g = g.to(weight.dtype) if g.dtype != weight.dtype else g
    dh, dw, db = grads
    if dh is not None:
        torch.mm(g, weight, out=dh[start:end])
    if dw is not None:
        dw.addmm_(g.t(), h)
    if db is not None:
        db.add_(g.sum(0))


def _fused_terms(hidden, weight, bias, target, p):
    """The per-row terms from the fused statistics kernel, and the rows' ``L`` for its gradient kernel."""
    compute = targets.compute_dtype(hidden.dtype)
    prob, log_p, rest, lse, index = _fused().statistics(hidden, weight, bias, target, p["ignore_index"])
    shape = hidden.new_empty((1, 1)).expand(hidden.shape[0], weight.shape[0])   # the logits' stand-in
    tg = edf_operator._kernel_targets(shape, index, prob, p["class_weight"], p["ignore_index"], p["check"], compute)
    problems = functools.partial(edf_operator._kernel_problems, shape, target, p["class_weight"], p["ignore_index"],
                                 compute, tg, prob)
    parts = edf_operator._Parts(tg, prob, log_p, lambda: rest, None, problems, None)
    return edf_operator._weighed(parts, p["edf"], p["class_weight"], p["check"], compute), lse, index


def _fused_gradients(hidden, weight, bias, index, lse, k, counted, wanted):
    out = _fused().gradients(hidden, weight, bias, index, lse, torch.where(counted, k, 0.0), wanted)
    return [g.to(x.dtype) if g is not None else None for g, x in zip(out, (hidden, weight, bias))]


def _share(terms, normalizer):
    """These terms' share of the ``'mean'`` normaliser: the sum of ``c w`` (``'batch'``) or of the counts."""
    tg = terms.parts.tg
    return terms.cw.sum() if normalizer == "batch" else (tg.count if tg.count is not None else tg.c).sum()


def _normaliser(total, p):
    """``Z``: 1 unless ``'mean'``; then ``total`` summed over the ranks (1 where nothing counts: loss 0)."""
    if p["reduction"] != "mean":
        return torch.ones_like(total)
    z = edf_operator._synced(total, p["group"])
    return torch.where(z > 0, z, torch.ones_like(z))


def _reduce(values, z, reduction):
    return values if reduction == "none" else values.sum() / z if reduction == "mean" else values.sum()


class _LinearEDF(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, target, p):
        if p["path"] == "fused":
            return _LinearEDF._forward_fused(ctx, hidden, weight, bias, target, p)
        n, compute = hidden.shape[0], targets.compute_dtype(hidden.dtype)
        wanted = ctx.needs_input_grad[:3]
        need_grad = any(wanted)
        now = need_grad and p["reduction"] != "none"   # the gradients in this pass (scaled by Z at the end)
        grads = [torch.empty_like(hidden) if wanted[0] and now else None,
                 torch.zeros_like(weight) if wanted[1] and now else None,
                 torch.zeros_like(bias) if bias is not None and wanted[2] and now else None]
        values = torch.empty(n, dtype=compute, device=hidden.device)
        total = torch.zeros((), dtype=compute, device=hidden.device)
        kept = torch.empty(n, dtype=compute, device=hidden.device) if need_grad and not now else None
        problems = []
        for start, end in _blocks(n, p["rows"]):
            h, t = hidden[start:end], target[start:end]
            terms = _block_terms(h, weight, bias, t, p)
            values[start:end] = terms.values
            problems += terms.problems
            total += _share(terms, p["normalizer"])
            if now:
                _accumulate(grads, terms, _scale(terms, terms.cw * 0.5, p["eps"]), h, weight, start, end)
            elif kept is not None:
                kept[start:end] = _scale(terms, terms.cw * 0.5, p["eps"])
            del terms                                        # this block's buffers go before the next block's come
        z = _normaliser(total, p)
        targets.raise_for(problems)                          # the one synchronisation (none with check=False)
        out = _reduce(values, z, p["reduction"])
        if now:
            for g in grads:
                if g is not None:
                    g.div_(z.to(g.dtype))
            ctx.grads = grads
        ctx.p, ctx.kept = p, kept
        ctx.save_for_backward(hidden, weight, bias, target)
        return out.to(hidden.dtype)

    @staticmethod
    def _forward_fused(ctx, hidden, weight, bias, target, p):
        wanted = tuple(ctx.needs_input_grad[:3])
        terms, lse, index = _fused_terms(hidden, weight, bias, target, p)
        tg = terms.parts.tg
        z = _normaliser(_share(terms, p["normalizer"]), p)
        targets.raise_for(terms.problems)
        out = _reduce(terms.values, z, p["reduction"])
        k = _scale(terms, terms.cw * (0.5 / z), p["eps"])
        ctx.grads, ctx.kept = None, None
        if any(wanted) and p["reduction"] != "none":
            ctx.grads = _fused_gradients(hidden, weight, bias, index, lse, k, tg.counted, wanted)
        elif any(wanted):
            ctx.kept = (k, lse, index, tg.counted)
        ctx.p = p
        ctx.save_for_backward(hidden, weight, bias, target)
        return out.to(hidden.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        p = ctx.p
        if p["reduction"] != "none":
            grads, ctx.grads = ctx.grads, None
            if grads is None:
                raise RuntimeError("linear_edf_loss: backward through the graph a second time; its gradients are "
                                   "computed once (call the loss again)")
            if not (grad_out.device.type == "cpu" and torch.equal(grad_out, torch.ones_like(grad_out))):
                grads = [g.mul_(grad_out.to(g.dtype)) if g is not None else None for g in grads]
            return (*grads, None, None)
        hidden, weight, bias, target = ctx.saved_tensors
        wanted = ctx.needs_input_grad[:3]
        compute = targets.compute_dtype(hidden.dtype)
        if p["path"] == "fused":
            k, lse, index, counted = ctx.kept
            return (*_fused_gradients(hidden, weight, bias, index, lse, k * grad_out.reshape(-1).to(compute),
                                      counted, wanted), None, None)
        grads = [torch.empty_like(hidden) if wanted[0] else None, torch.zeros_like(weight) if wanted[1] else None,
                 torch.zeros_like(bias) if bias is not None and wanted[2] else None]
        g_rows = grad_out.reshape(-1).to(compute)
        quiet = dict(p, check=False)
        for start, end in _blocks(hidden.shape[0], p["rows"]):
            h = hidden[start:end]
            terms = _block_terms(h, weight, bias, target[start:end], quiet)
            _accumulate(grads, terms, ctx.kept[start:end] * g_rows[start:end], h, weight, start, end)
            del terms
        return (*grads, None, None)


def linear_edf_loss(hidden, weight, target, edf: EDF, *, bias=None, class_weight=None, ignore_index: int = -100,
                    reduction: str = "mean", normalizer: str = "batch", sync_normalizer: bool = True,
                    eps: float = 0.0, label_smoothing: float = 0.0, process_group=None, check: bool = True,
                    impl: str = "auto", chunk_size: int | None = None):
    """The EDF loss of the logits ``hidden @ weight.T + bias``, computed ``chunk_size`` rows at a time.

    .. math::

        \\mathcal{L} = \\mathrm{edf\\_loss}(h W^\\top + b,\\ y), \\qquad
        \\frac{\\partial \\mathcal{L}}{\\partial h} = G W, \\quad
        \\frac{\\partial \\mathcal{L}}{\\partial W} = G^\\top h, \\quad
        \\frac{\\partial \\mathcal{L}}{\\partial b} = \\mathbf{1}^\\top G

    with ``G`` the manipulated gradient of :func:`dmcore.losses.edf_loss` with respect to the logits,
    which are never held whole (module docstring).

    Args:
        hidden: ``(*, H)`` hidden states (float16/bfloat16/float32/float64).
        weight: ``(V, H)`` the output layer's weight, in ``hidden``'s dtype and device.
        target: class indices ``(*)`` (``hidden.shape[:-1]``), any integer dtype.
        edf: the emphasis density function ``w(p)`` (:mod:`dmcore.edf`).
        bias: optional ``(V)`` bias of the output layer.
        class_weight: optional per-class weights ``(V)``, finite and ``>= 0`` (``weight`` of
            :func:`~dmcore.losses.edf_loss`; no gradient flows to them).
        ignore_index, reduction, normalizer, sync_normalizer, eps, label_smoothing, process_group, check,
            impl: as for :func:`dmcore.losses.edf_loss` (``impl`` chooses the path of each block's terms).
        chunk_size: rows per block (default: :func:`chunk_rows`).

    Returns:
        A scalar, or ``(*)`` for ``reduction='none'``, in ``hidden``'s dtype: the monitored value
        ``c w(p) (-log p) / Z``; the gradient is the manipulated one.

    Example::

        >>> import torch
        >>> from dmcore import edf, linear_edf
        >>> h, W = torch.randn(3, 8, 16), torch.randn(50, 16, requires_grad=True)
        >>> loss = linear_edf.linear_edf_loss(h, W, torch.randint(0, 50, (3, 8)), edf.cce(), normalizer="count")
        >>> loss.backward()
        >>> tuple(W.grad.shape)
        (50, 16)
    """
    losses._check_edf_args(edf, normalizer, eps, impl)
    logits, flat = _check(hidden, weight, bias, target, chunk_size)
    targets.check_call(logits, flat, class_weight, ignore_index, reduction, label_smoothing)
    if class_weight is not None and class_weight.requires_grad:
        raise ValueError("class_weight requires grad, but the EDF losses give class weights no gradient: pass "
                         "class_weight.detach()")
    h = hidden.reshape(-1, hidden.shape[-1])
    need_grad = torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in (hidden, weight, bias))
    params = {"edf": edf, "class_weight": class_weight, "ignore_index": int(ignore_index), "reduction": reduction,
              "normalizer": normalizer, "eps": float(eps), "label_smoothing": float(label_smoothing),
              "check": bool(check), "impl": impl, "rows": chunk_rows(h.shape[0], weight.shape[0], chunk_size),
              "path": implementation(hidden, impl, label_smoothing),
              "group": edf_operator.group_key(sync_normalizer and need_grad and reduction == "mean", process_group)}
    out = _LinearEDF.apply(h, weight, bias, flat, params)
    return out.reshape(hidden.shape[:-1]) if reduction == "none" else out


class LinearEDFLoss(nn.Module):
    """:func:`linear_edf_loss` as a module: ``LinearEDFLoss(edf)(hidden, weight, target, bias=None)``, with
    the options (``class_weight``, ``ignore_index``, ``reduction``, ...) fixed at construction.

    Example::

        >>> import torch
        >>> from dmcore import edf, linear_edf
        >>> head = torch.nn.Linear(16, 50)
        >>> loss_fn = linear_edf.LinearEDFLoss(edf.dm(0.5, 8))
        >>> loss = loss_fn(torch.randn(10, 16), head.weight, torch.randint(0, 50, (10,)), bias=head.bias)
        >>> loss.backward()
    """

    def __init__(self, edf: EDF, **options):
        super().__init__()
        losses._check_edf_args(edf, options.get("normalizer", "batch"), options.get("eps", 0.0),
                               options.get("impl", "auto"))
        unknown = set(options) - {"class_weight", "ignore_index", "reduction", "normalizer", "sync_normalizer", "eps",
                                  "label_smoothing", "process_group", "check", "impl", "chunk_size"}
        if unknown:
            raise TypeError(f"LinearEDFLoss got unknown options {sorted(unknown)}")
        self.edf = edf
        class_weight = options.pop("class_weight", None)
        self.register_buffer("class_weight", class_weight)
        self.options = options

    def forward(self, hidden, weight, target, bias=None):
        return linear_edf_loss(hidden, weight, target, self.edf, bias=bias, class_weight=self.class_weight,
                               **self.options)
