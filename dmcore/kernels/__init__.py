"""Compiled CPU fast paths; the PyTorch code beside each caller is the reference.

:func:`cpu` (``edf_cpu.c``: the EDF losses, :mod:`dmcore.losses`) and :func:`cnn1d`
(``cnn1d_cpu.c``: many copies of the MNIST-1D CNN, forward and backward, :mod:`dmcore.models`) compile
their source with the system C compiler on first use (about a second), cache the shared library
per user under ``$DMCORE_CACHE`` (default ``~/.cache/dmcore``) keyed by the source, the flags and
the compiler, and load it with ctypes. They return None, and the callers use their PyTorch path,
when ``DMCORE_CPU_KERNEL=0`` or when no compiler is available.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import pathlib
import shutil
import subprocess
import tempfile

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


def _build(name: str) -> ctypes.CDLL | None:
    source = _HERE / f"{name}.c"
    compiler = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        return None
    flags = _flags(name)
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    key = hashlib.sha256("\0".join([source.read_text(), " ".join(flags), version]).encode()).hexdigest()[:16]
    target = _cache_dir() / f"{name}-{key}.so"
    if not target.exists():
        fd, scratch = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        result = subprocess.run([compiler, *flags, str(source), "-o", scratch, "-lm"], capture_output=True, text=True)
        if result.returncode != 0:
            os.unlink(scratch)
            return None
        os.replace(scratch, target)  # atomic: concurrent builders all end with a complete file
    lib = ctypes.CDLL(str(target))
    for function, argtypes in _SIGNATURES[name].items():
        getattr(lib, function).argtypes = argtypes
        getattr(lib, function).restype = _RESTYPES.get(function)
    return lib


_i64, _ptr, _f32, _int = ctypes.c_int64, ctypes.c_void_p, ctypes.c_float, ctypes.c_int
_SIGNATURES = {
    "edf_cpu": {"edf_forward_f32": [_ptr, _ptr, _i64, _i64, _i64, _i64, _ptr, _ptr, _ptr, _ptr, _int],
                "edf_scale_f32": [_ptr, _ptr, _i64, _i64, _i64, _i64, _ptr, _ptr, _f32, _int]},
    "cnn1d_cpu": {"cnn_sizes": [_ptr, _ptr],
                  "cnn_forward": [_ptr, _i64, _ptr, _i64, _i64, _ptr, _ptr, _ptr, _int],
                  "cnn_backward": [_ptr, _i64, _ptr, _ptr, _ptr, _i64, _i64, _ptr, _ptr, _ptr, _int]},
}


_RESTYPES = {"cnn_forward": _int, "cnn_backward": _int}   # 0: a buffer could not be allocated


def _load(name: str):
    if os.environ.get("DMCORE_CPU_KERNEL", "1") == "0":
        return None
    if name not in _loaded:
        _loaded[name] = _build(name)
    return _loaded[name]


def cpu():
    """The EDF losses' compiled CPU kernel (a ctypes library), or None where it is disabled or cannot be built."""
    return _load("edf_cpu")


def cnn1d():
    """The stacked MNIST-1D CNN's kernels (a ctypes library), or None as for :func:`cpu`."""
    return _load("cnn1d_cpu")
