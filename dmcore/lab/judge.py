"""The claims of a tuning record judged exactly as its pre-registered criteria say.

:class:`Judge` reads a record (:class:`dmcore.lab.records.Results`) and its criteria
(:func:`dmcore.lab.criteria.load`): the metric (``fresh_acc``, the fresh test set), the checkpoint
rules judged and shown, the significance level, the correction and the equivalence margin. Under each
rule it builds the whole family of paired tests the criteria name (:meth:`Judge.tests`), adjusts their
p-values together (Holm), and judges each claim and finding (:meth:`Judge.verdict`); a claim's verdict
is the weakest over the judged rules (:meth:`Judge.overall`). Each verdict comes with the numbers it
read (``Verdict.evidence``).

The rules of each claim are those of ``book/criteria/label-noise-fair.toml``; the chapter "Verdicts that
survive the analysis" prints the file beside the verdicts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from . import criteria, records, stats, tuning

__all__ = ["Verdict", "Test", "Judge", "ORDER", "weakest", "adjust"]

#: Verdicts from the strongest to the weakest.
ORDER = ("holds", "partly holds", "does not hold")


def weakest(verdicts) -> str:
    """The weakest of ``verdicts`` (:data:`ORDER`)."""
    return max(verdicts, key=ORDER.index)


@dataclass(frozen=True)
class Verdict:
    """A claim's verdict under one checkpoint rule, and the numbers it read."""

    claim: str
    rule: str
    verdict: str
    evidence: str
    provisional: bool = False


@dataclass
class Test:
    """One paired test of a family: ``a`` against ``b``, its Holm-adjusted p-value, and its direction
    (``better`` or ``worse`` where the adjusted p-value is below alpha, ``unresolved`` otherwise)."""

    a: tuning.Choice
    b: tuning.Choice
    paired: tuning.Paired
    adjusted: float = math.nan
    direction: str = "unresolved"


def evidence_line(key, test: "Test") -> str:
    """One test of a claim, as a verdict's evidence shows it: ``key`` is ``(claim, what, (noise, rate))``
    (``what`` a family or a record): ``what noise rate: difference (won-lost) p_Holm p``."""
    return f"{key[1]} {key[2][0]} {key[2][1]:g}: {test.paired.fmt()} p_Holm {test.adjusted:.3f}"


def adjust(tests: dict, alpha: float) -> dict:
    """Holm-adjust the p-values of ``tests`` (key -> :class:`Test`) together and set each direction; a
    test whose p-value is undefined (a diverged choice) counts as p = 1. Returns ``tests``."""
    keys = list(tests)
    raw = [1.0 if math.isnan(tests[k].paired.p) else tests[k].paired.p for k in keys]
    for k, p in zip(keys, stats.holm(raw)):
        t = tests[k]
        t.adjusted = p
        t.direction = ("better" if p < alpha and t.paired.mean > 0 else
                       "worse" if p < alpha and t.paired.mean < 0 else "unresolved")
    return tests


class Judge:
    """The claims of ``results`` judged by the criteria ``plan`` (see the module docstring)."""

    def __init__(self, results: records.Results, plan: dict, paper_gaps: dict | None = None):
        self.results, self.plan = results, plan
        analysis = plan["analysis"]
        self.metric, self.alpha, self.margin = analysis["metric"], analysis["alpha"], analysis["margin"]
        self.judged, self.shown = list(analysis["judged"]), list(analysis.get("shown", []))
        if analysis["correction"] != "holm":
            raise ValueError(f"unsupported correction {analysis['correction']!r}: this judge applies Holm's")
        self.noisy = [tuple(s) for s in analysis["noisy"]]
        self.clean = tuple(analysis["clean"]) if "clean" in analysis else None
        self.settings = ([self.clean] if self.clean else []) + self.noisy
        self.claims = criteria.claims(plan)
        self.paper_gaps = paper_gaps or {}
        self._cache: dict = {}

    # --- choices ----------------------------------------------------------------------------------

    def family(self, family: str, setting: tuple, rule: str) -> tuning.Choice:
        """``family`` tuned over its settings and the learning rates under ``rule``."""
        key = ("family", family, setting, rule)
        if key not in self._cache:
            self._cache[key] = tuning.choose(self.results, family, *setting, rule=rule, metric=self.metric)
        return self._cache[key]

    def loss(self, loss: str, setting: tuple, rule: str) -> tuning.Choice:
        """``loss`` at its own tuned learning rate under ``rule``."""
        key = ("loss", loss, setting, rule)
        if key not in self._cache:
            self._cache[key] = tuning.tune_lr(self.results, loss, *setting, rule=rule, metric=self.metric)
        return self._cache[key]

    def per_seed(self, choice: tuning.Choice, metric: str) -> list[float]:
        """``metric`` of each seed of ``choice`` at its rule's checkpoint (``fit_noisy``, ``p_noisy``, ...)."""
        rule = "final" if choice.rule == "best" else choice.rule
        picked = self.results.at(self.metric, rule, loss=choice.loss, lr=choice.lr, noise=choice.noise,
                                 rate=choice.rate)
        return [row[metric] for row in picked]

    def best(self, choice: tuning.Choice) -> list[float]:
        """The best value of the metric over each seed's evaluations (the papers' metric)."""
        picked = self.results.at(self.metric, "best", loss=choice.loss, lr=choice.lr, noise=choice.noise,
                                 rate=choice.rate)
        return [row[self.metric] for row in picked]

    # --- the family of paired tests ---------------------------------------------------------------

    def _pairs(self, rule: str) -> dict:
        """Every paired comparison the criteria name, under ``rule``: key -> (a, b)."""
        fam, own = (lambda f, s: self.family(f, s, rule)), (lambda l, s: self.loss(l, s, rule))
        pairs = {}
        for f in ("cce", "gce", "imae"):
            for s in self.noisy:
                pairs["H", f, s] = (fam("dm", s), fam(f, s))
        pairs["2", "mae", self.clean] = (own("mae", self.clean), own("cce", self.clean))
        for f in ("cce", "mae"):
            for s in self.noisy:
                pairs["5", f, s] = (fam("gce", s), fam(f, s))
        pairs["6", "lam", ("symmetric", 0.6)] = (own("dm:lam=2,beta=8", ("symmetric", 0.6)), own("dm", ("symmetric", 0.6)))
        for s in self.settings:
            pairs["7", "cce-dn", s] = (own("cce-dn", s), own("cce", s))
            pairs["F1", "mse-dn", s] = (own("dm", s), own("mse-dn", s))
        pairs["7", "mae-dn", self.clean] = (own("mae-dn", self.clean), own("cce", self.clean))
        for base in ("gce", "sce", "poly1"):
            for s in self.noisy:
                pairs["F2", base, s] = (own(f"{base}-dn", s), own(base, s))
        return pairs

    def tests(self, rule: str) -> dict:
        """The family of paired tests under ``rule``, each with its Holm-adjusted p-value and direction."""
        key = ("tests", rule)
        if key not in self._cache:
            self._cache[key] = adjust(self.unadjusted(rule), self.alpha)
        return self._cache[key]

    def unadjusted(self, rule: str) -> dict:
        """The family's paired tests under ``rule`` before the correction (a wider family, such as a
        map's, adjusts them together with others and stores them with :meth:`set_tests`)."""
        return {k: Test(a, b, tuning.paired(a, b)) for k, (a, b) in self._pairs(rule).items()}

    def set_tests(self, rule: str, tests: dict) -> None:
        """Use ``tests`` (adjusted in a wider family) as this judge's tests under ``rule``."""
        self._cache["tests", rule] = tests

    def equivalence(self, key, rule: str) -> stats.Equivalence:
        """TOST of the test ``key`` under ``rule`` against the criteria's margin."""
        return stats.tost(self.tests(rule)[key].paired.differences, self.margin, self.alpha)

    # --- the claims -------------------------------------------------------------------------------

    def verdict(self, claim: str, rule: str) -> Verdict:
        """Claim ``claim`` judged under ``rule``."""
        judge = getattr(self, "_claim_" + claim.lower())
        verdict, evidence = judge(rule)
        at = [self.clean if s == "clean" else tuple(s) for s in self.READS_AT.get(claim, self.settings)]
        reads = {(kind, name, s) for kind, name in self.READS.get(claim, set()) for s in at}
        return Verdict(claim, rule, verdict, evidence, provisional=bool(self._edges(rule) & reads))

    #: What each claim reads: families tuned over their settings and learning rates (``family``) and losses
    #: tuned over the learning rates (``loss``); a verdict is provisional where one of them was chosen at an
    #: edge of the grid.
    READS = {"H": {("family", f) for f in ("dm", "cce", "gce", "imae")}, "1": {("family", "cce")},
             "2": {("loss", "mae"), ("loss", "cce")}, "3": {("family", f) for f in ("imae", "dm", "cce")},
             "4": {("family", "dm"), ("family", "cce")}, "5": {("family", f) for f in ("gce", "cce", "mae")},
             "6": {("loss", "dm"), ("loss", "dm:lam=2,beta=8")},
             "7": {("loss", l) for l in ("cce-dn", "cce", "mae-dn")}, "F1": {("loss", "dm"), ("loss", "mse-dn")},
             "F2": {("loss", l) for l in ("gce", "gce-dn", "sce", "sce-dn", "poly1", "poly1-dn")}}
    #: The settings a claim reads, where it reads fewer than all of them (``clean``: the clean setting).
    READS_AT = {"1": [("symmetric", 0.4)], "2": ["clean"], "3": [("symmetric", 0.4)], "4": [("symmetric", 0.4)]}

    def overall(self, claim: str) -> str:
        """The weakest verdict of ``claim`` over the judged rules."""
        return weakest(self.verdict(claim, rule).verdict for rule in self.judged)

    def _at_edge(self, rule: str) -> dict:
        """Every tuned choice under ``rule`` (each family at each setting, and each loss the tests tuned
        over the learning rates alone) that sits at an edge of its grid, by ``(kind, name, setting, rule)``."""
        for f in tuning.families(self.results):
            for s in self.settings:
                self.family(f, s, rule)
        self.tests(rule)
        return {k: c for k, c in self._cache.items()
                if k[0] in ("family", "loss") and k[3] == rule and tuning.at_edge(self.results, c)}

    def edge_choices(self, rule: str) -> list[tuning.Choice]:
        """Every tuned choice (family or a loss's own learning rate) under ``rule`` at an edge of its grid."""
        return list(self._at_edge(rule).values())

    def _edges(self, rule: str) -> set[tuple[str, str, tuple]]:
        """``(kind, name, setting)`` of every choice under ``rule`` at an edge of its grid (``READS``'s kinds)."""
        return {(k[0], k[1], k[2]) for k in self._at_edge(rule)}

    def _fmt(self, key, rule) -> str:
        t = self.tests(rule)[key]
        return f"{t.paired.fmt()} p_Holm {t.adjusted:.3f}"

    def _claim_h(self, rule):
        tests = self.tests(rule)
        keys = [k for k in tests if k[0] == "H"]
        better = [k for k in keys if tests[k].direction == "better"]
        worse = [k for k in keys if tests[k].direction == "worse"]
        verdict = ("holds" if len(better) == len(keys) else
                   "does not hold" if worse or not better else "partly holds")
        return verdict, (f"DM better in {len(better)}, worse in {len(worse)} of {len(keys)} tests; "
                         + "; ".join(f"{k[1]} {k[2][0]} {k[2][1]:g}: {self._fmt(k, rule)}" for k in keys))

    def _claim_1(self, rule):
        cce = self.family("cce", ("symmetric", 0.4), "final")
        fit = self.per_seed(cce, "fit_noisy")
        drop = [b - f for b, f in zip(self.best(cce), cce.values)]
        mean_drop = sum(drop) / len(drop)
        direction = all(v > 0.4 for v in fit) and all(d > 0 for d in drop)
        size = mean_drop >= self.paper_gaps.get("1", math.inf) / 200
        verdict = "holds" if direction and size else "partly holds" if direction else "does not hold"
        return verdict, (f"CCE ({cce.setting}) noisy fit {min(fit) * 100:.1f}-{max(fit) * 100:.1f}%, best minus final "
                         f"{min(drop) * 100:+.1f} to {max(drop) * 100:+.1f} (mean {mean_drop * 100:.1f}) points")

    def _claim_2(self, rule):
        key = ("2", "mae", self.clean)
        t = self.tests(rule)[key]
        worse = t.direction == "worse"
        size = -t.paired.mean >= self.paper_gaps.get("2", math.inf) / 200
        verdict = "holds" if worse and size else "partly holds" if worse else "does not hold"
        dead = [sum(a == 0 for a in r["final_class_acc"]) for r in
                self.results.select(loss=t.a.loss, lr=t.a.lr, noise=self.clean[0], rate=self.clean[1])]
        return verdict, (f"MAE ({t.a.setting}) minus CCE ({t.b.setting}) {self._fmt(key, rule)}; classes MAE leaves at 0% "
                         f"(canonical test set, final): {', '.join(map(str, dead))} per seed")

    def _claim_3(self, rule):
        s = ("symmetric", 0.4)
        cce_fit = self.per_seed(self.family("cce", s, rule), "fit_noisy")
        parts, strong, weak = [], True, True
        for f in ("imae", "dm"):
            c = self.family(f, s, rule)
            fit, clean = self.per_seed(c, "fit_noisy"), self.per_seed(c, "fit_clean")
            gap = sum(b - v for b, v in zip(self.best(c), c.values)) / len(c.values)
            strong &= all(v < 0.1 for v in fit) and all(v > 0.9 for v in clean) and gap < 0.02
            weak &= all(v < w for v, w in zip(fit, cce_fit))
            parts.append(f"{f} ({c.setting}) noisy fit {max(fit) * 100:.1f}% at most, clean fit {min(clean) * 100:.1f}% at "
                         f"least, best minus this checkpoint {gap * 100:.1f}")
        verdict = "holds" if strong else "partly holds" if weak else "does not hold"
        return verdict, "; ".join(parts) + f"; CCE's noisy fit {min(cce_fit) * 100:.1f}% at least"

    def _claim_4(self, rule):
        s = ("symmetric", 0.4)
        dm, cce = self.family("dm", s, rule), self.family("cce", s, rule)
        p_dm, p_cce = self.per_seed(dm, "p_noisy"), self.per_seed(cce, "p_noisy")
        below = all(a < b for a, b in zip(p_dm, p_cce))
        m_dm, m_cce = sum(p_dm) / len(p_dm), sum(p_cce) / len(p_cce)
        verdict = "holds" if below and m_dm < 0.1 and m_cce > 0.5 else "partly holds" if below else "does not hold"
        return verdict, f"mean p of noisy examples: DM {m_dm:.3f}, CCE {m_cce:.3f}; DM below in {sum(a < b for a, b in zip(p_dm, p_cce))} of {len(p_dm)} seeds"

    def _claim_5(self, rule):
        tests = self.tests(rule)
        strong = weak = True
        parts = []
        for s in self.noisy:
            vs_cce, vs_mae = tests["5", "cce", s], tests["5", "mae", s]
            strong &= {vs_cce.direction, vs_mae.direction} == {"better", "worse"}
            weak &= vs_cce.paired.mean * vs_mae.paired.mean < 0
            parts.append(f"{s[0]} {s[1]:g}: GCE-CCE {vs_cce.paired.fmt()} ({vs_cce.direction}), "
                         f"GCE-MAE {vs_mae.paired.fmt()} ({vs_mae.direction})")
        return ("holds" if strong else "partly holds" if weak else "does not hold"), "; ".join(parts)

    def _claim_6(self, rule):
        diffs = {}
        for s in (self.clean, ("symmetric", 0.4), ("symmetric", 0.6)):
            a, b = self.loss("dm:lam=2,beta=8", s, rule), self.loss("dm", s, rule)
            diffs[s] = tuning.paired(a, b).mean
        grows = diffs[self.clean] < diffs["symmetric", 0.4] < diffs["symmetric", 0.6]
        t = self.tests(rule)["6", "lam", ("symmetric", 0.6)]
        verdict = ("does not hold" if t.direction == "worse" or not grows else
                   "holds" if t.direction == "better" else "partly holds")
        return verdict, ("lambda 2 minus lambda 0.5, each at its own tuned rate: "
                         + ", ".join(f"{s[1]:g}: {100 * d:+.1f}" for s, d in diffs.items())
                         + f"; at 0.6 {self._fmt(('6', 'lam', ('symmetric', 0.6)), rule)}")

    def _claim_7(self, rule):
        tests = self.tests(rule)
        eq = {s: self.equivalence(("7", "cce-dn", s), rule) for s in self.settings}
        same = all(tests["7", "cce-dn", s].direction == "unresolved" or eq[s].equivalent for s in self.settings)
        mae_worse = tests["7", "mae-dn", self.clean].direction == "worse"
        verdict = ("holds" if all(e.equivalent for e in eq.values()) and mae_worse else
                   "partly holds" if same and mae_worse else "does not hold")
        return verdict, ("CCE-DN minus CCE: " + "; ".join(f"{s[0]} {s[1]:g} {tests['7', 'cce-dn', s].paired.fmt()}, 90% "
                                                         f"{eq[s].fmt()}" for s in self.settings)
                         + f"; MAE-DN minus CCE, clean: {self._fmt(('7', 'mae-dn', self.clean), rule)}")

    def _claim_f1(self, rule):
        tests = self.tests(rule)
        eq = {s: self.equivalence(("F1", "mse-dn", s), rule) for s in self.settings}
        different = [s for s in self.settings                # significant, and not within the margin
                     if tests["F1", "mse-dn", s].direction != "unresolved" and not eq[s].equivalent]
        verdict = ("holds" if all(e.equivalent for e in eq.values()) else
                   "does not hold" if different else "partly holds")
        return verdict, "DM minus MSE-DN: " + "; ".join(
            f"{s[0]} {s[1]:g} {tests['F1', 'mse-dn', s].paired.fmt()}, 90% {eq[s].fmt()}" for s in self.settings)

    def _claim_f2(self, rule):
        tests = self.tests(rule)
        results = {base: [tests["F2", base, s].direction for s in self.noisy] for base in ("gce", "sce", "poly1")}
        strong = all(d == "better" for ds in results.values() for d in ds)
        weak = all("better" in ds and "worse" not in ds for ds in results.values())
        verdict = "holds" if strong else "partly holds" if weak else "does not hold"
        return verdict, "; ".join(f"{base}-DN minus {base}: " + ", ".join(
            f"{s[0]} {s[1]:g} {tests['F2', base, s].paired.fmt()} ({tests['F2', base, s].direction})" for s in self.noisy)
            for base in results)

    def next_rungs(self, registered: dict, settings: list[tuple], ladder: list[float], max_rungs: int) -> dict:
        """A widening rule's next step: for each loss of ``registered`` (loss -> its registered learning
        rates) at each of ``settings`` whose tuned choice under a judged rule sits at the smallest or largest
        learning rate it was trained at there, the next rung of ``ladder`` beyond, unless the ladder ends or
        ``max_rungs`` rungs were already added beyond the registered grid on that side. A loss of
        ``registered`` that names one of the record's loss families is tuned as the family, any other on
        its own (:meth:`loss`). ``(loss, setting) -> lr``."""
        named = dict(self.results.experiment.families)
        wanted = {}
        for loss, grid in registered.items():
            low, high = ladder.index(grid[0]), ladder.index(grid[-1])
            for s in settings:
                lrs = tuning.learning_rates(self.results, loss, s)
                if not lrs:                   # a setting the record does not hold (yet): nothing to widen
                    continue
                for rule in self.judged:
                    lr = (self.family if loss in named else self.loss)(loss, s, rule).lr
                    at = ladder.index(lr)
                    if lr == lrs[0] and at > 0 and low - at < max_rungs:
                        wanted.setdefault((loss, s), ladder[at - 1])
                    elif lr == lrs[-1] and at < len(ladder) - 1 and at - high < max_rungs:
                        wanted.setdefault((loss, s), ladder[at + 1])
        return wanted

    def registered_edges(self, rule: str) -> list[tuning.Choice]:
        """Every tuned choice under ``rule`` at an edge of the grid the record was first trained with (its
        first session's runs): the grid the criteria were written for, before any widening."""
        first = set(self.results.provenance[0]["runs"])
        self._at_edge(rule)                       # every choice under the rule made
        edges = {}
        for k, c in self._cache.items():
            if k[0] in ("family", "loss") and k[3] == rule:
                lrs = sorted({r["lr"] for r in self.results.select(loss=c.loss, noise=c.noise, rate=c.rate)
                              if r["run_id"] in first})
                if c.lr in (lrs[0], lrs[-1]):
                    edges.setdefault((c.family, c.loss, c.lr, c.noise, c.rate), c)
        return list(edges.values())

    def _claim_f3(self, rule):
        """Judged on the grid as registered (the first session's); the evidence adds where a widening of a
        family's grid, the remedy the criterion names, left each such choice."""
        edges, now = self.registered_edges(rule), {(c.loss, c.lr) for c in self.edge_choices(rule)}
        where = lambda c: "still at the edge" if (c.loss, c.lr) in now else "inside the widened grid"
        return ("holds" if not edges else "does not hold"), (
            "no tuned choice at an edge" if not edges else
            "at an edge of the registered grid: " + "; ".join(
                f"{c.family} {c.noise} {c.rate:g}: {c.setting} ({where(c)})" for c in edges))
