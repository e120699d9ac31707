"""dmcore.lab.tuning: the noisy-validation choice, the default, the oracle and the paired comparison."""

import math
from types import SimpleNamespace

import pytest

from dmcore.lab import experiments, records, tuning


class FakeResults:
    """Rows like a record's: the tuning grid of two families at one setting, five seeds."""

    def __init__(self, score):
        self.experiment = SimpleNamespace(name="fake")
        self.runs = []
        for family in ("cce", "dm"):
            for loss, lr in tuning.configurations(family):
                for seed in range(5):
                    val, test = score(loss, lr, seed)
                    self.runs.append({"loss": loss, "lr": lr, "noise": "symmetric", "rate": 0.4, "seed": seed,
                                      "val_acc_noisy": val, "final_test_acc": test, "test_ece": 0.1,
                                      "logit_range": 10.0, "fit_noisy": 0.2})

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
