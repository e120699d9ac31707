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

A second benchmark, :func:`model_steps`, times one training step of ``R`` runs of a model trained
together (forward, backward and the SGD update, a batch of 100 each) three ways: the model's
``forward_stacked`` (the path :mod:`dmcore.lab.train` takes), ``vmap`` of its ``forward`` over the stacked
parameters (the path it takes for a model without one), and a loop over ``R`` separate models and
optimisers; and the forward pass of evaluation on a batch shared by every run:

    python -m dmcore bench --model fashion_cnn --runs 1,10,40 --threads 2

Targets on CPU: DMLoss at most 1.0x the time of F.cross_entropy at every shape, and extra peak
memory beyond the gradient at most the size of the logits. On a GPU (:data:`GPU_SHAPES`): at most
0.7x F.cross_entropy's time at the large shapes, no slower than Liger's cross-entropy, extra memory
at most the logits, at least 60% of the peak bandwidth.
"""

from __future__ import annotations

import contextlib
import copy
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
           "time_forward_backward", "peak_memory", "logits_sized_allocations", "peak_bandwidth",
           "MODEL_RUNS", "MODEL_WAYS", "ModelStep", "model_steps", "model_input_shape", "format_model_table"]

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


def save(results: list, path, device: str = "cpu", repeats: int = 20) -> Recorded:
    """Write ``results`` (dataclasses: :class:`Result`, or :class:`dmcore.lab.bench_linear.Result`) with a
    description of this machine to the JSON file ``path``."""
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


def load(path, result=None) -> Recorded:
    """A benchmark written by :func:`save`, its results read as ``result`` (default :class:`Result`)."""
    body = json.loads(pathlib.Path(path).read_text())
    results = [(result or Result)(**{**r, "shape": tuple(r["shape"])}) for r in body["results"]]
    return Recorded(body["machine"], body["repeats"], results)


# --- the model benchmark: training steps of R runs at once -------------------------------------------

#: The numbers of runs trained together in :func:`model_steps`.
MODEL_RUNS = (1, 10, 40)
#: The ways :func:`model_steps` trains ``R`` runs: the model's ``forward_stacked`` over stacked parameters
#: (:mod:`dmcore.lab.train`'s path), ``vmap`` of its ``forward`` over them (train's path for a model
#: without ``forward_stacked``), and ``R`` separate models and optimisers stepped one after another.
MODEL_WAYS = ("forward_stacked", "vmap", "loop")


@dataclass
class ModelStep:
    """One (model, way, number of runs) measurement: a training step of all ``runs`` runs (forward,
    backward, SGD update; ``batch`` examples each) in milliseconds of wall-clock and of the process's CPU
    time (all threads; each the fastest of the repeats), and the evaluation forward pass (no gradient,
    one batch of ``eval_batch`` examples shared by every run) in CPU microseconds per run and example."""

    model: str
    way: str
    runs: int
    batch: int
    wall_ms: float
    cpu_ms: float
    eval_us: float
    eval_batch: int = 1000

    def seconds_per_run(self, steps: int = 3000) -> float:
        """CPU seconds of ``steps`` training steps of one run, at this step's cost per run."""
        return self.cpu_ms * 1e-3 * steps / self.runs


def model_input_shape(net) -> tuple[int, ...]:
    """One example's shape for a model :func:`model_steps` can time (a :class:`~dmcore.lab.models.FashionCNN` or
    :class:`~dmcore.lab.models.MNIST1DCNN`); a ValueError for any other."""
    from .models import MNIST1DCNN, FashionCNN

    if isinstance(net, FashionCNN):
        return (1, net.size, net.size)
    if isinstance(net, MNIST1DCNN):
        return (net.length,)
    raise ValueError(f"the model benchmark times fashion_cnn[_wK] and mnist1d_cnn[_wK], got a {type(net).__name__}")


class _Training:
    """One way of training ``R`` runs on fixed random batches: :meth:`step` (a training step of every run)
    and :meth:`evaluate` (the logits of every run on one batch shared by all)."""

    def __init__(self, way: str, nets: list, x, y):
        from torch.func import functional_call, stack_module_state, vmap

        from .train import Protocol

        defaults = Protocol()
        sgd = dict(lr=defaults.lr, momentum=defaults.momentum, weight_decay=defaults.weight_decay)
        self.way, self.nets, self.x, self.y = way, nets, x, y
        if way == "loop":
            self.optimisers = [torch.optim.SGD(net.parameters(), **sgd) for net in nets]
            return
        params, _ = stack_module_state(nets)
        self.params = {k: v.detach().requires_grad_() for k, v in params.items()}
        self.optimiser = torch.optim.SGD(self.params.values(), **sgd)
        base = nets[0]
        if way == "forward_stacked":
            self.forward = base.forward_stacked
            self.shared = lambda params, x: base.forward_stacked(params, x.expand(len(nets), *x.shape))
        else:
            self.forward = vmap(lambda p, xb: functional_call(base, p, (xb,)))
            self.shared = vmap(lambda p, xb: functional_call(base, p, (xb,)), in_dims=(0, None))

    def step(self) -> None:
        """Forward, backward and SGD update of every run: the sum over runs of each run's mean
        cross-entropy on its own batch."""
        runs, batch = self.y.shape
        if self.way == "loop":
            for net, optimiser, x, y in zip(self.nets, self.optimisers, self.x, self.y):
                optimiser.zero_grad(set_to_none=True)
                F.cross_entropy(net(x), y).backward()
                optimiser.step()
            return
        self.optimiser.zero_grad(set_to_none=True)
        logits = self.forward(self.params, self.x)
        (F.cross_entropy(logits.reshape(runs * batch, -1), self.y.reshape(-1), reduction="sum") / batch).backward()
        self.optimiser.step()

    @torch.no_grad()
    def evaluate(self, x) -> None:
        if self.way == "loop":
            for net in self.nets:
                net(x)
        else:
            self.shared(self.params, x)


def _clock(fn) -> tuple[float, float]:
    """(wall, CPU) seconds of ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def model_steps(model: str = "fashion_cnn", runs=MODEL_RUNS, ways=MODEL_WAYS, batch: int = 100,
                repeats: int = 10, eval_batch: int = 1000, eval_repeats: int = 3, seed: int = 0) -> list[ModelStep]:
    """Time a training step of ``R`` runs of ``model`` (:func:`dmcore.lab.models.build`, 10 classes) for
    each ``R`` in ``runs`` and each way in ``ways`` (:data:`MODEL_WAYS`), on CPU in float32, with
    :mod:`dmcore.lab.train`'s SGD (momentum 0.9, weight decay 5e-4) and the cross-entropy on random
    inputs and labels; one :class:`ModelStep` per (R, way).

    The ways are timed interleaved, step by step, and each reports its fastest step (like ``timeit``),
    after two steps of warm-up. Wall-clock time is what a run waits; the process's CPU time is what it
    costs where other processes share the cores (it includes the time threads spend waiting for each
    other, so with several threads it exceeds the work done).
    """
    from .models import build

    for way in ways:
        if way not in MODEL_WAYS:
            raise ValueError(f"unknown way {way!r}: expected one of {', '.join(MODEL_WAYS)}")
    model_input_shape(build(model, 10))            # a model the benchmark cannot time fails before any timing
    results = []
    for r in runs:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            nets = [build(model, 10) for _ in range(r)]
            shape = model_input_shape(nets[0])
            x = torch.randn(r, batch, *shape)
            y = torch.randint(0, 10, (r, batch))
            shared = torch.randn(eval_batch, *shape)
        trainings = [_Training(way, [copy.deepcopy(net) for net in nets], x, y) for way in ways]
        for training in trainings:
            for _ in range(2):
                training.step()
        times = [[] for _ in trainings]
        for _ in range(repeats):
            for training, samples in zip(trainings, times):
                samples.append(_clock(training.step))
        for training, samples in zip(trainings, times):
            evaluation = min(_clock(lambda: training.evaluate(shared))[1] for _ in range(eval_repeats))
            results.append(ModelStep(model, training.way, r, batch, 1e3 * min(w for w, _ in samples),
                                     1e3 * min(c for _, c in samples), 1e6 * evaluation / (r * eval_batch), eval_batch))
    return results


def format_model_table(results: list[ModelStep], steps: int = 3000) -> str:
    """A fixed-width table of :func:`model_steps`' results, one line per (runs, way), with the CPU
    seconds per run of ``steps`` training steps."""
    lines = [f"{'model':14s} {'runs':>4s}  {'way':16s} {'wall ms/step':>12s} {'CPU ms/step':>11s} "
             f"{'CPU ms/run-step':>15s} {f'CPU s/run ({steps} st.)':>20s} {'eval CPU us/ex/run':>18s}"]
    for r in results:
        lines.append(f"{r.model:14s} {r.runs:4d}  {r.way:16s} {r.wall_ms:12.1f} {r.cpu_ms:11.1f} "
                     f"{r.cpu_ms / r.runs:15.2f} {r.seconds_per_run(steps):20.1f} {r.eval_us:18.2f}")
    return "\n".join(lines)
