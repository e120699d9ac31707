"""dmcore: example weighting through derivative manipulation.

Two wings. **The library**, what a user imports into their own training (it never imports the lab):

- :mod:`dmcore.symbolic`: SymPy derivations of each loss's weight as a function of p.
- :mod:`dmcore.edf`: emphasis density functions, the weight of an example as a function of p.
- :mod:`dmcore.targets`: class indices, class probabilities and label smoothing as the losses read them.
- :mod:`dmcore.losses`: PyTorch losses, drop-in replacements for ``nn.CrossEntropyLoss``.
- :mod:`dmcore.edf_operator`: the EDF losses' custom operator ``dmcore::edf_loss`` (value and
  manipulated gradient) and its choice of implementation.
- :mod:`dmcore.linear_edf`: the EDF loss of a linear layer's output without holding the logits (language
  models' large vocabularies).
- :mod:`dmcore.kernels`: the compiled fast paths (C on CPU, Triton on GPU) beside their drivers.

**The lab**, :mod:`dmcore.lab`, the book's machinery: data, noise, models, batched training, sweeps,
the experiments and their records, reproduction, tuning, plotting, the benchmark and the command
line (``python -m dmcore``). ``dmcore.noise`` and ``dmcore.data`` name the lab's modules too, as the
public API has them.

Modules are imported on first use, so that ``from dmcore import losses`` does not load SymPy or
matplotlib.
"""

import importlib

__version__ = "0.1.0"
LIBRARY = ("symbolic", "edf", "targets", "losses", "edf_operator", "linear_edf", "kernels")
__all__ = [*LIBRARY, "lab", "noise", "data"]
_FROM_LAB = {"noise", "data"}


def __getattr__(name):
    if name in _FROM_LAB:
        return importlib.import_module(f"{__name__}.lab.{name}")
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
