"""The records the pre-registered verdicts read are tuned to the inside of their grids: no family's or
loss's choice, under any judged checkpoint rule, at the smallest or largest learning rate it was
trained at (a choice there would leave the tuning unfinished)."""

import dataclasses

import pytest

from dmcore.lab import criteria, experiments, judge, panel, procedures, records as records_module, regime, token_weighting


def test_the_fair_record_has_no_choice_at_an_edge(root):
    records = root / "book" / "records"
    J = judge.Judge(experiments.load("label-noise-fair", records), criteria.load("label-noise-fair", records))
    for rule in J.judged:
        assert [(c.family, c.noise, c.rate, c.setting) for c in J.edge_choices(rule)] == [], rule


def test_the_map_has_no_edge_choice_the_widening_rule_could_still_move(root):
    """The addendum's widening rule is finished: no choice it reads (symmetric 0.4 and 0.6 in every
    cell, 0.8 where CCE memorises) sits at an edge it could still move; the headline of a memorising
    cell is provisional exactly where an edge choice is left (a ladder's end or its last rung)."""
    records = root / "book" / "records"
    m = regime.Map.load(criteria.load(experiments.map_name(2, 25), records), records)
    assert m.memorising()
    assert m.widening() == {}
    for key in m.memorising():
        for rule in m.judged:
            m.tests(rule)
            assert m.verdict(*key, "H", rule).provisional == bool(m.cells[key].edge_choices(rule))


def test_each_widening_session_trained_what_the_rule_asked_from_the_sessions_before_it(root):
    """Replayed session by session: the learning rates each later session added beyond the registered
    grid are exactly those the widening rule asked for, read from the runs trained before it."""
    records = root / "book" / "records"
    plan = criteria.load(experiments.map_name(2, 25), records)
    rule = plan["widening"]
    m = regime.Map.load(plan, records)
    for key, cell in m.cells.items():
        results = cell.results
        reads = [tuple(s) for s in rule["reads"] + (rule["memorising_reads"] if m.memorises(*key) else [])]
        sessions = results.provenance
        assert len(sessions) >= 2, key
        for k in range(1, len(sessions)):
            before = {run for s in sessions[:k] for run in s["runs"]}
            view = records_module.Results(dataclasses.replace(
                results.experiment, runs=tuple(r for r in results.experiment.runs if r.run_id in before)), results.folder)
            wanted = regime.widening(regime.Cell(view, plan), reads, rule["ladder"], rule["max_rungs"])
            trained = {(r.loss, r.rate): r.lr for r in results.experiment.runs
                       if r.run_id in sessions[k]["runs"] and r.lr not in experiments.MAP_LRS[r.loss]}
            assert trained == wanted, (key, k)


def test_the_widening_check_can_fail(root):
    """The map as registered (first sessions only): the rule asks for the first rung of every widening
    the addendum trained at 0.4 and 0.8 (0.6 was not registered, so the rule cannot read it there)."""
    records = root / "book" / "records"
    registered = regime.Map.load(criteria.load(experiments.map_name(2, 25), records), records, registered=True)
    first = {key: {k: lrs[0] for k, lrs in widened.items() if k[1] != 0.6}
             for key, widened in experiments.MAP_WIDENED.items()}
    assert registered.widening() == {key: w for key, w in first.items() if w} != {}


def test_the_edge_check_can_fail(root):
    """The fair record with MAE's widened grid removed: its choice at 0.003 is then an edge."""
    records = root / "book" / "records"
    fair = experiments.load("label-noise-fair", records)
    kept = [r for r in fair.experiment.runs if r.lr not in experiments.FAIR_MAE_LRS]
    narrowed = experiments.Experiment(**{**fair.experiment.__dict__, "runs": tuple(kept)})
    J = judge.Judge(records_module.Results(narrowed, records / "label-noise-fair"),
                    criteria.load("label-noise-fair", records))
    assert {c.family for c in J.edge_choices("final")} >= {"mae"}


def _fashion_sessions(root):
    """The Fashion-MNIST panel's plan and, for each of its records, the record and its sessions."""
    records = root / "book" / "records"
    plan = criteria.load("fashion-mnist-uniform", records)
    return plan, experiments.load_plan(plan, records)


def test_the_fashion_panel_widening_is_finished_and_each_round_trained_what_it_asked(root):
    """Fashion-MNIST: the rule asks for nothing on the book's records, and replayed round by round (each
    round one session of each record), the learning rates each round added are exactly those the rule asked
    for, read from both records' runs trained before it."""
    plan, parts = _fashion_sessions(root)
    assert panel.Panel(parts, plan).widening() == {}
    rounds = {len(results.provenance) for results in parts.values()}
    assert rounds == {3}, rounds                        # the registered grid and two rounds
    for k in range(1, 3):
        before = {name: records_module.Results(dataclasses.replace(results.experiment, runs=tuple(
            r for r in results.experiment.runs if r.run_id in {run for s in results.provenance[:k] for run in s["runs"]})),
            results.folder) for name, results in parts.items()}
        wanted = panel.Panel(before, plan).widening()
        trained = {name: {(r.loss, r.noise, r.rate): r.lr for r in results.experiment.runs
                          if r.run_id in results.provenance[k]["runs"]} for name, results in parts.items()}
        assert trained == wanted, k


def test_the_fashion_widening_check_can_fail(root):
    """The Fashion-MNIST records as registered: the rule asks for the first rung below, 0.01, wherever
    round 1 trained it."""
    plan, parts = _fashion_sessions(root)
    registered = panel.Panel.load(plan, root / "book" / "records", registered=True)
    for name, results in parts.items():
        assert {r.run_id for r in registered.parts[name].results.experiment.runs} == set(results.provenance[0]["runs"])
    first = {name: {k: lrs[0] for k, lrs in widened.items()} for name, widened in experiments.FASHION_WIDENED.items()}
    assert registered.widening() == first != {}


def _which_sessions(root):
    """The which-weighting plan and its records."""
    records = root / "book" / "records"
    plan = criteria.load("which-weighting-digits", records)
    return plan, experiments.load_plan(plan, records)


def _trained_in(results, k):
    """``{(loss, noise, rate): lr}`` of the runs session ``k`` of a record trained."""
    return {(r.loss, r.noise, r.rate): r.lr for r in results.experiment.runs if r.run_id in results.provenance[k]["runs"]}


def _views_before(results):
    """For each later session ``k`` of a record: ``k`` and the record as the sessions before it left it."""
    for k in range(1, len(results.provenance)):
        before = {run for s in results.provenance[:k] for run in s["runs"]}
        yield k, records_module.Results(dataclasses.replace(results.experiment, runs=tuple(
            r for r in results.experiment.runs if r.run_id in before)), results.folder)


def test_the_which_weighting_widening_is_finished_and_each_round_trained_what_it_asked(root):
    """Which weighting, when: the rule asks for nothing on the book's records, and replayed record by record
    and round by round (each round one session), the learning rates each round added are exactly those
    the rule asked for, read from the record's runs trained before it."""
    plan, parts = _which_sessions(root)
    assert procedures.Procedures(parts, plan).widening() == {}
    for name, results in parts.items():
        for k, view in _views_before(results):
            assert _trained_in(results, k) == procedures.Procedures({name: view}, plan).widening().get(name, {}), \
                (name, k)


def _token_sessions(root):
    """The token-weighting plan and its records."""
    records = root / "book" / "records"
    plan = criteria.load("token-weighting-corpus", records)
    return plan, experiments.load_plan(plan, records)


def test_the_token_weighting_widening_is_finished_and_each_round_trained_what_it_asked(root):
    """Token weighting: the rule asks for nothing on the book's records, and replayed record by record and
    round by round (each round one session), the learning rates each round added are exactly those the rule
    asked for, read from the record's runs trained before it (a record's choices read its own runs alone)."""
    plan, parts = _token_sessions(root)
    assert token_weighting.TokenWeighting(parts, plan).widening() == {}
    for name, results in parts.items():
        for k, view in _views_before(results):
            asked = token_weighting.TokenWeighting({**parts, name: view}, plan).widening().get(name, {})
            assert _trained_in(results, k) == asked, (name, k)


@pytest.mark.parametrize("sessions, claims", [(_which_sessions, procedures.Procedures),
                                              (_token_sessions, token_weighting.TokenWeighting)],
                         ids=["which-weighting", "token-weighting"])
def test_the_widening_check_can_fail(root, sessions, claims):
    """The records as registered (their first sessions alone): the rule asks for something, exactly what
    each record's second session trained."""
    plan, parts = sessions(root)
    asked = claims.load(plan, root / "book" / "records", registered=True).widening()
    assert asked != {}
    assert asked == {name: _trained_in(results, 1) for name, results in parts.items() if len(results.provenance) > 1}
