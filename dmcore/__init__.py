"""dmcore: example weighting through derivative manipulation.

Modules (imported on first use, so that ``from dmcore import losses`` does not load SymPy or
matplotlib):

- :mod:`dmcore.symbolic`: SymPy derivations of each loss's weight as a function of p.
- :mod:`dmcore.plotting`: the book's figure style.
"""

import importlib

__version__ = "0.1.0"
__all__ = ["symbolic", "plotting"]


def __getattr__(name):
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
