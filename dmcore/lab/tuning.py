"""Fair tuning: each loss's setting chosen on noisy validation labels, and losses compared seed by seed.

The record ``label-noise-tuned`` (:mod:`dmcore.lab.experiments`) trains every loss family of
:data:`dmcore.lab.experiments.TUNING` at every learning rate of :data:`dmcore.lab.experiments.TUNING_LRS`:
the same number of configurations for each, five seeds each. :func:`choose` picks a family's
configuration at one noise setting the way a practitioner without clean data would: the highest
mean final accuracy on a held-out validation split whose labels are corrupted like the training
labels (``val_acc_noisy``), never the test set and never clean labels. A configuration with a
diverged seed scores minus infinity. :func:`default` is the family's common setting (its first
setting at the learning rate 0.05). Both return a :class:`Choice` with the test accuracy of every
seed of the chosen configuration.

:func:`paired` compares two choices seed by seed: seed ``s`` of every configuration trains on the
same noisy labels from the same initialisation, so the per-seed differences remove the seeds' shared
luck. Its verdict is ``better`` or ``worse`` only where the 95% t-interval of the mean difference
excludes zero; otherwise ``unresolved``.

Example::

    >>> from dmcore import experiments, tuning
    >>> tuned = experiments.load("label-noise-tuned")
    >>> dm = tuning.choose(tuned, "dm", "symmetric", 0.4)
    >>> cce = tuning.choose(tuned, "cce", "symmetric", 0.4)
    >>> tuning.paired(dm, cce).verdict in ("better", "worse", "unresolved")
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from . import experiments, records

__all__ = ["Choice", "Paired", "configurations", "at", "choose", "default", "oracle", "paired"]

DEFAULT_LR = 0.05


@dataclass(frozen=True)
class Choice:
    """A configuration of one loss family at one noise setting, with its results over seeds.

    ``validation`` is the mean final accuracy on the noisy validation labels (the selection score),
    ``test`` the final test accuracy as a :class:`dmcore.lab.records.Stat` over seeds, ``values`` the
    final test accuracy of each seed (seed order), and ``metrics`` the mean over seeds of the other
    final metrics (``test_ece``, ``logit_range``, ``fit_noisy``, ...)."""

    family: str
    loss: str
    lr: float | None
    noise: str
    rate: float
    validation: float
    test: records.Stat
    values: tuple[float, ...]
    seeds: tuple[int, ...]
    metrics: dict

    @property
    def setting(self) -> str:
        """The configuration as the book prints it: ``dm:lam=2,beta=8, lr 0.2``."""
        return self.loss if self.lr is None else f"{self.loss}, lr {self.lr:g}"


def configurations(family: str) -> list[tuple[str, float]]:
    """Every (loss, learning rate) the tuning grid gives ``family``, in grid order."""
    if family not in experiments.TUNING:
        raise ValueError(f"unknown loss family {family!r}: expected one of {', '.join(experiments.TUNING)}")
    return [(loss, lr) for lr in experiments.TUNING_LRS for loss in experiments.TUNING[family]]


_METRICS = ("test_ece", "logit_range", "fit_clean", "fit_noisy", "p_noisy", "best_test_acc")


def _choice(results: records.Results, family: str, loss: str, lr: float, noise: str, rate: float,
            metric: str = "final_test_acc") -> Choice:
    match = dict(loss=loss, noise=noise, rate=rate, **({} if lr is None else {"lr": lr}))
    rows = sorted(results.select(**match), key=lambda r: r["seed"])
    if not rows:
        raise ValueError(f"no runs of {loss} at lr {lr} under {noise} noise {rate:g} in {results.experiment.name}")
    validation = [r["val_acc_noisy"] for r in rows]
    score = -math.inf if any(math.isnan(v) for v in validation) else sum(validation) / len(validation)
    values = tuple(r[metric] for r in rows)
    metrics = {m: sum(r[m] for r in rows) / len(rows) for m in _METRICS if m in rows[0]}
    return Choice(family, loss, lr, noise, rate, score, records.Stat.of(values), values,
                  tuple(r["seed"] for r in rows), metrics)


def at(results: records.Results, loss: str, lr: float | None, noise: str, rate: float,
       metric: str = "final_test_acc") -> Choice:
    """One configuration, ``loss`` at learning rate ``lr``, whether chosen or not (e.g. CCE-DN beside
    CCE at the same learning rate); ``lr=None`` for a record whose runs take the protocol's. Its
    ``test`` and ``values`` are those of ``metric`` (the final test accuracy unless said otherwise)."""
    return _choice(results, loss, loss, lr, noise, rate, metric)


def choose(results: records.Results, family: str, noise: str, rate: float) -> Choice:
    """The configuration of ``family`` with the highest mean final noisy-validation accuracy (the
    first in grid order on a tie)."""
    candidates = [_choice(results, family, loss, lr, noise, rate) for loss, lr in configurations(family)]
    return max(candidates, key=lambda c: c.validation)


def default(results: records.Results, family: str, noise: str, rate: float) -> Choice:
    """The family's common setting: its first loss of :data:`dmcore.lab.experiments.TUNING` at lr 0.05."""
    return _choice(results, family, experiments.TUNING[family][0], DEFAULT_LR, noise, rate)


def oracle(results: records.Results, family: str, noise: str, rate: float) -> Choice:
    """The configuration with the best mean final *test* accuracy: what no practitioner can choose,
    shown only to measure what the noisy-validation choice gives away."""
    candidates = [_choice(results, family, loss, lr, noise, rate) for loss, lr in configurations(family)]
    return max(candidates, key=lambda c: -math.inf if math.isnan(c.test.mean) else c.test.mean)


@dataclass(frozen=True)
class Paired:
    """Per-seed differences ``a - b`` of final test accuracy: their mean, the 95% t-interval of the
    mean, the number of seeds, and how many seeds ``a`` won and lost."""

    mean: float
    ci95: float
    n: int
    wins: int
    losses: int

    @property
    def verdict(self) -> str:
        """``better`` or ``worse`` where the interval excludes zero, ``unresolved`` otherwise."""
        if math.isnan(self.mean):
            return "unresolved"
        if self.mean - self.ci95 > 0:
            return "better"
        if self.mean + self.ci95 < 0:
            return "worse"
        return "unresolved"

    def fmt(self, scale: float = 100.0, digits: int = 1) -> str:
        """``+2.3 ± 1.1 (5-0)``: mean difference and interval in points, seeds won and lost."""
        if math.isnan(self.mean):
            return "diverged"
        return f"{scale * self.mean:+.{digits}f} ± {scale * self.ci95:.{digits}f} ({self.wins}-{self.losses})"


def paired(a: Choice, b: Choice) -> Paired:
    """Compare ``a`` with ``b`` seed by seed (both must have the same seeds)."""
    if a.seeds != b.seeds:
        raise ValueError(f"the choices have different seeds: {a.seeds} and {b.seeds}")
    differences = [x - y for x, y in zip(a.values, b.values)]
    stat = records.Stat.of(differences)
    return Paired(stat.mean, stat.ci95, stat.n, sum(d > 0 for d in differences), sum(d < 0 for d in differences))
