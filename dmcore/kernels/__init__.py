"""Compiled CPU fast paths, each C source beside its Python driver; PyTorch is the reference.

- ``edf_cpu.c`` with :mod:`dmcore.kernels.edf_cpu`: the EDF losses' value and gradient
  (:mod:`dmcore.losses`, ``impl='c'``).
- ``cnn1d_cpu.c`` with :mod:`dmcore.kernels.cnn1d_cpu`: many copies of the MNIST-1D CNN, forward and
  backward (:mod:`dmcore.lab.models`).

:func:`cpu` and :func:`cnn1d` compile their source with the system C compiler on first use (about a
second), cache the shared library per user under ``$DMCORE_CACHE`` (default ``~/.cache/dmcore``)
keyed by the source, the flags and the compiler, and load it with ctypes. They return None, and the
callers take their PyTorch path, when ``DMCORE_CPU_KERNEL=0`` (the default of ``impl='auto'``) or
when the kernel cannot be built; the latter is reported once with a warning that says why.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import pathlib
import shutil
import subprocess
import tempfile
import warnings

import torch

__all__ = ["cpu", "cnn1d"]

_HERE = pathlib.Path(__file__).parent
_loaded: dict[str, object] = {}


def _flags(name: str) -> list[str]:
    flags = ["-O3", "-std=c11", "-fPIC", "-shared", "-fopenmp", "-fno-math-errno", "-fno-trapping-math"]
    if name == "cnn1d_cpu":   # its vector code writes a * w + acc and relies on fused multiply-adds
        flags.append("-ffp-contract=fast")
    if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        flags += ["-mavx2", "-mfma"]
    return flags


def _cache_dir() -> pathlib.Path:
    root = os.environ.get("DMCORE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "dmcore")
    path = pathlib.Path(root) / "kernels"
    try:
        path.mkdir(parents=True, exist_ok=True)
        return path
    except OSError:
        fallback = pathlib.Path(tempfile.gettempdir()) / f"dmcore-kernels-{os.getuid()}"
        fallback.mkdir(parents=True, exist_ok=True)
        return fallback


def _unavailable(name: str, why: str) -> None:
    warnings.warn(f"dmcore: the compiled kernel {name} is not available ({why}); the PyTorch path is used instead",
                  RuntimeWarning, stacklevel=3)


def _build(name: str) -> ctypes.CDLL | None:
    source = _HERE / f"{name}.c"
    compiler = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        _unavailable(name, "no C compiler: set CC or install gcc")
        return None
    flags = _flags(name)
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as error:
        _unavailable(name, f"{compiler} --version failed: {error}")
        return None
    key = hashlib.sha256("\0".join([source.read_text(), " ".join(flags), version]).encode()).hexdigest()[:16]
    target = _cache_dir() / f"{name}-{key}.so"
    if not target.exists():
        fd, scratch = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        result = subprocess.run([compiler, *flags, str(source), "-o", scratch, "-lm"], capture_output=True, text=True)
        if result.returncode != 0:
            os.unlink(scratch)
            _unavailable(name, f"{compiler} failed: {result.stderr.strip()[:500]}")
            return None
        os.replace(scratch, target)  # atomic: concurrent builders all end with a complete file
    try:
        lib = ctypes.CDLL(str(target))
    except OSError as error:
        _unavailable(name, f"could not load {target}: {error}")
        return None
    for function, (restype, argtypes) in _signatures(name).items():
        getattr(lib, function).argtypes = argtypes
        getattr(lib, function).restype = restype
    return lib


def _signatures(name: str) -> dict:
    """``{function: (restype, argtypes)}``, declared in the driver beside the C source."""
    from . import cnn1d_cpu, edf_cpu
    return {"edf_cpu": edf_cpu.SIGNATURES, "cnn1d_cpu": cnn1d_cpu.SIGNATURES}[name]


def enabled() -> bool:
    """False where ``DMCORE_CPU_KERNEL=0`` turns the compiled kernels off by default."""
    return os.environ.get("DMCORE_CPU_KERNEL", "1") != "0"


def _load(name: str, required: bool = False):
    if not required and not enabled():
        return None
    if name not in _loaded:
        _loaded[name] = _build(name)
    return _loaded[name]


def cpu(required: bool = False):
    """The EDF losses' compiled CPU kernel (a ctypes library), or None where it is disabled
    (``DMCORE_CPU_KERNEL=0``; ``required=True`` loads it all the same) or cannot be built."""
    return _load("edf_cpu", required)


def cnn1d():
    """The stacked MNIST-1D CNN's kernels (a ctypes library), or None as for :func:`cpu`."""
    return _load("cnn1d_cpu")
