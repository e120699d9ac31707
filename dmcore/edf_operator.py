"""The manipulated gradient: the EDF losses as one PyTorch custom operator, ``dmcore::edf_loss``.

For element ``i`` with logits ``z_i``, mass ``c_i`` and target distribution ``r_i`` (a class index
``y``: ``c = weight[y]``, ``r = e_y``; a probability target ``t`` with class weights ``a``:
``c = sum_k a_k t_k``, ``r = a t / c``, :func:`dmcore.targets.read`) and ``p_i = r_i^T softmax(z_i)``
(``p_y`` for a class index), the operator returns the monitored value ``c w(p) H / Z`` (``H`` the
cross-entropy against ``r``) and the gradient

.. math::

    g_i = \\frac{c_i\\, w(p_i)}{Z}\\, f_i\\, u_i, \\qquad
    u_i = \\frac{\\mathrm{softmax}(z_i) - r_i}{2(1 - p_i)}, \\qquad
    f_i = \\frac{2(1 - p_i)}{2(1 - p_i) + \\varepsilon},

which :func:`torch.autograd.backward` then multiplies by the upstream gradient. For a class index,
``u_i = (softmax_{j != y}(z_i) - e_y) / 2`` is computed as the softmax over the other classes, so it
is exact and finite at ``p = 1``; for a distribution, ``1 - p_i = sum_c softmax_c (1 - r_c)``, a sum
of non-negative terms. With the natural weight of cross-entropy, ``w = 2(1 - p)``, ``g_i`` is
``c softmax - a t``: the gradient of the class-weighted soft-target cross-entropy
``-sum_c a_c t_c log softmax_c`` (``F.cross_entropy`` with ``weight``), whatever the total of ``t``.

Three paths compute it, chosen once per call by :func:`implementation` (``impl`` is ``'auto'``,
``'torch'``, ``'c'`` or ``'triton'``): PyTorch ops (:func:`_read_torch`, any device and dtype, the
reference), the compiled CPU kernel :mod:`dmcore.kernels.edf_cpu` (float32, class indices) and the
Triton kernels :mod:`dmcore.kernels.edf_triton` (CUDA, class indices). Each path reads the logits into
per-element parts (:class:`_Parts`: ``p``, ``log p``, the targets); the weights ``w(p)``, the
normaliser and the reduction act on those alike (:func:`_forward`), and the path's own last step turns
the per-element scale ``c w f / (2Z)`` into the gradient. The kernels take class indices without
label smoothing; a target distribution (probability targets, label smoothing, with or without
``weight``) always runs on PyTorch's ops, where ``impl='auto'`` routes it and ``'c'`` and
``'triton'`` refuse it. Like the C kernel, the PyTorch path allocates one logits-sized tensor for
class indices, the gradient (four for a distribution). The operator is opaque to ``torch.compile`` (so ``fullgraph=True`` holds whatever runs inside), has a
fake implementation for shape propagation, and an autograd formula. With ``create_graph=True`` the
gradient is recomputed by the PyTorch path as a differentiable function of the logits, so second
derivatives (gradient penalties, meta-learned weights) are exact; in data-parallel training they
treat the other ranks' share of the normaliser as a constant.

An EDF (a Python object) and a process group cannot be operator arguments; they are passed by a key
into the registries :func:`edf_key` and :func:`group_key` fill.
"""

from __future__ import annotations

import functools
import logging
import math
import warnings
from typing import Callable, NamedTuple, Optional

import torch
import torch.distributed as dist

from . import kernels, targets
from .edf import EDF
from .kernels import edf_cpu

__all__ = ["IMPLS", "edf_key", "group_key", "implementation", "edf_loss"]

IMPLS = ("auto", "torch", "c", "triton")
_EDFS: dict[str, EDF] = {}
_GROUPS: dict[str, object] = {}
_logged: set = set()
log = logging.getLogger("dmcore.losses")


def edf_key(edf: EDF) -> str:
    """The registry key of ``edf`` (kept alive by the registry, so its key stays its own)."""
    key = f"{edf.name}@{id(edf):x}"
    _EDFS.setdefault(key, edf)
    return key


def group_key(sync: bool, process_group=None) -> str:
    """``''``: no synchronisation; ``'world'``: the default process group; else a registered group's key."""
    if not sync:
        return ""
    if process_group is None:
        return "world"
    key = f"group@{id(process_group):x}"
    _GROUPS.setdefault(key, process_group)
    return key


def implementation(input: torch.Tensor, target: torch.Tensor, impl: str = "auto", label_smoothing: float = 0.0) -> str:
    """The path an EDF loss takes: ``'c'`` (the compiled CPU kernel), ``'triton'`` (the Triton kernels)
    or ``'torch'``.

    The kernels take class-index targets without label smoothing. ``impl='auto'`` takes the C kernel
    for float32 logits on CPU (unless ``DMCORE_CPU_KERNEL=0``) and the Triton kernels on CUDA, where
    each is available, and PyTorch's ops otherwise; ``'torch'`` always takes PyTorch's ops; ``'c'``
    and ``'triton'`` require their kernel and raise where it does not apply (``'triton'`` runs on CPU
    tensors under ``TRITON_INTERPRET=1``).
    """
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    indices = not target.is_floating_point() and label_smoothing == 0
    fits_c = indices and input.device.type == "cpu" and input.dtype == torch.float32
    fits_triton = indices and (impl == "triton" or input.device.type == "cuda") and not _triton_failed \
        and input.dtype in (torch.float16, torch.bfloat16, torch.float32) and _triton().usable_on(input.device)
    if impl == "torch" or (impl == "auto" and not (fits_c or (fits_triton and input.device.type == "cuda"))):
        return "torch"
    if impl == "c":
        if not fits_c:
            raise ValueError("impl='c' needs float32 logits on CPU and class-index targets without label smoothing, got "
                             f"{input.dtype} logits on {input.device}" + (" with class-probability targets"
                                                                          if target.is_floating_point() else "")
                             + (f" with label_smoothing={label_smoothing}" if label_smoothing else ""))
        if kernels.cpu(required=True) is None:
            raise RuntimeError("impl='c': the compiled kernel could not be built (see the warning above)")
        return "c"
    if impl == "triton":
        if not _triton().available():
            raise RuntimeError("impl='triton' needs Triton: pip install 'dmcore[triton]'")
        if not fits_triton:
            raise ValueError("impl='triton' needs float16, bfloat16 or float32 logits and class-index targets without "
                             f"label smoothing, on CUDA (or on CPU under TRITON_INTERPRET=1), got {input.dtype} on "
                             f"{input.device}"
                             + (" with class-probability targets" if target.is_floating_point() else "")
                             + (f" with label_smoothing={label_smoothing}" if label_smoothing else ""))
        return "triton"
    if fits_c:
        return "c" if kernels.cpu() is not None else "torch"
    return "triton"


_triton_failed = False


def _triton():
    """The Triton kernels' module, imported on first use (Triton reads ``TRITON_INTERPRET`` then)."""
    from .kernels import edf_triton
    return edf_triton


def _triton_or_fallback(run, impl):
    """Run the Triton path; under ``impl='auto'`` a kernel that fails to compile is reported once and
    the PyTorch path is used from then on."""
    global _triton_failed
    try:
        return run("triton")
    except Exception as error:          # a compiler or driver error, not a data error
        if impl != "auto" or isinstance(error, ValueError):
            raise
        _triton_failed = True
        warnings.warn(f"dmcore: the Triton kernel failed ({type(error).__name__}: {error}); the PyTorch path "
                      "is used instead", RuntimeWarning, stacklevel=2)
        return run("torch")


def _synced(z, group):
    """The normaliser summed over the ranks of ``group`` and divided by their number (DDP averages gradients)."""
    if group and dist.is_available() and dist.is_initialized():
        pg = None if group == "world" else _GROUPS[group]
        world = dist.get_world_size(pg)
        if world > 1:
            z = z.clone()
            dist.all_reduce(z, op=dist.ReduceOp.SUM, group=pg)
            return z / world
    return z


def _world(group) -> int:
    if group and dist.is_available() and dist.is_initialized():
        return dist.get_world_size(None if group == "world" else _GROUPS[group])
    return 1


class _Parts(NamedTuple):
    """What a path reads from the logits, per element ``(N, d1, ..., dk)``; the path's own steps are closures."""

    tg: targets.Targets
    p: torch.Tensor
    log_p: torch.Tensor
    rest: Callable[[], torch.Tensor]                       # 1 - p, accurate near p = 1 (for eps > 0)
    entropy: Optional[torch.Tensor]                        # the cross-entropy against a distribution r
                                                           # (None: -log p, computed when needed)
    problems: Callable[[torch.Tensor, EDF], list]          # the data checks, given the weights w(p)
    gradient: Callable[[torch.Tensor], torch.Tensor]       # the gradient (N, C, d...) for the scale k


def _kernel_targets(input, index, p, weight, ignore_index, check, compute):
    """The targets of a kernel path, which reads the class indices itself (a bad target gets p = -1)."""
    counted = index != ignore_index
    if not check:            # a bad target must weigh nothing (with the checks, it raises instead)
        counted = counted & ~(p < 0)
    c = counted if weight is None else torch.where(counted, weight.to(compute)[index.clamp(0, input.shape[1] - 1)],
                                                   0.0)
    return targets.Targets(index, counted, None, c, None, [])


def _kernel_problems(input, target, weight, ignore_index, compute, tg, p, w, edf):
    """The kernel paths' data checks: two aminmax passes over per-element vectors (more passes cost as much as
    the logits when C is small); a message is composed only when raising."""
    low_p, high_p, low_w, high_w = torch.stack([*torch.aminmax(p), *torch.aminmax(w)]).tolist() \
        if p.numel() else (0.0, 0.0, 0.0, 0.0)
    problems = targets.weight_problems(weight)
    if low_p < 0:            # the message comes from reading the targets again
        problems.insert(0, (torch.tensor(True), targets.read(input, target, None, ignore_index, 0.0,
                                                             compute).problems[0][1]))
    elif math.isnan(high_p):
        problems.insert(0, targets.nonfinite_logits(tg.counted & torch.isnan(p)))
    elif not (low_w >= 0 and math.isfinite(high_w)):
        bad_w = tg.counted & ~(torch.isfinite(w) & (w >= 0))
        problems.insert(0, (torch.tensor(True), lambda: f"EDF {edf.name} returned a negative or non-finite "
                                                        f"weight at p = {float(p[bad_w][0]):.6g}"))
    return problems


def _read_c(input, target, weight, ignore_index, label_smoothing, check, compute) -> _Parts:
    """The compiled CPU kernel (float32, class indices): one pass into the buffer that becomes the gradient."""
    lib = kernels.cpu(required=True)
    buf, p, log_p, norm, index = edf_cpu.parts(lib, input, target, ignore_index)
    tg = _kernel_targets(input, index, p, weight, ignore_index, check, compute)
    return _Parts(tg, p, log_p, lambda: torch.where(tg.counted, -torch.expm1(log_p), 0.0), None,
                  functools.partial(_kernel_problems, input, target, weight, ignore_index, compute, tg, p),
                  lambda k: edf_cpu.scale(lib, buf, index, k, norm, ignore_index))


def _read_triton(input, target, weight, ignore_index, label_smoothing, check, compute) -> _Parts:
    """The Triton kernels (class indices): four numbers per element, the logits read again for the gradient."""
    p, log_p, one_minus_p, lse, index = _triton().statistics(input, target, ignore_index)
    tg = _kernel_targets(input, index, p, weight, ignore_index, check, compute)
    return _Parts(tg, p, log_p, lambda: one_minus_p, None,
                  functools.partial(_kernel_problems, input, target, weight, ignore_index, compute, tg, p),
                  lambda k: _triton().gradient(input, index, lse, torch.where(tg.counted, k, 0.0)))


def _torch_problems(tg, flags, p, w, edf):
    """The PyTorch path's data checks, as flags raised after one synchronisation."""
    bad_w = tg.counted & ~(torch.isfinite(w) & (w >= 0))
    return list(tg.problems) + flags + [(bad_w.any(), lambda: f"EDF {edf.name} returned a negative or "
                                                              f"non-finite weight at p = {float(p[bad_w][0]):.6g}")]


def _read_torch(input, target, weight, ignore_index, label_smoothing, check, compute, differentiable=False) -> _Parts:
    """PyTorch's ops: any device and dtype, class indices or a distribution.

    For class indices the direction is ``u = (d - e_y) / 2`` with ``d`` the softmax over the other classes,
    kept as ``exp(z_j - m)`` and its sum (as the C kernel keeps them): the gradient is that buffer scaled by
    ``k`` over the sum, ``-k`` at the label. For a distribution ``r`` (:func:`dmcore.targets.read` with
    ``normalised=True``: class-weighted, summing to 1), ``u = (softmax - r) / (2(1 - p))``.

    ``differentiable=False``: every step after the first copy works in place on tensors this function
    allocated, so class indices cost one logits-sized tensor (the gradient) and a distribution four (the
    distribution, the log-probabilities, the probabilities, which become the gradient, and a scratch
    tensor). ``differentiable=True`` (double backward): the same formulas out of place, so that autograd
    differentiates them.
    """
    tg = targets.read(input, target, weight, ignore_index, label_smoothing, compute, normalised=True)
    keep = tg.counted.unsqueeze(1)
    tiny = torch.finfo(compute).tiny
    if tg.dist is None:
        index = tg.index.unsqueeze(1)
        if differentiable:                                   # ignored elements: finite and weightless
            x = torch.where(keep, input.to(compute), 0.0)
        else:
            x = input.to(compute, copy=True).masked_fill_(~keep, 0.0)
        z_y = x.gather(1, index).squeeze(1)
        x = x.scatter(1, index, -math.inf) if differentiable else x.scatter_(1, index, -math.inf)   # the others
        top = x.amax(1, keepdim=True).detach()               # (the result does not depend on it)
        top = torch.where(top == -math.inf, 0.0, top)        # no other class possible: every term exp(-inf) = 0
        e = (x - top).exp() if differentiable else x.sub_(top).exp_()
        norm = e.sum(1)
        lse = top.squeeze(1) + torch.log(norm)               # log of the other classes' exp-sum
        d = lse - z_y                                        # log((1 - p) / p): exact at both ends
        p, one_minus_p = torch.sigmoid(-d), torch.sigmoid(d)
        log_p = -torch.logaddexp(torch.zeros_like(d), d)
        bad = tg.counted & (torch.isnan(d) | (z_y == math.inf) | (lse == math.inf))
        entropy = None

        def gradient(k):                                     # no other class (norm = 0): -k at the label only
            scale = torch.where(norm > 0, k / torch.where(norm > 0, norm, 1.0), 0.0).unsqueeze(1)
            if differentiable:
                return (e * scale).scatter(1, index, (-k).unsqueeze(1))
            return e.mul_(scale).scatter_(1, index, (-k).unsqueeze(1))
    else:
        r = tg.dist
        if differentiable:
            log_probs = torch.log_softmax(torch.where(keep, input.to(compute), 0.0), 1)
        else:
            log_probs = torch.log_softmax(input.to(compute), 1)
            if tg.index is not None:                         # ignored elements (smoothed indices): finite
                log_probs.masked_fill_(~keep, 0.0)
        probs = log_probs.exp()
        if differentiable:
            p = (r * probs).sum(1)
            one_minus_p = (probs * (1 - r)).sum(1)           # = 1 - p without cancellation
            entropy = (r * -log_probs.clamp_min(math.log(tiny))).sum(1)
        else:                                                # the same products, in turn in one scratch tensor
            scratch = torch.mul(r, probs)
            p = scratch.sum(1)
            one_minus_p = scratch.copy_(r).neg_().add_(1).mul_(probs).sum(1)
            entropy = torch.clamp_min(log_probs, math.log(tiny), out=scratch).mul_(r).neg_().sum(1)
            del scratch
        log_p = torch.log(p)
        bad = tg.counted & torch.isnan(p)                    # a NaN or +inf logit (or only -inf) spreads to p

        def gradient(k):
            scale = torch.where(one_minus_p > 0, k / torch.where(one_minus_p > 0, one_minus_p, 1.0), 0.0)
            if differentiable:
                return (probs - r) * scale.unsqueeze(1)
            return probs.sub_(r).mul_(scale.unsqueeze(1))
    flags = [targets.nonfinite_logits(bad)]
    return _Parts(tg, p, log_p, lambda: one_minus_p, entropy, functools.partial(_torch_problems, tg, flags, p),
                  gradient)


_READ = {"c": _read_c, "triton": _read_triton, "torch": _read_torch}


def _weigh(parts, edf, weight):
    """The EDF's weights ``w(p)`` (0 where not counted) and with the class weights ``c w``."""
    w = torch.where(parts.tg.counted, edf(parts.p), 0.0)
    return w, (w if weight is None and parts.tg.dist is None else parts.tg.c * w)


def _normaliser(tg, cw, reduction, normalizer, group, z_given, compute, device):
    """``Z``: 1 unless ``'mean'``; then the batch's sum of ``c w`` or of the class weights, over the ranks;
    with ``z_given``, the forward's ``Z``, differentiable in this rank's share (double backward)."""
    if reduction != "mean":
        return torch.ones((), dtype=compute, device=device)
    total = cw.sum() if normalizer == "batch" else (tg.count if tg.count is not None else tg.c).sum()
    if z_given is None:
        z = _synced(total.to(compute), group)
        return torch.where(z > 0, z, torch.ones_like(z))    # nothing counts: loss 0, gradient 0
    if normalizer == "batch":
        share = total / _world(group)
        return torch.where(z_given > 0, share + (z_given - share).detach(), z_given)
    return z_given


class _Terms(NamedTuple):
    """An EDF loss's per-element terms on a block of logits, before the normaliser and the reduction."""

    parts: _Parts
    cw: torch.Tensor              # c w(p): the element's weight (0 where not counted)
    values: torch.Tensor          # c w(p) H: its monitored value
    problems: list                # the data checks (empty with check=False)


def _terms(input, target, weight, edf, ignore_index, label_smoothing, check, path, differentiable=False) -> _Terms:
    """The per-element terms of logits ``input`` on ``path`` (:func:`_forward` reduces them; the fused
    linear loss :mod:`dmcore.linear_edf` computes them block by block)."""
    compute = targets.compute_dtype(input.dtype)
    read = functools.partial(_read_torch, differentiable=True) if differentiable else _READ[path]
    return _weighed(read(input, target, weight, ignore_index, label_smoothing, check, compute), edf, weight, check,
                    compute)


def _weighed(parts, edf, weight, check, compute) -> _Terms:
    """The terms of the parts a path read: the weights, the data checks and the values."""
    w, cw = _weigh(parts, edf, weight)
    problems = parts.problems(w, edf) if check else []
    entropy = -parts.log_p.clamp_min(math.log(torch.finfo(compute).tiny)) if parts.entropy is None else parts.entropy
    return _Terms(parts, cw, cw * entropy, problems)


def _eps_factor(parts, eps):
    """``2(1 - p) / (2(1 - p) + eps)``, the code's ``2 - 2p + eps`` in place of ``2(1 - p)``."""
    r = 2 * parts.rest()
    return r / (r + eps)


def _forward(input, target, weight, edf, ignore_index, reduction, normalizer, group, eps, label_smoothing, check,
             path, need_grad, z_given=None):
    """``(value, gradient or an empty tensor, Z)`` on ``path``; with ``z_given`` (the forward's ``Z``), the
    gradient as a differentiable function of ``input`` (double backward)."""
    compute = targets.compute_dtype(input.dtype)
    parts, cw, values, problems = _terms(input, target, weight, edf, ignore_index, label_smoothing, check, path,
                                         differentiable=z_given is not None)
    z = _normaliser(parts.tg, cw, reduction, normalizer, group, z_given, compute, input.device)
    targets.raise_for(problems)                              # the one synchronisation (none with check=False)
    out = values if reduction == "none" else values.sum() / z if reduction == "mean" else values.sum()
    if not need_grad:
        return out.to(input.dtype), input.new_empty(0, dtype=compute), z
    k = cw * (0.5 / z)                                       # half the length of each element's gradient
    if eps > 0:
        k = k * _eps_factor(parts, eps)
    return out.to(input.dtype), parts.gradient(k), z


def _log_path(path, input):
    key = (path, input.device.type, input.dtype)
    if key not in _logged:
        _logged.add(key)
        log.info("dmcore EDF loss: %s path for %s logits on %s", path, input.dtype, input.device.type)


def _implementation(input, target, weight, edf, ignore_index, reduction, normalizer, group, eps, label_smoothing,
                    check, impl, need_grad):
    def run(path):
        _log_path(path, input)
        return _forward(input, target, weight, _EDFS[edf], ignore_index, reduction, normalizer, group, eps,
                        label_smoothing, check, path, need_grad)
    path = implementation(input, target, impl, label_smoothing)
    return _triton_or_fallback(run, impl) if path == "triton" else run(path)


@torch.library.custom_op("dmcore::edf_loss", mutates_args=())
def edf_loss(input: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor], edf: str, ignore_index: int,
             reduction: str, normalizer: str, group: str, eps: float, label_smoothing: float, check: bool, impl: str,
             need_grad: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(value, gradient, Z)`` of an EDF loss (module docstring); the arguments are checked by
    :func:`dmcore.losses.edf_loss`, which is the function to call."""
    return _implementation(input, target, weight, edf, ignore_index, reduction, normalizer, group, eps,
                           label_smoothing, check, impl, need_grad)


@edf_loss.register_fake
def _(input, target, weight, edf, ignore_index, reduction, normalizer, group, eps, label_smoothing, check, impl,
      need_grad):
    compute = targets.compute_dtype(input.dtype)
    value = input.new_empty((input.shape[0], *input.shape[2:]) if reduction == "none" else ())
    grad = input.new_empty(input.shape if need_grad else (0,), dtype=compute)
    return value, grad, input.new_empty((), dtype=compute)


def _setup_context(ctx, inputs, output):
    input, target, weight, *params = inputs
    ctx.save_for_backward(input, target, weight, output[1], output[2])
    ctx.params = params


def _backward(ctx, grad_value, _grad_grad, _grad_z):
    input, target, weight, grad, z = ctx.saved_tensors
    edf, ignore_index, reduction, normalizer, group, eps, label_smoothing, _check, _impl, _need = ctx.params
    if torch.is_grad_enabled():   # create_graph=True: the gradient as a differentiable function of the logits
        grad = _forward(input, target, weight, _EDFS[edf], ignore_index, reduction, normalizer, group, eps,
                        label_smoothing, False, "torch", True, z_given=z)[1]
    g = grad_value.to(grad.dtype)
    if reduction == "none":
        g = g.unsqueeze(1)
    return (grad * g).to(input.dtype), None, None, None, None, None, None, None, None, None, None, None, None


edf_loss.register_autograd(_backward, setup_context=_setup_context)


class _Eager(torch.autograd.Function):
    """The operator's implementation and autograd formula called directly, outside ``torch.compile``:
    the same functions, without the dispatcher's Python overhead (about 150 us a call).

    Its backward hands the gradient buffer itself to autograd, scaled in place by the upstream
    gradient: no second logits-sized tensor. A retained graph's later backward passes then recompute
    the gradient (PyTorch path), so nothing a caller does to ``.grad`` can reach them."""

    @staticmethod
    def forward(ctx, *inputs):
        output = _implementation(*inputs)
        input, target, weight, *params = inputs
        ctx.save_for_backward(input, target, weight, output[2])
        ctx.params, ctx.grad = params, output[1]        # the buffer is not versioned: it is handed out
        ctx.mark_non_differentiable(output[1], output[2])
        ctx.set_materialize_grads(False)                # no zeros the size of the logits for the buffer
        return output

    @staticmethod
    def backward(ctx, grad_value, grad_grad, grad_z):
        if grad_value is None:
            return (None,) * 13
        input, target, weight, z = ctx.saved_tensors
        edf, ignore_index, reduction, normalizer, group, eps, label_smoothing, _check, _impl, _need = ctx.params
        if torch.is_grad_enabled() or ctx.grad is None:   # create_graph=True, or a retained graph again
            grad = _forward(input, target, weight, _EDFS[edf], ignore_index, reduction, normalizer, group, eps,
                            label_smoothing, False, "torch", True, z_given=z)[1]
        else:
            grad, ctx.grad = ctx.grad, None
        g = grad_value.to(grad.dtype)
        if reduction == "none":
            g = g.unsqueeze(1)
        elif g.device.type == "cpu" and not torch.is_grad_enabled() and torch.equal(g, torch.ones_like(g)):
            return (grad.to(input.dtype),) + (None,) * 12   # loss.backward() on CPU (no device to wait for)
        grad = grad * g if torch.is_grad_enabled() else grad.mul_(g)
        return (grad.to(input.dtype),) + (None,) * 12


def apply(*inputs):
    """``(value, gradient, Z)`` through the custom operator under ``torch.compile``, directly otherwise."""
    if torch.compiler.is_compiling():
        return edf_loss(*inputs)
    return _Eager.apply(*inputs)
