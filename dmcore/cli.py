"""``python -m dmcore``: the command line.

    python -m dmcore bench [--device cpu|cuda] [--repeats 20] [--shapes 4096x1000,65536x10] [--threads N]
"""

from __future__ import annotations

import argparse
import sys

import torch


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a shape is N x C [x d1 ...], like 4096x1000; got {text!r}") from None
    if len(shape) < 2 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"a shape needs N and C >= 1, like 4096x1000; got {text!r}")
    return shape


def _bench(args) -> int:
    from . import bench

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: --device cuda, but no CUDA device is available", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    results = bench.run(args.device, args.shapes, args.repeats)
    where = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else \
        f"CPU, {torch.get_num_threads()} threads"
    print(f"forward+backward, median of {args.repeats} interleaved runs; memory in units of the logits' size ({where})")
    print(bench.format_table(results))
    dm = [r for r in results if r.loss == "DMLoss"]
    print(f"DMLoss time vs F.cross_entropy: max {max(r.time_ratio for r in dm):.2f}x over {len(dm)} shapes")
    print(f"DMLoss extra peak memory beyond its gradient: max {max(r.peak_beyond_grad for r in dm):.2f}x the logits")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dmcore", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    b = commands.add_parser("bench", help="time and memory of the EDF losses against F.cross_entropy")
    b.add_argument("--device", default="cpu", help="cpu (default) or cuda[:k]")
    b.add_argument("--repeats", type=int, default=20, help="timed runs per loss and shape (median reported)")
    b.add_argument("--shapes", type=lambda s: [_shape(x) for x in s.split(",")], default=None,
                   help="comma-separated shapes like 4096x1000,8x21x128x128 (default: the CPU benchmark's)")
    b.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own)")
    b.set_defaults(run=_bench)
    args = parser.parse_args(argv)
    return args.run(args)
