"""The records the pre-registered verdicts read are tuned to the inside of their grids: no family's or
loss's choice, under any judged checkpoint rule, at the smallest or largest learning rate it was
trained at (a choice there would leave the tuning unfinished)."""

from dmcore.lab import criteria, experiments, judge, records as records_module, regime


def test_the_fair_record_has_no_choice_at_an_edge(root):
    records = root / "book" / "records"
    J = judge.Judge(experiments.load("label-noise-fair", records), criteria.load("label-noise-fair", records))
    for rule in J.judged:
        assert [(c.family, c.noise, c.rate, c.setting) for c in J.edge_choices(rule)] == [], rule


def test_the_map_has_no_choice_at_an_edge(root):
    records = root / "book" / "records"
    plan = criteria.load(experiments.map_name(2, 25), records)
    m = regime.Map.load(plan, records)
    for rule in m.judged:
        m.tests(rule)
    for key, cell in m.cells.items():
        for rule in m.judged:
            edges = [(c.family, c.noise, c.rate, c.setting) for c in cell.edge_choices(rule)]
            assert edges == [], (key, rule)


def test_the_edge_check_can_fail(root):
    """The fair record with MAE's widened grid removed: its choice at 0.003 is then an edge."""
    records = root / "book" / "records"
    fair = experiments.load("label-noise-fair", records)
    kept = [r for r in fair.experiment.runs if r.lr not in experiments.FAIR_MAE_LRS]
    narrowed = experiments.Experiment(**{**fair.experiment.__dict__, "runs": tuple(kept)})
    J = judge.Judge(records_module.Results(narrowed, records / "label-noise-fair"),
                    criteria.load("label-noise-fair", records))
    assert {c.family for c in J.edge_choices("final")} >= {"mae"}
