"""Benchmark: forward+backward time and peak memory of the EDF losses against ``F.cross_entropy``.

Every loss is timed in the same process on the same logits, interleaved run by run so that drift
in the machine's speed affects all of them alike, and the fastest run of each is reported with its
ratio to ``F.cross_entropy`` (like ``timeit``: the minimum estimates a loss's own cost, while the
slower runs measure interference from the rest of the machine). Peak memory is the most memory allocated at once during forward+backward,
beyond the logits and targets that exist before (on CPU from the profiler's allocation events,
on CUDA from the caching allocator's peak); it is reported in units of the logits' size, in total
and beyond the gradient that backward returns (which every loss must allocate).

    python -m dmcore bench                 # this machine's CPU, the shapes below
    python -m dmcore bench --device cuda   # a GPU, if there is one: GPU_SHAPES, the Triton kernels
    python -m dmcore bench --record book/records/bench-cpu.json   # the book's recorded table

Each row also gives the achieved memory bandwidth: twice the logits' bytes (the least traffic of
any implementation, which must read the logits and write the gradient once each) over the time, and
on a GPU its fraction of the device's peak (:func:`peak_bandwidth`). Liger-Kernel's fused
cross-entropy joins the comparison on CUDA where it is installed.

Timings belong to a machine and a moment, so nothing asserts them: the book shows a recorded table
(:func:`save`, :func:`load`) that names its machine, and a reader re-measures with the command above.

Targets on CPU: DMLoss at most 1.0x the time of F.cross_entropy at every shape, and extra peak
memory beyond the gradient at most the size of the logits. On a GPU (:data:`GPU_SHAPES`): at most
0.7x F.cross_entropy's time at the large shapes, no slower than Liger's cross-entropy, extra memory
at most the logits, at least 60% of the peak bandwidth.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import math
import os
import pathlib
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .. import losses

__all__ = ["CPU_SHAPES", "GPU_SHAPES", "Result", "Recorded", "run", "format_table", "save", "load",
           "time_forward_backward", "peak_memory", "logits_sized_allocations", "peak_bandwidth"]

#: (N, C) classification and (N, C, H, W) segmentation shapes of the CPU benchmark, in float32.
CPU_SHAPES = [(4096, 1000), (512, 32000), (65536, 10), (8, 21, 128, 128)]
#: The GPU benchmark: language-model vocabularies (32k, Llama 3's 128k) in bfloat16, many small
#: classifications, and segmentation (21 classes, 512 x 512 pixels) in float32.
GPU_SHAPES = [((4096, 32000), torch.bfloat16), ((16384, 128256), torch.bfloat16), ((65536, 10), torch.float32),
              ((8, 21, 512, 512), torch.float32)]

#: Peak memory bandwidth in GB/s from the vendors' data sheets, by a part of the device's name.
PEAK_BANDWIDTH = {"H200": 4800.0, "H100 SXM": 3350.0, "H100 NVL": 3900.0, "H100 PCIe": 2000.0, "H100": 3350.0,
                  "A100-SXM4-80GB": 2039.0, "A100 80GB PCIe": 1935.0, "A100": 1555.0, "L40S": 864.0, "L4": 300.0,
                  "A10G": 600.0, "V100": 900.0, "T4": 320.0}


def peak_bandwidth(device) -> float | None:
    """The device's peak memory bandwidth in GB/s (:data:`PEAK_BANDWIDTH`), None for a CPU or an unknown GPU."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((gbs for part, gbs in PEAK_BANDWIDTH.items() if part in name), None)


def _candidates(device, impl="auto"):
    fns = {"F.cross_entropy": F.cross_entropy, "DMLoss": losses.DMLoss(impl=impl),
           "IMAELoss": losses.IMAELoss(impl=impl), "GCELoss": losses.GCELoss()}
    if torch.device(device).type == "cuda":
        try:
            from liger_kernel.transformers import LigerCrossEntropyLoss
            fns["Liger CE"] = LigerCrossEntropyLoss()
        except ImportError:
            pass
    return fns


@dataclass
class Result:
    """One (shape, loss) measurement; times in milliseconds, memory in units of the logits' size."""

    shape: tuple[int, ...]
    loss: str
    time_ms: float
    time_ratio: float
    peak: float
    peak_beyond_grad: float
    dtype: str = "float32"
    bandwidth_fraction: float | None = None    # of the device's peak, where it is known

    @property
    def bandwidth_gbs(self) -> float:
        """Twice the logits' bytes (read once, gradient written once) over the time, in GB/s."""
        size = math.prod(self.shape) * torch.empty((), dtype=getattr(torch, self.dtype)).element_size()
        return 2 * size / (self.time_ms * 1e-3) / 1e9


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step(fn, logits, target):
    fn(logits, target).backward()
    logits.grad = None


def time_forward_backward(fns: dict, logits, target, repeats: int = 20, warmup: int = 3) -> dict[str, float]:
    """Seconds of the fastest forward+backward of each function, over ``repeats`` interleaved runs."""
    for _ in range(warmup):
        for fn in fns.values():
            _step(fn, logits, target)
    samples = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            _sync(logits.device)
            start = time.perf_counter()
            _step(fn, logits, target)
            _sync(logits.device)
            samples[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in samples.items()}


@contextlib.contextmanager
def _native_stderr_silenced():
    """The profiler's native code logs 'profiler_start/stop' with timestamps to file descriptor 2;
    point it at /dev/null meanwhile (Python exceptions are unaffected)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _cpu_allocations(fn) -> list[tuple[int, int]]:
    """(time, bytes) of every CPU allocation (+) and free (-) while ``fn`` runs."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with _native_stderr_silenced(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.tag == _EventType.Allocation and node.extra_fields.device.type == "cpu":
            events.append((node.start_time_ns, node.extra_fields.alloc_size))
    return sorted(events)


def peak_memory(fn, logits, target) -> int:
    """Peak bytes allocated during one forward+backward beyond what existed before (gradient included)."""
    logits.grad = None
    if logits.device.type == "cuda":
        _sync(logits.device)
        base = torch.cuda.memory_allocated(logits.device)
        torch.cuda.reset_peak_memory_stats(logits.device)
        fn(logits, target).backward()
        _sync(logits.device)
        peak = torch.cuda.max_memory_allocated(logits.device) - base
    else:
        current = peak = 0
        for _, size in _cpu_allocations(lambda: fn(logits, target).backward()):
            current += size
            peak = max(peak, current)
    logits.grad = None
    return peak


def logits_sized_allocations(fn, logits, target) -> int:
    """How many tensors of at least the logits' size one forward+backward allocates on CPU (profiler events):
    the gradient that backward returns is one, every further one a logits-sized temporary. A count, not a
    time: the same on every machine, so tests may assert it."""
    if logits.device.type != "cpu":
        raise ValueError(f"logits_sized_allocations counts CPU allocations, got logits on {logits.device}")
    size = logits.numel() * logits.element_size()
    logits.grad = None
    count = sum(1 for _, n in _cpu_allocations(lambda: fn(logits, target).backward()) if n >= size)
    logits.grad = None
    return count


def run(device: str = "cpu", shapes=None, repeats: int = 20, dtype=torch.float32, seed: int = 0,
        impl: str = "auto") -> list[Result]:
    """Measure every loss at every shape; returns one :class:`Result` per (shape, loss).

    ``shapes``: shapes in ``dtype``, or ``(shape, dtype)`` pairs; default :data:`CPU_SHAPES` on a CPU
    and :data:`GPU_SHAPES` on a GPU. ``impl``: the EDF losses' implementation (:mod:`dmcore.losses`).
    """
    device = torch.device(device)
    peak_gbs = peak_bandwidth(device)
    results = []
    for item in shapes or (GPU_SHAPES if device.type == "cuda" else CPU_SHAPES):
        shape, item_dtype = item if isinstance(item[1], torch.dtype) else (item, dtype)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        logits = torch.randn(shape, generator=gen).to(device=device, dtype=item_dtype).requires_grad_()
        target = torch.randint(0, shape[1], (shape[0],) + tuple(shape[2:]), generator=gen).to(device)
        fns = _candidates(device, impl)
        times = time_forward_backward(fns, logits, target, repeats)
        size = logits.numel() * logits.element_size()
        for name, fn in fns.items():
            peak = peak_memory(fn, logits, target)
            result = Result(tuple(shape), name, 1e3 * times[name], times[name] / times["F.cross_entropy"],
                            peak / size, (peak - size) / size, str(item_dtype).removeprefix("torch."))
            if peak_gbs:
                result.bandwidth_fraction = result.bandwidth_gbs / peak_gbs
            results.append(result)
        del logits, target
    return results


def format_table(results: list[Result]) -> str:
    """A fixed-width table of the results, one line per (shape, loss); the fraction of the peak
    bandwidth where the device's peak is known."""
    fraction = any(r.bandwidth_fraction is not None for r in results)
    lines = [f"{'shape':>18s} {'dtype':>8s}  {'loss':16s} {'time (ms)':>10s} {'vs CE':>7s} {'peak':>7s} "
             f"{'beyond grad':>12s} {'GB/s':>8s}" + (f" {'of peak':>8s}" if fraction else "")]
    for r in results:
        shape = "x".join(map(str, r.shape))
        line = (f"{shape:>18s} {r.dtype:>8s}  {r.loss:16s} {r.time_ms:10.2f} {r.time_ratio:6.2f}x {r.peak:6.2f}x "
                f"{r.peak_beyond_grad:11.2f}x {r.bandwidth_gbs:8.1f}")
        if fraction:
            line += f" {'' if r.bandwidth_fraction is None else format(r.bandwidth_fraction, '8.0%'):>8s}"
        lines.append(line)
    return "\n".join(lines)


@dataclasses.dataclass
class Recorded:
    """A benchmark as recorded: the machine it ran on, the repeats, and the results."""

    machine: dict
    repeats: int
    results: list[Result]

    def describe(self) -> str:
        m = self.machine
        return (f"recorded {m['date']} on {m['device']}, {m['threads']} threads, torch {m['torch']} "
                f"(CPU capability {m['cpu_capability']}), dmcore {m['dmcore_commit'][:10]}; forward+backward, "
                f"fastest of {self.repeats} interleaved runs; memory in units of the logits' size")


def save(results: list[Result], path, device: str = "cpu", repeats: int = 20) -> Recorded:
    """Write ``results`` with a description of this machine to the JSON file ``path``."""
    from .records import provenance

    here = provenance()
    device = torch.device(device)
    machine = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
               "device": torch.cuda.get_device_name(device) if device.type == "cuda" else here["cpu"],
               **{k: here[k] for k in ("threads", "torch", "cpu_capability", "kernel", "dmcore_commit")}}
    recorded = Recorded(machine, repeats, results)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"machine": machine, "repeats": repeats, "results": [dataclasses.asdict(r) for r in results]}
    path.write_text(json.dumps(body, indent=1) + "\n")
    return recorded


def load(path) -> Recorded:
    """A benchmark written by :func:`save`."""
    body = json.loads(pathlib.Path(path).read_text())
    results = [Result(**{**r, "shape": tuple(r["shape"])}) for r in body["results"]]
    return Recorded(body["machine"], body["repeats"], results)
