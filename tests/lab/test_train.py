"""dmcore.lab.train: batched training equals training one run at a time; metrics and loss names."""

import math

import pytest
import torch

from dmcore.lab import data, estimate, noise, train

SMALL = train.Protocol(steps=30, batch_size=50, lr=0.05, eval_every=10)


@pytest.fixture(scope="module")
def digits():
    return data.digits()


def assert_same_history(got, expected, exact=False, context=None):
    """Every metric of every evaluation of ``got`` equal to ``expected``'s (``exact``) or within a relative
    1e-9 and an absolute 1e-12; NaN where the other is NaN."""
    for a, b in zip(got, expected):
        for key, value in a.items():
            same = value == b[key] if exact else math.isclose(value, b[key], rel_tol=1e-9, abs_tol=1e-12)
            assert (math.isnan(value) and math.isnan(b[key])) or same, (context, key)


def test_batched_training_equals_one_run_at_a_time(digits):
    runs = [train.Run("cce", "symmetric", 0.2, 0), train.Run("dm", "symmetric", 0.4, 1),
            train.Run("gce", "pair", 0.3, 2), train.Run("cce-dn", "symmetric", 0.0, 3)]
    together = train.train_runs("mlp", digits, runs, SMALL, dtype=torch.float64)
    for run, batched in zip(runs, together):
        alone = train.train_runs("mlp", digits, [run], SMALL, dtype=torch.float64)[0]
        assert len(batched["history"]) == len(alone["history"]) == 4       # steps 0, 10, 20, 30
        assert_same_history(batched["history"], alone["history"], context=run)


def test_metrics_describe_the_noise(digits):
    (result,) = train.train_runs("mlp", digits, [train.Run("cce", "symmetric", 0.4, 0)],
                                 train.Protocol(steps=200, batch_size=50, eval_every=100))
    first, last = result["history"][0], result["history"][-1]
    assert result["realised_rate"] == round(0.4 * len(digits.y_train)) / len(digits.y_train)
    assert first["step"] == 0 and last["step"] == 200
    assert abs(first["p_clean"] - 0.1) < 0.05 and abs(first["p_noisy"] - 0.1) < 0.05   # near uniform at the start
    assert last["fit_clean"] > last["fit_noisy"] and last["p_clean"] > last["p_noisy"]
    assert last["test_acc"] > 0.5 and result["best_test_acc"] >= result["final_test_acc"]
    assert last["weight_mean"] > 0 and last["weight_var"] > 0


def test_validation_logit_and_class_metrics(digits):
    split = data.with_validation(digits, 0.2, seed=0)
    (result,) = train.train_runs("mlp", split, [train.Run("cce", "symmetric", 0.4, 0)],
                                 train.Protocol(steps=200, batch_size=50, eval_every=100))
    first, last = result["history"][0], result["history"][-1]
    # the model predicts the true class, which the corrupted validation labels give for 60% of examples
    assert last["val_acc"] > 0.8 and abs(last["val_acc_noisy"] - 0.6 * last["val_acc"]) < 0.1
    assert last["logit_range"] > first["logit_range"] > 0
    counts = torch.bincount(split.y_test, minlength=10).double()
    weighted = sum(a * n for a, n in zip(result["final_class_acc"], counts.tolist())) / counts.sum().item()
    assert math.isclose(weighted, result["final_test_acc"], rel_tol=1e-6)
    (plain,) = train.train_runs("mlp", digits, [train.Run("cce", "symmetric", 0.4, 0)],
                                train.Protocol(steps=10, batch_size=50, eval_every=10))
    assert math.isnan(plain["history"][-1]["val_acc"]) and math.isnan(plain["history"][-1]["val_acc_noisy"])
    assert math.isnan(plain["history"][-1]["val_noise_est"])


def test_the_validation_noise_estimate_is_confident_learning_on_the_noisy_validation_labels(digits, monkeypatch):
    """``val_noise_est`` is :func:`dmcore.lab.estimate.confident_joint` on the run's validation
    probabilities and noisy validation labels (recomputed here from the logits the trainer saw), near the
    rate the labels were corrupted at; NaN at an evaluation whose logits are not finite."""
    split = data.with_validation(digits, 0.2, seed=0)
    seen = []
    real = train._metrics

    def keeping(specs, splits, logits_train, logits_test, logits_val=None, logits_fresh=None):
        seen.append((splits.val_observed[0].clone(), logits_val[0].clone()))
        return real(specs, splits, logits_train, logits_test, logits_val, logits_fresh)

    monkeypatch.setattr(train, "_metrics", keeping)
    (result,) = train.train_runs("mlp", split, [train.Run("cce", "symmetric", 0.4, 0)],
                                 train.Protocol(steps=200, batch_size=50, eval_every=100))
    for h, (labels, logits) in zip(result["history"], seen):
        assert h["val_noise_est"] == estimate.confident_joint(labels, logits.double().softmax(1)).rate
    assert abs(result["history"][-1]["val_noise_est"] - 0.4) < 0.1
    assert result["history"][0]["val_noise_est"] != result["history"][-1]["val_noise_est"]
    logits = torch.zeros(4, 3).index_fill(0, torch.tensor([2]), math.nan)
    assert math.isnan(train._noise_estimate(torch.tensor([0, 1, 2, 0]), logits))


def test_clean_runs_have_no_noisy_metrics(digits):
    (result,) = train.train_runs("mlp", digits, [train.Run("mae", "symmetric", 0.0, 0)],
                                 train.Protocol(steps=10, batch_size=50, eval_every=10))
    assert math.isnan(result["history"][-1]["fit_noisy"]) and result["realised_rate"] == 0


def test_noise_scheme_names():
    labels = torch.arange(10).repeat(20)
    mapped = noise.by_name(labels, "mnist-map", 0.5, 10, seed=0)
    moved = labels[mapped.noise_mask]
    assert set(moved.tolist()) == {2, 3, 5, 6, 7} and len(moved) == 5 * 10
    assert all(int(mapped.labels[i]) == {2: 7, 3: 8, 5: 6, 6: 5, 7: 1}[int(labels[i])] for i in mapped.noise_mask.nonzero())
    assert set(labels[noise.by_name(labels, "cifar10-map", 0.5, 10, 0).noise_mask].tolist()) == {2, 3, 4, 5, 9}
    with pytest.raises(ValueError, match="unknown noise scheme 'asym'"):
        noise.by_name(labels, "asym", 0.2, 10, seed=0)


def test_loss_names():
    assert train.parse_loss("dm").weight.params == {"lam": 0.5, "beta": 8.0}
    assert train.parse_loss("dm:lam=1,beta=16").weight.params == {"lam": 1.0, "beta": 16.0}
    assert train.parse_loss("gce:q=0.5").weight.params == {"q": 0.5}
    assert train.parse_loss("cce-dn").edf_path and not train.parse_loss("cce").edf_path
    assert train.parse_loss("dm").eps == train.parse_loss("imae").eps == 1e-6     # the papers' code
    assert train.parse_loss("dm:eps=0").eps == 0 and train.parse_loss("cce-dn").eps == 0
    for bad, message in [("hinge", "unknown loss"), ("imae-dn", "unknown loss"), ("dm:gamma=2", "no parameter 'gamma'"),
                         ("dm:lam=x", "must be a number"), ("dm:lam=-1", "lam must lie in"),
                         ("dm:eps=-1e-6", "eps must be >= 0"), ("cce:eps=1e-6", "no parameter 'eps'")]:
        with pytest.raises(ValueError, match=message):
            train.parse_loss(bad)
    with pytest.raises(ValueError, match="unknown noise scheme"):
        noise.by_name(torch.zeros(4, dtype=torch.long), "open-set", 0.2, 10, 0)


@pytest.mark.parametrize("model", ["mnist1d_cnn", "mlp"])
def test_float32_runs_do_not_depend_on_their_companions(model, digits, monkeypatch):
    """In float32 on the CPU a run gets the same history, bit for bit, whether it is trained alone or
    in a group of runs with the same loss and others: the CNN's kernel sums each run's gradients in an
    order of its own, each run's loss is computed on its own batch (so an elementwise operation sees
    the same shape, and an element the same vector lane or scalar tail, whatever the group), and the
    optimiser acts on each run separately. The records' bitwise reproduction of a sample relies on it.
    The CNN's PyTorch path (``DMCORE_CPU_KERNEL=0``) stacks the runs in batched matrix products, which
    do not have this property; the test runs the kernel, whatever the suite runs under."""
    monkeypatch.setenv("DMCORE_CPU_KERNEL", "1")
    if model == "mnist1d_cnn":
        full = data.mnist1d()
        dataset = data.Dataset("mnist1d-small", full.x_train[:600], full.y_train[:600], full.x_test[:200],
                               full.y_test[:200], full.num_classes)
    else:
        dataset = digits
    losses = ["cce", "mae", "gce", "imae", "dm", "gce-dn"]
    runs = [train.Run(loss, "symmetric", 0.4, seed) for loss in losses for seed in range(3)]
    together = train.train_runs(model, dataset, runs, SMALL)
    for run, batched in zip(runs[::3] + runs[2::3], together[::3] + together[2::3]):
        alone = train.train_runs(model, dataset, [run], SMALL)[0]
        assert_same_history(batched["history"], alone["history"], exact=True, context=run)


def test_a_diverged_run_is_recorded_and_leaves_the_others_alone(digits, monkeypatch):
    """From step 12 on, run 1's logits overflow (injected): it records the step, reports NaN from
    then on, keeps its best accuracy from before, and runs 0 and 2 train exactly as they would alone."""
    runs = [train.Run("cce", "symmetric", 0.2, 0), train.Run("dm", "symmetric", 0.2, 1), train.Run("gce", "pair", 0.2, 2)]
    alone = [train.train_runs("mlp", digits, [run], SMALL, dtype=torch.float64)[0] for run in runs]
    real = train._stacked

    def overflowing(base, shared_input=False):
        forward, calls = real(base, shared_input), [0]
        if shared_input:
            return forward

        def step(params, buffers, x):
            calls[0] += 1
            logits = forward(params, buffers, x)
            return logits.index_fill(0, torch.tensor([1]), math.inf) if calls[0] >= 12 else logits
        return step

    monkeypatch.setattr(train, "_stacked", overflowing)
    together = train.train_runs("mlp", digits, runs, SMALL, dtype=torch.float64)
    assert together[1]["diverged_step"] == 12
    assert [h["step"] for h in together[1]["history"]] == [0, 10, 20, 30]
    # step 10, still training: the same as alone (val_acc: NaN without a split)
    assert_same_history(together[1]["history"][1:2], alone[1]["history"][1:2], exact=True)
    assert all(math.isnan(v) for h in together[1]["history"][2:] for k, v in h.items() if k != "step")
    assert math.isnan(together[1]["final_test_acc"])
    assert together[1]["best_test_acc"] == max(h["test_acc"] for h in alone[1]["history"][:2])
    for r in (0, 2):
        assert together[r]["diverged_step"] is None
        assert_same_history(together[r]["history"], alone[r]["history"], context=runs[r])


def test_new_loss_names():
    assert train.parse_loss("sce").weight.params == {"alpha": 0.1, "beta": 1.0, "A": math.log(1e-4)}
    assert train.parse_loss("sce:A=-4").weight.params == {"alpha": 0.1, "beta": 1.0, "A": -4.0}
    assert train.parse_loss("sce-dn").edf_path and train.parse_loss("poly1-dn").eps == 0.0
    assert train.parse_loss("poly1:epsilon=2").weight.params == {"epsilon": 2.0}
    spec = train.parse_loss("nce+rce:alpha=1,beta=100")
    assert spec.weight is None and not spec.edf_path            # NCE reads the whole softmax: no w(p)
    assert train.parse_loss("normal:psi=0.25,beta=8").edf_path and train.parse_loss("normal").eps == 1e-6
    assert train.parse_loss("beta:alpha=4,eta=2").weight.params == {"alpha": 4.0, "eta": 2.0}
    assert train.parse_loss("exponential:beta=-2").weight.params == {"beta": -2.0}
    for bad, message in [("nce+rce-dn", "unknown loss"), ("poly1:epsilon=-3", "epsilon must lie in"),
                         ("sce:alpha=0,beta=0", "must not both be 0"), ("beta:alpha=0.5", "alpha must lie in")]:
        with pytest.raises(ValueError, match=message):
            train.parse_loss(bad)


def test_runs_with_their_own_learning_rates_equal_runs_trained_apart(digits):
    """Runs of several learning rates are trained in one call by rate: each equals its training alone
    under a protocol with that rate, and a run without a rate takes the protocol's."""
    runs = [train.Run("cce", "symmetric", 0.2, 0, lr=0.2), train.Run("sce", "symmetric", 0.2, 1),
            train.Run("nce+rce", "symmetric", 0.2, 2, lr=0.01), train.Run("poly1", "symmetric", 0.2, 3, lr=0.2)]
    assert runs[0].run_id == "cce|symmetric:0.2|lr=0.2|seed=0" and runs[1].run_id == "sce|symmetric:0.2|seed=1"
    together = train.train_runs("mlp", digits, runs, SMALL, dtype=torch.float64)
    assert [r["run_id"] for r in together] == [r.run_id for r in runs]
    assert "lr" not in together[1] and together[0]["lr"] == 0.2
    for run, batched in zip(runs, together):
        protocol = SMALL if run.lr is None else train.Protocol(steps=30, batch_size=50, lr=run.lr, eval_every=10)
        alone = train.train_runs("mlp", digits, [train.Run(run.loss, run.noise, run.rate, run.seed)], protocol,
                                 dtype=torch.float64)[0]
        assert batched["final_test_acc"] == alone["final_test_acc"]
        assert_same_history(batched["history"], alone["history"], context=run)


def test_expected_calibration_error_by_hand():
    # confidences 0.9, 0.9 (one right) and 0.5 (right): bins (13/15, 14/15] and (7/15, 8/15]
    logits = torch.log(torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.5, 0.5]], dtype=torch.float64))
    labels = torch.tensor([0, 1, 0])
    expected = (2 / 3) * abs(0.5 - 0.9) + (1 / 3) * abs(1.0 - 0.5)
    assert math.isclose(train.expected_calibration_error(logits, labels), expected, rel_tol=1e-12)
    sure = torch.tensor([[50.0, 0.0], [0.0, 50.0]])
    assert train.expected_calibration_error(sure, torch.tensor([0, 1])) < 1e-12
    assert math.isclose(train.expected_calibration_error(sure, torch.tensor([1, 0])), 1.0, rel_tol=1e-12)
    assert math.isnan(train.expected_calibration_error(torch.tensor([[math.inf, 0.0]]), torch.tensor([0])))


def test_training_leaves_the_callers_random_state_and_allocator_alone(digits, monkeypatch):
    monkeypatch.setattr(train, "keep_freed_memory", lambda: pytest.fail("train_runs changed malloc's settings"))
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    train.train_runs("mlp", digits, [train.Run("cce", seed=3)], train.Protocol(steps=2, batch_size=50, eval_every=1))
    assert torch.equal(torch.get_rng_state(), before)


def test_batchnorm_models_are_evaluated_in_eval_mode():
    """The running statistics, not the evaluated batch's, and they are left as they were."""
    from torch.func import stack_module_state

    from dmcore.lab import models
    torch.manual_seed(0)
    nets = [models.resnet20(10) for _ in range(2)]
    for net in nets:
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2)
    params, buffers = stack_module_state(nets)
    saved = {k: v.clone() for k, v in buffers.items()}
    x = torch.randn(6, 3, 32, 32)
    base = models.resnet20(10).to("meta")
    logits = train._evaluate(base, params, buffers, x, chunk=4)
    for net, got in zip(nets, logits):
        torch.testing.assert_close(got, net.eval()(x), rtol=1e-5, atol=1e-5)
    assert all(torch.equal(buffers[k], saved[k]) for k in buffers) and base.training


def test_training_updates_the_batchnorm_statistics_it_evaluates_with(digits):
    """A ResNet trained by train_runs: evaluation in eval mode uses running statistics that training moved."""
    from dmcore.lab.data import Dataset
    gen = torch.Generator().manual_seed(0)
    ds = Dataset("tiny", torch.randn(16, 3, 32, 32, generator=gen), torch.randint(0, 10, (16,), generator=gen),
                 torch.randn(8, 3, 32, 32, generator=gen), torch.randint(0, 10, (8,), generator=gen), 10)
    seen = []
    original = train._evaluate

    def spy(base, params, buffers, x, chunk=1000):
        seen.append({k: v.clone() for k, v in buffers.items() if k.endswith("running_mean")})
        return original(base, params, buffers, x, chunk)
    import unittest.mock
    with unittest.mock.patch.object(train, "_evaluate", spy):
        train.train_runs("resnet20", ds, [train.Run("cce", seed=0)], train.Protocol(steps=2, batch_size=8, eval_every=2))
    assert any(not torch.equal(seen[0][k], seen[-1][k]) for k in seen[0])


# ---------------------------------------------------------------- instance-dependent noise

TINY = train.Protocol(steps=20, batch_size=50, eval_every=10)


@pytest.fixture(scope="module")
def digits_val(digits):
    return data.with_validation(digits, 0.2, seed=0)


@pytest.fixture
def clean_trainings(monkeypatch):
    """An empty cache of clean models for the test, and the list of the (dataset, seed) of each clean
    model trained during it."""
    monkeypatch.setattr(train, "_CLEAN_PROBS", {})
    trained, real = [], train._train_clean

    def counting(dataset, model, protocol, seed, device, dtype):
        trained.append((dataset.name, seed))
        return real(dataset, model, protocol, seed, device, dtype)
    monkeypatch.setattr(train, "_train_clean", counting)
    return trained


def most_likely_wrong(probs, labels):
    wrong = probs.clone()
    wrong[torch.arange(len(labels)), labels] = -1.0
    return wrong.argmax(1)


def test_instance_noise_trains_deterministically_from_the_clean_model(digits_val, clean_trainings, monkeypatch):
    """A sweep with instance:0.4 trains: round(0.4 N) flips on each split, each to the example's most likely
    wrong class under the clean CCE model of the run's seed (trained once, shared by the seed's runs), the
    same labels and results when the call is repeated from an empty cache, and the symmetric run exactly as
    alone (which trains no clean model)."""
    seen, real_splits = [], train._splits
    monkeypatch.setattr(train, "_splits", lambda *a, **k: seen.append(real_splits(*a, **k)) or seen[-1])
    runs = [train.Run("cce", "instance", 0.4, 0), train.Run("dm", "instance", 0.4, 0),
            train.Run("gce", "symmetric", 0.4, 2)]
    first = train.train_runs("mlp", digits_val, runs, TINY)
    splits = seen[-1]
    assert clean_trainings == [("digits-val0.2", 0)]
    n_train = len(digits_val.y_train)
    assert all(r["realised_rate"] == round(0.4 * n_train) / n_train for r in first)
    assert torch.equal(splits.observed[0], splits.observed[1])          # one clean model per seed, one draw
    train_p, val_p = train.clean_probs(digits_val, "mlp", TINY, seed=0)
    for r in (0, 1):
        for probs, clean, observed in ((train_p, digits_val.y_train, splits.observed[r]),
                                       (val_p, digits_val.y_val, splits.val_observed[r])):
            assert probs.dtype == torch.float64 and probs.shape == (len(clean), 10)
            torch.testing.assert_close(probs.sum(1), torch.ones(len(clean), dtype=torch.float64), rtol=0, atol=1e-12)
            flipped = observed != clean
            assert int(flipped.sum()) == round(0.4 * len(clean))
            assert torch.equal(observed[flipped], most_likely_wrong(probs, clean)[flipped])
            doubt = 1 - probs[torch.arange(len(clean)), clean]
            assert doubt[flipped].mean() > doubt[~flipped].mean()       # the flips fall on the doubted examples
        assert torch.equal(splits.noisy_mask[r], splits.observed[r] != digits_val.y_train)
    assert len(clean_trainings) == 1                                    # clean_probs above: from the cache

    monkeypatch.setattr(train, "_CLEAN_PROBS", {})
    again = train.train_runs("mlp", digits_val, runs, TINY)
    assert len(clean_trainings) == 2
    assert torch.equal(seen[-1].observed, splits.observed) and torch.equal(seen[-1].val_observed, splits.val_observed)
    for a, b in zip(again, first):
        assert a["final_test_acc"] == b["final_test_acc"]
        assert_same_history(a["history"], b["history"], exact=True, context=a["run_id"])

    (alone,) = train.train_runs("mlp", digits_val, [runs[2]], TINY)
    assert len(clean_trainings) == 2
    assert torch.equal(seen[-1].observed[0], splits.observed[2])
    assert_same_history(first[2]["history"], alone["history"], exact=True)


def test_clean_probs_average_the_evaluations_after_step_0_once_per_key(digits_val, clean_trainings, monkeypatch):
    """The clean model's softmax on the training split at steps 10 and 20 of 20 (not the untrained step 0),
    averaged; computed once per key, again for another seed, protocol, or dataset of the same name."""
    logged, real = [], train._evaluate

    def spy(base, params, buffers, x, chunk=1000):
        logits = real(base, params, buffers, x, chunk)
        if x.shape == digits_val.x_train.shape:
            logged.append(logits[0].double().softmax(1))
        return logits
    monkeypatch.setattr(train, "_evaluate", spy)
    train_p, val_p = train.clean_probs(digits_val, "mlp", TINY, seed=3)
    assert len(logged) == 3                                             # steps 0, 10, 20
    torch.testing.assert_close(train_p, (logged[1] + logged[2]) / 2, rtol=1e-12, atol=1e-15)
    assert val_p.shape == (len(digits_val.y_val), 10)
    again = train.clean_probs(digits_val, "mlp", TINY, seed=3)
    assert torch.equal(again[0], train_p) and torch.equal(again[1], val_p) and len(clean_trainings) == 1
    train.clean_probs(digits_val, "mlp", TINY, seed=4)
    train.clean_probs(digits_val, "mlp", train.Protocol(steps=10, batch_size=50, eval_every=10), seed=3)
    other = data.with_validation(data.digits(), 0.2, seed=1)           # the same name, other examples
    assert other.name == digits_val.name
    train.clean_probs(other, "mlp", TINY, seed=3)
    assert [seed for _, seed in clean_trainings] == [3, 4, 3, 3]


def test_evaluate_one_copy_at_a_time_where_the_model_asks():
    """The 2-D CNN is evaluated copy by copy with its plain forward (exactly each copy's forward, in
    chunks) and agrees with the stacked forward pass the MNIST-1D models take, to float32 rounding."""
    from torch.func import stack_module_state
    from dmcore.lab import models
    torch.manual_seed(0)
    copies = [models.FashionCNN() for _ in range(3)]
    params, buffers = stack_module_state(copies)
    x = torch.randn(5003, 1, 28, 28)        # more than one chunk of 5000, the last one ragged
    base = models.FashionCNN()
    assert base.evaluate_each
    each = train._evaluate(base, params, buffers, x)
    assert each.shape == (3, 5003, 10)
    for r, copy in enumerate(copies):
        with torch.no_grad():
            assert torch.equal(each[r, :5000], copy(x[:5000])) and torch.equal(each[r, 5000:], copy(x[5000:]))
    with torch.no_grad():
        stacked = base.forward_stacked(params, x.expand(3, *x.shape))
    torch.testing.assert_close(each, stacked, rtol=1e-4, atol=1e-4)
