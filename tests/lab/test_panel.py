"""dmcore.lab.panel: the Fashion-MNIST plan judged over its two records, on synthetic records whose
answers are known (the records' runs as defined, each run's accuracy given by a formula)."""

import math

import pytest
from test_judge import Synthetic

from dmcore.lab import criteria, panel

NAMES = ("fashion-mnist-uniform", "fashion-mnist-dependent")


@pytest.fixture(scope="module")
def plan(root):
    return criteria.load(NAMES[0], root / "book" / "records")


def _panel(plan, bonus, best=lambda loss, noise, rate: 0.1):
    """A panel where each run's accuracy is ``bonus(loss, noise, rate)`` above a base that peaks at the
    learning rate ``best(loss, noise, rate)`` (0.1: inside the grid 0.03-0.3)."""
    def accuracy(loss, lr, noise, rate, seed):
        peak = -abs(math.log10(lr) - math.log10(best(loss, noise, rate)))
        return 0.6 + 0.05 * peak + bonus(loss, noise, rate) + 0.002 * ((seed * 7 + len(loss)) % 5)
    return panel.Panel({name: Synthetic(accuracy, name) for name in NAMES}, plan, {"1": 18.3})


def test_the_plan_spans_both_records_and_holm_covers_all_29_tests(plan):
    p = _panel(plan, lambda loss, noise, rate: {"dm": 0.1, "gce": 0.05}.get(loss, 0.0))
    assert [s for part in p.parts.values() for s in part.noisy] == p.settings and len(p.settings) == 5
    tests = p.tests("final")
    assert len(tests) == 29 and sum(k[0] == "D" for k in tests) == 4
    raw = sorted(t.paired.p for t in tests.values())
    assert min(t.adjusted for t in tests.values()) == pytest.approx(min(1.0, 29 * raw[0]))
    for claim in ("H", "G"):
        assert p.overall(claim) == "holds" and not p.provisional(claim)
    assert p.overall("D") == "does not hold"          # the scheme changes nothing here: no family worse
    assert p.overall("1") == "does not hold"          # CCE fits 5% of the noisy labels here


def test_a_baseline_ahead_at_one_setting_breaks_the_headline(plan):
    def bonus(loss, noise, rate):
        if noise == "pair" and loss == "mae":
            return 0.2
        return {"dm": 0.1, "gce": 0.05}.get(loss, 0.0)
    p = _panel(plan, bonus)
    assert p.verdict("H", "final").verdict == "does not hold" and p.verdict("G", "early").verdict == "does not hold"
    assert "mae pair 0.4" in p.verdict("H", "final").evidence


def test_instance_noise_worse_for_every_family_holds_and_one_exception_fails(plan):
    harder = _panel(plan, lambda loss, noise, rate: -0.1 if noise == "instance" else 0.0)
    assert harder.overall("D") == "holds"
    exception = _panel(plan, lambda loss, noise, rate: (0.1 if loss == "mae" else -0.1) if noise == "instance" else 0.0)
    assert exception.overall("D") == "does not hold"
    assert "for 3, better for 1 of 4" in exception.verdict("D", "final").evidence


def test_an_edge_choice_is_provisional_and_the_rule_asks_for_the_next_rung(plan):
    p = _panel(plan, lambda loss, noise, rate: 0.1 if loss == "dm" else 0.0,
               best=lambda loss, noise, rate: 3.0 if (loss, noise) == ("dm", "pair") else 0.1)
    assert p.provisional("H") and not p.provisional("G")
    assert [(c.family, c.noise, c.lr) for c in p.edge_choices("final")] == [("dm", "pair", 0.3)]
    assert p.widening() == {"fashion-mnist-dependent": {("dm", "pair", 0.4): 1.0}}
    assert _panel(plan, lambda loss, noise, rate: 0.0).widening() == {}


def test_a_panel_that_lacks_a_setting_is_refused(plan):
    p = _panel(plan, lambda loss, noise, rate: 0.0)
    with pytest.raises(ValueError, match="no record of the panel holds"):
        panel.Panel({NAMES[0]: p.parts[NAMES[0]].results}, plan)
