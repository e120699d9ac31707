"""dmcore.lab.judge: the pre-registered claims judged on a synthetic record whose answers are known."""

import math
from types import SimpleNamespace

import pytest

from dmcore.lab import criteria, experiments, judge, records, regime, tuning


class Synthetic:
    """The runs of record ``name`` with a two-evaluation history each: ``accuracy(loss, lr, noise, rate,
    seed)`` gives the final fresh test accuracy (validation follows it); the other metrics are fixed, or
    given per run by ``metrics`` (same arguments, a dict)."""

    at = records.Results.at

    def __init__(self, accuracy, name="label-noise-fair", metrics=None):
        e = experiments.get(name)
        self.experiment = SimpleNamespace(name=e.name, families=e.families, runs=e.runs)
        self.provenance = [{"runs": [r.run_id for r in e.runs]}]          # one training session
        self.runs, self._histories = [], {}
        for r in e.runs:
            acc = accuracy(r.loss, r.lr, r.noise, r.rate, r.seed)
            last = {"step": 3000, "fresh_acc": acc, "test_acc": acc, "val_acc_noisy": acc - 0.2,
                    "fit_noisy": 0.05, "fit_clean": 0.95, "p_noisy": 0.05, "p_clean": 0.9,
                    **(metrics(r.loss, r.lr, r.noise, r.rate, r.seed) if metrics else {})}
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


def test_grids_and_edges_are_per_family(plan):
    """MAE's family was widened below (0.0003, 0.001): 0.003 is inside its grid and the edge of the others'."""
    j = judge.Judge(Synthetic(_accuracy(lambda n, r: 0.0)), plan)
    mae, cce = j.family("mae", ("symmetric", 0.4), "final"), j.family("cce", ("symmetric", 0.4), "final")
    at = dict(noise="symmetric", rate=0.4)
    assert not tuning.at_edge(j.results, SimpleNamespace(loss="mae", lr=0.003, **at))
    assert tuning.at_edge(j.results, SimpleNamespace(loss="mae-dn", lr=0.0003, **at))
    assert tuning.at_edge(j.results, SimpleNamespace(loss="cce", lr=0.003, **at))
    assert {mae.lr, cce.lr} == {0.03} and tuning.learning_rates(j.results, "mae")[0] == 0.0003


def test_f3_reads_the_registered_grid_and_the_widening_lifts_the_provisional_mark(plan):
    """MAE's family best at 0.003, the registered grid's smallest rate: F3 does not hold by its letter,
    but inside the widened grid no verdict that reads MAE is provisional."""
    def accuracy(loss, lr, noise, rate, seed):
        bonus = 0.1 * (lr == 0.003) if loss.startswith("mae") else 0.0
        return _accuracy(lambda n, r: 0.0)(loss, lr, noise, rate, seed) + bonus
    record = Synthetic(accuracy)
    widened = {r.run_id for r in record.experiment.runs if r.lr in experiments.FAIR_MAE_LRS}
    record.provenance = [{"runs": [r.run_id for r in record.experiment.runs if r.run_id not in widened]},
                         {"runs": sorted(widened)}]
    j = judge.Judge(record, plan)
    f3 = j.verdict("F3", "final")
    assert f3.verdict == "does not hold" and "inside the widened grid" in f3.evidence
    assert not j.edge_choices("final") and not j.verdict("5", "final").provisional
    record.provenance = [{"runs": [r.run_id for r in record.experiment.runs]}]     # registered as widened
    assert judge.Judge(record, plan).verdict("F3", "final").verdict == "holds"


# ----------------------------------------------------------------------- the memorisation map

@pytest.fixture(scope="module")
def map_plan(root):
    return criteria.load(experiments.map_name(2, 25), root / "book" / "records")


def _map(map_plan, fit, dm_bonus, dm_peak=0.1):
    """A map whose cells have CCE's noisy fit ``fit(size, width)`` and DM ``dm_bonus`` ahead of the rest
    (DM best at ``dm_peak`` at symmetric 0.8)."""
    def accuracy(loss, lr, noise, rate, seed):
        best = 0.3 if loss == "gce" else dm_peak if loss == "dm" and rate == 0.8 else 0.1   # 0.1, 0.3: interior
        peak = -abs(math.log10(lr) - math.log10(best))
        return 0.6 + 0.05 * peak + (dm_bonus if loss == "dm" else 0.0) + 0.002 * ((seed * 7 + len(loss)) % 5)

    cells = {}
    for size in experiments.MAP_SIZES:
        for width in experiments.MAP_WIDTHS:
            def metrics(loss, lr, noise, rate, seed, size=size, width=width):
                return {"fit_noisy": fit(size, width) if loss == "cce" else 0.05, "p_noisy": 0.6 if loss == "cce" else 0.05}
            cells[size, width] = Synthetic(accuracy, experiments.map_name(size, width), metrics)
    return regime.Map(cells, map_plan, {"1": 18.3})


def test_the_map_judges_only_where_cce_memorises_and_adjusts_over_every_cell(map_plan):
    m = _map(map_plan, lambda size, width: 0.9 if (size, width) == (2, 48) else 0.2, dm_bonus=0.05)
    assert m.memorising() == [(2, 48)] and m.cce_fit(2, 48) == [0.9] * 5
    tests = m.tests("final")
    assert len(tests) == 6 * 3 * 3                                    # the addendum's three noise rates
    raw = sorted(t.paired.p for t in tests.values())
    assert min(t.adjusted for t in tests.values()) == pytest.approx(min(1.0, len(raw) * raw[0]))
    assert m.verdict(2, 48, "H", "final").verdict == "holds" and m.summary("H") == "holds"
    assert m.verdict(2, 48, "4", "early").verdict == "holds"          # p 0.05 against 0.6, every seed
    assert not m.verdict(2, 48, "H", "final").provisional
    behind = _map(map_plan, lambda size, width: 0.9, dm_bonus=-0.05)
    assert len(behind.memorising()) == 6 and behind.summary("H") == "does not hold"
    assert _map(map_plan, lambda size, width: 0.3, dm_bonus=0.0).summary("H") == "not judged"


def test_an_edge_choice_makes_provisional_only_the_claims_that_read_its_setting(map_plan):
    m = _map(map_plan, lambda size, width: 0.9, dm_bonus=0.05, dm_peak=0.3)     # DM at its grid's top at 0.8
    assert m.verdict(4, 48, "H", "final").provisional                            # H reads 0.8
    assert not any(m.verdict(4, 48, c, "final").provisional for c in ("1", "3", "4"))   # they read 0.4 only


def test_the_registered_plan_reads_two_noise_rates_and_the_addendum_three(root, map_plan):
    registered = criteria.load(experiments.map_name(2, 25), root / "book" / "records", addenda=False)
    assert registered["analysis"]["noisy"] == [["symmetric", 0.4], ["symmetric", 0.8]] and not registered["addenda"]
    assert map_plan["addenda"] == ["memorisation-addendum.toml"] and len(map_plan["analysis"]["noisy"]) == 3
    assert map_plan["analysis"]["metric"] == registered["analysis"]["metric"]      # the rest unchanged
    assert [c["id"] for c in map_plan["claim"]] == ["1", "3", "4", "H"] and "0.6" in map_plan["claim"][-1]["compare"]


def test_a_grid_widened_at_one_noise_rate_has_its_edges_there_alone(map_plan):
    m = _map(map_plan, lambda size, width: 0.9, dm_bonus=0.0)
    results = m.cells[2, 25].results                                # DM widened to 1.0 at 0.4 alone
    assert tuning.learning_rates(results, "dm", ("symmetric", 0.4)) == [0.03, 0.1, 0.3, 1.0]
    assert tuning.learning_rates(results, "dm", ("symmetric", 0.8)) == [0.03, 0.1, 0.3]
    edge = dict(loss="dm", lr=0.3, noise="symmetric")
    assert tuning.at_edge(results, SimpleNamespace(**edge, rate=0.8))
    assert not tuning.at_edge(results, SimpleNamespace(**edge, rate=0.4))


def test_the_widening_rule_asks_for_the_next_rung_beyond_an_edge_and_stops(map_plan):
    ladder, rungs = map_plan["widening"]["ladder"], map_plan["widening"]["max_rungs"]
    assert _map(map_plan, lambda size, width: 0.9, dm_bonus=0.0).widening() == {}      # every choice interior
    only_4k48 = lambda size, width: 0.9 if (size, width) == (4, 48) else 0.2
    top = _map(map_plan, only_4k48, dm_bonus=0.0, dm_peak=3.0)     # DM best above its grid at 0.8
    assert top.widening() == {(4, 48): {("dm", 0.8): 1.0}}         # 0.8 read only where CCE memorises
    assert regime.widening(top.cells[4, 48], [("symmetric", 0.8)], ladder, 0) == {}       # no rung allowed
    low = _map(map_plan, only_4k48, dm_bonus=0.0, dm_peak=0.0001).cells[4, 48]    # best below 0.01 (1 rung)
    assert regime.widening(low, [("symmetric", 0.8)], ladder, rungs) == {("dm", 0.8): 0.003}
    assert regime.widening(low, [("symmetric", 0.8)], ladder, 1) == {}
