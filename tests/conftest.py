"""Fixtures shared by the two wings' tests (tests/lib, tests/lab) and the book's (tests/book): the
checkout's root; the device and dtype matrix with each dtype's tolerance; small batches of logits and
targets; and two processes joined by a gloo process group."""

import datetime
import os
import pathlib
import socket

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]

if not torch.cuda.is_available():
    # Triton's kernels run on CPU tensors under its interpreter; it must be set before they are first imported
    os.environ.setdefault("TRITON_INTERPRET", "1")

#: The devices the matrix covers: the CPU, and CUDA where there is one.
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

#: Per dtype, how close a loss's value or gradient computed in that dtype must be to the same computed
#: in float64 (``torch.testing.assert_close``'s ``rtol`` and ``atol``).
TOLERANCE = {torch.float64: dict(rtol=1e-10, atol=1e-13), torch.float32: dict(rtol=2e-5, atol=1e-7),
             torch.float16: dict(rtol=2e-3, atol=2e-4), torch.bfloat16: dict(rtol=1.6e-2, atol=2e-3)}


@pytest.fixture(scope="session")
def root() -> pathlib.Path:
    """The checkout's root."""
    return ROOT


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    """Each device of :data:`DEVICES`."""
    return request.param


@pytest.fixture(params=[torch.float64, torch.float32], ids=["float64", "float32"])
def dtype(request) -> torch.dtype:
    """float64 and float32; a test parametrises ``dtype`` itself for others (half precision)."""
    return request.param


@pytest.fixture
def tolerance(dtype) -> dict:
    """The :data:`TOLERANCE` of the test's ``dtype``."""
    return TOLERANCE[dtype]


@pytest.fixture(scope="session")
def tolerances() -> dict:
    """:data:`TOLERANCE`, for a test that compares in more than one dtype."""
    return TOLERANCE


def _batch(shape=(12, 5), seed=0, dtype=torch.float64, scale=3.0, ignore_every=5, device="cpu",
           requires_grad=True):
    """Logits ``scale * N(0, 1)`` of ``shape`` ``(N, C, d1, ...)`` (drawn in float64, then cast) and class
    indices ``(N, d1, ...)`` from one generator seeded ``seed``; every ``ignore_every``-th target (in
    memory order, the first included) is -100, none for 0."""
    gen = torch.Generator().manual_seed(seed)
    logits = (scale * torch.randn(shape, generator=gen, dtype=torch.float64)).to(device, dtype)
    target = torch.randint(0, shape[1], (shape[0],) + tuple(shape[2:]), generator=gen)
    if ignore_every:
        target.view(-1)[::ignore_every] = -100
    return logits.requires_grad_(requires_grad), target.to(device)


@pytest.fixture(scope="session")
def make_batch():
    """A factory of small batches: ``make_batch(shape=(12, 5), seed=0, dtype=torch.float64, scale=3.0,
    ignore_every=5, device="cpu", requires_grad=True) -> (logits, target)``; the same arguments give
    the same batch."""
    return _batch


def _gloo_process(rank, world, port, out, worker, args):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60))
    torch.set_num_threads(1)
    try:
        result = worker(rank, world, *args)
        if rank == 0:
            torch.save(result, out)
    finally:
        torch.distributed.destroy_process_group()


@pytest.fixture
def two_ranks(tmp_path):
    """``two_ranks(worker, *args)`` runs ``worker(rank, world, *args)`` in two processes (one thread
    each) joined by a gloo process group on a free local port, and returns what rank 0's call returned.
    ``worker`` must be importable by name (a test module's top-level function)."""
    def run(worker, *args):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        out = tmp_path / "rank0.pt"
        torch.multiprocessing.spawn(_gloo_process, args=(2, port, out, worker, args), nprocs=2)
        return torch.load(out)
    return run
