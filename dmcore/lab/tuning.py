"""Fair tuning: each loss's setting chosen on noisy validation labels, and losses compared seed by seed.

A tuning record (``label-noise-tuned``, ``label-noise-fair``: :mod:`dmcore.lab.experiments`) trains
every setting of every loss family it names (``Experiment.families``) at every learning rate of its
runs: the same number of configurations for each family, five seeds each. :func:`choose` picks a
family's configuration at one noise setting the way a practitioner without clean data would: the
highest mean accuracy on a held-out validation split whose labels are corrupted like the training
labels (``val_acc_noisy``), never the test set and never clean labels, at the checkpoint of a rule
(:data:`dmcore.lab.records.RULES`: ``final``, the last evaluation; ``early``, each run stopped at its
best noisy-validation accuracy; ``best``, the papers' best test accuracy of the configuration chosen
as under ``final``). A configuration with a diverged seed scores minus infinity. :func:`default` is
the family's common setting (its first setting at the learning rate 0.05). Both return a
:class:`Choice` with the accuracy of every seed of the chosen configuration; ``metric`` is the history
metric read (``test_acc``, or ``fresh_acc`` on a record with a fresh test set).

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

from . import experiments, records, stats

__all__ = ["Choice", "Paired", "families", "configurations", "learning_rates", "at", "choose", "tune_lr", "default",
           "oracle", "paired", "at_edge"]

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
    rule: str = "final"

    @property
    def setting(self) -> str:
        """The configuration as the book prints it: ``dm:lam=2,beta=8, lr 0.2``."""
        return self.loss if self.lr is None else f"{self.loss}, lr {self.lr:g}"


def families(results: records.Results) -> dict[str, tuple[str, ...]]:
    """The loss families of a tuning record and their settings (the default first)."""
    named = dict(results.experiment.families)
    if not named:
        raise ValueError(f"{results.experiment.name} is not a tuning record: it names no loss families")
    return named


def learning_rates(results: records.Results, losses=None, setting: tuple | None = None) -> list[float]:
    """The learning rates of a tuning record, ascending: of all its runs, or of the runs of ``losses``
    (a loss name or several: a family's grid, which a record may widen for one family alone), at every
    setting or at ``setting`` (``(noise, rate)``: a record may widen a grid at one noise rate alone)."""
    wanted = None if losses is None else {losses} if isinstance(losses, str) else set(losses)
    return sorted({r.lr for r in results.experiment.runs if r.lr is not None and (wanted is None or r.loss in wanted)
                   and (setting is None or (r.noise, r.rate) == tuple(setting))})


def configurations(family: str, results: records.Results | None = None,
                   setting: tuple | None = None) -> list[tuple[str, float]]:
    """Every (loss, learning rate) the tuning grid gives ``family``, in grid order: the learning rates of
    the family's runs in ``results`` (at ``setting`` where given; each loss at the rates it was trained
    at, since a widening rule may widen one loss of a family alone), or of the first tuning record,
    ``label-noise-tuned``, where ``results`` is None or names no families."""
    named = families(results) if results is not None else experiments.TUNING
    if family not in named:
        raise ValueError(f"unknown loss family {family!r}: expected one of {', '.join(named)}")
    if results is None:
        return [(loss, lr) for lr in experiments.TUNING_LRS for loss in named[family]]
    own = {loss: set(learning_rates(results, loss, setting)) for loss in named[family]}
    return [(loss, lr) for lr in learning_rates(results, named[family], setting) for loss in named[family]
            if lr in own[loss]]


_METRICS = ("test_ece", "logit_range", "fit_clean", "fit_noisy", "p_noisy", "p_clean")
_RUN_METRICS = {"final_test_acc": ("test_acc", "final"), "best_test_acc": ("test_acc", "best"),
                "final_fresh_acc": ("fresh_acc", "final")}


def _choice(results: records.Results, family: str, loss: str, lr: float, noise: str, rate: float,
            metric: str = "test_acc", rule: str = "final") -> Choice:
    metric, rule = _RUN_METRICS.get(metric, (metric, rule))
    match = dict(loss=loss, noise=noise, rate=rate, **({} if lr is None else {"lr": lr}))
    rows = sorted(results.select(**match), key=lambda r: r["seed"])
    if not rows:
        raise ValueError(f"no runs of {loss} at lr {lr} under {noise} noise {rate:g} in {results.experiment.name}")
    # the configuration is scored on noisy validation labels: at the rule's checkpoint, and for "best"
    # (which reads the test set) as under "final"
    scored = results.at("test_acc", "final" if rule == "best" else rule, **match)
    validation = [r["val_acc_noisy"] for r in scored]
    diverged = any(not math.isnan(r["diverged_step"]) for r in rows)
    score = -math.inf if diverged or any(math.isnan(v) for v in validation) else sum(validation) / len(validation)
    picked = results.at(metric, rule, **match)
    values = tuple(r[metric] for r in picked)
    metrics = {m: sum(r[m] for r in picked) / len(picked) for m in _METRICS if m in picked[0]}
    return Choice(family, loss, lr, noise, rate, score, records.Stat.of(values), values,
                  tuple(r["seed"] for r in rows), metrics, rule)


def at(results: records.Results, loss: str, lr: float | None, noise: str, rate: float,
       metric: str = "test_acc", rule: str = "final") -> Choice:
    """One configuration, ``loss`` at learning rate ``lr``, whether chosen or not (e.g. CCE-DN beside
    CCE at the same learning rate); ``lr=None`` for a record whose runs take the protocol's. Its
    ``test`` and ``values`` are those of ``metric`` at the checkpoint of ``rule`` (``final_test_acc`` and
    ``best_test_acc`` name the test accuracy under ``final`` and ``best``)."""
    return _choice(results, loss, loss, lr, noise, rate, metric, rule)


def choose(results: records.Results, family: str, noise: str, rate: float, rule: str = "final",
           metric: str = "test_acc") -> Choice:
    """The configuration of ``family`` with the highest mean noisy-validation accuracy under ``rule``
    (the first in grid order on a tie)."""
    candidates = [_choice(results, family, loss, lr, noise, rate, metric, rule)
                  for loss, lr in configurations(family, _tuning(results), (noise, rate))]
    return max(candidates, key=lambda c: c.validation)


def tune_lr(results: records.Results, loss: str, noise: str, rate: float, rule: str = "final",
            metric: str = "test_acc") -> Choice:
    """``loss`` at its own tuned learning rate: the rate of the record with the highest mean
    noisy-validation accuracy under ``rule``."""
    candidates = [_choice(results, loss, loss, lr, noise, rate, metric, rule) for lr in learning_rates(results, loss, (noise, rate))]
    return max(candidates, key=lambda c: c.validation)


def _tuning(results: records.Results) -> records.Results | None:
    """``results`` where it names its loss families, else None (:func:`configurations`' fallback)."""
    return results if results.experiment.families else None


def default(results: records.Results, family: str, noise: str, rate: float, rule: str = "final",
            metric: str = "test_acc") -> Choice:
    """The family's common setting: its first loss at lr 0.05."""
    loss = configurations(family, _tuning(results))[0][0]
    return _choice(results, family, loss, DEFAULT_LR, noise, rate, metric, rule)


def oracle(results: records.Results, family: str, noise: str, rate: float, rule: str = "final",
           metric: str = "test_acc") -> Choice:
    """The configuration with the best mean *test* accuracy: what no practitioner can choose,
    shown only to measure what the noisy-validation choice gives away."""
    candidates = [_choice(results, family, loss, lr, noise, rate, metric, rule)
                  for loss, lr in configurations(family, _tuning(results), (noise, rate))]
    return max(candidates, key=lambda c: -math.inf if math.isnan(c.test.mean) else c.test.mean)


def at_edge(results: records.Results, choice: Choice) -> bool:
    """Whether ``choice``'s learning rate is the smallest or the largest its loss was trained at in
    the record at the choice's setting (the grid of the family the loss belongs to)."""
    lrs = learning_rates(results, choice.loss, (choice.noise, choice.rate))
    return choice.lr in (lrs[0], lrs[-1])


@dataclass(frozen=True)
class Paired:
    """Per-seed differences ``a - b`` of the choices' accuracy: their mean, the 95% t-interval of the
    mean, the number of seeds, how many seeds ``a`` won and lost, the paired t-test's two-sided p-value
    (:func:`dmcore.lab.stats.paired_t`) and the differences themselves."""

    mean: float
    ci95: float
    n: int
    wins: int
    losses: int
    p: float = math.nan
    differences: tuple = ()

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
    test = stats.paired_t(differences)
    return Paired(test.mean, test.ci95, test.n, test.wins, test.losses, test.p, tuple(differences))
