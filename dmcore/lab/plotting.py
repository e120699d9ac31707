"""One figure style for the whole book: colours and labels per weighting scheme, and axes helpers.

Every chapter calls :func:`use_style` once and draws with :func:`color` and :func:`label`, so that a
loss has the same colour and name in every figure.

Example::

    >>> from dmcore import plotting
    >>> plotting.use_style()
    >>> fig, ax = plotting.figure()
    >>> ax.plot([0, 1], [2, 0], color=plotting.color("cce"), label=plotting.label("cce"));
"""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt

__all__ = ["COLORS", "LABELS", "use_style", "figure", "color", "label", "weight_axes"]

#: Colour of each weighting scheme (colour-blind safe, from the Okabe-Ito palette).
COLORS = {
    "cce": "#000000",
    "mae": "#E69F00",
    "mae_imae": "#E69F00",
    "mse": "#56B4E9",
    "gce": "#009E73",
    "imae": "#D55E00",
    "dm": "#0072B2",
    "edf": "#CC79A7",
    "sce": "#9467BD",
    "nce+rce": "#8C564B",
    "poly1": "#7F7F7F",
    "dft": "#882255",
}

#: Display name of each weighting scheme.
LABELS = {
    "cce": "CCE",
    "mae": "MAE",
    "mae_imae": "MAE (IMAE scaling)",
    "mse": "MSE",
    "gce": "GCE",
    "imae": "IMAE",
    "dm": "DM",
    "sce": "SCE",
    "nce+rce": "NCE+RCE",
    "poly1": "Poly-1",
    "dft": "DFT",
}

_STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "figure.figsize": (6.4, 4.0),
    "font.size": 11,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.frameon": False,
    "lines.linewidth": 2.0,
    "svg.hashsalt": "dmcore",
}


def use_style() -> None:
    """Apply the book's matplotlib settings (fixed sizes and DPI, so stored figures reproduce)."""
    matplotlib.rcParams.update(_STYLE)


def figure(ncols: int = 1, nrows: int = 1, width: float = 6.4, height: float = 4.0, **kwargs):
    """A new figure of ``nrows x ncols`` axes, ``width x height`` inches per axes."""
    return plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), layout="constrained", **kwargs)


def color(name: str) -> str:
    """The colour of a weighting scheme (of its family where parameters follow a colon: ``sce:A=-4``);
    an unknown name raises a KeyError that lists the known ones."""
    if name not in COLORS and name.partition(":")[0] in COLORS:
        return COLORS[name.partition(":")[0]]
    if name not in COLORS:
        raise KeyError(f"no colour for {name!r}; known: {sorted(COLORS)}")
    return COLORS[name]


def label(name: str) -> str:
    """The display name of a weighting scheme, its parameters after it (``sce:A=-4`` -> ``SCE (A=-4)``);
    the name itself when it has none."""
    if name in LABELS:
        return LABELS[name]
    base, _, params = name.partition(":")
    return f"{LABELS[base]} ({params})" if params and base in LABELS else name


def weight_axes(ax, ylabel: str = "weight $w(p)$") -> None:
    """Label an axes that shows a weight against the probability ``p`` of the labelled class."""
    ax.set_xlabel("$p$, probability of the labelled class")
    ax.set_ylabel(ylabel)
    ax.set_xlim(0, 1)
