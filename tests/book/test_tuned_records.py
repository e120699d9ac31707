"""The records the pre-registered verdicts read are tuned to the inside of their grids: no family's or
loss's choice, under any judged checkpoint rule, at the smallest or largest learning rate it was
trained at (a choice there would leave the tuning unfinished)."""

from dmcore.lab import criteria, experiments, judge, records as records_module, regime


def test_the_fair_record_has_no_choice_at_an_edge(root):
    records = root / "book" / "records"
    J = judge.Judge(experiments.load("label-noise-fair", records), criteria.load("label-noise-fair", records))
    for rule in J.judged:
        assert [(c.family, c.noise, c.rate, c.setting) for c in J.edge_choices(rule)] == [], rule


def test_the_map_has_no_edge_choice_where_its_claims_are_judged(root):
    """In every memorising cell no choice at symmetric 0.4 (where claims 1, 3, 4 read) sits at an edge; an
    edge choice at 0.8 (the headline's other rate) sits where no loss's tuned accuracy reaches 20% (chance
    is 10%), a choice among configurations that barely learn, and the chapter marks the headline there
    provisional."""
    records = root / "book" / "records"
    m = regime.Map.load(criteria.load(experiments.map_name(2, 25), records), records)
    assert m.memorising()
    for key in m.memorising():
        cell = m.cells[key]
        for rule in m.judged:
            m.tests(rule)
            for c in cell.edge_choices(rule):
                setting = (c.noise, c.rate)
                best = max(cell.family(f, setting, rule).test.mean for f in experiments.MAP_LRS)
                assert setting != ("symmetric", 0.4) and best < 0.2, (key, rule, c.setting, setting)
            assert m.verdict(*key, "H", rule).provisional == bool(cell.edge_choices(rule))


def test_the_edge_check_can_fail(root):
    """The fair record with MAE's widened grid removed: its choice at 0.003 is then an edge."""
    records = root / "book" / "records"
    fair = experiments.load("label-noise-fair", records)
    kept = [r for r in fair.experiment.runs if r.lr not in experiments.FAIR_MAE_LRS]
    narrowed = experiments.Experiment(**{**fair.experiment.__dict__, "runs": tuple(kept)})
    J = judge.Judge(records_module.Results(narrowed, records / "label-noise-fair"),
                    criteria.load("label-noise-fair", records))
    assert {c.family for c in J.edge_choices("final")} >= {"mae"}
