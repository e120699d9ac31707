"""``python -m dmcore``: the command line.

    python -m dmcore bench [--device cpu|cuda] [--repeats 20] [--shapes 4096x1000,65536x10] [--threads N]
        [--dtype float32|float16|bfloat16] [--impl auto|torch|c|triton]
    python -m dmcore bench --model fashion_cnn [--runs 1,10,40] [--repeats 10] [--threads N]
    python -m dmcore bench --linear [--device cpu|cuda] [--shapes 1024x1024x32000] [--repeats 5] [--record FILE]
    python -m dmcore sweep --dataset mnist1d --losses cce,mae,gce,imae,dm \
        --noise symmetric:0,0.2,0.4,0.6,0.8 --seeds 3 --out DIR [--steps 6000] [--device cuda]
    python -m dmcore sweep --dataset cifar10 --data-dir DIR --model resnet20 --device cuda --out DIR
    python -m dmcore experiments [NAME ...] [--list] [--out _build/records] [--no-install] [--records DIR]
    python -m dmcore reproduce NAME [--sample K] [--mode auto|bitwise|statistical] [--records DIR]
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time

import torch


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a shape is N x C [x d1 ...], like 4096x1000; got {text!r}") from None
    if len(shape) < 2 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"a shape needs N and C >= 1, like 4096x1000; got {text!r}")
    return shape


def _whole(minimum: int):
    """An argparse type: a whole number >= ``minimum``, else an error that says so."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {value}")
        return value
    return parse


_positive = _whole(1)


def _rate(text: str) -> float:
    """A learning rate: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return value


def _device(text: str) -> str:
    if not re.fullmatch(r"cpu|cuda(:[0-9]+)?", text):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:K, got {text!r}")
    return text


def _setup(args) -> None:
    """The device must exist; the thread count is set when asked for."""
    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"--device {args.device}, but no CUDA device is available")
        index = int(args.device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ValueError(f"--device {args.device}, but there are {torch.cuda.device_count()} CUDA devices")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.command != "bench" and args.device == "cpu":
        from .train import keep_freed_memory
        keep_freed_memory()   # this process only trains: keep freed memory for the next step


def _bench(args) -> int:
    from . import bench

    _setup(args)
    if args.model:
        return _bench_model(args)
    if args.linear:
        return _bench_linear(args)
    args.repeats = args.repeats or 20
    results = bench.run(args.device, args.shapes, args.repeats, dtype=getattr(torch, args.dtype), impl=args.impl)
    if args.record:
        bench.save(results, args.record, args.device, args.repeats)
    where = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else \
        f"CPU, {torch.get_num_threads()} threads"
    print(f"forward+backward, fastest of {args.repeats} interleaved runs; memory in units of the logits' size ({where})")
    print(bench.format_table(results))
    dm = [r for r in results if r.loss == "DMLoss"]
    print(f"DMLoss time vs F.cross_entropy: max {max(r.time_ratio for r in dm):.2f}x over {len(dm)} shapes")
    print(f"DMLoss extra peak memory beyond its gradient: max {max(r.peak_beyond_grad for r in dm):.2f}x the logits")
    if all(r.bandwidth_fraction is not None for r in dm):
        print(f"DMLoss bandwidth: min {min(r.bandwidth_fraction for r in dm):.0%} of the peak")
    return 0


def _bench_linear(args) -> int:
    """``bench --linear``: the fused linear + EDF loss against the logits materialised (:mod:`bench_linear`)."""
    from . import bench, bench_linear

    if args.shapes and any(len(shape) != 3 for shape in args.shapes):
        raise ValueError(f"bench --linear takes shapes NxHxV (tokens x hidden x vocabulary), got {args.shapes}")
    repeats = args.repeats or 5
    results = bench_linear.run(args.device, args.shapes, repeats, dtype=getattr(torch, args.dtype))
    if args.record:
        bench.save(results, args.record, args.device, repeats)
    where = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else \
        f"CPU, {torch.get_num_threads()} threads"
    print(f"forward+backward, fastest of {repeats} interleaved runs; peak memory beyond the inputs and their "
          f"gradients in units of the logits' size ({where})")
    print(bench_linear.format_table(results))
    return 0


def _bench_model(args) -> int:
    """``bench --model``: training steps of 1, 10, 40 (``--runs``) runs at once, three ways (:func:`bench.model_steps`)."""
    from . import bench
    from .models import build
    from .records import provenance
    from .train import keep_freed_memory

    if args.device != "cpu" or args.record or args.shapes:
        raise ValueError("bench --model times training on the CPU: --device, --shapes and --record belong to the loss benchmark")
    bench.model_input_shape(build(args.model, 10))     # an unknown or unsupported model fails before anything runs
    keep_freed_memory()       # as training does: otherwise every step page-faults its activations in again
    repeats = args.repeats or 10
    results = bench.model_steps(args.model, args.runs, repeats=repeats)
    print(f"{args.model}: training steps of R runs (forward, backward, SGD; batch 100 each), fastest of {repeats} "
          f"interleaved steps; evaluation: forward on 1000 shared examples ({provenance(args.model)['cpu']}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__})")
    print(bench.format_model_table(results))
    return 0


def _losses(text: str) -> list[str]:
    """Comma-separated loss names, where a loss's own parameters may contain commas too:
    ``cce,dm:lam=1,beta=16,gce`` is cce, dm:lam=1,beta=16 and gce."""
    names = []
    for token in text.split(","):
        if "=" in token and ":" not in token and names:
            names[-1] += "," + token
        else:
            names.append(token)
    return names


def _noise(text: str) -> tuple[str, list[float]]:
    from .noise import SCHEMES

    scheme, _, rates = text.partition(":")
    try:
        values = [float(r) for r in rates.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes SCHEME:RATE,RATE,..., like symmetric:0,0.2; got {text!r}") from None
    if scheme not in SCHEMES:
        raise argparse.ArgumentTypeError(f"unknown noise scheme {scheme!r}: expected one of {', '.join(SCHEMES)}")
    if any(not 0 <= v <= 1 for v in values):
        raise argparse.ArgumentTypeError(f"noise rates lie in [0, 1], got {rates}")
    return scheme, values


def _sweep(args) -> int:
    from . import data, models, sweep, train

    _setup(args)
    protocol = train.Protocol(steps=args.steps, batch_size=args.batch_size, lr=args.lr, eval_every=args.eval_every)
    for name in args.losses:
        train.parse_loss(name)  # fail before any training
    models.build(args.model, 2, 1)  # an unknown model or dataset fails before anything is written
    base = data.parse_name(args.dataset)[0]
    if base.startswith("cifar") and args.data_dir is None:
        raise ValueError(f"dataset {base} is read from files: give the folder that holds them (--data-dir)")
    runs = sweep.grid(args.losses, args.noise, args.seeds)
    rows = sweep.run_sweep(args.out, args.dataset, args.model, runs, protocol, args.device, args.chunk or 0,
                           data_dir=args.data_dir)
    print(f"{len(rows)} runs in {args.out}/runs.csv; per-step metrics in {args.out}/history.csv.gz")
    return 0


def _experiments(args) -> int:
    from . import experiments

    _setup(args)
    names = args.names or list(experiments.EXPERIMENTS)
    chosen = [experiments.get(name) for name in names]   # fail on an unknown name before any training
    if args.list:
        for e in chosen:
            print(f"{e.name:<24s} {len(e.runs):4d} runs  {e.chapter:<22s} {e.description}")
        return 0
    total = time.perf_counter()
    for e in chosen:
        start = time.perf_counter()
        folder = experiments.run(e, args.out)
        where = experiments.install(e, args.out, args.records) if args.install else folder
        print(f"{e.name}: {len(e.runs)} runs in {where} ({time.perf_counter() - start:.0f} s)", flush=True)
    print(f"{len(chosen)} experiments in {time.perf_counter() - total:.0f} s")
    return 0


def _reproduce(args) -> int:
    from .reproduce import reproduce

    _setup(args)
    outcome = reproduce(args.name, sample=args.sample, mode=args.mode, records=args.records)
    print(outcome.table())
    print(f"{outcome.summary()} in {outcome.seconds:.0f} s")
    return 0 if outcome.passed else 1


RECORDS_HELP = "the folder of records (default: DMCORE_RECORDS, else book/records or records under the current directory)"


def main(argv=None) -> int:
    """Run the command of ``argv`` (default: the process's arguments); the exit status: 0, 1 where a
    reproduction is outside its tolerance, 2 on a bad argument or value (named on standard error)."""
    args = _parser().parse_args(argv)
    if args.command == "sweep" and args.noise is None:
        args.noise = [_noise("symmetric:0,0.2,0.4,0.6,0.8")]
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dmcore", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for add in (_add_bench, _add_sweep, _add_experiments, _add_reproduce):
        add(commands)
    return parser


def _add_bench(commands) -> None:
    b = commands.add_parser("bench", help="time and memory of the EDF losses against F.cross_entropy")
    b.add_argument("--device", type=_device, default="cpu", help="cpu (default) or cuda[:k]")
    b.add_argument("--repeats", type=_positive, default=None,
                   help="timed runs per loss and shape, or steps per way with --model (the fastest is reported; "
                        "default 20, with --model 10)")
    b.add_argument("--shapes", type=lambda s: [_shape(x) for x in s.split(",")], default=None,
                   help="comma-separated shapes like 4096x1000,8x21x128x128 (default: the CPU benchmark's)")
    b.add_argument("--threads", type=_positive, default=None, help="torch threads (default: torch's own)")
    b.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32",
                   help="the logits' dtype for --shapes (the default shapes carry their own)")
    b.add_argument("--impl", choices=["auto", "torch", "c", "triton"], default="auto",
                   help="the EDF losses' implementation (default auto: C on CPU, Triton on CUDA)")
    b.add_argument("--record", default=None, help="also write the results and this machine's description to this JSON file")
    b.add_argument("--model", default=None,
                   help="instead, time training steps of this model (fashion_cnn[_wK] or mnist1d_cnn[_wK]) for many runs "
                        "at once: forward_stacked, vmap and a loop over runs")
    b.add_argument("--runs", type=lambda s: [_positive(x) for x in s.split(",")], default=[1, 10, 40],
                   help="with --model: comma-separated numbers of runs trained together (default 1,10,40)")
    b.add_argument("--linear", action="store_true",
                   help="instead, the fused linear + EDF loss against the logits materialised and "
                        "F.linear_cross_entropy's chunked path; --shapes as NxHxV")
    b.set_defaults(run=_bench)


def _add_sweep(commands) -> None:
    from .train import Protocol

    s = commands.add_parser("sweep", help="train a grid of runs under label noise, batched, into tidy CSV files")
    s.add_argument("--dataset", default="mnist1d",
                   help="mnist1d, mnist1d-40k, digits, fashion-mnist (Debian's files, or --data-dir), cifar10 or "
                        "cifar100 (with --data-dir), optionally long-tailed (-lt10) and with a validation split "
                        "(-val0.2): mnist1d-lt10-val0.2, fashion-mnist-val0.2")
    s.add_argument("--data-dir", default=None, help="the folder that holds the CIFAR 'python version' files, or Fashion-MNIST's four IDX files")
    s.add_argument("--model", default="mnist1d_cnn", help="mnist1d_cnn, mnist1d_cnn_wK (K channels), fashion_cnn, "
                                                          "fashion_cnn_wK, mlp, resnet20, resnet44 or resnet56")
    s.add_argument("--losses", type=_losses, default=_losses("cce,mae,gce,imae,dm"),
                   help="comma-separated: cce, mae, mse, gce[:q=], imae[:T=], dm[:lam=,beta=], cce-dn, ...")
    s.add_argument("--noise", type=_noise, action="append", default=None,
                   help="SCHEME:RATES, repeatable; schemes symmetric, symmetric-keep, pair, mnist-map, cifar10-map, "
                        "instance (instance-dependent, from a clean-trained model of the same seed): "
                        "symmetric:0,0.2,0.4 pair:0.2,0.4 (default symmetric:0,0.2,0.4,0.6,0.8)")
    s.add_argument("--seeds", type=_positive, default=3, help="seeds per setting (>= 1)")
    s.add_argument("--out", required=True, help="directory for config.json, runs.csv and history.csv.gz")
    defaults = Protocol()
    s.add_argument("--steps", type=_positive, default=defaults.steps, help="SGD steps (>= 1)")
    s.add_argument("--batch-size", type=_positive, default=defaults.batch_size, help="examples per step (>= 1)")
    s.add_argument("--lr", type=_rate, default=defaults.lr, help="learning rate (> 0)")
    s.add_argument("--eval-every", type=_positive, default=defaults.eval_every, help="steps between evaluations (>= 1)")
    s.add_argument("--chunk", type=_positive, default=None, help="runs trained together (>= 1; default: all pending runs)")
    s.add_argument("--device", type=_device, default="cpu", help="cpu (default), cuda or cuda:K")
    s.add_argument("--threads", type=_positive, default=None, help="torch threads (>= 1; default: torch's own)")
    s.set_defaults(run=_sweep)


def _add_experiments(commands) -> None:
    e = commands.add_parser("experiments", help="train the book's records (resumable) and install them in the folder of records")
    e.add_argument("names", nargs="*", help="experiments to train (default: all; --list names them)")
    e.add_argument("--list", action="store_true", help="list the experiments and stop")
    e.add_argument("--out", default=None, help="where to train, resumably (default: DMCORE_SCRATCH, else _build/records)")
    e.add_argument("--no-install", dest="install", action="store_false",
                   help="leave the finished records in --out instead of installing them in --records")
    _add_records_options(e)
    e.set_defaults(run=_experiments)


def _add_reproduce(commands) -> None:
    r = commands.add_parser("reproduce", help="re-train an experiment's runs, or a sample, and compare them with its record")
    r.add_argument("name", help="the experiment (python -m dmcore experiments --list)")
    r.add_argument("--sample", type=_positive, default=None, help="re-train this many runs, a deterministic sample (default: all)")
    r.add_argument("--mode", choices=["auto", "bitwise", "statistical"], default="auto",
                   help="auto: bitwise where the arithmetic is the record's, else statistical (see dmcore.lab.reproduce)")
    _add_records_options(r)
    r.set_defaults(run=_reproduce)


def _add_records_options(command) -> None:
    """The folder of records, and the arithmetic the records were made with (CPU, two threads)."""
    command.add_argument("--records", default=None, help=RECORDS_HELP)
    command.add_argument("--device", type=_device, default="cpu", help=argparse.SUPPRESS)
    command.add_argument("--threads", type=_positive, default=2, help="torch threads (default 2, as the records were made)")
