"""dmcore.lab.tuning: the noisy-validation choice, the default, the oracle and the paired comparison."""

import math
from types import SimpleNamespace

import pytest

from dmcore.lab import experiments, records, tuning


def _evaluation(step, val, test, clean_val=None):
    return {"step": step, "val_acc_noisy": val, "test_acc": test, "val_acc": test if clean_val is None else clean_val,
            "test_ece": 0.1, "logit_range": 10.0, "fit_noisy": 0.2}


class FakeResults:
    """Rows like a record's: the tuning grid of two families at one setting, five seeds; each run's
    history an evaluation at initialisation and the final one (``score``), or ``history(loss, lr, seed)``."""

    at = records.Results.at

    def __init__(self, score=None, history=None):
        self.experiment = SimpleNamespace(name="fake", families=())
        self.runs, self._histories = [], {}
        for family in ("cce", "dm"):
            for loss, lr in tuning.configurations(family):
                for seed in range(5):
                    run_id = f"{loss}|{lr}|{seed}"
                    if history is None:
                        val, test = score(loss, lr, seed)
                        evaluations = [_evaluation(0, 0.1, 0.1), _evaluation(3000, val, test)]
                    else:
                        evaluations = history(loss, lr, seed)
                    diverged = next((h["step"] for h in evaluations if math.isnan(h["test_acc"])), math.nan)
                    self._histories[run_id] = evaluations
                    self.runs.append({"run_id": run_id, "loss": loss, "lr": lr, "noise": "symmetric", "rate": 0.4,
                                      "seed": seed, "diverged_step": diverged})

    def select(self, **match):
        return [r for r in self.runs if all(r[k] == v for k, v in match.items())]


def test_the_choice_is_made_on_noisy_validation_never_on_test():
    def score(loss, lr, seed):
        if loss == "dm:lam=2,beta=8" and lr == 0.2:
            return 0.50, 0.60 + 0.01 * seed          # best on validation
        if loss == "dm" and lr == 0.01:
            return 0.30, 0.90                        # best on test: only the oracle takes it
        return 0.40, 0.70
    results = FakeResults(score)
    chosen = tuning.choose(results, "dm", "symmetric", 0.4)
    assert (chosen.loss, chosen.lr, chosen.setting) == ("dm:lam=2,beta=8", 0.2, "dm:lam=2,beta=8, lr 0.2")
    assert chosen.values == (0.60, 0.61, 0.62, 0.63, 0.64) and chosen.seeds == (0, 1, 2, 3, 4)
    assert math.isclose(chosen.test.mean, 0.62) and chosen.metrics["test_ece"] == 0.1
    assert (tuning.oracle(results, "dm", "symmetric", 0.4).loss, tuning.oracle(results, "dm", "symmetric", 0.4).lr) == ("dm", 0.01)
    assert (tuning.default(results, "dm", "symmetric", 0.4).loss, tuning.default(results, "dm", "symmetric", 0.4).lr) == ("dm", 0.05)


def test_early_stopping_reads_the_noisy_validation_labels_only():
    """Each run stops at its evaluation with the best noisy-validation accuracy; the clean validation
    labels and the test set may say anything without changing the checkpoint or the choice."""
    def history(clean_val, test_at_1000):
        def make(loss, lr, seed):
            bonus = 0.1 if (loss, lr) == ("dm", 0.01) else 0.0
            return [_evaluation(0, 0.1, 0.1, clean_val), _evaluation(1000, 0.6 + bonus, test_at_1000, clean_val),
                    _evaluation(2000, 0.6 + bonus, 0.99, clean_val), _evaluation(3000, 0.5, 0.7, 0.95)]
        return make
    seen = set()
    for clean_val, test_at_1000 in ((0.2, 0.8), (0.99, 0.3), (0.5, 0.5)):
        results = FakeResults(history=history(clean_val, test_at_1000))
        chosen = tuning.choose(results, "dm", "symmetric", 0.4, rule="early")
        assert (chosen.loss, chosen.lr, chosen.rule) == ("dm", 0.01, "early")
        assert chosen.values == (test_at_1000,) * 5          # the first of the two tied evaluations
        assert math.isclose(chosen.validation, 0.7)
        final = tuning.choose(results, "dm", "symmetric", 0.4)
        assert final.values == (0.7,) * 5 and math.isclose(final.validation, 0.5)
        best = tuning.at(results, "dm", 0.01, "symmetric", 0.4, rule="best")
        assert best.values == (0.99,) * 5
        seen.add(chosen.values)
    assert len(seen) == 3
    with pytest.raises(ValueError, match="unknown checkpoint rule 'latest'"):
        records.checkpoint(results._histories["dm|0.01|0"], "latest", "test_acc")


def test_a_configuration_with_a_diverged_seed_is_never_chosen():
    def score(loss, lr, seed):
        if loss == "cce-dn" and lr == 0.2:
            return (math.nan, math.nan) if seed == 3 else (0.9, 0.9)
        return 0.4, 0.7
    chosen = tuning.choose(FakeResults(score), "cce", "symmetric", 0.4)
    assert not (chosen.loss == "cce-dn" and chosen.lr == 0.2)


def test_paired_verdicts():
    def run(family, values):
        return tuning.Choice(family, family, 0.05, "symmetric", 0.4, 0.5, records.Stat.of(values), tuple(values),
                             tuple(range(len(values))), {})
    assert tuning.paired(run("dm", [0.8, 0.82, 0.81]), run("cce", [0.7, 0.71, 0.7])).p < 0.01
    a = run("dm", [0.80, 0.82, 0.81, 0.83, 0.80])
    assert tuning.paired(a, run("cce", [0.70, 0.71, 0.72, 0.70, 0.71])).verdict == "better"
    assert tuning.paired(run("cce", [0.70, 0.71, 0.72, 0.70, 0.71]), a).verdict == "worse"
    noisy = tuning.paired(a, run("cce", [0.85, 0.75, 0.86, 0.78, 0.80]))
    assert noisy.verdict == "unresolved" and (noisy.wins, noisy.losses) == (2, 2)
    assert tuning.paired(a, run("cce", [0.70, 0.71, 0.72, 0.70, 0.71])).fmt() == "+10.4 ± 2.1 (5-0)"
    with pytest.raises(ValueError, match="different seeds"):
        tuning.paired(a, run("cce", [0.7, 0.7, 0.7]))
    with pytest.raises(ValueError, match="unknown loss family 'hinge'"):
        tuning.configurations("hinge")


def test_every_loss_gets_the_same_budget():
    """The fairness of the tuning record: the same learning rates and the same number of configurations
    for every loss family, each configuration with every seed, at every noise setting."""
    record = experiments.get("label-noise-tuned")
    sizes = {family: len(tuning.configurations(family)) for family in experiments.TUNING}
    assert set(sizes.values()) == {6}
    settings = {(s, r) for s, rates in experiments.TUNING_NOISE for r in rates}
    for family in experiments.TUNING:
        for loss, lr in tuning.configurations(family):
            for noise, rate in settings:
                seeds = [r.seed for r in record.runs if (r.loss, r.lr, r.noise, r.rate) == (loss, lr, noise, rate)]
                assert seeds == record.seeds == [0, 1, 2, 3, 4], (loss, lr, noise, rate)
    assert len(record.runs) == len(experiments.TUNING) * 6 * len(settings) * 5


def test_the_fair_record_offers_every_family_the_same_grid_and_derivative_normalisation():
    """``label-noise-fair``: every family 2 settings x at least the 6 learning rates from 0.003 to 1 (MAE's
    family widened below, where its choice sat), every configuration with every seed at every setting,
    and derivative normalisation for each family that lacks it."""
    record = experiments.get("label-noise-fair")
    named = dict(record.families)
    assert {len(settings) for settings in named.values()} == {2}
    for family, settings in named.items():
        built_in = family in ("dm", "imae", "nce+rce")      # DN built in; NCE+RCE has no weight to normalise
        assert built_in or f"{family}-dn" in settings, family
        lrs = sorted({r.lr for r in record.runs if r.loss in settings})
        extra = experiments.FAIR_MAE_LRS if family == "mae" else ()
        assert lrs == sorted(experiments.FAIR_LRS + extra), family
        for loss in settings:
            for lr in lrs:
                seeds = [r.seed for r in record.runs if (r.loss, r.lr) == (loss, lr)]
                assert sorted(set(seeds)) == [0, 1, 2, 3, 4] and len(seeds) == 5 * 4, (loss, lr)
    assert len(record.runs) == (len(named) * 6 + len(experiments.FAIR_MAE_LRS)) * 2 * 4 * 5
    assert record.dataset.endswith("-fresh")
