"""Records that share one pre-registered plan, judged together: the Fashion-MNIST evidence.

A *panel* is a set of tuning records (one per group of noise settings, so that separate processes train
them) judged by one criteria file (``book/criteria/fashion-mnist.toml``): each record holds some of the
plan's noisy settings, each family is tuned on noisy validation labels per record and setting
(:class:`~dmcore.lab.judge.Judge`'s rules), and the Holm family under one checkpoint rule is every paired
test the plan names over all the records (:meth:`Panel.tests`). The claims:

* ``H``: DM against each baseline (CCE, GCE, MAE) at every noisy setting;
* ``G``: GCE against CCE and MAE at every noisy setting (the GCE paper's claim);
* ``D``: each family at instance-dependent noise 0.4 against itself at symmetric 0.4, a test across two
  records (the same seeds, hence the same initialisations; the labels differ by scheme);
* ``1``: CCE's memorisation at symmetric 0.4, as :class:`~dmcore.lab.judge.Judge` judges it.

A verdict is the weakest over the plan's judged rules, and provisional where a choice it reads sits at an
edge of its learning-rate grid; :meth:`Panel.widening` is the plan's rule for moving such an edge (the
next rung of a ladder, at most ``max_rungs`` beyond the registered grid on a side).

Example::

    >>> from dmcore.lab import criteria, panel
    >>> p = panel.Panel.load(criteria.load("fashion-mnist-uniform"))     # doctest: +SKIP
    >>> p.overall("H"), p.verdict("G", "early").evidence               # doctest: +SKIP
"""

from __future__ import annotations

import copy

from . import experiments, judge, tuning

__all__ = ["Part", "Panel", "BASELINES", "FAMILIES"]

#: The families of the panel and the baselines DM is judged against (claim H).
FAMILIES = ("cce", "mae", "gce", "dm")
BASELINES = ("cce", "gce", "mae")
#: The settings claim D compares: (the dependent scheme, the symmetric one of the same rate).
D_SETTINGS = (("instance", 0.4), ("symmetric", 0.4))


class Part(judge.Judge):
    """One record of a panel: :class:`~dmcore.lab.judge.Judge` over the plan's noisy settings the record
    holds, whose tests are claims H and G at those settings."""

    READS = {"H": {("family", f) for f in FAMILIES}, "G": {("family", f) for f in ("gce", "cce", "mae")},
             "1": {("family", "cce")}}

    def _pairs(self, rule: str) -> dict:
        fam = lambda f, s: self.family(f, s, rule)     # noqa: E731
        pairs = {("H", f, s): (fam("dm", s), fam(f, s)) for s in self.noisy for f in BASELINES}
        pairs.update({("G", f, s): (fam("gce", s), fam(f, s)) for s in self.noisy for f in ("cce", "mae")})
        return pairs


def _held(results, settings: list[tuple]) -> list[tuple]:
    held = {(r.noise, r.rate) for r in results.experiment.runs}
    return [s for s in settings if s in held]


class Panel:
    """The records of ``parts`` (name -> :class:`~dmcore.lab.records.Results`) judged by ``plan``."""

    def __init__(self, parts: dict, plan: dict, paper_gaps: dict | None = None):
        self.plan = plan
        self.judged = list(plan["analysis"]["judged"])
        self.alpha = plan["analysis"]["alpha"]
        self.settings = [tuple(s) for s in plan["analysis"]["noisy"]]
        self.parts = {}
        for name, results in parts.items():
            own = copy.deepcopy(plan)
            own["analysis"]["noisy"] = [list(s) for s in _held(results, self.settings)]
            self.parts[name] = Part(results, own, paper_gaps)
        missing = [s for s in self.settings if not any(s in p.noisy for p in self.parts.values())]
        if missing:
            raise ValueError(f"no record of the panel holds the plan's settings {missing}")
        self._tests: dict = {}

    @classmethod
    def load(cls, plan: dict, folder=None, paper_gaps: dict | None = None, registered: bool = False) -> "Panel":
        """The panel of ``plan``'s records, read from ``folder`` (default: the book's records); with
        ``registered``, each record's first session alone (the grid before any widening)."""
        return cls(experiments.load_plan(plan, folder, registered), plan, paper_gaps)

    def part(self, setting: tuple) -> Part:
        """The record that holds ``setting``."""
        for p in self.parts.values():
            if tuple(setting) in p.noisy:
                return p
        raise ValueError(f"no record of the panel holds {setting}")

    def family(self, family: str, setting: tuple, rule: str) -> tuning.Choice:
        """``family`` tuned at ``setting`` under ``rule`` in the record that holds it."""
        return self.part(setting).family(family, tuple(setting), rule)

    # --- the family of tests ----------------------------------------------------------------------

    def tests(self, rule: str) -> dict:
        """Every test of the plan under ``rule``, Holm-adjusted together: ``(claim, family, setting) -> Test``
        (claim D's setting is the dependent one)."""
        if rule not in self._tests:
            every = {}
            for p in self.parts.values():
                every.update(p.unadjusted(rule))
            dep, sym = D_SETTINGS
            if dep in self.settings and sym in self.settings:
                for f in FAMILIES:
                    a, b = self.family(f, dep, rule), self.family(f, sym, rule)
                    every["D", f, dep] = judge.Test(a, b, tuning.paired(a, b))
            judge.adjust(every, self.alpha)
            for p in self.parts.values():
                p.set_tests(rule, {k: t for k, t in every.items() if k[0] in "HG" and k[2] in p.noisy})
            self._tests[rule] = every
        return self._tests[rule]

    # --- the claims -------------------------------------------------------------------------------

    def verdict(self, claim: str, rule: str) -> judge.Verdict:
        """``claim`` judged under ``rule`` over every record of the panel."""
        tests = self.tests(rule)
        if claim == "1":
            part = self.part(("symmetric", 0.4))
            v = part.verdict("1", rule)
            return judge.Verdict("1", rule, v.verdict, v.evidence, v.provisional)
        keys = [k for k in tests if k[0] == claim]
        if not keys:
            raise ValueError(f"unknown claim {claim!r}: the panel judges H, G, D and 1")
        better = [k for k in keys if tests[k].direction == "better"]
        worse = [k for k in keys if tests[k].direction == "worse"]
        if claim == "H":
            verdict = "holds" if len(better) == len(keys) else "does not hold" if worse or not better else "partly holds"
            head = f"DM better in {len(better)}, worse in {len(worse)} of {len(keys)} tests"
        elif claim == "G":
            verdict = "holds" if len(better) == len(keys) else "does not hold" if worse or not better else "partly holds"
            head = f"GCE better in {len(better)}, worse in {len(worse)} of {len(keys)} tests"
        else:   # D: a = the dependent setting; "worse" is the direction the claim expects
            verdict = "holds" if len(worse) == len(keys) else "does not hold" if better or not worse else "partly holds"
            head = f"worse at {D_SETTINGS[0][0]} {D_SETTINGS[0][1]:g} for {len(worse)}, better for {len(better)} of {len(keys)} families"
        provisional = any(self._at_edge(c) for k in keys for c in (tests[k].a, tests[k].b))
        evidence = "; ".join(judge.evidence_line(k, tests[k]) for k in keys)
        return judge.Verdict(claim, rule, verdict, head + "; " + evidence, provisional)

    def overall(self, claim: str) -> str:
        """The weakest verdict of ``claim`` over the judged rules."""
        return judge.weakest(self.verdict(claim, rule).verdict for rule in self.judged)

    def provisional(self, claim: str) -> bool:
        """Whether a choice ``claim`` reads under a judged rule sits at an edge of its grid."""
        return any(self.verdict(claim, rule).provisional for rule in self.judged)

    # --- the grid ---------------------------------------------------------------------------------

    def _at_edge(self, choice: tuning.Choice) -> bool:
        return tuning.at_edge(self.part((choice.noise, choice.rate)).results, choice)

    def edge_choices(self, rule: str) -> list[tuning.Choice]:
        """Every family's tuned choice under ``rule`` that sits at an edge of its grid, over every setting."""
        return [c for s in self.settings for f in FAMILIES for c in [self.family(f, s, rule)] if self._at_edge(c)]

    def widening(self) -> dict:
        """What the plan's widening rule asks to train next: ``record -> {(loss, noise, rate): learning
        rate}`` (empty where no choice sits at an edge it may still move). The registered grid is
        :data:`dmcore.lab.experiments.FASHION_LRS`."""
        rule = self.plan["widening"]
        wanted = {}
        for name, p in self.parts.items():
            found = p.next_rungs(experiments.FASHION_LRS, p.noisy, list(rule["ladder"]), rule["max_rungs"])
            if found:
                wanted[name] = {(loss, *s): lr for (loss, s), lr in found.items()}
        return wanted

    def provenance_lines(self) -> list[str]:
        """Each record's provenance line."""
        return [p.results.provenance_line() for p in self.parts.values()]
