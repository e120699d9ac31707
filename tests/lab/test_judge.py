"""dmcore.lab.judge: the pre-registered claims judged on a synthetic record whose answers are known."""

import math
from types import SimpleNamespace

import pytest

from dmcore.lab import criteria, experiments, judge, records


class Synthetic:
    """The runs of ``label-noise-fair`` with a two-evaluation history each: ``accuracy(loss, lr, noise,
    rate, seed)`` gives the final fresh test accuracy (validation follows it), other metrics fixed."""

    at = records.Results.at

    def __init__(self, accuracy):
        e = experiments.get("label-noise-fair")
        self.experiment = SimpleNamespace(name=e.name, families=e.families, runs=e.runs)
        self.runs, self._histories = [], {}
        for r in e.runs:
            acc = accuracy(r.loss, r.lr, r.noise, r.rate, r.seed)
            last = {"step": 3000, "fresh_acc": acc, "test_acc": acc, "val_acc_noisy": acc - 0.2,
                    "fit_noisy": 0.05, "fit_clean": 0.95, "p_noisy": 0.05, "p_clean": 0.9}
            first = {**last, "step": 0, "fresh_acc": 0.1, "test_acc": 0.1, "val_acc_noisy": 0.1}
            self._histories[r.run_id] = [first, last]
            self.runs.append({"run_id": r.run_id, "loss": r.loss, "lr": r.lr, "noise": r.noise, "rate": r.rate,
                              "seed": r.seed, "diverged_step": math.nan, "final_class_acc": [0.9] * 10})

    def select(self, **match):
        return [r for r in self.runs if all(r[k] == v for k, v in match.items())]


def _accuracy(dm_bonus):
    def accuracy(loss, lr, noise, rate, seed):
        peak = -abs(math.log10(lr) - math.log10(0.03))              # every loss best at lr 0.03: no edge
        bonus = dm_bonus(noise, rate) if loss.startswith("dm") else 0.0     # both of the family's settings
        return 0.6 + 0.05 * peak + bonus + 0.002 * ((seed * 7 + len(loss)) % 5)
    return accuracy


@pytest.fixture(scope="module")
def plan(root):
    return criteria.load("label-noise-fair", root / "book" / "records")


def test_the_headline_holds_when_dm_is_ahead_everywhere_and_fails_when_it_trails_once(plan):
    ahead = judge.Judge(Synthetic(_accuracy(lambda noise, rate: 0.05 if rate > 0 else 0.0)), plan)
    for rule in ahead.judged:
        assert len(ahead.tests(rule)) == 35
        assert ahead.verdict("H", rule).verdict == "holds"
        assert ahead.verdict("F3", rule).verdict == "holds" and not ahead.edge_choices(rule)
    assert ahead.overall("H") == "holds"
    behind = judge.Judge(Synthetic(_accuracy(lambda noise, rate: -0.05 if noise == "pair" else 0.05 * (rate > 0))), plan)
    assert behind.verdict("H", "final").verdict == "does not hold"


def test_holm_is_applied_over_the_whole_family(plan):
    j = judge.Judge(Synthetic(_accuracy(lambda noise, rate: 0.05 if rate > 0 else 0.0)), plan)
    tests = j.tests("final")
    raw = sorted(t.paired.p for t in tests.values())
    adjusted = sorted(t.adjusted for t in tests.values())
    assert adjusted[0] == pytest.approx(min(1.0, len(raw) * raw[0]))
    assert all(a >= r for a, r in zip(adjusted, raw))


def test_an_edge_choice_is_found_and_makes_the_verdicts_that_read_it_provisional(plan):
    def accuracy(loss, lr, noise, rate, seed):
        return _accuracy(lambda n, r: 0.0)(loss, lr, noise, rate, seed) + (0.2 if loss == "mae" and lr == 1.0 else 0.0)
    j = judge.Judge(Synthetic(accuracy), plan)
    assert j.verdict("F3", "final").verdict == "does not hold"
    assert any(c.family == "mae" and c.lr == 1.0 for c in j.edge_choices("final"))
    assert j.verdict("5", "final").provisional and not j.verdict("H", "final").provisional


def test_the_weakest_verdict():
    assert judge.weakest(["holds", "partly holds"]) == "partly holds"
    assert judge.weakest(["holds", "does not hold", "partly holds"]) == "does not hold"
