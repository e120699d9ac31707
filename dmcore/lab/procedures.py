r"""Choosing a weighting from noisy labels alone: a practitioner's procedures, judged across datasets.

A practitioner holds noisy training labels and a validation split whose labels are noisy alike, and
nothing clean. The records ``which-weighting-<dataset>`` (:data:`dmcore.lab.experiments.WHICH`) train CCE
and DM at the settings the DM paper's Table 9 reports best at its noise rates (:func:`table9_settings`),
each over the same learning rates, at five noise settings. From them, per dataset, setting and seed, each
procedure of the criteria (``book/criteria/which-weighting.toml``) gives one model:

* ``cce-early``: CCE at the learning rate with the best mean noisy-validation accuracy at the early
  checkpoint (each run stopped at its best noisy-validation accuracy), stopped there;
* ``dm-val``: DM's :math:`(\lambda, \beta)` and learning rate chosen together on noisy validation accuracy
  at the rule's checkpoint (:func:`dmcore.lab.tuning.choose` over the family ``dm``);
* ``dm-rule``: in each seed, the noise rate :math:`\hat r` estimated from that seed's ``cce-early`` model
  on the noisy validation split (the record's ``val_noise_est``: confident learning,
  :func:`dmcore.lab.estimate.confident_joint`), then the Table 9 setting of the Table 9 noise rate nearest
  :math:`\hat r` (:func:`rule_setting`), at its own learning rate chosen on noisy validation;
* ``any-val``: whichever of ``cce-early`` and ``dm-val`` validates better (shown, not judged).

:class:`Procedures` judges the plan's claims: ``E`` (the estimate's error at symmetric noise), ``R``
(``dm-rule`` equivalent to ``dm-val``: two one-sided tests against the plan's margin at every cell, an
intersection-union test) and ``V`` (``dm-val`` better than ``cce-early``); the Holm family under one rule
is every paired test of R and V over all records. A verdict is the weakest over the judged rules, and
provisional where a learning-rate choice it reads sits at an edge of its grid.

Example::

    >>> from dmcore.lab import criteria, procedures
    >>> P = procedures.Procedures.load(criteria.load("which-weighting-digits"))    # doctest: +SKIP
    >>> P.overall("R"), P.verdict("V", "early").evidence                         # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from . import experiments, judge, papers, records, stats, tuning

__all__ = ["TABLE9", "table9_settings", "rule_setting", "Decision", "Procedures", "PROCEDURES"]

#: The DM paper's table the rule reads: CIFAR-10, ResNet-56, symmetric noise.
TABLE9 = "cifar10_resnet56_dm_table9.csv"
#: The procedures, in the order the book shows them.
PROCEDURES = ("cce-early", "dm-val", "dm-rule", "any-val")


def table9_settings(folder=None) -> dict[float, str]:
    """The DM setting with the highest final test accuracy at each noise rate of the DM paper's Table 9,
    as a loss name: ``{0.2: "dm:lam=0.5,beta=12", ...}`` (ascending rates; a tie to the first row)."""
    best: dict[float, tuple[float, str]] = {}
    for row in papers.read(TABLE9, folder, method="DM"):
        rate, acc = float(row["noise"]), float(row["final_test"])
        name = f"dm:lam={float(row['lambda']):g},beta={float(row['beta']):g}"
        if rate not in best or acc > best[rate][0]:
            best[rate] = (acc, name)
    return {rate: best[rate][1] for rate in sorted(best)}


def rule_setting(estimate: float, table: dict[float, str]) -> str:
    """The setting of ``table`` (noise rate -> loss) at the rate nearest ``estimate`` (a tie to the lower
    rate; distances compared to 12 decimals, so that 0.3 lies as near 0.2 as 0.4)."""
    if not math.isfinite(estimate):
        raise ValueError(f"the noise-rate estimate is {estimate!r}: the rule needs a finite estimate "
                         "(a record trained before val_noise_est was recorded has none)")
    return table[min(sorted(table), key=lambda r: round(abs(r - estimate), 12))]


@dataclass(frozen=True)
class Decision:
    """What the evidence backs at one record and noise setting (:meth:`Procedures.decision`).

    ``estimate``: the seeds' noise-rate estimates (mean, lowest, highest), what a reader compares their
    own estimate with; ``use``: the procedure to use there: ``dm-val`` where it beat ``cce-early`` under
    every judged rule, ``cce-early`` where ``dm-val`` was worse under some rule, else ``any-val`` (no
    difference resolved: whichever validates better, the criteria's default); ``rule``: whether choosing
    DM's setting from the estimate is as good as tuning it (``suffices``: equivalent under every judged
    rule; ``worse``: worse under some rule; ``unresolved`` otherwise); ``why``: the tests read."""

    record: str
    setting: tuple
    estimate: tuple[float, float, float]
    use: str
    rule: str
    why: str


class Procedures:
    """The procedures on the records ``parts`` (name -> :class:`~dmcore.lab.records.Results`), judged by
    ``plan`` (see the module docstring); ``table``: noise rate -> DM setting (default
    :func:`table9_settings`)."""

    def __init__(self, parts: dict, plan: dict, table: dict | None = None):
        self.plan = plan
        analysis = plan["analysis"]
        self.judged, self.alpha, self.margin = list(analysis["judged"]), analysis["alpha"], analysis["margin"]
        self.settings = [tuple(s) for s in analysis["noisy"]]
        self.table = table if table is not None else table9_settings()
        self.judges = {name: judge.Judge(results, plan) for name, results in parts.items()}
        for name, results in parts.items():
            held = {(r.noise, r.rate) for r in results.experiment.runs}
            missing = [s for s in self.settings if s not in held]
            if missing:
                raise ValueError(f"{name} does not hold the plan's settings {missing}")
        self._tests: dict = {}

    @classmethod
    def load(cls, plan: dict, folder=None, table: dict | None = None, registered: bool = False) -> "Procedures":
        """The procedures on ``plan``'s records, read from ``folder`` (default: the book's records); with
        ``registered``, each record's first session alone (the grid before any widening)."""
        return cls(experiments.load_plan(plan, folder, registered), plan, table)

    @property
    def names(self) -> list[str]:
        return list(self.judges)

    # --- the procedures ---------------------------------------------------------------------------

    def cce_early(self, name: str, setting: tuple) -> tuning.Choice:
        """CCE at its learning rate chosen under the early rule, stopped at the early checkpoint."""
        return self.judges[name].loss("cce", tuple(setting), "early")

    def estimates(self, name: str, setting: tuple) -> tuple[float, ...]:
        """Each seed's noise-rate estimate: ``val_noise_est`` of its ``cce-early`` model."""
        return tuple(self._at_cce(name, setting, "val_noise_est"))

    def disagreement(self, name: str, setting: tuple) -> tuple[float, ...]:
        """Each seed's disagreement rate (1 - noisy validation accuracy) of its ``cce-early`` model."""
        return tuple(1 - v for v in self._at_cce(name, setting, "val_acc_noisy"))

    def _at_cce(self, name: str, setting: tuple, metric: str) -> list[float]:
        c = self.cce_early(name, setting)
        rows = self.judges[name].results.at("test_acc", "early", loss="cce", lr=c.lr, noise=c.noise, rate=c.rate)
        if any(metric not in row for row in rows):
            raise ValueError(f"{name} records no {metric}: it was trained before the metric existed")
        return [row[metric] for row in rows]

    def dm_val(self, name: str, setting: tuple, rule: str) -> tuning.Choice:
        """DM's setting and learning rate chosen together on noisy validation under ``rule``."""
        return self.judges[name].family("dm", tuple(setting), rule)

    def rule_picks(self, name: str, setting: tuple, rule: str) -> list[tuning.Choice]:
        """Each seed's ``dm-rule`` choice: the Table 9 setting nearest its estimate, at that setting's own
        learning rate chosen under ``rule`` (one :class:`~dmcore.lab.tuning.Choice` per seed, seed order)."""
        return [self.judges[name].loss(rule_setting(r, self.table), tuple(setting), rule)
                for r in self.estimates(name, setting)]

    def dm_rule(self, name: str, setting: tuple, rule: str) -> tuning.Choice:
        """``dm-rule`` as one choice: seed ``s`` reads seed ``s`` of its own pick (``loss`` names the
        distinct settings picked, ``validation`` is NaN: the rule reads no validation accuracy to pick)."""
        picks = self.rule_picks(name, setting, rule)
        seeds = picks[0].seeds
        values = tuple(c.values[i] for i, c in enumerate(picks))
        losses = " / ".join(dict.fromkeys(c.setting for c in picks))
        return tuning.Choice("dm-rule", losses, None, setting[0], setting[1], math.nan, records.Stat.of(values),
                             values, seeds, {}, rule)

    def any_val(self, name: str, setting: tuple, rule: str) -> tuning.Choice:
        """Whichever of ``cce-early`` and ``dm-val`` has the higher mean noisy-validation accuracy (CCE on a
        tie)."""
        cce, dm = self.cce_early(name, setting), self.dm_val(name, setting, rule)
        return dm if dm.validation > cce.validation else cce

    def procedure(self, which: str, name: str, setting: tuple, rule: str) -> tuning.Choice:
        """The procedure ``which`` (:data:`PROCEDURES`) at ``name`` and ``setting`` under ``rule``."""
        if which not in PROCEDURES:
            raise ValueError(f"unknown procedure {which!r}: expected one of {', '.join(PROCEDURES)}")
        if which == "cce-early":
            return self.cce_early(name, setting)
        return getattr(self, which.replace("-", "_"))(name, setting, rule)

    # --- the tests and the claims -------------------------------------------------------------------

    def tests(self, rule: str) -> dict:
        """Every paired test of claims R and V under ``rule``, Holm-adjusted together:
        ``(claim, record, setting) -> Test``."""
        if rule not in self._tests:
            every = {}
            for name in self.names:
                for s in self.settings:
                    pairs = {"R": (self.dm_rule(name, s, rule), self.dm_val(name, s, rule)),
                             "V": (self.dm_val(name, s, rule), self.cce_early(name, s))}
                    for claim, (a, b) in pairs.items():
                        every[claim, name, s] = judge.Test(a, b, tuning.paired(a, b))
            self._tests[rule] = judge.adjust(every, self.alpha)
        return self._tests[rule]

    def equivalence(self, name: str, setting: tuple, rule: str) -> stats.Equivalence:
        """TOST of ``dm-rule`` minus ``dm-val`` against the plan's margin."""
        return stats.tost(self.tests(rule)["R", name, tuple(setting)].paired.differences, self.margin, self.alpha)

    def estimate_errors(self) -> dict:
        """The mean estimate minus the nominal rate, per ``(record, symmetric rate)``."""
        errors = {}
        for name in self.names:
            for s in self.settings:
                if s[0] == "symmetric":
                    estimates = self.estimates(name, s)
                    errors[name, s[1]] = sum(estimates) / len(estimates) - s[1]
        return errors

    def verdict(self, claim: str, rule: str) -> judge.Verdict:
        """``claim`` (``E``, ``R`` or ``V``) under ``rule`` over every record."""
        if claim == "E":
            errors = self.estimate_errors()
            worst = max(abs(e) for e in errors.values())
            verdict = ("holds" if worst <= 0.05 else "does not hold" if worst > 0.10 else "partly holds")
            evidence = "; ".join(f"{n} {r:g}: {e:+.3f}" for (n, r), e in errors.items())
            return judge.Verdict("E", rule, verdict, evidence, False)
        if claim not in ("R", "V"):
            raise ValueError(f"unknown claim {claim!r}: expected E, R or V")
        keys = [k for k in self.tests(rule) if k[0] == claim]
        directions = [self.tests(rule)[k].direction for k in keys]
        if claim == "R":
            equivalent = [self.equivalence(k[1], k[2], rule).equivalent for k in keys]
            verdict = ("does not hold" if "worse" in directions else "holds" if all(equivalent) else "partly holds")
        else:
            verdict = ("holds" if all(d == "better" for d in directions) else
                       "does not hold" if "worse" in directions or "better" not in directions else "partly holds")
        evidence = "; ".join(judge.evidence_line(k, self.tests(rule)[k]) for k in keys)
        return judge.Verdict(claim, rule, verdict, evidence, self.provisional(claim, rule))

    def overall(self, claim: str) -> str:
        """The weakest verdict over the judged rules."""
        return judge.weakest(self.verdict(claim, rule).verdict for rule in self.judged)

    def provisional(self, claim: str, rule: str) -> bool:
        """Whether a learning-rate choice that ``claim`` reads under ``rule`` sits at an edge of its grid."""
        return any(self._at_edge(name, c) for name, c in self._read(claim, rule))

    def _read(self, claim: str, rule: str) -> list[tuple[str, tuning.Choice]]:
        out = []
        for name in self.names:
            for s in self.settings:
                if claim in ("E", "V"):
                    out.append((name, self.cce_early(name, s)))
                if claim in ("R", "V"):
                    out.append((name, self.dm_val(name, s, rule)))
                if claim == "R":
                    out += [(name, c) for c in self.rule_picks(name, s, rule)]
        return out

    def _at_edge(self, name: str, choice: tuning.Choice) -> bool:
        return tuning.at_edge(self.judges[name].results, choice)

    def edge_choices(self, rule: str) -> list[tuple[str, tuning.Choice]]:
        """Every ``(record, choice)`` a claim reads under ``rule`` whose learning rate sits at an edge."""
        seen = {}
        for claim in ("E", "R", "V"):
            for name, c in self._read(claim, rule):
                if self._at_edge(name, c):
                    seen.setdefault((name, c.loss, c.lr, c.noise, c.rate, c.rule), (name, c))
        return list(seen.values())

    def widening(self) -> dict:
        """What the plan's widening rule asks to train next: ``record -> {(loss, noise, rate): learning
        rate}`` for CCE and each DM setting on its own, under each judged rule (empty where nothing)."""
        rule = self.plan["widening"]
        wanted = {}
        for name, j in self.judges.items():
            key = name.removeprefix("which-weighting-")
            grid = experiments.WHICH[key][3]
            registered = {loss: grid for loss in ("cce",) + experiments.WHICH_DM}
            found = j.next_rungs(registered, self.settings, list(rule["ladder"]), rule["max_rungs"])
            if found:
                wanted[name] = {(loss, *s): lr for (loss, s), lr in found.items()}
        return wanted

    def decision(self, name: str, setting: tuple) -> Decision:
        """The decision table's cell at record ``name`` and ``setting`` (:class:`Decision`), read from the
        tests of claims V and R under every judged rule."""
        setting = tuple(setting)
        v = {rule: self.tests(rule)["V", name, setting] for rule in self.judged}
        directions = [t.direction for t in v.values()]
        use = ("dm-val" if all(d == "better" for d in directions) else
               "cce-early" if "worse" in directions else "any-val")
        r = {rule: self.tests(rule)["R", name, setting].direction for rule in self.judged}
        equivalent = all(self.equivalence(name, setting, rule).equivalent for rule in self.judged)
        fit = "worse" if "worse" in r.values() else "suffices" if equivalent else "unresolved"
        estimates = self.estimates(name, setting)
        why = "; ".join(f"{rule}: dm-val - cce-early {t.paired.fmt()}, {t.direction}" for rule, t in v.items())
        return Decision(name, setting, (sum(estimates) / len(estimates), min(estimates), max(estimates)),
                        use, fit, why)

    def provenance_lines(self) -> list[str]:
        """Each record's provenance line."""
        return [j.results.provenance_line() for j in self.judges.values()]
