"""PyTorch losses: every weighting scheme as a drop-in replacement for ``nn.CrossEntropyLoss``.

**EDF-driven losses** (:class:`EDFLoss`, :class:`DMLoss`, :class:`IMAELoss`) manipulate the
derivative directly, as in the DM paper's code. For element ``i`` with logits ``z_i``, label ``y_i``
and ``p_i = softmax(z_i)[y_i]``, the gradient is

.. math::

    \\frac{\\partial \\mathcal{L}}{\\partial z_i} = \\frac{c_{y_i}\\, w(p_i)}{Z}\\, u_i, \\qquad
    u_i = \\frac{\\mathrm{softmax}(z_i) - e_{y_i}}{2(1 - p_i)} = \\tfrac12\\left(\\mathrm{softmax}_{j \\ne y_i}(z_i) - e_{y_i}\\right),

the unit-L1 CCE direction times the example's weight ``w(p)`` (an :class:`dmcore.edf.EDF`) and its
class weight ``c``, over a normaliser ``Z``. ``u_i`` is computed as the right-hand form, without
dividing by ``1 - p_i``, so it is exact and finite at ``p_i = 1``.

``eps > 0`` multiplies the gradient by ``2(1 - p_i) / (2(1 - p_i) + eps)``: the paper's code
divides by ``2 - 2 p_i + 1e-6``, not by ``2(1 - p_i)``. With ``eps = 0`` every example keeps pushing
with the length ``w(p)`` however well it is fitted, so its margin grows without bound; with
``eps > 0`` an example stops once ``1 - p_i`` falls well below ``eps`` (a margin of about
``log(1/eps)``, 14 for ``1e-6``), as under cross-entropy. :class:`DMLoss` and :class:`IMAELoss`
default to the code's ``eps = 1e-6``: with ``eps = 0``, DM collapsed on clean MNIST-1D in every seed
of the book's records ``eps-objective`` (:class:`dmcore.train.Protocol`);
:class:`EDFLoss` defaults to ``eps = 0``, so that natural weights reproduce their losses' gradients. With ``reduction='mean'``,
``Z`` is the batch sum of ``c w`` (``normalizer='batch'``, the paper's derivative normalisation) or
of ``c`` (``normalizer='count'``, the convention of ``nn.CrossEntropyLoss``); with ``'sum'`` and
``'none'``, ``Z = 1``.

The **forward value** is the emphasis-weighted cross-entropy ``sum_i c w(p_i) (-log p_i) / Z``
(per element for ``'none'``), which the paper's code reports too. It is for monitoring only: the
gradient applied is the manipulated one above, not the gradient of this value, and for DM and IMAE
no elementary objective has that gradient. ``-log p`` is clipped at ``-log(tiny)`` of the compute dtype.

**Closed-form losses** (:class:`CCELoss`, :class:`MAELoss`, :class:`MSELoss`, :class:`GCELoss`, and the
noise-robust baselines :class:`SCELoss`, :class:`NCERCELoss`, :class:`Poly1Loss`) are written from their
definitions and differentiated by autograd. With its natural weight
(``edf.cce()``, ...) and ``normalizer='count'`` the EDF path reproduces their gradients exactly,
and with ``normalizer='batch'`` it gives the papers' "-DN" variants.

Conventions (all losses): logits ``(N, C)`` or ``(N, C, d1, ..., dk)`` with ``C >= 2``, class-index
targets ``(N)`` or ``(N, d1, ..., dk)``, ``ignore_index`` (ignored elements weigh nothing and are
not counted), ``reduction`` in ``'mean' | 'sum' | 'none'`` (``'none'`` returns shape
``(N, d1, ..., dk)``), an optional per-class ``weight`` of shape ``(C)``. float16 and bfloat16
logits are computed in float32 and their gradients returned in the input's dtype.

Bad input raises: ``TypeError`` for non-floating logits or non-integer targets (class
probabilities are not supported); ``ValueError`` for wrong shapes, ``C < 2``, targets outside
``[0, C)`` other than ``ignore_index``, NaN or ``+inf`` logits (or a row of only ``-inf``) in a
non-ignored element, and an EDF that returns negative or non-finite weights. These data checks cost
at most two device-to-host synchronisations per call. An empty batch, or one whose elements are all
ignored, gives a loss of 0 and a zero gradient for ``'mean'`` (``nn.CrossEntropyLoss`` gives NaN).

**Data-parallel training.** When ``torch.distributed`` is initialised with more than one process,
the ``'mean'`` normaliser is summed over the ranks (and divided by the world size, since
``DistributedDataParallel`` averages gradients), so ``k`` ranks with batch ``b`` give the same
gradients as one process with batch ``k*b``. Wrap the model in ``DistributedDataParallel`` as usual
and call the loss on each rank's batch; ``sync_normalizer=False`` turns this off.

Reference: X. Wang et al., *Derivative manipulation for general example weighting*, arXiv:1905.11233.

Example::

    >>> import torch
    >>> from dmcore import losses
    >>> logits = torch.randn(8, 10, requires_grad=True)
    >>> target = torch.randint(0, 10, (8,))
    >>> loss = losses.DMLoss(lam=0.5, beta=8)(logits, target)
    >>> loss.backward()
    >>> round(logits.grad.abs().sum().item(), 4)  # the batch-normalised weights sum to one
    1.0
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn as nn

from . import edf as edfs
from . import kernels
from .edf import EDF

__all__ = ["edf_loss", "dm_loss", "imae_loss", "cce_loss", "mae_loss", "mse_loss", "gce_loss", "sce_loss",
           "nce_rce_loss", "poly1_loss", "EDFLoss", "DMLoss", "IMAELoss", "CCELoss", "MAELoss", "MSELoss",
           "GCELoss", "SCELoss", "NCERCELoss", "Poly1Loss"]

REDUCTIONS = ("mean", "sum", "none")
NORMALIZERS = ("batch", "count")


# ----------------------------------------------------------------------------------------------
# Input handling shared by every loss
# ----------------------------------------------------------------------------------------------

def _check_call(input, target, weight, reduction):
    """Static checks (no synchronisation); returns the number of classes."""
    if not torch.is_tensor(input) or not input.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor, got {getattr(input, 'dtype', type(input).__name__)}")
    if input.dim() < 2:
        raise ValueError(f"logits must have shape (N, C) or (N, C, d1, ..., dk), got {tuple(input.shape)}")
    num_classes = input.shape[1]
    if num_classes < 2:
        raise ValueError(f"logits need at least 2 classes along dim 1, got C = {num_classes}: with one class "
                         "p = 1 always and there is nothing to learn")
    if not torch.is_tensor(target) or target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError("targets must be class indices in an integer tensor, got "
                        f"{getattr(target, 'dtype', type(target).__name__)} (class-probability targets are not supported)")
    expected = (input.shape[0],) + tuple(input.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(f"target shape {tuple(target.shape)} does not match logits {tuple(input.shape)}: expected {expected}")
    if target.device != input.device:
        raise ValueError(f"target is on {target.device} but logits are on {input.device}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if weight is not None:
        if not torch.is_tensor(weight) or weight.shape != (num_classes,) or not weight.is_floating_point():
            raise ValueError(f"weight must be a floating-point tensor of shape ({num_classes},), got "
                             f"{tuple(weight.shape) if torch.is_tensor(weight) else type(weight).__name__}")
    return num_classes


def _targets(target, num_classes, ignore_index):
    """(safe class indices for gather/scatter, mask of counted elements, mask of invalid targets)."""
    target = target.long()
    counted = target != ignore_index
    out_of_range = counted & ((target < 0) | (target >= num_classes))
    safe = torch.where(counted & ~out_of_range, target, torch.zeros_like(target))
    return safe, counted & ~out_of_range, out_of_range


def _raise_for(out_of_range, target, num_classes, ignore_index, nonfinite=None):
    """Raise a ValueError naming the first offending element, if any (called after one sync)."""
    if out_of_range is not None and bool(out_of_range.any()):
        idx = tuple(int(i) for i in out_of_range.nonzero()[0])
        raise ValueError(f"target {int(target[idx])} at index {idx} is outside [0, {num_classes - 1}] "
                         f"and is not ignore_index={ignore_index}")
    if nonfinite is not None and bool(nonfinite.any()):
        idx = tuple(int(i) for i in nonfinite.nonzero()[0])
        raise ValueError(f"logits contain NaN or +inf (or only -inf) in {int(nonfinite.sum())} element(s), "
                         f"first at index {idx}")


def _class_weights(weight, target, counted, dtype):
    """Each element's class weight, 0 where not counted (1 for every counted element without ``weight``)."""
    if weight is None:
        return counted.to(dtype)
    return torch.where(counted, weight.to(dtype)[torch.where(counted, target.long(), 0)], 0.0)


def _reduce(values, c, reduction):
    """Closed-form reduction: the class-weighted mean (0 when nothing counts), sum, or none."""
    if reduction == "none":
        return values
    total = values.sum()
    if reduction == "sum":
        return total
    denom = c.sum()
    return torch.where(denom > 0, total / torch.where(denom > 0, denom, torch.ones_like(denom)), torch.zeros_like(total))


def _synced(z, sync):
    """The normaliser summed over the ranks and divided by the world size (DDP averages gradients)."""
    if sync and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        z = z.clone()
        dist.all_reduce(z, op=dist.ReduceOp.SUM)
        z = z / dist.get_world_size()
    return z


# ----------------------------------------------------------------------------------------------
# The EDF path: value and manipulated gradient in one autograd Function
# ----------------------------------------------------------------------------------------------

def _parts_torch(input, target, num_classes, ignore_index, compute):
    """The reference producer, any device and dtype (PyTorch ops).

    Returns ``buf`` (the softmax over the other classes times ``norm``, zero at the label and for
    ignored elements), ``p``, ``log p`` and ``norm`` per element, and the safe label index; raises for
    bad targets or logits. One synchronisation, plus an exact recomputation of the elements whose
    ``1 - p`` underflows (``p = 1`` to working precision).
    """
    tiny = torch.finfo(compute).tiny
    safe, counted, out_of_range = _targets(target, num_classes, ignore_index)
    index = safe.unsqueeze(1)
    buf = torch.softmax(input, dim=1, dtype=compute)
    p = buf.gather(1, index).squeeze(1)
    buf.scatter_(1, index, 0.0)
    rest = buf.sum(1)                                  # sum over j != y of p_j = 1 - p, accurate near p = 1
    nonfinite = ~(torch.isfinite(rest) & torch.isfinite(p))
    underflow = counted & (rest < tiny ** (2 / 3))
    flags = torch.stack([out_of_range.any(), (nonfinite & counted).any(), underflow.any(), nonfinite.any()])
    bad_target, bad_logits, any_underflow, any_nonfinite = flags.tolist()  # the one synchronisation
    if bad_target or bad_logits:
        _raise_for(out_of_range, target, num_classes, ignore_index, nonfinite & counted)
    one_minus_p, norm = rest, rest
    if any_nonfinite:  # only in ignored elements: they must not poison the gradient
        buf.movedim(1, -1)[nonfinite] = 0.0
        one_minus_p, p = torch.where(nonfinite, 1.0, one_minus_p), torch.where(nonfinite, 0.0, p)
    if any_underflow:
        rows = input.movedim(1, -1)[underflow].to(compute)           # (K, C), K small
        rows_y = safe[underflow].unsqueeze(1)
        masked = rows.scatter(1, rows_y, -math.inf)
        top = masked.amax(1)                                          # -inf: no other class at all
        direction = torch.softmax(masked, dim=1)                      # exact: the max is subtracted first
        direction = torch.where(torch.isfinite(top).unsqueeze(1), direction, 0.0)  # no other class: u = -e_y/2
        log_rest = (top - rows.gather(1, rows_y).squeeze(1)) + torch.log(torch.exp(masked - top.unsqueeze(1)).sum(1))
        buf.movedim(1, -1)[underflow] = direction
        one_minus_p = one_minus_p.masked_scatter(underflow, torch.sigmoid(log_rest))
        norm = norm.masked_fill(underflow, 1.0)
    norm = torch.where(counted, norm, 1.0)            # ignored elements: scale 0 anyway
    log_p = torch.where(one_minus_p < 0.5, torch.log1p(-one_minus_p), torch.log(p))
    return buf, torch.where(counted, p, 0.0), log_p, norm, safe


def _scale_torch(buf, index, k, norm):
    """The gradient from the buffer: ``buf * k / norm`` off the label, ``-k`` at it (in place)."""
    buf.mul_((k / norm).unsqueeze(1))
    buf.scatter_(1, index.unsqueeze(1), (-k).unsqueeze(1))
    return buf


def _parts_kernel(kernel, input, target, num_classes, ignore_index):
    """The outputs of :func:`_parts_torch` from the compiled CPU kernel (float32, one pass), except
    that the last is the target itself (the kernel skips ignored elements)."""
    x = input.contiguous()
    t = target.contiguous().long()
    n, spatial = x.shape[0], math.prod(x.shape[2:])
    buf = torch.empty_like(x)
    p, odds, norm = (torch.empty(t.shape, dtype=x.dtype) for _ in range(3))
    kernel.edf_forward_f32(x.data_ptr(), t.data_ptr(), n, num_classes, spatial, ignore_index, buf.data_ptr(),
                           p.data_ptr(), odds.data_ptr(), norm.data_ptr(), torch.get_num_threads())
    low, high = torch.stack(torch.aminmax(p)).tolist() if p.numel() else (0.0, 0.0)
    if low < 0 or math.isnan(high):  # the kernel marks bad targets with p = -1 and bad logits with NaN
        safe, counted, out_of_range = _targets(target, num_classes, ignore_index)
        _raise_for(out_of_range, target, num_classes, ignore_index, counted & torch.isnan(p))
    return buf, p, odds.log1p_().neg_(), norm, t   # log p = -log(1 + odds), accurate at both ends


class _EDFFunction(torch.autograd.Function):
    """Forward computes the gradient itself, into the softmax buffer (the only (N, C, ...) tensor it
    allocates); backward multiplies it by the upstream gradient, in place."""

    @staticmethod
    def forward(ctx, input, target, edf, weight, ignore_index, reduction, normalizer, sync, eps):
        num_classes = input.shape[1]
        compute = torch.float32 if input.dtype in (torch.float16, torch.bfloat16) else input.dtype
        kernel = kernels.cpu() if (input.device.type == "cpu" and input.dtype == torch.float32
                                   and not torch.compiler.is_compiling()) else None
        if kernel is not None:
            buf, p, log_p, norm, index = _parts_kernel(kernel, input, target, num_classes, ignore_index)
        else:
            buf, p, log_p, norm, index = _parts_torch(input, target, num_classes, ignore_index, compute)
        counted = target != ignore_index

        w = torch.where(counted, edf(p), 0.0)
        c = None if weight is None else _class_weights(weight, target, counted, compute)
        cw = w if c is None else c * w
        low, high = torch.stack(torch.aminmax(cw)).tolist() if cw.numel() else (0.0, 0.0)
        if low < 0 or not math.isfinite(high):
            bad = counted & ~(torch.isfinite(w) & (w >= 0))
            raise ValueError(f"EDF {edf.name} returned a negative or non-finite weight at p = {float(p[bad][0]):.6g}")
        if reduction == "mean":
            total = cw.sum() if normalizer == "batch" else (counted.sum() if c is None else c.sum())
            z = _synced(total.to(compute), sync)
            z = torch.where(z > 0, z, torch.ones_like(z))  # nothing counts: loss 0, gradient 0
        else:
            z = torch.ones((), dtype=compute, device=input.device)

        values = cw * -log_p.clamp_min(math.log(torch.finfo(compute).tiny))
        out = values if reduction == "none" else values.sum() / z if reduction == "mean" else values.sum()
        if ctx.needs_input_grad[0]:
            k = cw * (0.5 / z)                              # half the scale of each element
            if eps > 0:                                     # the code's 2 - 2p + eps in place of 2(1 - p)
                r = torch.where(counted, -2 * torch.expm1(log_p), 0.0)
                k = k * (r / (r + eps))
            if kernel is not None:
                k, norm = k.contiguous(), norm.contiguous()
                kernel.edf_scale_f32(buf.data_ptr(), index.data_ptr(), buf.shape[0], num_classes,
                                     math.prod(buf.shape[2:]), ignore_index, k.data_ptr(), norm.data_ptr(),
                                     1.0, torch.get_num_threads())
            elif torch.compiler.is_compiling():
                buf = (buf * (k / norm).unsqueeze(1)).scatter(1, index.unsqueeze(1), (-k).unsqueeze(1))
            else:
                buf = _scale_torch(buf, index, k, norm)
            ctx.save_for_backward(buf)
            ctx.input_dtype = input.dtype
        return out.to(input.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        g = grad_output.to(grad.dtype)
        if g.dim() > 0:                                     # reduction='none': one factor per element
            g = g.unsqueeze(1)
        elif g.device.type == "cpu" and float(g) == 1.0:    # loss.backward(): nothing to multiply
            return grad.to(ctx.input_dtype), None, None, None, None, None, None, None, None
        grad = grad * g if torch.compiler.is_compiling() else grad.mul_(g)
        return grad.to(ctx.input_dtype), None, None, None, None, None, None, None, None


def edf_loss(input, target, edf: EDF, weight=None, ignore_index: int = -100, reduction: str = "mean",
             normalizer: str = "batch", sync_normalizer: bool = True, eps: float = 0.0):
    """Loss whose gradient w.r.t. the logits is ``c w(p) / Z`` times the unit-L1 CCE direction.

    Args:
        input: logits ``(N, C)`` or ``(N, C, d1, ..., dk)``, float16/bfloat16/float32/float64.
        target: class indices ``(N)`` or ``(N, d1, ..., dk)``.
        edf: the emphasis density function ``w(p)`` (:mod:`dmcore.edf`).
        weight: optional per-class weights ``(C)``.
        ignore_index: target value whose elements weigh nothing and are not counted.
        reduction: ``'mean'`` (over ``Z``), ``'sum'`` or ``'none'``.
        normalizer: ``Z`` for ``'mean'``: ``'batch'`` (sum of weights) or ``'count'`` (sum of class weights).
        sync_normalizer: sum ``Z`` over the ranks when ``torch.distributed`` is initialised.
        eps: ``>= 0``; the gradient is multiplied by ``2(1 - p) / (2(1 - p) + eps)`` (module docstring).

    Returns:
        The emphasis-weighted cross-entropy (a scalar, or ``(N, d1, ..., dk)`` for ``'none'``): for
        monitoring; the gradient is the manipulated one (module docstring).
    """
    if not isinstance(edf, EDF):
        raise TypeError(f"edf must be a dmcore.edf.EDF (e.g. edf.dm(0.5, 8)), got {type(edf).__name__}")
    if normalizer not in NORMALIZERS:
        raise ValueError(f"normalizer must be one of {NORMALIZERS}, got {normalizer!r}")
    _check_eps(eps)
    _check_call(input, target, weight, reduction)
    return _EDFFunction.apply(input, target, edf, weight, ignore_index, reduction, normalizer, sync_normalizer,
                              float(eps))


def _check_eps(eps):
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")


PAPER_EPS = 1e-6   # the DM paper's code: the gradient divided by 2 - 2p + 1e-6


def dm_loss(input, target, lam: float = 0.5, beta: float = 8, eps: float = PAPER_EPS, **kwargs):
    """:func:`edf_loss` with DM's EDF ``exp(beta p^lam (1 - p))`` and the code's ``eps``."""
    return edf_loss(input, target, edfs.dm(lam, beta), eps=eps, **kwargs)


def imae_loss(input, target, T: float = 8, eps: float = PAPER_EPS, **kwargs):
    """:func:`edf_loss` with IMAE's EDF ``exp(T p (1 - p))`` and the code's ``eps``."""
    return edf_loss(input, target, edfs.imae(T), eps=eps, **kwargs)


# ----------------------------------------------------------------------------------------------
# Closed-form losses, differentiated by autograd: the EDF path's independent check
# ----------------------------------------------------------------------------------------------

def _log_p(input, target, ignore_index, full=False):
    """log p_y per element (autograd), zero where not counted, the safe targets and the counted mask;
    with ``full``, also the log-probabilities of every class ``(N, C, ...)``."""
    num_classes = input.shape[1]
    safe, counted, out_of_range = _targets(target, num_classes, ignore_index)
    log_probs = torch.log_softmax(input.float() if input.dtype in (torch.float16, torch.bfloat16) else input, dim=1)
    log_p = log_probs.gather(1, safe.unsqueeze(1)).squeeze(1)
    nonfinite = counted & torch.isnan(log_p)
    flags = torch.stack([out_of_range.any(), nonfinite.any()]).tolist()  # the one synchronisation
    if any(flags):
        _raise_for(out_of_range, target, num_classes, ignore_index, nonfinite)
    log_p = torch.where(counted, log_p, 0.0)
    return (log_p, safe, counted, log_probs) if full else (log_p, safe, counted)


def _closed_form(per_element, full=False):
    """A functional closed-form loss from ``per_element(log_p) -> loss`` (one definition each);
    ``full``: ``per_element(log_p, log_probs)``, for a loss that reads every class's probability."""

    def loss(input, target, weight=None, ignore_index: int = -100, reduction: str = "mean", **params):
        _check_call(input, target, weight, reduction)
        log_p, safe, counted, *rest = _log_p(input, target, ignore_index, full=full)
        c = _class_weights(weight, safe, counted, log_p.dtype)
        values = torch.where(counted, per_element(log_p, *rest, **params), 0.0)
        return _reduce(c * values, c, reduction).to(input.dtype)

    return loss


cce_loss = _closed_form(lambda log_p: -log_p)
cce_loss.__doc__ = "Categorical cross-entropy, ``-log p``; same values as ``F.cross_entropy`` (0 for an all-ignored mean)."
mae_loss = _closed_form(lambda log_p: 1 - log_p.exp())
mae_loss.__doc__ = "Mean absolute error in the DM paper's scaling, ``1 - p`` (the IMAE paper's is twice that)."
mse_loss = _closed_form(lambda log_p: (1 - log_p.exp()) ** 2)
mse_loss.__doc__ = "Mean squared error in the DM paper's form, ``(1 - p)^2``."
_gce = _closed_form(lambda log_p, q: (1 - torch.exp(q * log_p)) / q)
#: The reverse cross-entropy's log of zero, ``A`` in Wang et al. (ICCV 2019): RCE = -A (1 - p).
RCE_A = -4.0
_sce = _closed_form(lambda log_p, alpha, beta: alpha * -log_p + beta * -RCE_A * (1 - log_p.exp()))
_poly1 = _closed_form(lambda log_p, epsilon: -log_p + epsilon * (1 - log_p.exp()))
_nce_rce = _closed_form(lambda log_p, log_probs, alpha, beta:
                        alpha * log_p / log_probs.sum(1) + beta * -RCE_A * (1 - log_p.exp()), full=True)


def gce_loss(input, target, q: float = 0.7, **kwargs):
    """Generalised cross-entropy (Zhang & Sabuncu 2018), ``(1 - p^q) / q`` with ``0 < q <= 1``."""
    return _gce(input, target, q=edfs.check_parameter("q", q, 0, 1, low_open=True), **kwargs)


def _alpha_beta(alpha, beta):
    alpha, beta = edfs.check_parameter("alpha", alpha, 0), edfs.check_parameter("beta", beta, 0)
    if alpha == 0 and beta == 0:
        raise ValueError("alpha and beta must not both be 0: the loss would be constant")
    return alpha, beta


def sce_loss(input, target, alpha: float = 0.1, beta: float = 1.0, **kwargs):
    """Symmetric cross-entropy (Wang et al., ICCV 2019), ``alpha (-log p) + beta RCE`` with the reverse
    cross-entropy ``RCE = -sum_k p_k log e_{y,k} = -A (1 - p)``, ``A = -4``. Its weight is
    ``2(1 - p)(alpha + 4 beta p)`` (:func:`dmcore.edf.sce`). Defaults: the paper's CIFAR-10 setting."""
    alpha, beta = _alpha_beta(alpha, beta)
    return _sce(input, target, alpha=alpha, beta=beta, **kwargs)


def poly1_loss(input, target, epsilon: float = 1.0, **kwargs):
    """Poly-1 (Leng et al., ICLR 2022), ``-log p + epsilon (1 - p)`` with ``epsilon >= -1``; its weight is
    ``2(1 - p)(1 + epsilon p)`` (:func:`dmcore.edf.poly1`)."""
    return _poly1(input, target, epsilon=edfs.check_parameter("epsilon", epsilon, -1), **kwargs)


def nce_rce_loss(input, target, alpha: float = 1.0, beta: float = 1.0, **kwargs):
    """The active-passive loss NCE+RCE (Ma et al., ICML 2020): ``alpha NCE + beta RCE`` with the normalised
    cross-entropy ``NCE = log p_y / sum_k log p_k`` and RCE as in :func:`sce_loss`. NCE reads every
    class's probability, so its gradient is not a weighting of the CCE direction and it has no
    weight ``w(p)`` (:func:`dmcore.symbolic.derive` refuses it). Defaults: the paper's CIFAR-10 setting."""
    alpha, beta = _alpha_beta(alpha, beta)
    return _nce_rce(input, target, alpha=alpha, beta=beta, **kwargs)


# ----------------------------------------------------------------------------------------------
# Modules: the call convention of nn.CrossEntropyLoss
# ----------------------------------------------------------------------------------------------

class _Loss(nn.Module):
    def __init__(self, weight=None, ignore_index: int = -100, reduction: str = "mean"):
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.register_buffer("weight", weight)
        self.ignore_index = ignore_index
        self.reduction = reduction

    def _common(self):
        return dict(weight=self.weight, ignore_index=self.ignore_index, reduction=self.reduction)


class EDFLoss(_Loss):
    """:func:`edf_loss` as a module: ``EDFLoss(edf.normal(psi=0.7, beta=8))(logits, target)``."""

    def __init__(self, edf: EDF, weight=None, ignore_index: int = -100, reduction: str = "mean",
                 normalizer: str = "batch", sync_normalizer: bool = True, eps: float = 0.0):
        super().__init__(weight, ignore_index, reduction)
        _check_eps(eps)
        if not isinstance(edf, EDF):
            raise TypeError(f"edf must be a dmcore.edf.EDF, got {type(edf).__name__}")
        if normalizer not in NORMALIZERS:
            raise ValueError(f"normalizer must be one of {NORMALIZERS}, got {normalizer!r}")
        self.edf, self.normalizer, self.sync_normalizer, self.eps = edf, normalizer, sync_normalizer, eps

    def forward(self, input, target):
        return edf_loss(input, target, self.edf, normalizer=self.normalizer,
                        sync_normalizer=self.sync_normalizer, eps=self.eps, **self._common())

    def extra_repr(self):
        return f"edf={self.edf.name}, normalizer={self.normalizer}, reduction={self.reduction}, eps={self.eps:g}"


class DMLoss(EDFLoss):
    """Derivative manipulation with ``w(p) = exp(beta p^lam (1 - p))``: mode ``lam/(lam+1)``, spread ``beta``."""

    def __init__(self, lam: float = 0.5, beta: float = 8, eps: float = PAPER_EPS, **kwargs):
        super().__init__(edfs.dm(lam, beta), eps=eps, **kwargs)


class IMAELoss(EDFLoss):
    """IMAE: ``w(p) = exp(T p (1 - p))`` (DM with ``lam = 1, beta = T``)."""

    def __init__(self, T: float = 8, eps: float = PAPER_EPS, **kwargs):
        super().__init__(edfs.imae(T), eps=eps, **kwargs)


class CCELoss(_Loss):
    """Categorical cross-entropy, :func:`cce_loss`."""

    def forward(self, input, target):
        return cce_loss(input, target, **self._common())


class MAELoss(_Loss):
    """Mean absolute error ``1 - p``, :func:`mae_loss`."""

    def forward(self, input, target):
        return mae_loss(input, target, **self._common())


class MSELoss(_Loss):
    """Mean squared error ``(1 - p)^2``, :func:`mse_loss`."""

    def forward(self, input, target):
        return mse_loss(input, target, **self._common())


class GCELoss(_Loss):
    """Generalised cross-entropy ``(1 - p^q) / q``, :func:`gce_loss`."""

    def __init__(self, q: float = 0.7, **kwargs):
        super().__init__(**kwargs)
        self.q = edfs.check_parameter("q", q, 0, 1, low_open=True)

    def forward(self, input, target):
        return gce_loss(input, target, q=self.q, **self._common())


class SCELoss(_Loss):
    """Symmetric cross-entropy ``alpha (-log p) + beta RCE``, :func:`sce_loss`."""

    def __init__(self, alpha: float = 0.1, beta: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.alpha, self.beta = _alpha_beta(alpha, beta)

    def forward(self, input, target):
        return sce_loss(input, target, alpha=self.alpha, beta=self.beta, **self._common())


class NCERCELoss(_Loss):
    """The active-passive loss ``alpha NCE + beta RCE``, :func:`nce_rce_loss`."""

    def __init__(self, alpha: float = 1.0, beta: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.alpha, self.beta = _alpha_beta(alpha, beta)

    def forward(self, input, target):
        return nce_rce_loss(input, target, alpha=self.alpha, beta=self.beta, **self._common())


class Poly1Loss(_Loss):
    """Poly-1 ``-log p + epsilon (1 - p)``, :func:`poly1_loss`."""

    def __init__(self, epsilon: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = edfs.check_parameter("epsilon", epsilon, -1)

    def forward(self, input, target):
        return poly1_loss(input, target, epsilon=self.epsilon, **self._common())
