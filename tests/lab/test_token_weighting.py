"""dmcore.lab.token_weighting: the claims of the token-weighting records, on synthetic records whose answers
are known (the records' runs as defined, each run's accuracy and negative log-likelihood by formula)."""

import math

import pytest
from test_judge import Synthetic

from dmcore.lab import criteria, experiments, token_weighting

NAMES = tuple(f"token-weighting-{key}" for key in experiments.TOKEN)


@pytest.fixture(scope="module")
def plan(root):
    return criteria.load(NAMES[0], root / "book" / "records")


def _claims(plan, accuracy, nll, best=lambda loss: 0.003):
    """The claims on synthetic records: a run's accuracy is ``accuracy(record, loss, rate)`` plus a peak at
    learning rate ``best(loss)`` and a little seed noise, its negative log-likelihood ``nll(...)`` likewise."""
    def record(name):
        key = name.removeprefix("token-weighting-")

        def acc(loss, lr, noise, rate, seed):
            peak = -abs(math.log10(lr) - math.log10(best(loss)))
            return 0.5 + 0.05 * peak + accuracy(key, loss, rate) + 0.002 * ((seed * 7 + len(loss)) % 5)

        def metrics(loss, lr, noise, rate, seed):
            return {"test_nll": 2.0 + nll(key, loss, rate) + 0.01 * ((seed * 3 + len(loss)) % 4)}
        return Synthetic(acc, name, metrics)
    return token_weighting.TokenWeighting({name: record(name) for name in NAMES}, plan)


def as_predicted_accuracy(key, loss, rate):
    if rate == 0:
        return 0.0 if loss == "cce" else -0.02                       # CCE ahead on clean targets
    if loss.startswith("dm"):
        return 0.05 if key == "small" else -0.03                     # DM ahead where CCE memorises, behind elsewhere
    return -0.1 if loss == "dft" else 0.0


def as_predicted_nll(key, loss, rate):
    return 0.0 if loss == "cce" else 0.5                             # every other weighting costs likelihood


def test_the_claims_follow_the_records(plan):
    T = _claims(plan, as_predicted_accuracy, as_predicted_nll)
    for rule in T.judged:
        assert len(T.tests(rule)) == 32
    assert [T.overall(c) for c in token_weighting.CLAIMS] == ["holds", "holds", "does not hold", "holds",
                                                              "does not hold"]
    raw = sorted(t.paired.p for t in T.tests("early").values())
    assert min(t.adjusted for t in T.tests("early").values()) == pytest.approx(min(1.0, 32 * raw[0]))
    c = T.tests("final")["N", NAMES[1], "dm", "cce", ("symmetric", 0.3), "test_nll"]
    assert c.direction == "worse" and c.paired.mean == pytest.approx(-0.5, abs=0.02)   # oriented: + favours DM
    assert T.choice(NAMES[1], "dm", ("symmetric", 0.6), "final").family == "dm"
    assert not T.verdict("S", "final").provisional and T.widening() == {} and T.edge_choices("early") == []
    assert "small dm vs cce symmetric 0.3 test_acc: +5.0" in T.verdict("S", "early").evidence


def test_the_clean_claim_fails_when_one_weighting_beats_cce(plan):
    better_gce = lambda key, loss, rate: 0.02 if (loss == "gce" and rate == 0) else as_predicted_accuracy(key, loss, rate)
    T = _claims(plan, better_gce, as_predicted_nll)
    assert T.overall("C") == "does not hold"
    assert T.tests("final")["C", NAMES[0], "cce", "gce", ("symmetric", 0.0), "test_acc"].direction == "worse"


def test_a_choice_at_the_grids_edge_is_provisional_and_asks_for_the_next_rung(plan):
    T = _claims(plan, as_predicted_accuracy, as_predicted_nll, best=lambda loss: 0.03 if loss == "dft" else 0.003)
    assert T.choice(NAMES[0], "dft", ("symmetric", 0.3), "final").lr == 0.01
    assert T.verdict("D", "final").provisional and not T.verdict("S", "final").provisional
    wanted = T.widening()
    assert set(wanted) == set(NAMES)
    assert all(w == {("dft", "symmetric", r): 0.03 for r in (0.0, 0.3, 0.6)} for w in wanted.values())
    with pytest.raises(ValueError, match="unknown claim 'X'"):
        T.verdict("X", "final")
