"""The claims of the chapter "Token weighting in language models", judged as their criteria say.

The records ``token-weighting-corpus`` and ``token-weighting-small`` (:mod:`dmcore.lab.experiments`) train a
byte-level language model under token noise with CCE, DFT, GCE and DM at three settings, each over the
same learning rates; ``book/criteria/token-weighting.toml`` fixed the claims before they were trained.
:class:`TokenWeighting` reads both records and the criteria. Under each checkpoint rule it chooses each
loss setting's learning rate on noisy-validation accuracy, and DM's setting together with it (``dm-val``,
the family ``dm``), by :mod:`dmcore.lab.tuning`; builds every paired test the claims name (:meth:`tests`),
Holm-adjusts them together (:func:`dmcore.lab.judge.adjust`), and judges each claim (:meth:`verdict`).
A claim's verdict is the weakest over the judged rules, provisional where a learning-rate choice it reads
sits at an edge of the grid it was chosen from.

Every test is oriented so that a positive difference favours its first loss: ``a - b`` in accuracy,
``b - a`` in negative log-likelihood (lower is better), so ``better`` always means better for ``a``.
"""

from __future__ import annotations

from . import experiments, judge, tuning

__all__ = ["TokenWeighting", "CLAIMS", "WEIGHTINGS"]

#: The claims of the criteria, in order.
CLAIMS = ("C", "S", "P", "N", "D")
#: The weightings claim C compares with CCE, each at its own learning rate.
WEIGHTINGS = ("dft", "gce") + experiments.WHICH_DM
_LOWER_IS_BETTER = {"test_nll"}


class TokenWeighting:
    """The claims on ``parts`` (record name -> :class:`~dmcore.lab.records.Results`) under ``plan``."""

    def __init__(self, parts: dict, plan: dict):
        analysis = plan["analysis"]
        if analysis["correction"] != "holm":
            raise ValueError(f"unsupported correction {analysis['correction']!r}: the claims are judged with Holm's")
        self.parts, self.plan = dict(parts), plan
        self.judged, self.alpha = list(analysis["judged"]), analysis["alpha"]
        self.metrics = list(analysis["metrics"])
        self.clean, self.noisy = tuple(analysis["clean"]), [tuple(s) for s in analysis["noisy"]]
        self.corpus, self.small = (f"token-weighting-{k}" for k in experiments.TOKEN)
        if set(self.parts) != {self.corpus, self.small}:
            raise ValueError(f"the claims read {self.corpus} and {self.small}, got {sorted(self.parts)}")
        self._choices: dict = {}
        self._tests: dict = {}

    @classmethod
    def load(cls, plan: dict, folder=None, registered: bool = False) -> "TokenWeighting":
        """The claims on ``plan``'s records read from ``folder`` (default: the book's records); with
        ``registered``, each record's first session alone (the grid before any widening)."""
        return cls(experiments.load_plan(plan, folder, registered), plan)

    # --- choices ------------------------------------------------------------------------------------

    def choice(self, name: str, loss: str, setting: tuple, rule: str, metric: str = "test_acc") -> tuning.Choice:
        """``loss`` at its learning rate chosen under ``rule`` (``dm``: DM's setting chosen with it), with
        ``metric`` at the rule's checkpoint."""
        key = (name, loss, tuple(setting), rule, metric)
        if key not in self._choices:
            results = self.parts[name]
            how = tuning.choose if loss == "dm" else tuning.tune_lr
            self._choices[key] = how(results, loss, *setting, rule=rule, metric=metric)
        return self._choices[key]

    # --- tests and claims ---------------------------------------------------------------------------

    def _pairs(self) -> list[tuple]:
        """Every comparison the claims name: ``(claim, record, a, b, setting, metric)``."""
        pairs = [("C", name, "cce", w, self.clean, m) for name in self.parts for w in WEIGHTINGS for m in self.metrics]
        pairs += [(c, name, "dm", "cce", s, "test_acc") for c, name in (("S", self.small), ("P", self.corpus))
                  for s in self.noisy]
        pairs += [("N", name, "dm", "cce", s, "test_nll") for name in self.parts for s in self.noisy]
        pairs += [("D", name, "dft", "cce", s, "test_acc") for name in self.parts for s in self.noisy]
        return pairs

    def tests(self, rule: str) -> dict:
        """Every paired test of the claims under ``rule``, Holm-adjusted together:
        ``(claim, record, a, b, setting, metric) -> Test`` (a positive difference favours ``a``)."""
        if rule not in self._tests:
            every = {}
            for key in self._pairs():
                _, name, a, b, setting, metric = key
                ca, cb = (self.choice(name, x, setting, rule, metric) for x in (a, b))
                first, second = (cb, ca) if metric in _LOWER_IS_BETTER else (ca, cb)
                every[key] = judge.Test(ca, cb, tuning.paired(first, second))
            self._tests[rule] = judge.adjust(every, self.alpha)
        return self._tests[rule]

    def verdict(self, claim: str, rule: str) -> judge.Verdict:
        """``claim`` under ``rule``, with the tests it read."""
        if claim not in CLAIMS:
            raise ValueError(f"unknown claim {claim!r}: expected one of {', '.join(CLAIMS)}")
        tests = {k: t for k, t in self.tests(rule).items() if k[0] == claim}
        directions = [t.direction for t in tests.values()]
        if claim == "N":      # holds where DM is worse (a cost) everywhere
            verdict = ("holds" if all(d == "worse" for d in directions) else
                       "does not hold" if "better" in directions else "partly holds")
        else:
            verdict = ("holds" if all(d == "better" for d in directions) else
                       "does not hold" if "worse" in directions else "partly holds")
        evidence = "; ".join(self.evidence_line(k, t) for k, t in tests.items())
        provisional = any(tuning.at_edge(self.parts[k[1]], c) for k, t in tests.items() for c in (t.a, t.b))
        return judge.Verdict(claim, rule, verdict, evidence, provisional)

    def overall(self, claim: str) -> str:
        """The weakest verdict of ``claim`` over the judged rules."""
        return judge.weakest(self.verdict(claim, rule).verdict for rule in self.judged)

    @staticmethod
    def evidence_line(key: tuple, test: judge.Test) -> str:
        """``small cce - gce symmetric 0 test_acc: +1.2 ± 0.4 (5-0) p_Holm 0.004`` (accuracy in points,
        negative log-likelihood in nats, both oriented so that a positive difference favours ``a``)."""
        _, name, a, b, setting, metric = key
        scale, digits = (1.0, 3) if metric in _LOWER_IS_BETTER else (100.0, 1)
        return (f"{name.removeprefix('token-weighting-')} {a} vs {b} {setting[0]} {setting[1]:g} {metric}: "
                f"{test.paired.fmt(scale, digits)} p_Holm {test.adjusted:.3f}")

    # --- the grid ---------------------------------------------------------------------------------

    def edge_choices(self, rule: str) -> list[tuple[str, tuning.Choice]]:
        """Every ``(record, choice)`` the claims read under ``rule`` whose learning rate sits at an edge."""
        seen = {}
        for (_, name, *_), t in self.tests(rule).items():
            for c in (t.a, t.b):
                if tuning.at_edge(self.parts[name], c):
                    seen.setdefault((name, c.loss, c.lr, c.noise, c.rate), (name, c))
        return list(seen.values())

    def widening(self) -> dict:
        """What the criteria's widening rule asks to train next: ``record -> {(loss, noise, rate): learning
        rate}``, each loss setting tuned on its own under each judged rule (empty where nothing)."""
        rule = self.plan["widening"]
        ladder, most = list(rule["ladder"]), rule["max_rungs"]
        low, high = ladder.index(experiments.TOKEN_LRS[0]), ladder.index(experiments.TOKEN_LRS[-1])
        wanted = {}
        for name, results in self.parts.items():
            for loss in experiments.TOKEN_LOSSES:
                for s in [self.clean] + self.noisy:
                    lrs = tuning.learning_rates(results, loss, s)
                    for r in self.judged:
                        lr = self.choice(name, loss, s, r).lr
                        at = ladder.index(lr)
                        if lr == lrs[0] and at > 0 and low - at < most:
                            wanted.setdefault(name, {}).setdefault((loss, *s), ladder[at - 1])
                        elif lr == lrs[-1] and at < len(ladder) - 1 and at - high < most:
                            wanted.setdefault(name, {}).setdefault((loss, *s), ladder[at + 1])
        return wanted

    def provenance_lines(self) -> list[str]:
        """Each record's provenance line."""
        return [results.provenance_line() for results in self.parts.values()]
