"""Compiled fast paths for the EDF losses; the PyTorch code in :mod:`dmcore.losses` is the reference.

:func:`cpu` compiles ``edf_cpu.c`` with the system C compiler on first use (about a second), caches
the shared library per user under ``$DMCORE_CACHE`` (default ``~/.cache/dmcore``) keyed by the
source, the flags and the compiler, and loads it with ctypes. It returns None, and the losses use
the PyTorch path, when ``DMCORE_CPU_KERNEL=0`` or when no compiler is available.
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

__all__ = ["cpu"]

_SOURCE = pathlib.Path(__file__).with_name("edf_cpu.c")
_loaded: dict[str, object] = {}


def _flags() -> list[str]:
    flags = ["-O3", "-std=c11", "-fPIC", "-shared", "-fopenmp", "-fno-math-errno", "-fno-trapping-math"]
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


def _build() -> ctypes.CDLL | None:
    compiler = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        return None
    flags = _flags()
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    key = hashlib.sha256("\0".join([_SOURCE.read_text(), " ".join(flags), version]).encode()).hexdigest()[:16]
    target = _cache_dir() / f"edf_cpu-{key}.so"
    if not target.exists():
        fd, scratch = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        result = subprocess.run([compiler, *flags, str(_SOURCE), "-o", scratch, "-lm"], capture_output=True, text=True)
        if result.returncode != 0:
            os.unlink(scratch)
            return None
        os.replace(scratch, target)  # atomic: concurrent builders all end with a complete file
    lib = ctypes.CDLL(str(target))
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    lib.edf_forward_f32.argtypes = [ptr, ptr, i64, i64, i64, i64, ptr, ptr, ptr, ptr, ctypes.c_int]
    lib.edf_scale_f32.argtypes = [ptr, ptr, i64, i64, i64, i64, ptr, ptr, ctypes.c_float, ctypes.c_int]
    lib.edf_forward_f32.restype = lib.edf_scale_f32.restype = None
    return lib


def cpu():
    """The compiled CPU kernel (a ctypes library), or None where it is disabled or cannot be built."""
    if os.environ.get("DMCORE_CPU_KERNEL", "1") == "0":
        return None
    if "cpu" not in _loaded:
        _loaded["cpu"] = _build()
    return _loaded["cpu"]
