"""The book's experiments, each defined once; their records trained, installed and loaded.

An :class:`Experiment` names a dataset, a model, a protocol and a grid of runs. Its *record* is a
folder ``<records>/<name>/`` (:mod:`dmcore.lab.records`); the book commits its records in
``book/records``. The chapters render from the records (:func:`load` returns a
:class:`~dmcore.lab.records.Results` view), so a chapter's tables, figures and claims are the same
on every machine; :mod:`dmcore.lab.reproduce` checks that the code still makes them.

``python -m dmcore experiments`` trains every record (resumable) into the scratch folder (:func:`scratch`)
and installs each finished one into the folder of records. Setting ``DMCORE_RETRAIN=1`` makes
:func:`load` train the experiment afresh (into the scratch folder, resumable) and read that
instead of the committed record: the switch that regenerates a chapter from scratch.
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import shutil
import time
from dataclasses import dataclass

from . import alignment, language, records, sweep, train
from .records import Results

__all__ = ["Experiment", "EXPERIMENTS", "PENDING", "get", "scratch", "run", "install", "load", "load_plan"]

TRAINERS = {"train": train.train_runs, "alignment": alignment.train_runs, "language": language.train_runs}
_CHUNK = 75   # runs trained together: the fastest per run on 2 cores (README), and a resumable unit


@dataclass(frozen=True)
class Experiment:
    """One experiment of the book: a grid of runs of one model on one dataset under one protocol.

    ``sample`` is the number of runs a chapter re-trains to show that the code still reproduces the
    record (:func:`reproduce`); ``trainer`` is ``train`` (:func:`dmcore.lab.train.train_runs`) or
    ``alignment`` (:func:`dmcore.lab.alignment.train_runs`) or ``language``
    (:func:`dmcore.lab.language.train_runs`)."""

    name: str
    chapter: str
    description: str
    dataset: str
    model: str
    protocol: train.Protocol
    runs: tuple[train.Run, ...]
    sample: int = 4
    trainer: str = "train"
    families: tuple = ()   # a tuning record's loss families: ((family, (its settings, default first)), ...)

    @property
    def seeds(self) -> list[int]:
        return sorted({r.seed for r in self.runs})

    @property
    def losses(self) -> list[str]:
        return list(dict.fromkeys(r.loss for r in self.runs))

    def __repr__(self) -> str:
        settings = len({(r.noise, r.rate) for r in self.runs})
        rates = {r.lr for r in self.runs if r.lr is not None}
        return (f"Experiment({self.name}: {len(self.runs)} runs of {self.model} on {self.dataset}, "
                f"{len(self.losses)} losses x {settings} noise settings"
                + (f" x {len(rates)} learning rates" if rates else "")
                + f" x {len(self.seeds)} seeds, {self.protocol.steps} steps)")


def _grid(losses, settings, seeds) -> tuple[train.Run, ...]:
    return tuple(sweep.grid(list(losses), list(settings), seeds))


NATURAL = ("cce", "mae", "mse", "gce", "imae", "dm")
NORMALISED = ("cce-dn", "mae-dn", "mse-dn", "gce-dn")
DM_GRID = ("dm:lam=0,beta=0",) + tuple(f"dm:lam={lam:g},beta={beta:g}" for lam in (0, 0.5, 1, 2) for beta in (4, 8, 16, 32))
IMBALANCE = ("cce", "mae", "gce", "imae", "dm", "dm:lam=0.3,beta=6.5")
_NO_DECAY = train.Protocol(weight_decay=0.0)
#: The learning rates of the first tuning record, ``label-noise-tuned`` (0.05 is the book's common default).
TUNING_LRS = (0.01, 0.05, 0.2)
#: Each loss's own settings in ``label-noise-tuned``, its common default first: the papers' setting and one
#: alternative (derivative normalisation for the losses without a parameter). SCE and NCE+RCE there take
#: ``A = -4`` (the SCE paper's text), not the papers' code's ``ln(1e-4)``.
TUNING = {"cce": ("cce", "cce-dn"), "mae": ("mae", "mae-dn"), "gce": ("gce", "gce:q=0.4"),
          "imae": ("imae", "imae:T=4"), "dm": ("dm", "dm:lam=2,beta=8"), "sce": ("sce:A=-4", "sce:alpha=1,beta=1,A=-4"),
          "nce+rce": ("nce+rce:A=-4", "nce+rce:alpha=1,beta=100,A=-4"), "poly1": ("poly1", "poly1:epsilon=2")}
TUNING_NOISE = (("symmetric", (0.0, 0.4, 0.6)), ("pair", (0.4,)))
#: The learning rates of the fair tuning record ``label-noise-fair``: 0.003 to 1, a factor of about 3 apart.
FAIR_LRS = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
#: Each loss family's settings in ``label-noise-fair``, the default first: derivative normalisation offered
#: to every family that lacks it (IMAE and DM have it built in, so their alternative is a parameter),
#: SCE and NCE+RCE in their papers' code's convention (``A = ln(1e-4)``), NCE+RCE at the APL paper's
#: CIFAR-10 and MNIST settings.
FAIR = {"cce": ("cce", "cce-dn"), "mae": ("mae", "mae-dn"), "mse": ("mse", "mse-dn"), "gce": ("gce", "gce-dn"),
        "imae": ("imae", "imae:T=4"), "dm": ("dm", "dm:lam=2,beta=8"), "sce": ("sce", "sce-dn"),
        "nce+rce": ("nce+rce", "nce+rce:alpha=1,beta=100"), "poly1": ("poly1", "poly1-dn")}
#: The learning rates by which ``label-noise-fair`` widens the grid of MAE's family, whose choice sat at the
#: grid's smallest rate (0.003) at every setting: the remedy its criterion F3 names ("provisional until
#: the grid is widened"), trained in a second session from a later commit, the criteria unchanged.
FAIR_MAE_LRS = (0.0003, 0.001)
#: The memorisation map: training-set sizes (thousands of sequences generated, 80% trained on, 20% the
#: noisy validation split) x CNN widths, the noise rates, and each loss's learning rates: the rate the
#: record ``label-noise-fair`` chose for it under early stopping at symmetric 0.4 (0.1; GCE 0.3), a factor
#: of 3 below and above. Criteria: ``book/criteria/memorisation.toml``.
MAP_SIZES, MAP_WIDTHS, MAP_RATES = (2, 4, 10), (25, 48), (0.4, 0.8)
MAP_LRS = {"cce": (0.03, 0.1, 0.3), "gce": (0.1, 0.3, 1.0), "imae": (0.03, 0.1, 0.3), "dm": (0.03, 0.1, 0.3)}
#: The map's addendum (``book/criteria/memorisation-addendum.toml``, committed before these runs):
#: symmetric 0.6 in every cell at the registered learning rates, and, by the addendum's widening rule,
#: the next rung of its ladder beyond every tuned choice that sat at an edge of its grid, per cell as
#: ``(size, width) -> {(loss, noise rate): added learning rates}`` (each round of the rule one session).
MAP_ADDED_RATES = (0.6,)
MAP_WIDENED = {
    (2, 25): {("dm", 0.4): (1.0,), ("gce", 0.6): (0.03, 0.01), ("imae", 0.6): (1.0,), ("dm", 0.6): (0.01,)},
    (2, 48): {("dm", 0.4): (1.0,), ("cce", 0.6): (0.01,), ("dm", 0.6): (0.01, 1.0)},
    (4, 25): {("imae", 0.4): (0.01,)},
    (4, 48): {("cce", 0.8): (0.01,), ("gce", 0.8): (0.03, 0.01), ("dm", 0.8): (0.01,)},
    (10, 25): {("gce", 0.4): (0.03,), ("imae", 0.4): (0.01,), ("dm", 0.4): (0.01,), ("gce", 0.6): (0.03,),
               ("imae", 0.6): (0.01,)},
    (10, 48): {("gce", 0.4): (0.03,), ("imae", 0.4): (0.01,), ("dm", 0.4): (0.01,), ("gce", 0.6): (0.03,),
               ("imae", 0.6): (0.01,)},
}
#: The Fashion-MNIST evidence (criteria: ``book/criteria/fashion-mnist.toml``): CCE, MAE and GCE (the losses of
#: the GCE paper's Fashion-MNIST table) and DM, each at its authors' default setting, each over the same three
#: learning rates, at these noise settings, one record per row (two records, so that two processes train them).
FASHION_LRS = {"cce": (0.03, 0.1, 0.3), "mae": (0.03, 0.1, 0.3), "gce": (0.03, 0.1, 0.3), "dm": (0.03, 0.1, 0.3)}
FASHION_NOISE = {"fashion-mnist-uniform": (("symmetric", (0.2, 0.4, 0.6)),),
                 "fashion-mnist-dependent": (("pair", (0.4,)), ("instance", (0.4,)))}
#: The learning rates the criteria's widening rule added, per record: ``{(loss, noise, rate): rates}``, each
#: round of the rule one session. Round 1: every choice at an edge sat at the smallest rate, 0.03. Round 2:
#: DM at the symmetric rates and instance 0.4 and MAE at pair 0.4 chose 0.01, the second and last rung below.
FASHION_WIDENED = {
    "fashion-mnist-uniform": {("cce", "symmetric", 0.2): (0.01,), ("cce", "symmetric", 0.4): (0.01,),
                              ("cce", "symmetric", 0.6): (0.01,), ("mae", "symmetric", 0.4): (0.01,),
                              ("dm", "symmetric", 0.2): (0.01, 0.003), ("dm", "symmetric", 0.4): (0.01, 0.003),
                              ("dm", "symmetric", 0.6): (0.01, 0.003)},
    "fashion-mnist-dependent": {("cce", "instance", 0.4): (0.01,), ("mae", "pair", 0.4): (0.01, 0.003),
                                ("mae", "instance", 0.4): (0.01,), ("gce", "instance", 0.4): (0.01,),
                                ("dm", "instance", 0.4): (0.01, 0.003)}}
#: The protocol of the Fashion-MNIST records: 2000 steps of 100 images (about 4 epochs of the 48,000
#: training images), evaluated every 500 steps.
FASHION_PROTOCOL = train.Protocol(steps=2000, eval_every=500)
#: The chapter "Which weighting, when" (criteria: ``book/criteria/which-weighting.toml``): CCE and DM at the
#: settings the DM paper's Table 9 reports best at its noise rates (:func:`dmcore.lab.procedures.table9_settings`
#: reads them from the table; a test checks that they are these), on three datasets, each record
#: ``which-weighting-<key>`` as ``key -> (dataset, model, protocol, learning rates)``.
WHICH_DM = ("dm:lam=0.5,beta=12", "dm:lam=1,beta=16", "dm:lam=2,beta=12")
WHICH_NOISE = (("symmetric", (0.2, 0.4, 0.6)), ("pair", (0.4,)), ("instance", (0.4,)))
WHICH = {"mnist1d": ("mnist1d-val0.2", "mnist1d_cnn", train.Protocol(steps=3000), (0.03, 0.1, 0.3)),
         "digits": ("digits-val0.2", "mlp", train.Protocol(steps=2000, eval_every=100), (0.03, 0.1, 0.3)),
         "fashion": ("fashion-mnist-val0.2", "fashion_cnn", FASHION_PROTOCOL, (0.01, 0.03, 0.1))}
#: The learning rates the criteria's widening rule added, per record key: ``{(loss, noise, rate): rates}``,
#: each round of the rule one session (a key's rates in the order of the rounds that added them).
#: Digits, round 1: choices at both edges of 0.03-0.3; round 2: the next rung beyond 0.01 or 1.0 at 9 choices.
#: MNIST-1D, round 1: choices at the lower edge, 0.03; round 2: 0.003 below 0.01 at 6 choices.
#: Fashion-MNIST, round 1: CCE at the upper edge of 0.01-0.1 (pair 0.4), DM's settings at the lower edge;
#: round 2: 0.001 below 0.003 for DM (1, 16) at symmetric 0.2.
_ALL5 = [("symmetric", 0.2), ("symmetric", 0.4), ("symmetric", 0.6), ("pair", 0.4), ("instance", 0.4)]
WHICH_WIDENED = {
    "mnist1d": {("cce", "instance", 0.4): (0.01, 0.003),
                **{("dm:lam=0.5,beta=12", *s): (0.01,) for s in _ALL5 if s != ("symmetric", 0.6)},
                **{("dm:lam=1,beta=16", *s): (0.01, 0.003) for s in _ALL5},
                **{("dm:lam=2,beta=12", *s): (0.01,) for s in _ALL5 if s[0] != "pair" and s[1] != 0.6}},
    "digits": {("cce", "symmetric", 0.2): (0.01, 0.003), ("cce", "symmetric", 0.4): (1.0,),
               ("cce", "symmetric", 0.6): (1.0,), ("cce", "pair", 0.4): (0.01, 1.0),
               ("cce", "instance", 0.4): (0.01, 0.003),
               **{("dm:lam=0.5,beta=12", *s): (0.01, 0.003) for s in _ALL5},
               ("dm:lam=0.5,beta=12", "symmetric", 0.4): (0.01,), ("dm:lam=0.5,beta=12", "symmetric", 0.6): (0.01,),
               **{("dm:lam=1,beta=16", *s): (0.01, 0.003) for s in _ALL5 if s != ("pair", 0.4)},
               ("dm:lam=1,beta=16", "symmetric", 0.6): (0.01,),
               **{("dm:lam=2,beta=12", *s): (1.0,) for s in _ALL5}},
    "fashion": {("cce", "pair", 0.4): (0.3,),
                **{("dm:lam=0.5,beta=12", *s): (0.003,) for s in _ALL5 if s[0] != "pair"},
                **{("dm:lam=1,beta=16", *s): (0.003,) for s in _ALL5 if s != ("symmetric", 0.6)},
                ("dm:lam=1,beta=16", "symmetric", 0.2): (0.003, 0.001),
                ("dm:lam=2,beta=12", "instance", 0.4): (0.003,)}}
#: The chapter "Token weighting in language models" (criteria: ``book/criteria/token-weighting.toml``): a
#: byte-level language model on Python source (:func:`dmcore.lab.data.python_source`), trained by
#: :func:`dmcore.lab.language.train_runs` with Adam, in two regimes, one record each,
#: ``token-weighting-<key>`` as ``key -> dataset``: the whole training split (about one pass in 1000 steps of
#: 256 positions) and an eighth of it (about eight passes). CCE, DFT's p-weighting, GCE and DM at the Table 9
#: settings, each at the learning rates :data:`TOKEN_LRS`, at the noise rates :data:`TOKEN_NOISE`.
TOKEN_LOSSES = ("cce", "dft", "gce") + WHICH_DM
TOKEN_LRS = (0.001, 0.003, 0.01)
TOKEN_NOISE = (("symmetric", (0.0, 0.3, 0.6)),)
TOKEN = {"corpus": "python-source", "small": "python-source-small"}
TOKEN_PROTOCOL = train.Protocol(steps=1000, batch_size=256, lr=0.003, weight_decay=0.0, eval_every=125)
#: The learning rates the criteria's widening rule added, per record key: ``{(loss, noise, rate): rates}``,
#: each round of the rule one session (a key's rates in the order of the rounds that added them).
#: Round 1: CCE and every DM setting at the upper edge (0.01) in the corpus record; in the small record CCE
#: under noise and DFT on clean text at the lower edge (0.001), DM's settings at the upper edge. Round 2: DM
#: (2, 12) on clean text in the corpus record and DM (0.5, 12) at noise 0.6 in the small record chose 0.03.
_TOKEN_RATES = (0.0, 0.3, 0.6)
TOKEN_WIDENED: dict = {
    "corpus": {**{(loss, "symmetric", r): (0.03,) for loss in ("cce",) + WHICH_DM for r in _TOKEN_RATES},
               ("dm:lam=2,beta=12", "symmetric", 0.0): (0.03, 0.1)},
    "small": {("cce", "symmetric", 0.3): (0.0003,), ("cce", "symmetric", 0.6): (0.0003,),
              ("dft", "symmetric", 0.0): (0.0003,),
              **{(loss, "symmetric", r): (0.03,) for loss in WHICH_DM[:2] for r in _TOKEN_RATES},
              ("dm:lam=2,beta=12", "symmetric", 0.0): (0.03,),
              ("dm:lam=0.5,beta=12", "symmetric", 0.6): (0.03, 0.1)}}    # replaces its round-1 entry
#: The other emphasis density functions of the DM paper, two settings each.
EDF_FAMILIES = ("normal:psi=0.25,beta=8", "normal:psi=0.75,beta=8", "exponential:beta=2", "exponential:beta=-2",
                "beta:alpha=2,eta=3", "beta:alpha=4,eta=2")
#: The losses of the scale experiments, each at its default.
SCALE = ("cce", "gce", "imae", "dm", "sce:A=-4", "nce+rce:A=-4", "poly1")
_SCALE_NOISE = [("symmetric", [0.4, 0.6, 0.8]), ("mnist-map", [0.4])]


def _tuning_grid(seeds: int, families=TUNING, lrs=TUNING_LRS) -> tuple[train.Run, ...]:
    """Every loss's settings at every learning rate, learning rates outermost (runs that share one
    train together), then loss, setting, noise, seed."""
    return tuple(train.Run(loss, scheme, rate, seed, lr) for lr in lrs for settings in families.values()
                 for loss in settings for scheme, rates in TUNING_NOISE for rate in rates for seed in range(seeds))


def _map_grid(seeds: int, size: int, width: int) -> tuple[train.Run, ...]:
    """Each loss of :data:`MAP_LRS` at each of its learning rates (outermost), each noise rate, each seed:
    the registered grid; then the addendum's noise rates at the same learning rates, and the cell's
    widened learning rates (:data:`MAP_WIDENED`)."""
    registered = tuple(train.Run(loss, "symmetric", rate, seed, lr) for loss, lrs in MAP_LRS.items() for lr in lrs
                       for rate in MAP_RATES for seed in range(seeds))
    added = tuple(train.Run(loss, "symmetric", rate, seed, lr) for loss, lrs in MAP_LRS.items() for lr in lrs
                  for rate in MAP_ADDED_RATES for seed in range(seeds))
    widened = tuple(train.Run(loss, "symmetric", rate, seed, lr) for (loss, rate), lrs in MAP_WIDENED[size, width].items()
                    for lr in lrs for seed in range(seeds))
    return registered + added + widened


def _fashion_grid(name: str, seeds: int) -> tuple[train.Run, ...]:
    """Each loss of :data:`FASHION_LRS` at each of its learning rates (outermost), each noise setting of
    record ``name``, each seed; then the learning rates the widening rule added (:data:`FASHION_WIDENED`)."""
    registered = tuple(train.Run(loss, scheme, rate, seed, lr) for loss, lrs in FASHION_LRS.items() for lr in lrs
                       for scheme, rates in FASHION_NOISE[name] for rate in rates for seed in range(seeds))
    widened = tuple(train.Run(loss, scheme, rate, seed, lr) for (loss, scheme, rate), lrs in FASHION_WIDENED[name].items()
                    for lr in lrs for seed in range(seeds))
    return registered + widened


def _which_grid(key: str, seeds: int) -> tuple[train.Run, ...]:
    """The runs of record ``which-weighting-<key>``: CCE and each DM setting at each learning rate of the
    dataset, each noise setting, each seed; then the learning rates the widening rule added."""
    losses = ("cce",) + WHICH_DM
    registered = tuple(train.Run(loss, scheme, rate, seed, lr) for lr in WHICH[key][3] for loss in losses
                       for scheme, rates in WHICH_NOISE for rate in rates for seed in range(seeds))
    widened = tuple(train.Run(loss, scheme, rate, seed, lr) for (loss, scheme, rate), lrs in WHICH_WIDENED[key].items()
                    for lr in lrs for seed in range(seeds))
    return registered + widened


def _token_grid(key: str, seeds: int) -> tuple[train.Run, ...]:
    """The runs of record ``token-weighting-<key>``: every loss of :data:`TOKEN_LOSSES` at each learning rate
    (outermost), each noise rate, each seed; then the learning rates the widening rule added."""
    registered = tuple(train.Run(loss, scheme, rate, seed, lr) for lr in TOKEN_LRS for loss in TOKEN_LOSSES
                       for scheme, rates in TOKEN_NOISE for rate in rates for seed in range(seeds))
    widened = tuple(train.Run(loss, scheme, rate, seed, lr) for (loss, scheme, rate), lrs in TOKEN_WIDENED[key].items()
                    for lr in lrs for seed in range(seeds))
    return registered + widened


def map_name(size: int, width: int) -> str:
    """The record of one cell of the memorisation map: ``memorisation-2k-w25``."""
    return f"memorisation-{size}k-w{width}"


def _define() -> dict[str, Experiment]:
    mnist, cnn = "mnist1d", "mnist1d_cnn"
    label_noise = [("symmetric", [0.0, 0.2, 0.4, 0.6, 0.8]), ("pair", [0.2, 0.4])]
    experiments = [
        Experiment("label-noise", "label_noise", "ten weighting schemes under symmetric and pair noise",
                   mnist, cnn, train.Protocol(), _grid(NATURAL + NORMALISED, label_noise, 3)),
        Experiment("label-noise-digits", "label_noise", "the natural losses on sklearn's digits with an MLP",
                   "digits", "mlp", train.Protocol(steps=2000, eval_every=100),
                   _grid(NATURAL, [("symmetric", [0.0, 0.4, 0.6])], 3)),
        Experiment("emphasis", "emphasis_mode_spread", "DM's (lambda, beta) grid with a noisy validation split",
                   "mnist1d-val0.2", cnn, train.Protocol(steps=3000), _grid(DM_GRID, [("symmetric", [0.0, 0.2, 0.4, 0.6])], 2)),
        Experiment("eps-objective", "reviewers_questions", "DM with and without the papers' eps, beside CCE",
                   mnist, cnn, train.Protocol(), _grid(["cce", "dm", "dm:eps=0"], [("symmetric", [0.0])], 3), sample=2),
        Experiment("eps-objective-no-decay", "reviewers_questions", "the same without weight decay",
                   mnist, cnn, _NO_DECAY, _grid(["cce", "dm", "dm:eps=0"], [("symmetric", [0.0])], 3), sample=2),
        Experiment("alignment", "reviewers_questions", "p and the gradients' directions along a trajectory",
                   mnist, cnn, train.Protocol(steps=3000), _grid(["cce", "dm"], [("symmetric", [0.4])], 3),
                   sample=1, trainer="alignment"),
        Experiment("class-noise", "reviewers_questions", "class-dependent noise (the MNIST map of Patrini et al.)",
                   mnist, cnn, train.Protocol(), _grid(["cce", "gce", "imae", "dm"], [("mnist-map", [0.2, 0.4, 0.6])], 2), sample=2),
    ]
    experiments += [
        Experiment("label-noise-tuned", "label_noise",
                   "eight losses, each tuned over 3 learning rates x 2 settings of its own on noisy validation labels",
                   "mnist1d-val0.2", cnn, train.Protocol(steps=3000), _tuning_grid(5),
                   families=tuple(TUNING.items())),
        Experiment("label-noise-fair", "robust_verdicts",
                   "nine loss families tuned over 6 learning rates (0.003-1) x 2 settings, DN offered to each, "
                   "scored on a fresh test set; criteria fixed before training (book/criteria)",
                   "mnist1d-val0.2-fresh", cnn, train.Protocol(steps=3000),
                   _tuning_grid(5, FAIR, FAIR_LRS) + _tuning_grid(5, {"mae": FAIR["mae"]}, FAIR_MAE_LRS),
                   families=tuple(FAIR.items())),
        Experiment("edf-families", "emphasis_mode_spread", "the normal, exponential and beta-density EDFs, trained",
                   "mnist1d-val0.2", cnn, train.Protocol(steps=3000),
                   _grid(EDF_FAMILIES, [("symmetric", [0.0, 0.4])], 5), sample=2),
        Experiment("scale-4k", "scale", "the wider CNN (48 channels) on the 4000 canonical training sequences",
                   mnist, "mnist1d_cnn_w48", train.Protocol(), _grid(SCALE, _SCALE_NOISE, 3), sample=2),
        Experiment("scale-40k", "scale", "the wider CNN on 40,000 training sequences, 50 epochs",
                   "mnist1d-40k", "mnist1d_cnn_w48", train.Protocol(steps=20000, eval_every=1000),
                   _grid(SCALE, _SCALE_NOISE, 3), sample=1),
    ]
    experiments += [
        Experiment(map_name(size, width), "memorisation",
                   f"CCE, GCE, IMAE and DM on {800 * size} training sequences with {width} channels, each tuned over "
                   "3 learning rates, widened at an edge by the addendum; criteria fixed before training "
                   "(book/criteria/memorisation.toml and its addendum)",
                   f"mnist1d-{size}k-val0.2-fresh", f"mnist1d_cnn_w{width}", train.Protocol(steps=3000), _map_grid(5, size, width),
                   sample=1, families=tuple((loss, (loss,)) for loss in MAP_LRS))
        for size in MAP_SIZES for width in MAP_WIDTHS]
    experiments += [
        Experiment(name, "fashion_mnist",
                   f"CCE, MAE, GCE and DM on Fashion-MNIST with a 16-channel 2-D CNN, {what} noise, each tuned over "
                   "3 learning rates on noisy validation labels; criteria fixed before training (book/criteria)",
                   "fashion-mnist-val0.2", "fashion_cnn", FASHION_PROTOCOL, _fashion_grid(name, 5),
                   sample=1, families=tuple((loss, (loss,)) for loss in FASHION_LRS))
        for name, what in (("fashion-mnist-uniform", "symmetric"), ("fashion-mnist-dependent", "pair and instance-dependent"))]
    experiments += [
        Experiment(f"which-weighting-{key}", "which_weighting",
                   f"CCE and DM at the DM paper's Table 9 settings on {dataset}, each over 3 learning rates, "
                   "5 noise settings; criteria fixed before training (book/criteria)",
                   dataset, model, protocol, _which_grid(key, 5), sample=1,
                   families=(("cce", ("cce",)), ("dm", WHICH_DM)))
        for key, (dataset, model, protocol, _) in WHICH.items()]
    experiments += [
        Experiment(f"token-weighting-{key}", "token_weighting",
                   f"a byte-level language model on Python source ({dataset}) under token noise: CCE, DFT, GCE and DM, "
                   "each over 3 learning rates; criteria fixed before training (book/criteria)",
                   dataset, "byte_mlp", TOKEN_PROTOCOL, _token_grid(key, 5), sample=1, trainer="language",
                   families=(("cce", ("cce",)), ("dft", ("dft",)), ("gce", ("gce",)), ("dm", WHICH_DM)))
        for key, dataset in TOKEN.items()]
    for ratio in (10, 50):
        experiments += [
            Experiment(f"imbalance-lt{ratio}", "class_imbalance", f"long-tailed MNIST-1D, ratio {ratio}",
                       f"mnist1d-lt{ratio}", cnn, train.Protocol(), _grid(IMBALANCE, [("symmetric", [0.0])], 3), sample=3),
            Experiment(f"imbalance-lt{ratio}-no-decay", "class_imbalance",
                       f"CCE without weight decay on long-tailed MNIST-1D, ratio {ratio}",
                       f"mnist1d-lt{ratio}", cnn, _NO_DECAY, _grid(["cce"], [("symmetric", [0.0])], 3), sample=1),
        ]
    return {e.name: e for e in experiments}


#: Every experiment of the book, by name.
EXPERIMENTS: dict[str, Experiment] = _define()
#: Experiments defined and pre-registered whose training is under way and whose chapter is not written yet.
#: Their records are committed as their sessions finish (training may take several invocations, and nothing
#: trained is lost), each holding part of the runs; ``make experiments`` resumes from them when they are
#: copied into the scratch folder. An experiment leaves this set in the commit that completes its record.
PENDING = frozenset()


def get(name) -> Experiment:
    """The experiment called ``name`` (an :class:`Experiment` is returned as it is)."""
    if isinstance(name, Experiment):
        return name
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}: expected one of {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[name]




# --- training and installing records --------------------------------------------------------------

def scratch(out=None) -> pathlib.Path:
    """Where :func:`run` trains before a record is installed: ``out`` if given, else
    ``DMCORE_SCRATCH``, else ``_build/records`` under the current directory."""
    return pathlib.Path(out or os.environ.get("DMCORE_SCRATCH") or pathlib.Path("_build") / "records")


def run(experiment, out=None, progress: bool | None = None) -> pathlib.Path:
    """Train the runs of ``experiment`` missing from ``out/<name>`` (default: :func:`scratch`),
    resumably, and add this session's provenance, taken when it starts. The session claims every run
    of the record that no earlier session claims (so runs of an interrupted session are claimed by
    the one that completes it). Where the record has pre-registered criteria
    (:func:`dmcore.lab.records.criteria_file`), the provenance stores their digest, and each addendum's
    (:func:`dmcore.lab.records.criteria_addenda`): the check that they did not change after the record
    was made. Returns the record's folder."""
    experiment = get(experiment)
    folder = scratch(out) / experiment.name
    here = records.provenance(experiment.model)
    criteria = records.criteria_file(experiment.name)
    if criteria is not None:
        here["criteria_sha256"] = records.criteria_digest(criteria)
    addenda = records.criteria_addenda(experiment.name)
    if addenda:
        here["addenda_sha256"] = {a.name: records.criteria_digest(a) for a in addenda}
    started, start = datetime.datetime.now(datetime.timezone.utc), time.perf_counter()
    sweep.run_sweep(folder, experiment.dataset, experiment.model, list(experiment.runs), experiment.protocol,
                    chunk=_CHUNK, progress=progress, trainer=TRAINERS[experiment.trainer])
    path = folder / "provenance.json"
    sessions = json.loads(path.read_text()) if path.exists() else []
    claimed = {run_id for s in sessions for run_id in s["runs"]}
    new = [r["run_id"] for r in sweep.read_csv(folder / "runs.csv") if r["run_id"] not in claimed]
    if new:
        sessions.append({**here, "date": started.strftime("%Y-%m-%d %H:%M UTC"),
                         "wall_seconds": round(time.perf_counter() - start, 1), "runs": new})
        sweep.write_atomically(path, json.dumps(sessions, indent=1) + "\n")
    return folder


def install(experiment, source=None, target=None) -> pathlib.Path:
    """Copy a complete record from ``source`` (default :func:`scratch`) into ``target`` (default
    :func:`dmcore.lab.records.folder`), replacing the record there."""
    experiment = get(experiment)
    src = scratch(source) / experiment.name
    records.check_complete(experiment, src)
    dst = records.folder(target) / experiment.name
    staging = dst.with_name(dst.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in ("config.json", "runs.csv", sweep.HISTORY_FILE, "provenance.json"):
        shutil.copy2(src / name, staging / name)
    shutil.rmtree(dst, ignore_errors=True)
    os.replace(staging, dst)
    return dst



def load_plan(plan: dict, folder=None, registered: bool = False) -> dict[str, Results]:
    """The records a criteria ``plan`` names (``plan["records"]``), ``name -> Results``, read from ``folder``
    (default: the book's records); with ``registered``, each record's first session alone (the grid
    registered with the criteria, before any widening)."""
    parts = {name: load(name, folder) for name in plan["records"]}
    return {name: results.registered() for name, results in parts.items()} if registered else parts


def load(experiment, folder=None) -> Results:
    """The record of ``experiment`` in ``folder`` (default: :func:`dmcore.lab.records.folder`) as a
    :class:`~dmcore.lab.records.Results` view. With ``DMCORE_RETRAIN=1`` in the environment the
    experiment is trained afresh into :func:`scratch` (resumable) and read there."""
    experiment = get(experiment)
    if os.environ.get("DMCORE_RETRAIN", "0") not in ("", "0"):
        return Results(experiment, run(experiment, progress=False))
    return Results(experiment, records.folder(folder) / experiment.name)

