"""dmcore.lab.procedures: the practitioner's procedures and the which-weighting plan, on synthetic records
whose answers are known (the records' runs as defined, each run's accuracy and noise estimate by formula)."""

import math

import pytest
from test_judge import Synthetic

from dmcore.lab import criteria, experiments, procedures, tuning

NAMES = tuple(f"which-weighting-{key}" for key in experiments.WHICH)
TABLE = {0.2: "dm:lam=0.5,beta=12", 0.4: "dm:lam=1,beta=16", 0.6: "dm:lam=2,beta=12", 0.8: "dm:lam=2,beta=12"}


@pytest.fixture(scope="module")
def plan(root):
    return criteria.load(NAMES[0], root / "book" / "records")


def test_the_rule_reads_table_9_and_the_records_train_its_settings(root):
    assert procedures.table9_settings(root / "book" / "data" / "paper") == TABLE
    assert set(experiments.WHICH_DM) == set(TABLE.values())


def test_the_rule_takes_the_nearest_rate_and_the_lower_on_a_tie():
    rule = lambda r: procedures.rule_setting(r, TABLE)          # noqa: E731
    assert [rule(r) for r in (0.0, 0.29, 0.3, 0.31, 0.5, 0.51, 0.95)] == [
        TABLE[0.2], TABLE[0.2], TABLE[0.2], TABLE[0.4], TABLE[0.4], TABLE[0.6], TABLE[0.8]]
    with pytest.raises(ValueError, match="finite estimate"):
        rule(math.nan)


def _procedures(plan, bonus, estimate, best=lambda loss, noise, rate: 0.1, names=NAMES):
    """Procedures on synthetic records: a run's accuracy is ``bonus(loss, noise, rate)`` above a base that
    peaks at learning rate ``best(...)`` (0.1 lies inside each dataset's grid but Fashion-MNIST's, whose
    grid 0.01-0.1 the tests read at 0.03), and CCE's ``val_noise_est`` is ``estimate(noise, rate, seed)``."""
    def accuracy(loss, lr, noise, rate, seed):
        peak = -abs(math.log10(lr) - math.log10(best(loss, noise, rate)))
        return 0.6 + 0.05 * peak + bonus(loss, noise, rate) + 0.002 * ((seed * 7 + len(loss)) % 5)

    def metrics(loss, lr, noise, rate, seed):
        return {"val_noise_est": estimate(noise, rate, seed) if loss == "cce" else math.nan}

    def record(name):
        grid = experiments.WHICH[name.removeprefix("which-weighting-")][3]
        centre = grid[1]
        return Synthetic(lambda loss, lr, noise, rate, seed: accuracy(loss, lr * 0.1 / centre, noise, rate, seed),
                         name, metrics)
    return procedures.Procedures({name: record(name) for name in names}, plan, TABLE)


def matching(loss, noise, rate):
    """DM's Table 9 setting for the true rate is 5 points ahead of the other DM settings and of CCE."""
    return 0.05 if loss == TABLE.get(rate, TABLE[0.4]) else 0.0


def test_a_good_estimate_makes_the_rule_equivalent_and_dm_ahead(plan):
    P = _procedures(plan, matching, lambda noise, rate, seed: rate + 0.01 * (seed - 2))
    assert len(P.tests("final")) == 30 and sum(k[0] == "R" for k in P.tests("final")) == 15
    raw = sorted(t.paired.p for t in P.tests("early").values() if not math.isnan(t.paired.p))
    assert min(t.adjusted for t in P.tests("early").values()) == pytest.approx(min(1.0, 30 * raw[0]))
    for claim in "ERV":
        assert P.overall(claim) == "holds", claim
        assert not P.provisional(claim, "final")
    assert P.rule_picks(NAMES[0], ("symmetric", 0.6), "final")[0].loss == TABLE[0.6]
    assert P.dm_rule(NAMES[1], ("pair", 0.4), "early").values == P.dm_val(NAMES[1], ("pair", 0.4), "early").values
    assert P.any_val(NAMES[2], ("symmetric", 0.2), "final").family == "dm"
    assert P.widening() == {}
    cell = P.decision(NAMES[0], ("symmetric", 0.4))
    assert (cell.use, cell.rule) == ("dm-val", "suffices")
    assert cell.estimate == pytest.approx((0.4, 0.38, 0.42))
    assert cell.why.startswith("final: dm-val - cce-early +5.0")


def test_a_biased_estimate_makes_the_rule_worse_and_the_estimate_claim_fail(plan):
    P = _procedures(plan, matching, lambda noise, rate, seed: 0.1)       # always "0.2": wrong at 0.4 and 0.6
    assert P.verdict("E", "final").verdict == "does not hold"
    assert P.overall("R") == "does not hold"
    assert P.tests("final")["R", NAMES[0], ("symmetric", 0.6)].direction == "worse"
    assert P.overall("V") == "holds"                                        # dm-val does not read the estimate
    assert P.decision(NAMES[0], ("symmetric", 0.6)).rule == "worse"
    assert P.decision(NAMES[0], ("symmetric", 0.2)).rule == "suffices"


def test_each_seed_reads_its_own_pick(plan):
    # seed 0 estimates 0.29 (-> 0.2's setting), the others 0.5 (-> 0.4's): seed 0 reads its own setting
    P = _procedures(plan, matching, lambda noise, rate, seed: 0.29 if seed == 0 else 0.5)
    picks = P.rule_picks(NAMES[0], ("symmetric", 0.4), "final")
    assert [c.loss for c in picks] == [TABLE[0.2]] + [TABLE[0.4]] * 4
    rule = P.dm_rule(NAMES[0], ("symmetric", 0.4), "final")
    assert rule.values == (picks[0].values[0],) + tuple(picks[1].values[i] for i in range(1, 5))
    assert rule.loss == f"{picks[0].setting} / {picks[1].setting}"


def test_cce_ahead_makes_v_fail_and_an_edge_makes_it_provisional_and_asks_for_a_rung(plan):
    P = _procedures(plan, lambda loss, noise, rate: 0.05 if loss == "cce" else 0.0,
                    lambda noise, rate, seed: rate, best=lambda loss, noise, rate: 1.0 if loss == "cce" else 0.1)
    assert P.overall("V") == "does not hold" and P.provisional("V", "early")
    assert P.any_val(NAMES[0], ("symmetric", 0.4), "final").family == "cce"
    assert P.decision(NAMES[0], ("symmetric", 0.4)).use == "cce-early"
    wanted = P.widening()
    assert set(wanted) == set(NAMES)
    ladder = plan["widening"]["ladder"]

    def above(name, s):              # the rung above the largest rate CCE was trained at there
        key = name.removeprefix("which-weighting-")
        top = max(experiments.WHICH[key][3] + experiments.WHICH_WIDENED[key].get(("cce", *s), ()))
        return ladder[ladder.index(top) + 1]
    assert wanted[NAMES[0]] == {("cce", *s): 1.0 for s in P.settings}        # 0.3 -> the next rung, 1.0
    assert wanted[NAMES[2]] == {("cce", *s): above(NAMES[2], s) for s in P.settings}
    assert {above(NAMES[2], s) for s in P.settings} == {0.3, 1.0}           # Fashion-MNIST: 0.1 -> 0.3, 0.3 -> 1.0


def test_no_difference_leaves_the_decision_to_validation(plan):
    P = _procedures(plan, lambda loss, noise, rate: 0.0, lambda noise, rate, seed: rate)
    cell = P.decision(NAMES[1], ("pair", 0.4))
    assert cell.use == "any-val" and all(P.tests(r)["V", NAMES[1], ("pair", 0.4)].direction == "unresolved"
                                         for r in P.judged)


def test_a_record_without_the_estimate_or_a_setting_is_refused(plan):
    P = _procedures(plan, matching, lambda noise, rate, seed: math.nan)
    with pytest.raises(ValueError, match="finite estimate"):
        P.dm_rule(NAMES[0], ("symmetric", 0.2), "final")
    narrow = dict(plan, analysis={**plan["analysis"], "noisy": plan["analysis"]["noisy"] + [["pair", 0.2]]})
    with pytest.raises(ValueError, match="does not hold the plan's settings"):
        _procedures(narrow, matching, lambda noise, rate, seed: rate)


def test_a_family_widened_one_loss_at_a_time_offers_each_loss_at_its_own_rates(plan):
    """The digits record widens DM's settings apart (0.01 below (0.5, 12), 1.0 above (2, 12)): the family's
    configurations are the (loss, rate) pairs trained, in grid order, and the choice reads only those."""
    P = _procedures(plan, matching, lambda noise, rate, seed: rate)
    results = P.judges[NAMES[1]].results
    pairs = tuning.configurations("dm", results, ("symmetric", 0.2))
    assert (TABLE[0.2], 0.01) in pairs and (TABLE[0.6], 1.0) in pairs
    assert (TABLE[0.6], 0.01) not in pairs and (TABLE[0.2], 1.0) not in pairs
    assert [lr for _, lr in pairs] == sorted(lr for _, lr in pairs)
    assert P.dm_val(NAMES[1], ("symmetric", 0.2), "final").loss == TABLE[0.2]
