"""dmcore: example weighting through derivative manipulation.

Modules (imported on first use, so that ``from dmcore import losses`` does not load SymPy or
matplotlib):

- :mod:`dmcore.symbolic`: SymPy derivations of each loss's weight as a function of p.
- :mod:`dmcore.edf`: emphasis density functions, the weight of an example as a function of p.
- :mod:`dmcore.losses`: PyTorch losses, drop-in replacements for ``nn.CrossEntropyLoss``.
- :mod:`dmcore.kernels`: the compiled CPU fast path of the EDF losses.
- :mod:`dmcore.noise`: label-noise generators with exact realised rates.
- :mod:`dmcore.data`: MNIST-1D and digits offline, long-tailed subsets, a CIFAR file reader.
- :mod:`dmcore.models`: the MNIST-1D CNN, an MLP, CIFAR ResNet-20/44/56.
- :mod:`dmcore.train`, :mod:`dmcore.sweep`: many runs trained as one batched computation; grids of
  runs written to tidy files.
- :mod:`dmcore.experiments`: the book's experiments, defined once; their committed records, read
  (:func:`~dmcore.experiments.load`), trained and reproduced (``python -m dmcore reproduce``).
- :mod:`dmcore.alignment`: gradient directions and weights along a training trajectory.
- :mod:`dmcore.bench`: their benchmark against ``F.cross_entropy`` (``python -m dmcore bench``).
- :mod:`dmcore.plotting`: the book's figure style.
"""

import importlib

__version__ = "0.1.0"
__all__ = ["symbolic", "edf", "losses", "kernels", "bench", "noise", "data", "models", "plotting", "train", "sweep",
           "experiments", "alignment"]


def __getattr__(name):
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
