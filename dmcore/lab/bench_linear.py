"""Benchmark: the fused linear + EDF loss against the logits materialised and PyTorch's chunked path.

For hidden states ``(N, H)`` and an output layer ``(V, H)`` (a language model's last layer and its
loss), one forward+backward of each candidate, timed in the same process on the same tensors,
interleaved run by run, the fastest run of each reported (as :mod:`dmcore.lab.bench` does), with its
ratio to ``F.linear_cross_entropy``'s chunked path (``options=LinearCrossEntropyOptions()``):

- ``materialised CE``: ``F.cross_entropy(hidden @ weight.T, target)``, the logits held whole;
- ``materialised DM``: :func:`dmcore.losses.dm_loss` on the same logits;
- ``F.linear_cross_entropy``: PyTorch's chunked linear cross-entropy;
- ``linear_edf CCE`` and ``linear_edf DM``: :func:`dmcore.linear_edf.linear_edf_loss` with the natural
  cross-entropy weight and with DM's;
- on CUDA, where they import: Liger-Kernel's fused linear cross-entropy and Apple's Cut Cross-Entropy.

Peak extra memory: the most memory allocated at once during forward+backward beyond what existed
before and beyond the gradients of the hidden states and the weight (which every candidate returns),
in units of the logits' size (``N x V`` in the inputs' dtype); on CPU from the profiler's allocation
events, on CUDA from the caching allocator's peak.

    python -m dmcore bench --linear                       # this machine's CPU, CPU_SHAPES
    python -m dmcore bench --linear --device cuda         # a GPU: GPU_SHAPES, the Triton kernels
    python -m dmcore bench --linear --record book/records/bench-linear-cpu.json

Targets on CPU: peak extra memory at most 1/8 of the logits, time at most 1.2x that of
``F.linear_cross_entropy``'s chunked path. Timings belong to a machine and a moment: nothing asserts
them; the book shows a recorded table that names its machine.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .. import edf, linear_edf, losses
from . import bench

__all__ = ["CPU_SHAPES", "GPU_SHAPES", "Result", "candidates", "run", "format_table", "load"]

#: (tokens N, hidden H, vocabulary V) on CPU, float32: language-model vocabularies (32k,
#: Llama 3's 128k) at a number of tokens two cores finish in seconds.
CPU_SHAPES = [(1024, 1024, 32000), (512, 512, 128256)]
#: On a GPU, bfloat16: 8192 tokens x 4096 hidden x 32k, and 4096 x 2048 x 128k.
GPU_SHAPES = [((8192, 4096, 32000), torch.bfloat16), ((4096, 2048, 128256), torch.bfloat16)]
#: The reference every time is divided by.
REFERENCE = "F.linear_cross_entropy"


def candidates(device) -> dict:
    """``name -> fn(hidden, weight, target)`` returning a loss (module docstring)."""
    dm, cce = edf.dm(0.5, 8), edf.cce()
    fns = {"materialised CE": lambda h, w, t: F.cross_entropy(h @ w.T, t),
           "materialised DM": lambda h, w, t: losses.dm_loss(h @ w.T, t, lam=0.5, beta=8),
           REFERENCE: lambda h, w, t: F.linear_cross_entropy(h, w, t, options=torch.nn.LinearCrossEntropyOptions()),
           "linear_edf CCE": lambda h, w, t: linear_edf.linear_edf_loss(h, w, t, cce, normalizer="count"),
           "linear_edf DM": lambda h, w, t: linear_edf.linear_edf_loss(h, w, t, dm, eps=losses.PAPER_EPS)}
    if torch.device(device).type == "cuda":
        try:
            from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
            liger = LigerFusedLinearCrossEntropyLoss()
            fns["Liger FLCE"] = lambda h, w, t: liger(w, h, t)
        except ImportError:
            pass
        try:
            from cut_cross_entropy import linear_cross_entropy
            fns["Cut CE"] = lambda h, w, t: linear_cross_entropy(h, w, t)
        except ImportError:
            pass
    return fns


@dataclass
class Result:
    """One (shape, candidate) measurement: milliseconds, the ratio to :data:`REFERENCE`, and the peak
    memory beyond the inputs and the gradients in units of the logits' size."""

    shape: tuple[int, int, int]
    loss: str
    time_ms: float
    time_ratio: float
    peak_extra: float
    dtype: str = "float32"


def _step(fn, hidden, weight, target):
    fn(hidden, weight, target).backward()
    hidden.grad = weight.grad = None


def _peak(fn, hidden, weight, target) -> int:
    """Peak bytes allocated during one forward+backward beyond what existed before, gradients excluded."""
    grads = hidden.numel() * hidden.element_size() + weight.numel() * weight.element_size()
    hidden.grad = weight.grad = None
    if hidden.device.type == "cuda":
        torch.cuda.synchronize(hidden.device)
        base = torch.cuda.memory_allocated(hidden.device)
        torch.cuda.reset_peak_memory_stats(hidden.device)
        fn(hidden, weight, target).backward()
        torch.cuda.synchronize(hidden.device)
        peak = torch.cuda.max_memory_allocated(hidden.device) - base
    else:
        current = peak = 0
        for _, size in bench._cpu_allocations(lambda: fn(hidden, weight, target).backward()):
            current += size
            peak = max(peak, current)
    hidden.grad = weight.grad = None
    return peak - grads


def run(device: str = "cpu", shapes=None, repeats: int = 5, dtype=torch.float32, seed: int = 0) -> list[Result]:
    """Every candidate at every shape (default :data:`CPU_SHAPES`, or :data:`GPU_SHAPES` on CUDA)."""
    device = torch.device(device)
    results = []
    for item in shapes or (GPU_SHAPES if device.type == "cuda" else CPU_SHAPES):
        shape, item_dtype = item if isinstance(item[1], torch.dtype) else (item, dtype)
        n, size, vocab = shape
        gen = torch.Generator().manual_seed(seed)
        hidden = torch.randn(n, size, generator=gen).to(device, item_dtype).requires_grad_()
        weight = (torch.randn(vocab, size, generator=gen) / size ** 0.5).to(device, item_dtype).requires_grad_()
        target = torch.randint(0, vocab, (n,), generator=gen).to(device)
        fns = candidates(device)
        for fn in fns.values():                                  # warm-up
            _step(fn, hidden, weight, target)
        samples = {name: [] for name in fns}
        for _ in range(repeats):
            for name, fn in fns.items():
                bench._sync(device)
                start = time.perf_counter()
                _step(fn, hidden, weight, target)
                bench._sync(device)
                samples[name].append(time.perf_counter() - start)
        best = {name: min(values) for name, values in samples.items()}
        logits = n * vocab * hidden.element_size()
        for name, fn in fns.items():
            results.append(Result(tuple(shape), name, 1e3 * best[name], best[name] / best[REFERENCE],
                                  _peak(fn, hidden, weight, target) / logits, str(item_dtype).removeprefix("torch.")))
        del hidden, weight, target
    return results


def format_table(results: list[Result]) -> str:
    """A fixed-width table, one line per (shape, candidate)."""
    lines = [f"{'N x H x V':>18s} {'dtype':>8s}  {'loss':24s} {'time (ms)':>10s} {'vs chunked':>11s} "
             f"{'peak extra':>11s}"]
    for r in results:
        lines.append(f"{'x'.join(map(str, r.shape)):>18s} {r.dtype:>8s}  {r.loss:24s} {r.time_ms:10.1f} "
                     f"{r.time_ratio:10.2f}x {r.peak_extra:10.3f}x")
    return "\n".join(lines)


def load(path) -> bench.Recorded:
    """A benchmark written by :func:`dmcore.lab.bench.save` from this module's results."""
    return bench.load(path, Result)
