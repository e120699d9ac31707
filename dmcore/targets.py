"""Targets and class weights as every loss of :mod:`dmcore.losses` reads them, and the input checks.

A target is either class indices ``(N)`` or ``(N, d1, ..., dk)`` (any integer dtype), with
``ignore_index`` marking elements that weigh nothing, or class probabilities of the logits' shape
``(N, C, d1, ..., dk)`` (floating point; mixup, cutmix, distillation). ``label_smoothing = s`` turns
either into the distribution ``t = (1 - s) t + s / C``, as ``nn.CrossEntropyLoss`` does. Probability
targets must be finite and ``>= 0`` but need not sum to 1 (as in PyTorch). Each element gets a class
weight ``c``: ``weight[y]`` for a class index, ``sum_c weight[c] t_c`` for a distribution (its
total without ``weight``), and 0 where it is ignored; the EDF losses read a distribution as ``c``
times ``weight t / c`` (:func:`read` with ``normalised=True``). Unbatched logits ``(C)`` take a class
index ``()`` or probabilities ``(C)`` and are read as a batch of one (:func:`batch_of_one`).

The checks come in two kinds: :func:`check_call` looks at shapes, dtypes and arguments and never
synchronises; the data checks (targets in range, finite logits, valid weights) are collected as
0-d flags and raised by :func:`raise_for` after one device-to-host synchronisation, or skipped
with ``check=False``.
"""

from __future__ import annotations

import math
import numbers
from typing import Callable, NamedTuple

import torch

__all__ = ["REDUCTIONS", "Targets", "check_call", "check_options", "check_weight", "batch_of_one", "read", "raise_for",
           "weight_problems", "nonfinite_logits", "reduce", "compute_dtype"]

REDUCTIONS = ("mean", "sum", "none")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float16 and bfloat16 logits are computed in float32; float32 and float64 in their own."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def check_options(ignore_index, reduction, label_smoothing) -> None:
    """The loss options every loss takes."""
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
        raise TypeError(f"ignore_index must be an integer, got {ignore_index!r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, numbers.Real) \
            or not 0 <= float(label_smoothing) <= 1:
        raise ValueError(f"label_smoothing must be a number in [0, 1], got {label_smoothing!r}")


def check_weight(weight, num_classes: int | None = None, device=None) -> None:
    """A class weight's type, dtype, shape and device (its values: :func:`weight_problems`); the messages
    name the shape with the number of classes where it is known (a module's weight is checked before)."""
    if not torch.is_tensor(weight):
        shape = f" of shape ({num_classes},)" if num_classes is not None else ", one weight per class"
        raise TypeError(f"weight must be a tensor{shape}, got {type(weight).__name__}")
    if not weight.is_floating_point():
        raise TypeError(f"weight must be a floating-point tensor, got dtype {weight.dtype}")
    if num_classes is None and weight.dim() != 1:
        raise ValueError(f"weight must be one-dimensional, one weight per class, got {tuple(weight.shape)}")
    if num_classes is not None and tuple(weight.shape) != (num_classes,):
        raise ValueError(f"weight must have shape ({num_classes},), got {tuple(weight.shape)}")
    if device is not None and weight.device != device:
        raise ValueError(f"weight is on {weight.device} but logits are on {device}")


def check_call(input, target, weight, ignore_index, reduction, label_smoothing) -> bool:
    """The checks that need no synchronisation; returns True for class-probability targets. Unbatched
    logits ``(C)`` take a class index ``()`` or probabilities ``(C)`` (:func:`batch_of_one`)."""
    if not torch.is_tensor(input) or not input.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor, got {getattr(input, 'dtype', type(input).__name__)}")
    if input.dim() < 1:
        raise ValueError(f"logits must have shape (C), (N, C) or (N, C, d1, ..., dk), got {tuple(input.shape)}")
    num_classes = input.shape[1] if input.dim() > 1 else input.shape[0]
    if num_classes < 2:
        raise ValueError(f"logits need at least 2 classes along dim 1, got C = {num_classes}: with one class "
                         "p = 1 always and there is nothing to learn")
    if not torch.is_tensor(target) or target.is_complex() or target.dtype == torch.bool:
        raise TypeError("targets must be class indices (an integer tensor) or class probabilities (a floating-point "
                        f"tensor shaped like the logits), got {getattr(target, 'dtype', type(target).__name__)}")
    soft = target.is_floating_point()
    expected = tuple(input.shape) if soft else (input.shape[0],) + tuple(input.shape[2:]) if input.dim() > 1 else ()
    if tuple(target.shape) != expected:
        kind = "class-probability" if soft else "class-index"
        raise ValueError(f"{kind} target shape {tuple(target.shape)} does not match logits {tuple(input.shape)}: "
                         f"expected {expected}")
    if target.device != input.device:
        raise ValueError(f"target is on {target.device} but logits are on {input.device}")
    check_options(ignore_index, reduction, label_smoothing)
    if weight is not None:
        check_weight(weight, num_classes, input.device)
    return soft


def batch_of_one(input, target):
    """``(input, target, unbatched)``: unbatched logits ``(C)`` and their target as a batch of one, as
    ``nn.CrossEntropyLoss`` reads them (the caller returns its loss 0-d for every reduction)."""
    if input.dim() != 1:
        return input, target, False
    return input.unsqueeze(0), target.unsqueeze(0), True


class Targets(NamedTuple):
    """What a loss reads from its targets, per element ``(N, d1, ..., dk)`` unless stated."""

    index: torch.Tensor | None       # class indices, 0 where not counted (long); None for probabilities
    counted: torch.Tensor            # bool: the element counts (not ignore_index, target in range)
    dist: torch.Tensor | None        # (N, C, d...) target distribution in the compute dtype, zero where not
                                     # counted (normalised: weight t / c); None for class indices (no smoothing)
    c: torch.Tensor                  # class weight (a distribution's mass), 0 where not counted
    count: torch.Tensor              # the 'mean' denominator's share: weight[y] (or 1) for class indices,
                                     # 1 for probabilities (the conventions of nn.CrossEntropyLoss)
    problems: list                   # (flag, message) pairs for raise_for


def read(input, target, weight, ignore_index, label_smoothing, dtype, normalised: bool = False) -> Targets:
    """The targets of logits ``input (N, C, d...)`` in the compute ``dtype`` (no synchronisation).

    ``normalised=True`` (the EDF losses) reads a target ``t`` with class weights ``a`` as its mass
    ``c = sum_k a_k t_k`` times the distribution ``r = a t / c`` (0 where ``c = 0``): ``dist`` is ``r``,
    a tensor the caller owns, and ``c`` the mass. Otherwise (the closed-form losses) ``dist`` is ``t``
    itself, possibly the caller's target, and ``c = sum_k a_k t_k``.
    """
    num_classes = input.shape[1]
    if target.is_floating_point():
        own = normalised or label_smoothing > 0          # changed in place below
        dist = target.to(dtype, copy=True) if own else target.to(dtype)
        counted = torch.ones(dist.shape[:1] + dist.shape[2:], dtype=torch.bool, device=dist.device)
        low, high = torch.aminmax(dist) if dist.numel() else (dist.new_zeros(()), dist.new_zeros(()))
        problems = [(~((low >= 0) & (high < math.inf)),       # NaN fails both comparisons
                     lambda: "class-probability targets must be finite and >= 0")]
        index = None
    else:
        target = target.long()        # before comparing: ignore_index=-100 must not wrap in uint8
        counted = target != ignore_index
        out_of_range = counted & ((target < 0) | (target >= num_classes))
        counted = counted & ~out_of_range
        index = torch.where(counted, target, 0)
        problems = [(out_of_range.any(), lambda: _out_of_range(out_of_range, target, num_classes, ignore_index))]
        dist = None
        if label_smoothing > 0:
            dist = torch.zeros(input.shape, dtype=dtype, device=input.device).scatter_(1, index.unsqueeze(1), 1.0)
    if dist is not None and label_smoothing > 0:
        dist.mul_(1 - label_smoothing).add_(label_smoothing / num_classes)
    if dist is not None and index is not None:
        dist.mul_(counted.unsqueeze(1))
    shape = (1, num_classes) + (1,) * (input.dim() - 2)
    if index is None:
        count = counted.to(dtype)
    else:
        count = counted.to(dtype) if weight is None else torch.where(counted, weight.to(dtype)[index], 0.0)
    if dist is None:
        c = count
    elif normalised:
        if weight is not None:
            dist.mul_(weight.to(dtype).view(shape))
        c = dist.sum(1)
        dist.div_(torch.where(c > 0, c, 1.0).unsqueeze(1))
    elif index is not None and weight is None:
        c = count
    else:
        c = dist.sum(1) if weight is None else (dist * weight.to(dtype).view(shape)).sum(1)
    return Targets(index, counted, dist, c, count, problems + weight_problems(weight))


def weight_problems(weight) -> list:
    """The data check of a class weight: finite and >= 0."""
    if weight is None:
        return []
    bad = ~(torch.isfinite(weight) & (weight >= 0))

    def message():
        i = int(bad.nonzero()[0])
        return f"weight must be finite and >= 0 for every class, got {float(weight[i])} for class {i}"
    return [(bad.any(), message)]


def _out_of_range(out_of_range, target, num_classes, ignore_index) -> str:
    idx = tuple(int(i) for i in out_of_range.nonzero()[0])
    where = f" at index {idx}" if target.numel() > 1 else ""      # one target (unbatched logits): no index
    return (f"target {int(target[idx])}{where} is outside [0, {num_classes - 1}] and is not "
            f"ignore_index={ignore_index}")


def nonfinite_logits(bad: torch.Tensor) -> tuple:
    """The data check of the logits: ``bad`` marks the counted elements with NaN or +inf logits (or only -inf)."""
    def message():
        idx = tuple(int(i) for i in bad.nonzero()[0])
        return f"logits contain NaN or +inf (or only -inf) in {int(bad.sum())} element(s), first at index {idx}"
    return bad.any(), message


def raise_for(problems: list[tuple[torch.Tensor, Callable[[], str]]]) -> None:
    """Raise a ValueError with the first problem whose flag is set: one synchronisation for all flags."""
    if not problems:
        return
    flags = torch.stack([flag for flag, _ in problems]).tolist()
    for flag, (_, message) in zip(flags, problems):
        if flag:
            raise ValueError(message())


def reduce(values, denominator, reduction):
    """Reduce per-element values: ``'none'``, ``'sum'``, or ``'mean'``, the sum over ``denominator``'s
    sum (0 when that is 0: an empty batch or one with every element ignored)."""
    if reduction == "none":
        return values
    total = values.sum()
    if reduction == "sum":
        return total
    denom = denominator.sum()
    return torch.where(denom > 0, total / torch.where(denom > 0, denom, torch.ones_like(denom)), torch.zeros_like(total))

