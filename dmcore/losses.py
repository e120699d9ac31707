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

**Target distributions** (class-probability targets, label smoothing). An element's target ``t_i``
with class weights ``a`` (``weight``, else 1) is read as its mass ``c_i`` times a distribution ``r_i``:

.. math::

    c_i = \\sum_k a_k t_{ik}, \\qquad r_i = \\frac{a \\odot t_i}{c_i}, \\qquad p_i = r_i^\\top \\mathrm{softmax}(z_i),
    \\qquad \\frac{\\partial \\mathcal{L}}{\\partial z_i} = \\frac{c_i\\, w(p_i)}{Z}\\,
    \\frac{\\mathrm{softmax}(z_i) - r_i}{2(1 - p_i)},

with ``1 - p_i = sum_k softmax_k (1 - r_ik)`` (no cancellation) and no gradient where ``c_i = 0``. For
a class index, ``t = e_y`` gives ``c = a_y``, ``r = e_y``: the formula above. With cross-entropy's
weight ``w = 2(1 - p)`` the gradient is ``c softmax - a t``, that of ``F.cross_entropy`` with
``weight`` and probability targets or ``label_smoothing`` (derived with SymPy in
``tests/lib/test_oracle.py``). Probability targets do not need to sum to 1, as in PyTorch: a target of
total ``m`` weighs ``m`` times its distribution (twice the target, twice the value and gradient).
The kernels take class indices only; a target distribution always runs on PyTorch's ops
(:mod:`dmcore.edf_operator`, where the gradient is computed).

``eps > 0`` multiplies the gradient by ``2(1 - p_i) / (2(1 - p_i) + eps)``: the paper's code
divides by ``2 - 2 p_i + 1e-6``, not by ``2(1 - p_i)``. With ``eps = 0`` every example keeps pushing
with the length ``w(p)`` however well it is fitted, so its margin grows without bound; with
``eps > 0`` an example stops once ``1 - p_i`` falls well below ``eps`` (a margin of about
``log(1/eps)``, 14 for ``1e-6``), as under cross-entropy. :class:`DMLoss` and :class:`IMAELoss`
default to the code's ``eps = 1e-6``: with ``eps = 0``, DM collapsed on clean MNIST-1D in every seed
of the book's records ``eps-objective`` (:class:`dmcore.lab.train.Protocol`); :class:`EDFLoss` defaults to
``eps = 0``, so that natural weights reproduce their losses' gradients. With ``reduction='mean'``,
``Z`` is the batch sum of ``c w`` (``normalizer='batch'``, the paper's derivative normalisation) or
the count of ``nn.CrossEntropyLoss`` (``normalizer='count'``): the sum of ``weight[y]`` over the
counted class indices (label smoothing or not), the number of elements for probability targets;
with ``'sum'`` and ``'none'``, ``Z = 1``.

**The forward value of an EDF loss is for monitoring only.** It is the emphasis-weighted
cross-entropy ``sum_i c w(p_i) (-log p_i) / Z`` (per element for ``'none'``), which the paper's code
reports too. The gradient applied is the manipulated one above, not the gradient of this value, and
for DM and IMAE no elementary objective has that gradient. ``-log p`` is clipped at ``-log(tiny)``
of the compute dtype. With ``create_graph=True`` the manipulated gradient is itself differentiable
(second derivatives for gradient penalties and meta-learned weights).

**Closed-form losses** (:class:`CCELoss`, :class:`MAELoss`, :class:`MSELoss`, :class:`DFTLoss`,
:class:`GCELoss`, and the noise-robust baselines :class:`SCELoss`, :class:`NCERCELoss`, :class:`Poly1Loss`)
are written from their definitions and differentiated by autograd. With its natural weight (``edf.cce()``, ...) and
``normalizer='count'`` the EDF path reproduces their gradients exactly for class indices, and with
``normalizer='batch'`` it gives the papers' "-DN" variants. A closed-form loss ``l(p_y)`` extends to a
target distribution as its expectation, ``sum_c t_c weight_c l(p_c)``, which for CCE is
``nn.CrossEntropyLoss``'s soft-target and label-smoothing loss exactly, and so is the EDF path with
``edf.cce()``. For the other natural weights the two extensions differ on a target distribution:
the expectation reads every ``p_c``, the EDF path the one ``p = r^T softmax``.

Conventions (all losses): logits ``(N, C)`` or ``(N, C, d1, ..., dk)`` with ``C >= 2``, or unbatched
``(C)``; targets are class indices ``(N)`` or ``(N, d1, ..., dk)`` (``()`` for unbatched logits; any
integer dtype) or class probabilities shaped like the logits (:mod:`dmcore.targets`), ``>= 0`` and
not necessarily summing to 1; ``ignore_index`` (ignored elements weigh nothing, are not counted, and
their logits may be anything, NaN included); ``reduction`` in ``'mean' | 'sum' | 'none'``
(``'none'`` returns shape ``(N, d1, ..., dk)``, and a 0-d tensor for unbatched logits, as every
reduction does); an optional per-class ``weight`` of shape ``(C)``; ``label_smoothing`` in
``[0, 1]``. float16 and bfloat16 logits are computed in float32 and their gradients returned in the
input's dtype.

Bad input raises: ``TypeError`` for non-floating logits, targets that are neither indices nor
probabilities, a non-integer ``ignore_index`` or a ``weight`` that is no floating-point tensor;
``ValueError`` for wrong shapes (a ``weight`` not of shape ``(C)``, named with its number of classes),
``C < 2``, targets outside ``[0, C)`` other than ``ignore_index``, negative or non-finite probability
targets, NaN or ``+inf`` logits (or a row of only ``-inf``) in a counted element, a negative or
non-finite class weight, and an EDF that returns negative or non-finite weights. The data checks
cost one device-to-host synchronisation per call; ``check=False`` skips them (for production
training on a GPU, for CUDA graphs), and then bad data gives NaN instead of an error. Under
``torch.compile`` the closed-form losses skip them too (a synchronisation would break the graph);
the EDF losses run them inside their operator. An empty batch, or one whose elements are all
ignored, gives a loss of 0 and a zero gradient for ``'mean'`` (``nn.CrossEntropyLoss`` gives NaN).

**Data-parallel training.** When ``torch.distributed`` is initialised with more than one process
and a gradient will be taken (grad mode on, logits requiring grad), the ``'mean'`` normaliser of an
EDF loss is summed over the ranks of ``process_group`` (default: all) and divided by their number,
since ``DistributedDataParallel`` averages gradients: ``k`` ranks with batch ``b`` give the gradients
of one process with batch ``k*b``. Every rank must then call the loss. Under ``torch.no_grad()`` (an
evaluation on one rank) nothing is synchronised. ``sync_normalizer=False`` turns this off.

**Implementation.** ``impl='auto'`` (default) runs the compiled CPU kernel for float32 logits on CPU
with class indices (unless ``DMCORE_CPU_KERNEL=0``), the Triton kernels on CUDA with class indices
(where Triton is installed), and PyTorch's ops elsewhere; ``'torch'``, ``'c'`` and ``'triton'``
choose one (:func:`dmcore.edf_operator.implementation` says which runs; the logger
``dmcore.losses`` reports the first use of each). The EDF losses are the custom operator
``torch.ops.dmcore.edf_loss``, so ``torch.compile(fullgraph=True)`` compiles a model and its loss
in one graph.

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

import inspect
import math

import torch
import torch.nn as nn

from . import edf as edfs
from . import edf_operator, targets
from .edf import EDF, default
from .targets import REDUCTIONS

__all__ = ["edf_loss", "dm_loss", "imae_loss", "cce_loss", "mae_loss", "mse_loss", "dft_loss", "gce_loss", "sce_loss",
           "nce_rce_loss", "poly1_loss", "EDFLoss", "DMLoss", "IMAELoss", "CCELoss", "MAELoss", "MSELoss",
           "DFTLoss", "GCELoss", "SCELoss", "NCERCELoss", "Poly1Loss", "from_name", "names", "PAPER_EPS", "RCE_A"]

NORMALIZERS = ("batch", "count")
PAPER_EPS = 1e-6   # the DM paper's code: the gradient divided by 2 - 2p + 1e-6
#: The reverse cross-entropy's log of zero, ``A`` in Wang et al. (ICCV 2019): RCE = -A (1 - p). The default
#: is the papers' code's (the one-hot label clamped at 1e-4: ``A = ln(1e-4) = -9.2103``); their text says -4.
RCE_A = edfs.RCE_A


def _check_eps(eps):
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")


def _check_edf_args(edf, normalizer, eps, impl):
    if not isinstance(edf, EDF):
        raise TypeError(f"edf must be a dmcore.edf.EDF (e.g. edf.dm(0.5, 8)), got {type(edf).__name__}")
    if normalizer not in NORMALIZERS:
        raise ValueError(f"normalizer must be one of {NORMALIZERS}, got {normalizer!r}")
    if impl not in edf_operator.IMPLS:
        raise ValueError(f"impl must be one of {edf_operator.IMPLS}, got {impl!r}")
    _check_eps(eps)


# ----------------------------------------------------------------------------------------------
# The EDF path: one custom operator computes the value and the manipulated gradient
# ----------------------------------------------------------------------------------------------

def edf_loss(input, target, edf: EDF, weight=None, ignore_index: int = -100, reduction: str = "mean",
             normalizer: str = "batch", sync_normalizer: bool = True, eps: float = 0.0, label_smoothing: float = 0.0,
             process_group=None, check: bool = True, impl: str = "auto"):
    """Loss whose gradient w.r.t. the logits is ``c w(p) / Z`` times the unit-L1 CCE direction.

    .. math::

        \\frac{\\partial \\mathcal{L}}{\\partial z_i} = \\frac{c_i\\, w(p_i)}{Z}\\,
        \\frac{\\mathrm{softmax}(z_i) - r_i}{2(1 - p_i)}, \\qquad p_i = r_i^\\top \\mathrm{softmax}(z_i),
        \\qquad c_i = \\sum_k a_k t_{ik}, \\qquad r_i = \\frac{a \\odot t_i}{c_i}

    for the target ``t_i`` (``e_y`` for a class index, smoothed with ``label_smoothing``) and the class
    weights ``a``: a class index has ``c = a_y`` and ``r = e_y``; a probability target (any total) is its
    mass ``c`` times the distribution ``r``. With ``edf.cce()`` and ``normalizer='count'`` this is
    ``F.cross_entropy``'s gradient for every target form, ``weight`` and ``reduction`` (module docstring).

    Args:
        input: logits ``(N, C)`` or ``(N, C, d1, ..., dk)``, or unbatched ``(C)``; float16/bfloat16/float32/float64.
        target: class indices ``(N)`` or ``(N, d1, ..., dk)`` (``()`` for unbatched logits), or class
            probabilities ``>= 0`` shaped like ``input``, not necessarily summing to 1.
        edf: the emphasis density function ``w(p)`` (:mod:`dmcore.edf`).
        weight: optional per-class weights ``(C)``, finite and ``>= 0`` (no gradient flows to them).
        ignore_index: class-index target whose elements weigh nothing and are not counted.
        reduction: ``'mean'`` (over ``Z``), ``'sum'`` or ``'none'``.
        normalizer: ``Z`` for ``'mean'``: ``'batch'`` (the sum of ``c w``) or ``'count'`` (``nn.CrossEntropyLoss``'s:
            the sum of ``weight[y]`` for class indices, the number of elements for probabilities).
        sync_normalizer: sum ``Z`` over the ranks when ``torch.distributed`` is initialised and a
            gradient will be taken.
        eps: ``>= 0``; the gradient is multiplied by ``2(1 - p) / (2(1 - p) + eps)`` (module docstring).
        label_smoothing: ``s`` in ``[0, 1]``: the target becomes ``(1 - s) t + s / C``.
        process_group: the ranks whose normalisers are summed (default: all).
        check: run the data checks (one synchronisation); ``False`` for a synchronisation-free step.
        impl: ``'auto'``, ``'torch'``, ``'c'`` or ``'triton'`` (module docstring).

    Returns:
        The emphasis-weighted cross-entropy ``c w(p) H / Z`` with ``H = -sum_k r_k log softmax_k``
        (``-log p`` for a class index), a scalar, or ``(N, d1, ..., dk)`` for ``'none'`` (0-d for unbatched
        logits): for monitoring; the gradient is the manipulated one (module docstring).

    Reference: X. Wang et al., *Derivative manipulation for general example weighting*, arXiv:1905.11233.

    Example::

        >>> import torch
        >>> from dmcore import edf, losses
        >>> logits = torch.tensor([[2.0, 0.0, -1.0]], requires_grad=True)
        >>> losses.edf_loss(logits, torch.tensor([0]), edf.cce(), normalizer="count").backward()
        >>> torch.allclose(logits.grad, torch.softmax(logits, 1) - torch.tensor([1.0, 0, 0]))   # CCE's gradient
        True
    """
    _check_edf_args(edf, normalizer, eps, impl)
    targets.check_call(input, target, weight, ignore_index, reduction, label_smoothing)
    if weight is not None and weight.requires_grad:
        raise ValueError("weight requires grad, but the EDF losses give class weights no gradient: pass weight.detach(), "
                         "or use a closed-form loss")
    need_grad = torch.is_grad_enabled() and input.requires_grad
    group = edf_operator.group_key(sync_normalizer and need_grad and reduction == "mean", process_group)
    input, target, unbatched = targets.batch_of_one(input, target)
    value, _, _ = edf_operator.apply(input, target, weight, edf_operator.edf_key(edf), int(ignore_index), reduction,
                                       normalizer, group, float(eps), float(label_smoothing), bool(check), impl,
                                       need_grad)
    return value.squeeze(0) if unbatched and reduction == "none" else value


def dm_loss(input, target, lam: float = default(edfs.dm, "lam"), beta: float = default(edfs.dm, "beta"),
            eps: float = PAPER_EPS, **kwargs):
    """:func:`edf_loss` with DM's EDF ``w(p) = exp(beta p^lam (1 - p))`` and the code's ``eps``
    (Wang et al., arXiv:1905.11233). Keyword arguments as for :func:`edf_loss`.

    Example::

        >>> import torch
        >>> from dmcore import losses
        >>> logits = torch.zeros(4, 3, requires_grad=True)
        >>> losses.dm_loss(logits, torch.tensor([0, 1, 2, 0])).backward()
        >>> round(logits.grad.abs().sum().item(), 4)   # 1 - eps / (4/3 + eps): the weights sum to one
        1.0
    """
    return edf_loss(input, target, edfs.dm(lam, beta), eps=eps, **kwargs)


def imae_loss(input, target, T: float = default(edfs.imae, "T"), eps: float = PAPER_EPS, **kwargs):
    """:func:`edf_loss` with IMAE's EDF ``w(p) = exp(T p (1 - p))`` and the code's ``eps``
    (Wang et al., arXiv:1903.12141). Keyword arguments as for :func:`edf_loss`.

    Example::

        >>> import torch
        >>> from dmcore import losses
        >>> float(losses.imae_loss(torch.zeros(2, 2), torch.tensor([0, 1])))   # w(1/2) (-log 1/2) / w(1/2)
        0.6931471824645996
    """
    return edf_loss(input, target, edfs.imae(T), eps=eps, **kwargs)


# ----------------------------------------------------------------------------------------------
# Closed-form losses, differentiated by autograd: the EDF path's independent check
# ----------------------------------------------------------------------------------------------

def _closed_form(per_element, name, full=False):
    """A functional closed-form loss from ``per_element(log_p) -> loss`` (one definition each), applied
    to the label's log-probability, or to every class's for a target distribution; ``full``:
    ``per_element(log_p, log_sum)`` with ``log_sum = sum_k log p_k``, for a loss that reads every class."""

    def loss(input, target, weight=None, ignore_index: int = -100, reduction: str = "mean",
             label_smoothing: float = 0.0, check: bool = True, **params):
        targets.check_call(input, target, weight, ignore_index, reduction, label_smoothing)
        input, target, unbatched = targets.batch_of_one(input, target)
        if unbatched and reduction == "none":
            return loss(input, target, weight, ignore_index, reduction, label_smoothing, check, **params).squeeze(0)
        dtype = targets.compute_dtype(input.dtype)
        tg = targets.read(input, target, weight, ignore_index, label_smoothing, dtype)
        check = check and not torch.compiler.is_compiling()    # a synchronisation would break the graph
        problems = list(tg.problems) if check else []
        x = torch.where(tg.counted.unsqueeze(1), input, 0.0)   # ignored elements: finite, no gradient
        log_probs = torch.log_softmax(x.float() if x.dtype in (torch.float16, torch.bfloat16) else x, dim=1)
        if tg.dist is None:
            log_p = log_probs.gather(1, tg.index.unsqueeze(1)).squeeze(1)
            if check:
                problems.append(targets.nonfinite_logits(tg.counted & torch.isnan(log_p)))
            targets.raise_for(problems)
            log_p = torch.where(tg.counted, log_p, 0.0)
            extra = (log_probs.sum(1),) if full else ()
            values = torch.where(tg.counted, per_element(log_p, *extra, **params), 0.0)
            return targets.reduce(tg.count * values, tg.count, reduction).to(input.dtype)
        if check:
            problems.append(targets.nonfinite_logits(tg.counted & torch.isnan(log_probs).any(1)))
        targets.raise_for(problems)
        shape = (1, -1) + (1,) * (input.dim() - 2)
        t = tg.dist if weight is None else tg.dist * weight.to(dtype).view(shape)
        extra = (log_probs.sum(1, keepdim=True),) if full else ()
        values = torch.where(t > 0, t * per_element(log_probs, *extra, **params), 0.0).sum(1)
        return targets.reduce(values, tg.count, reduction).to(input.dtype)

    loss.__name__ = loss.__qualname__ = name
    return loss


_cce = _closed_form(lambda log_p: -log_p, "cce_loss")
_mae = _closed_form(lambda log_p: 1 - log_p.exp(), "mae_loss")
_mse = _closed_form(lambda log_p: (1 - log_p.exp()) ** 2, "mse_loss")
_dft = _closed_form(lambda log_p: -log_p.exp().detach() * log_p, "dft_loss")
_gce = _closed_form(lambda log_p, q: (1 - torch.exp(q * log_p)) / q, "gce_loss")
_sce = _closed_form(lambda log_p, alpha, beta, A: alpha * -log_p + beta * -A * (1 - log_p.exp()), "sce_loss")
_poly1 = _closed_form(lambda log_p, epsilon: -log_p + epsilon * (1 - log_p.exp()), "poly1_loss")
_nce_rce = _closed_form(lambda log_p, log_sum, alpha, beta, A:
                        alpha * log_p / log_sum + beta * -A * (1 - log_p.exp()), "nce_rce_loss", full=True)

_CLOSED_ARGS = """
    Args:
        input: logits ``(N, C)`` or ``(N, C, d1, ..., dk)``.
        target: class indices ``(N)`` or ``(N, d1, ..., dk)``, or class probabilities shaped like ``input``.
        weight, ignore_index, reduction, label_smoothing: as for ``nn.CrossEntropyLoss``.
        check: run the data checks (one synchronisation).

    Returns:
        A scalar, or ``(N, d1, ..., dk)`` for ``reduction='none'``."""


def cce_loss(input, target, **kwargs):
    """Categorical cross-entropy, :math:`\\ell(p) = -\\log p`: the values and gradients of
    ``F.cross_entropy`` (label smoothing and class-probability targets included), except that an
    all-ignored ``'mean'`` gives 0 rather than NaN.
    {args}

    Example::

        >>> import torch
        >>> from dmcore import losses
        >>> float(losses.cce_loss(torch.zeros(1, 4), torch.tensor([2])))   # log 4
        1.3862943649291992
    """
    return _cce(input, target, **kwargs)


def mae_loss(input, target, **kwargs):
    """Mean absolute error in the DM paper's scaling, :math:`\\ell(p) = 1 - p` (the IMAE paper's
    :math:`\\lVert e_y - \\mathrm{softmax}\\rVert_1 = 2(1 - p)` is twice that; Ghosh et al., AAAI 2017).
    {args}

    Example::

        >>> import torch
        >>> from dmcore import losses
        >>> float(losses.mae_loss(torch.zeros(1, 4), torch.tensor([2])))
        0.75
    """
    return _mae(input, target, **kwargs)


def mse_loss(input, target, **kwargs):
    """Mean squared error in the DM paper's form, :math:`\\ell(p) = (1 - p)^2`.
    {args}

    Example::

        >>> import torch
        >>> from dmcore import losses
        >>> float(losses.mse_loss(torch.zeros(1, 4), torch.tensor([2])))
        0.5625
    """
    return _mse(input, target, **kwargs)


def dft_loss(input, target, **kwargs):
    """Dynamic fine-tuning's loss (Wu et al., *On the generalization of SFT*, arXiv:2508.05629),
    :math:`\\ell(p) = -\\mathrm{sg}(p) \\log p`: the cross-entropy scaled by the probability it is taken
    of, held constant (``p.detach()``; for a target distribution, each class's term by its own). Its
    gradient is MAE's (:func:`mae_loss`); its value is not.
    {args}

    Example::

        >>> import torch
        >>> from dmcore import losses
        >>> round(float(losses.dft_loss(torch.zeros(1, 4), torch.tensor([2]))), 4)   # log(4) / 4
        0.3466
    """
    return _dft(input, target, **kwargs)


def gce_loss(input, target, q: float = default(edfs.gce, "q"), **kwargs):
    """Generalised cross-entropy (Zhang & Sabuncu, NeurIPS 2018), :math:`\\ell(p) = (1 - p^q) / q` with
    ``0 < q <= 1`` (``q -> 0``: CCE; ``q = 1``: MAE).
    {args}

    Example::

        >>> import torch
        >>> from dmcore import losses
        >>> float(losses.gce_loss(torch.zeros(1, 4), torch.tensor([2]), q=1.0))   # MAE
        0.75
    """
    return _gce(input, target, q=edfs.check_parameter("q", q, 0, 1, low_open=True), **kwargs)


def _alpha_beta(alpha, beta):
    alpha, beta = edfs.check_parameter("alpha", alpha, 0), edfs.check_parameter("beta", beta, 0)
    if alpha == 0 and beta == 0:
        raise ValueError("alpha and beta must not both be 0: the loss would be constant")
    return alpha, beta


def _check_A(A):
    A = edfs.check_parameter("A", A, high=0)
    if A == 0:
        raise ValueError("A (the reverse cross-entropy's log 0) must be < 0, got 0")
    return A


def sce_loss(input, target, alpha: float = default(edfs.sce, "alpha"), beta: float = default(edfs.sce, "beta"),
             A: float = RCE_A, **kwargs):
    """Symmetric cross-entropy (Wang et al., ICCV 2019), :math:`\\alpha(-\\log p) + \\beta\\,\\mathrm{RCE}` with the
    reverse cross-entropy ``RCE = -sum_k p_k log e_{y,k} = -A (1 - p)``, ``log 0 := A < 0``: by default
    ``ln(1e-4)`` as in the code behind the SCE and APL papers (the SCE paper's text says ``A = -4``).
    Its weight is ``2(1 - p)(alpha - A beta p)`` (:func:`dmcore.edf.sce`). Defaults: the paper's
    CIFAR-10 setting.
    {args}

    Example::

        >>> import torch
        >>> from dmcore import losses
        >>> round(float(losses.sce_loss(torch.zeros(1, 4), torch.tensor([2]), A=-4)), 4)   # 0.1 log 4 + 4 (3/4)
        3.1386
    """
    alpha, beta = _alpha_beta(alpha, beta)
    return _sce(input, target, alpha=alpha, beta=beta, A=_check_A(A), **kwargs)


def poly1_loss(input, target, epsilon: float = default(edfs.poly1, "epsilon"), **kwargs):
    """Poly-1 (Leng et al., ICLR 2022), :math:`-\\log p + \\epsilon(1 - p)` with ``epsilon >= -1``; its weight
    is ``2(1 - p)(1 + epsilon p)`` (:func:`dmcore.edf.poly1`).
    {args}

    Example::

        >>> import torch
        >>> from dmcore import losses
        >>> round(float(losses.poly1_loss(torch.zeros(1, 4), torch.tensor([2]))), 4)   # log 4 + 3/4
        2.1363
    """
    return _poly1(input, target, epsilon=edfs.check_parameter("epsilon", epsilon, -1), **kwargs)


def nce_rce_loss(input, target, alpha: float = 1.0, beta: float = 1.0, A: float = RCE_A, **kwargs):
    """The active-passive loss NCE+RCE (Ma et al., ICML 2020): :math:`\\alpha\\,\\mathrm{NCE} + \\beta\\,\\mathrm{RCE}`
    with the normalised cross-entropy ``NCE = log p_y / sum_k log p_k`` and RCE as in :func:`sce_loss`.
    NCE reads every class's probability, so its gradient is not a weighting of the CCE direction and
    it has no weight ``w(p)`` (:func:`dmcore.symbolic.derive` refuses it). Defaults: the paper's
    CIFAR-10 setting.
    {args}

    Example::

        >>> import torch
        >>> from dmcore import losses
        >>> float(losses.nce_rce_loss(torch.zeros(1, 4), torch.tensor([2]), A=-4))   # 1/4 + 4 (3/4)
        3.25
    """
    alpha, beta = _alpha_beta(alpha, beta)
    return _nce_rce(input, target, alpha=alpha, beta=beta, A=_check_A(A), **kwargs)


for _f in (cce_loss, mae_loss, mse_loss, dft_loss, gce_loss, sce_loss, poly1_loss, nce_rce_loss):
    _f.__doc__ = _f.__doc__.replace("    {args}", _CLOSED_ARGS)


# ----------------------------------------------------------------------------------------------
# Modules: the call convention of nn.CrossEntropyLoss
# ----------------------------------------------------------------------------------------------

class _Loss(nn.Module):
    """Common arguments, checked when the module is built (the class weight's values included)."""

    def __init__(self, weight=None, ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0,
                 check: bool = True):
        super().__init__()
        targets.check_options(ignore_index, reduction, label_smoothing)
        if weight is not None:
            targets.check_weight(weight)
            targets.raise_for(targets.weight_problems(weight))
        self.register_buffer("weight", weight)
        self.ignore_index, self.reduction, self.label_smoothing, self.check = \
            int(ignore_index), reduction, float(label_smoothing), bool(check)

    def _common(self):
        return dict(weight=self.weight, ignore_index=self.ignore_index, reduction=self.reduction,
                    label_smoothing=self.label_smoothing, check=self.check)

    def extra_repr(self):
        parts = [f"reduction={self.reduction}"]
        if self.label_smoothing:
            parts.append(f"label_smoothing={self.label_smoothing:g}")
        if not self.check:
            parts.append("check=False")
        return ", ".join(parts)


class EDFLoss(_Loss):
    """The loss of an emphasis density function ``w(p)``, :func:`edf_loss` as a module (arguments and formula
    as there).

    Shape: ``input (N, C)`` or ``(N, C, d1, ..., dk)``; ``target (N)``/``(N, d1, ..., dk)`` indices or
    probabilities shaped like ``input``; output a scalar, or ``(N, d1, ..., dk)`` for ``'none'``.

    Example::

        >>> import torch
        >>> from dmcore import edf, losses
        >>> loss = losses.EDFLoss(edf.normal(psi=0.7, beta=8))
        >>> loss
        EDFLoss(edf=normal(psi=0.7, beta=8), normalizer=batch, eps=0, impl=auto, reduction=mean)
        >>> loss(torch.randn(4, 5, requires_grad=True), torch.tensor([0, 1, 2, 3])).requires_grad
        True
    """

    def __init__(self, edf: EDF, weight=None, ignore_index: int = -100, reduction: str = "mean",
                 normalizer: str = "batch", sync_normalizer: bool = True, eps: float = 0.0, label_smoothing: float = 0.0,
                 process_group=None, check: bool = True, impl: str = "auto"):
        _check_edf_args(edf, normalizer, eps, impl)
        if weight is not None and torch.is_tensor(weight) and weight.requires_grad:
            raise ValueError("weight requires grad, but the EDF losses give class weights no gradient")
        super().__init__(weight, ignore_index, reduction, label_smoothing, check)
        self.edf, self.normalizer, self.sync_normalizer, self.eps = edf, normalizer, sync_normalizer, float(eps)
        self.process_group, self.impl = process_group, impl

    def forward(self, input, target):
        return edf_loss(input, target, self.edf, normalizer=self.normalizer, sync_normalizer=self.sync_normalizer,
                        eps=self.eps, process_group=self.process_group, impl=self.impl, **self._common())

    def extra_repr(self):
        return (f"edf={self.edf.name}, normalizer={self.normalizer}, eps={self.eps:g}, impl={self.impl}, "
                + super().extra_repr())


class DMLoss(EDFLoss):
    """Derivative manipulation (Wang et al., arXiv:1905.11233) with the EDF :math:`w(p) = \\exp(\\beta p^\\lambda (1-p))`:
    emphasis mode ``lam / (lam + 1)``, spread ``beta``; :func:`dm_loss` as a module. Keyword arguments
    as for :class:`EDFLoss`; shapes as there.

    Example::

        >>> from dmcore import losses
        >>> losses.DMLoss(lam=1, beta=16).edf.mode
        0.5
    """

    def __init__(self, lam: float = default(edfs.dm, "lam"), beta: float = default(edfs.dm, "beta"),
                 eps: float = PAPER_EPS, **kwargs):
        super().__init__(edfs.dm(lam, beta), eps=eps, **kwargs)


class IMAELoss(EDFLoss):
    """IMAE (Wang et al., arXiv:1903.12141): :math:`w(p) = \\exp(T p (1 - p))` (DM with ``lam = 1, beta = T``);
    :func:`imae_loss` as a module. Keyword arguments as for :class:`EDFLoss`; shapes as there.

    Example::

        >>> from dmcore import losses
        >>> losses.IMAELoss(T=8).edf.name
        'imae(T=8)'
    """

    def __init__(self, T: float = default(edfs.imae, "T"), eps: float = PAPER_EPS, **kwargs):
        super().__init__(edfs.imae(T), eps=eps, **kwargs)


class _ClosedLoss(_Loss):
    """A closed-form loss as a module; ``edf`` is its natural weight (None where it has none)."""

    function = None
    params: tuple = ()

    def forward(self, input, target):
        return type(self).function(input, target, **{k: getattr(self, k) for k in self.params}, **self._common())

    def extra_repr(self):
        return ", ".join([f"{k}={getattr(self, k):g}" for k in self.params] + [super().extra_repr()])


class CCELoss(_ClosedLoss):
    """Categorical cross-entropy ``-log p``, :func:`cce_loss` as a module (``nn.CrossEntropyLoss``'s values).

    Example::

        >>> import torch
        >>> from dmcore import losses
        >>> round(float(losses.CCELoss(label_smoothing=0.1)(torch.zeros(1, 4), torch.tensor([2]))), 4)   # log 4
        1.3863
    """

    function = staticmethod(cce_loss)

    @property
    def edf(self):
        return edfs.cce()


class MAELoss(_ClosedLoss):
    """Mean absolute error ``1 - p``, :func:`mae_loss` as a module.

    Example::

        >>> import torch
        >>> from dmcore import losses
        >>> float(losses.MAELoss(reduction="sum")(torch.zeros(2, 4), torch.tensor([2, 0])))
        1.5
    """

    function = staticmethod(mae_loss)

    @property
    def edf(self):
        return edfs.mae()


class MSELoss(_ClosedLoss):
    """Mean squared error ``(1 - p)^2``, :func:`mse_loss` as a module.

    Example::

        >>> import torch
        >>> from dmcore import losses
        >>> losses.MSELoss(reduction="none")(torch.zeros(2, 2), torch.tensor([0, 1])).tolist()
        [0.25, 0.25]
    """

    function = staticmethod(mse_loss)

    @property
    def edf(self):
        return edfs.mse()


class DFTLoss(_ClosedLoss):
    """Dynamic fine-tuning's ``-sg(p) log p``, :func:`dft_loss` as a module; its weight is MAE's.

    Example::

        >>> from dmcore import losses
        >>> losses.DFTLoss().edf
        EDF(dft)
    """

    function = staticmethod(dft_loss)

    @property
    def edf(self):
        return edfs.dft()


class GCELoss(_ClosedLoss):
    """Generalised cross-entropy ``(1 - p^q) / q``, :func:`gce_loss` as a module.

    Example::

        >>> from dmcore import losses
        >>> losses.GCELoss(q=0.5)
        GCELoss(q=0.5, reduction=mean)
    """

    function, params = staticmethod(gce_loss), ("q",)

    def __init__(self, q: float = default(edfs.gce, "q"), **kwargs):
        super().__init__(**kwargs)
        self.q = edfs.check_parameter("q", q, 0, 1, low_open=True)

    @property
    def edf(self):
        return edfs.gce(self.q)


class SCELoss(_ClosedLoss):
    """Symmetric cross-entropy ``alpha (-log p) + beta RCE``, :func:`sce_loss` as a module.

    Example::

        >>> from dmcore import losses
        >>> losses.SCELoss().edf.name
        'sce(alpha=0.1, beta=1, A=-9.21034)'
    """

    function, params = staticmethod(sce_loss), ("alpha", "beta", "A")

    def __init__(self, alpha: float = default(edfs.sce, "alpha"), beta: float = default(edfs.sce, "beta"),
                 A: float = RCE_A, **kwargs):
        super().__init__(**kwargs)
        self.alpha, self.beta = _alpha_beta(alpha, beta)
        self.A = _check_A(A)

    @property
    def edf(self):
        return edfs.sce(self.alpha, self.beta, self.A)


class NCERCELoss(_ClosedLoss):
    """The active-passive loss ``alpha NCE + beta RCE``, :func:`nce_rce_loss` as a module; it has no weight
    ``w(p)`` (``edf`` is None).

    Example::

        >>> from dmcore import losses
        >>> losses.NCERCELoss(alpha=1, beta=100).edf is None
        True
    """

    function, params = staticmethod(nce_rce_loss), ("alpha", "beta", "A")
    edf = None

    def __init__(self, alpha: float = default(nce_rce_loss, "alpha"), beta: float = default(nce_rce_loss, "beta"),
                 A: float = RCE_A, **kwargs):
        super().__init__(**kwargs)
        self.alpha, self.beta = _alpha_beta(alpha, beta)
        self.A = _check_A(A)


class Poly1Loss(_ClosedLoss):
    """Poly-1 ``-log p + epsilon (1 - p)``, :func:`poly1_loss` as a module.

    Example::

        >>> from dmcore import losses
        >>> losses.Poly1Loss(epsilon=2).edf.mode
        0.25
    """

    function, params = staticmethod(poly1_loss), ("epsilon",)

    def __init__(self, epsilon: float = default(edfs.poly1, "epsilon"), **kwargs):
        super().__init__(**kwargs)
        self.epsilon = edfs.check_parameter("epsilon", epsilon, -1)

    @property
    def edf(self):
        return edfs.poly1(self.epsilon)


# ----------------------------------------------------------------------------------------------
# Losses by name: the grammar the sweeps, the records and the command line use
# ----------------------------------------------------------------------------------------------

def _edf_family(constructor):
    def build(eps: float = PAPER_EPS, **params):
        return EDFLoss(constructor(**params), eps=eps)
    build.__signature__ = inspect.signature(constructor).replace(parameters=[
        *inspect.signature(constructor).parameters.values(),
        inspect.Parameter("eps", inspect.Parameter.KEYWORD_ONLY, default=PAPER_EPS)])
    return build


#: Each name and what it builds; the parameters and their defaults are read from the signatures.
_NAMED = {"cce": CCELoss, "mae": MAELoss, "mse": MSELoss, "dft": DFTLoss, "gce": GCELoss, "sce": SCELoss, "nce+rce": NCERCELoss,
          "poly1": Poly1Loss, "imae": IMAELoss, "dm": DMLoss, "normal": _edf_family(edfs.normal),
          "exponential": _edf_family(edfs.exponential), "beta": _edf_family(edfs.beta_density)}
_NATURAL = {"cce": edfs.cce, "mae": edfs.mae, "mse": edfs.mse, "gce": edfs.gce, "sce": edfs.sce,
            "poly1": edfs.poly1}   # also with -dn


def _parameters(build) -> dict:
    """A loss's own parameters and their defaults (a module's from its own ``__init__``, if any)."""
    if isinstance(build, type):
        if "__init__" not in vars(build):
            return {}
        build = build.__init__
    return {k: float(v.default) for k, v in inspect.signature(build).parameters.items()
            if k not in ("self", "kwargs")}


def names() -> list[str]:
    """Every loss name :func:`from_name` takes (without parameters)."""
    return list(_NAMED) + [n + "-dn" for n in _NATURAL]


def from_name(text: str) -> nn.Module:
    """A loss module by name, parameters after a colon: ``cce``, ``mae``, ``mse``, ``dft``, ``gce[:q=...]``,
    ``sce[:alpha=...,beta=...]``, ``nce+rce[:alpha=...,beta=...]``, ``poly1[:epsilon=...]``; the EDF
    losses ``imae[:T=...]``, ``dm[:lam=...,beta=...]``, ``normal[:psi=...,beta=...]``,
    ``exponential[:beta=...]``, ``beta[:alpha=...,eta=...]`` (the beta-density EDF), each with ``eps``
    (default the paper's code's, 1e-6); or a natural weight with derivative normalisation (the
    papers' "-DN"): ``cce-dn``, ``mae-dn``, ``mse-dn``, ``gce-dn[:q=...]``, ``sce-dn[:alpha=...,beta=...,A=...]``,
    ``poly1-dn[:epsilon=...]`` (``eps = 0``). ``sce`` and ``nce+rce`` take ``A``, the reverse
    cross-entropy's log 0 (default ``ln(1e-4)``, the papers' code; ``A=-4`` is the SCE paper's text).

    >>> from_name("dm:lam=1,beta=16")
    DMLoss(edf=dm(lam=1, beta=16), normalizer=batch, eps=1e-06, impl=auto, reduction=mean)
    """
    name, _, args = text.strip().partition(":")
    dn = name.endswith("-dn")
    base = name[:-3] if dn else name
    if base not in _NAMED or (dn and base not in _NATURAL):
        raise ValueError(f"unknown loss {text!r}: expected one of {', '.join(names())}")
    build = _NATURAL[base] if dn else _NAMED[base]
    params = _parameters(build)
    if dn:
        params["eps"] = 0.0
    for item in filter(None, args.split(",")):
        key, _, value = item.partition("=")
        if key not in params:
            raise ValueError(f"loss {name} has no parameter {key!r}; it takes {sorted(params) or 'none'}")
        try:
            params[key] = float(value)
        except ValueError:
            raise ValueError(f"loss parameter {key} must be a number, got {value!r}") from None
    if "eps" in params and params["eps"] < 0:
        raise ValueError(f"loss parameter eps must be >= 0, got {params['eps']:g}")
    if dn:
        eps = params.pop("eps")
        return EDFLoss(build(**params), eps=eps)
    return build(**params)
