"""dmcore.lab.estimate: the confident joint against its formula recomputed with loops, exact recovery
with a perfect model, the noise rate within a measured tolerance of the realised one under symmetric
and pair noise, the pair structure of the estimated joint, the disagreement baseline's bias, the
limit of pair noise above 0.5, determinism, bad input, and cleanlab where it is installed.

The synthetic model: clean labels uniform over C = 10 classes, scores z = mu e_y + eps with eps
standard normal, and probs = softmax(mu z), the exact posterior P(y | z) of that Gaussian mixture, so
the model is calibrated and its errors are the mixture's genuine ambiguities. mu = 3.0 gives a clean
accuracy of 0.896-0.905 over seeds 0-9 (N = 5000); mu = 2.1 gives about 0.70.

Measured over seeds 0-9 (noise seed s, model seed 1000 + s), estimate minus realised rate:

=========  ====  ======================  ===================  =============================
scheme     rate  confident joint          disagreement         confident joint, probs @ T
=========  ====  ======================  ===================  =============================
symmetric  0.2   +0.036 [+0.028, +0.042]  +0.076               +0.036 (same: affine in p)
symmetric  0.4   +0.040 [+0.034, +0.045]  +0.054               +0.040
symmetric  0.6   +0.031 [+0.025, +0.035]  +0.032               +0.031
pair       0.2   +0.038 [+0.032, +0.044]  +0.078               +0.034 [+0.031, +0.041]
pair       0.4   +0.042 [+0.039, +0.046]  +0.056               +0.023 [+0.018, +0.028]
pair       0.6   +0.033 [+0.028, +0.037]  +0.034               -0.178 [-0.182, -0.169]
=========  ====  ======================  ===================  =============================

(mean [min, max]; the last column feeds the noisy-label posterior p @ T, what a model fitted to the
noisy labels would output.) Hence the tolerance: the confident joint overestimates by 0 to 0.05 at
clean accuracy 0.9, its bias being the model's confident errors; at pair 0.6 the noisy posterior
makes the flipped class the likelier one and the estimate collapses, as no estimator from labels and
probabilities alone can avoid.
"""

import itertools

import numpy as np
import pytest
import torch

from dmcore.lab import estimate, noise

N, C = 5000, 10
MU_90, MU_70 = 3.0, 2.1            # clean accuracy about 0.90 and 0.70
TOLERANCE = 0.05                   # |estimate - realised| at clean accuracy 0.9, measured above
RATES = [0.2, 0.4, 0.6]


def clean_labels(seed: int, n: int = N) -> torch.Tensor:
    return torch.randint(0, C, (n,), generator=torch.Generator().manual_seed(seed))


def model_probs(clean: torch.Tensor, mu: float, seed: int) -> torch.Tensor:
    """The calibrated synthetic model of the module docstring, float64 ``(N, C)``."""
    z = torch.randn(len(clean), C, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    z[torch.arange(len(clean)), clean] += mu
    return torch.softmax(mu * z, 1)


def nominal_transition(scheme: str, rate: float) -> torch.Tensor:
    """``T[i, j] = P(noisy = j | clean = i)`` of the scheme as specified (not as realised)."""
    eye = torch.eye(C, dtype=torch.float64)
    if scheme == "symmetric":
        return eye * (1 - rate) + (1 - eye) * rate / (C - 1)
    return eye * (1 - rate) + torch.roll(eye, 1, 1) * rate     # c -> (c + 1) mod C


def reference(labels, probs, slack=estimate.THRESHOLD_SLACK):
    """Eqs. 1-3 with plain loops over examples and classes, as Python floats."""
    labels, probs = labels.tolist(), probs.double().tolist()
    k = len(probs[0])
    members = [[n for n, y in enumerate(labels) if y == i] for i in range(k)]
    t = [sum(probs[n][j] for n in members[j]) / len(members[j]) if members[j] else float("inf") for j in range(k)]
    counts = [[0] * k for _ in range(k)]
    for n, y in enumerate(labels):
        confident = [j for j in range(k) if probs[n][j] >= t[j] - slack]
        if confident:
            best = confident[0]
            for j in confident:
                if probs[n][j] > probs[n][best]:
                    best = j
            counts[y][best] += 1
    calibrated = [[counts[i][j] / sum(counts[i]) * len(members[i]) if members[i] else 0.0 for j in range(k)]
                  for i in range(k)]
    total = sum(map(sum, calibrated))
    joint = [[v / total for v in row] for row in calibrated]
    return joint, 1 - sum(joint[i][i] for i in range(k)), counts, t


# --- the formula -------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(4))
def test_matches_the_formula_recomputed_with_loops(seed):
    gen = torch.Generator().manual_seed(seed)
    n, k = 60, 4
    probs = torch.softmax(2 * torch.randn(n, k, generator=gen, dtype=torch.float64), 1)
    labels = torch.randint(0, k - 1 if seed == 3 else k, (n,), generator=gen)    # seed 3: class 3 never a label
    probs[:5] = torch.tensor([0.25, 0.25, 0.25, 0.25], dtype=torch.float64)      # ties: to the smallest index
    result = estimate.confident_joint(labels, probs)
    joint, rate, counts, t = reference(labels, probs)
    torch.testing.assert_close(result.joint, torch.tensor(joint, dtype=torch.float64), rtol=0, atol=1e-14)
    assert result.rate == pytest.approx(rate, abs=1e-14)
    assert result.counts.tolist() == counts and result.counts.dtype == torch.int64
    torch.testing.assert_close(result.thresholds, torch.tensor(t, dtype=torch.float64), rtol=0, atol=1e-15)
    # rows sum to the observed label frequencies; the joint sums to 1; unpacks as (joint, rate)
    torch.testing.assert_close(result.joint.sum(1), torch.bincount(labels, minlength=k).double() / n)
    assert result.joint.sum().item() == pytest.approx(1, abs=1e-14)
    assert tuple(result) == (result.joint, result.rate)
    if seed == 3:
        assert result.thresholds[3] == torch.inf and result.joint[3].sum() == 0 and result.joint[:, 3].sum() == 0
        assert result.transition[3].tolist() == [0.0, 0.0, 0.0, 1.0]              # no mass: the identity row


def test_an_example_at_its_class_mean_counts():
    """Class 1's three labelled probabilities are 0.2, and their mean rounds above 0.2 in float64:
    the slack keeps them counted."""
    labels = torch.tensor([0, 0, 1, 1, 1])
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.8, 0.2], [0.8, 0.2], [0.8, 0.2]], dtype=torch.float64)
    result = estimate.confident_joint(labels, probs)
    assert result.thresholds[1].item() > 0.2                                     # the rounding is real
    assert result.counts.tolist() == [[2, 0], [0, 3]] and result.rate == 0.0


@pytest.mark.parametrize("scheme", ["symmetric", "pair"])
def test_a_perfect_model_recovers_the_realised_joint_exactly(scheme):
    """One-hot probabilities on the clean class: every example is counted in (noisy, clean)."""
    clean = clean_labels(0)
    noisy = noise.by_name(clean, scheme, 0.4, C, seed=0)
    probs = torch.nn.functional.one_hot(clean, C).double()
    result = estimate.confident_joint(noisy.labels, probs)
    realised = torch.zeros(C, C, dtype=torch.float64)
    realised.index_put_((noisy.labels, clean), torch.ones(N, dtype=torch.float64), accumulate=True)
    realised /= N                                                                   # P(noisy = i, clean = j)
    torch.testing.assert_close(result.joint, realised, rtol=0, atol=1e-15)
    assert result.rate == pytest.approx(noisy.rate, abs=1e-12)
    torch.testing.assert_close(result.transition, noisy.transition, rtol=0, atol=1e-12)
    assert estimate.disagreement_rate(noisy.labels, probs) == noisy.rate


# --- accuracy on synthetic noise -----------------------------------------------------------------------

@pytest.mark.parametrize("scheme, rate", list(itertools.product(["symmetric", "pair"], RATES)))
def test_noise_rate_within_tolerance_of_the_realised_rate(scheme, rate):
    for seed in range(3):
        clean = clean_labels(seed)
        probs = model_probs(clean, MU_90, 1000 + seed)
        assert 0.89 < (probs.argmax(1) == clean).double().mean().item() < 0.91
        noisy = noise.by_name(clean, scheme, rate, C, seed=seed)
        error = estimate.confident_joint(noisy.labels, probs).rate - noisy.rate
        assert 0 <= error <= TOLERANCE, (scheme, rate, seed, error)       # an overestimate, within 0.05
        if rate < 0.6:                                                    # at 0.6 the two are level
            baseline = estimate.disagreement_rate(noisy.labels, probs) - noisy.rate
            assert baseline > error + 0.01, (scheme, rate, seed, baseline, error)


@pytest.mark.parametrize("rate", RATES)
def test_pair_noise_puts_the_off_diagonal_mass_on_the_next_class(rate):
    clean = clean_labels(0)
    noisy = noise.pair(clean, rate, C, seed=0)
    result = estimate.confident_joint(noisy.labels, model_probs(clean, MU_90, 1000))
    pair_mass = sum(result.joint[(c + 1) % C, c].item() for c in range(C))          # noisy c + 1, true c
    assert pair_mass / result.rate > 0.75                                           # measured 0.80-0.86
    transition = result.transition.clone()
    flip = torch.tensor([transition[c, (c + 1) % C].item() for c in range(C)])
    transition.fill_diagonal_(-1)
    assert transition.argmax(1).tolist() == [(c + 1) % C for c in range(C)]         # the largest flip, every class
    assert (flip - rate).abs().max() < 0.1                                          # measured 0.010, 0.040, 0.080


def test_symmetric_noise_spreads_the_off_diagonal_mass():
    clean = clean_labels(0)
    noisy = noise.symmetric(clean, 0.4, C, seed=0)
    transition = estimate.confident_joint(noisy.labels, model_probs(clean, MU_90, 1000)).transition
    off = transition[~torch.eye(C, dtype=torch.bool)]
    assert (off - 0.4 / (C - 1)).abs().max() < 0.03                                 # measured 0.026


def test_pair_noise_above_one_half_is_not_identifiable_from_the_noisy_posterior():
    """Fed p @ T, what a model fitted to the noisy labels outputs, the estimate follows the labels
    at pair 0.4 but collapses at 0.6, where the flipped class is the likelier label of every class."""
    clean = clean_labels(0)
    probs = model_probs(clean, MU_90, 1000)
    errors = {}
    for rate in (0.4, 0.6):
        noisy = noise.pair(clean, rate, C, seed=0)
        fitted = probs @ nominal_transition("pair", rate)                           # P(noisy label | x)
        errors[rate] = estimate.confident_joint(noisy.labels, fitted).rate - noisy.rate
    assert 0 <= errors[0.4] <= TOLERANCE
    assert errors[0.6] < -0.15                                                      # measured -0.18


def test_disagreement_bias_grows_with_model_error():
    """E[d] - r = (1 - a)(1 - C r / (C - 1)) under symmetric noise, a = the model's clean accuracy."""
    clean = clean_labels(0)
    noisy = noise.symmetric(clean, 0.2, C, seed=0)
    bias = {}
    for mu in (MU_90, MU_70):
        probs = model_probs(clean, mu, 1000)
        accuracy = (probs.argmax(1) == clean).double().mean().item()
        bias[mu] = estimate.disagreement_rate(noisy.labels, probs) - noisy.rate
        assert bias[mu] == pytest.approx((1 - accuracy) * (1 - C * 0.2 / (C - 1)), abs=0.015)
        confident = estimate.confident_joint(noisy.labels, probs).rate - noisy.rate
        assert 0 < confident < bias[mu]                                             # both over, CL less so
    assert 0.06 < bias[MU_90] < bias[MU_70] - 0.1                                   # at accuracy 0.7: about +0.23


# --- determinism and input --------------------------------------------------------------------------------

def test_deterministic_and_leaves_its_input_alone():
    clean = clean_labels(1, 2000)
    probs = model_probs(clean, MU_90, 7)
    labels = noise.symmetric(clean, 0.3, C, seed=1).labels
    kept_probs, kept_labels = probs.clone(), labels.clone()
    a, b = estimate.confident_joint(labels, probs), estimate.confident_joint(labels, probs)
    assert torch.equal(a.joint, b.joint) and a.rate == b.rate and torch.equal(a.counts, b.counts)
    assert estimate.disagreement_rate(labels, probs) == estimate.disagreement_rate(labels, probs)
    assert torch.equal(probs, kept_probs) and torch.equal(labels, kept_labels)
    # the order of the examples changes only the rounding of the thresholds' sums
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    shuffled = estimate.confident_joint(labels[order], probs[order])
    torch.testing.assert_close(shuffled.joint, a.joint, rtol=0, atol=1e-12)
    # float32 probabilities, NumPy arrays and lists read the same
    single = estimate.confident_joint(labels, probs.float())
    assert abs(single.rate - a.rate) < 2e-3
    as_numpy = estimate.confident_joint(labels.numpy(), probs.numpy())
    torch.testing.assert_close(as_numpy.joint, a.joint, rtol=0, atol=0)
    assert estimate.disagreement_rate(labels.tolist(), probs.numpy()) == estimate.disagreement_rate(labels, probs)


GOOD_LABELS = torch.tensor([0, 1, 2, 1])
GOOD_PROBS = torch.tensor([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]])


def _with(row, value):
    probs = GOOD_PROBS.clone()
    probs[row] = torch.tensor(value)
    return probs


@pytest.mark.parametrize("function", [estimate.confident_joint, estimate.disagreement_rate])
@pytest.mark.parametrize("labels, probs, kwargs, message", [
    (GOOD_LABELS, GOOD_PROBS[:, 0], {}, r"probs must be a 2-D floating-point tensor \(N, C\)"),
    (GOOD_LABELS, GOOD_PROBS.long(), {}, "probs must be a 2-D floating-point tensor"),
    (GOOD_LABELS[:3], GOOD_PROBS, {}, r"probs of shape \(4, 3\) does not match labels of shape \(3,\)"),
    (GOOD_LABELS, GOOD_PROBS, {"num_classes": 4}, "probs has 3 columns .* but num_classes is 4"),
    (GOOD_LABELS, _with(2, [0.5, float("nan"), 0.5]), {}, "probs must be finite .* row 2"),
    (GOOD_LABELS, _with(1, [1.2, -0.2, 0.0]), {}, "probs must be non-negative; row 1"),
    (GOOD_LABELS, _with(3, [0.5, 0.5, 0.1]), {}, r"sum to 1 \(within 1e-4\); row 3 sums to 1.1"),
    (torch.tensor([0, 1, 3, 1]), GOOD_PROBS, {}, r"label 3 is outside \[0, 2\]"),
    (torch.tensor([0, -1, 2, 1]), GOOD_PROBS, {}, r"label -1 is outside \[0, 2\]"),
    (GOOD_LABELS.float(), GOOD_PROBS, {}, "labels must be a 1-D integer tensor"),
    (torch.zeros(0, dtype=torch.long), torch.zeros(0, 3), {}, r"empty \(N = 0\)"),
])
def test_bad_input_is_refused_by_name(function, labels, probs, kwargs, message):
    with pytest.raises(ValueError, match=message):
        function(labels, probs, **kwargs)


def test_rows_summing_to_one_within_the_tolerance_pass():
    probs = _with(3, [0.3, 0.3, 0.40005])                # sums to 1.00005
    assert estimate.disagreement_rate(GOOD_LABELS, probs) == 0.25                 # row 3: label 1, predicted 2
    assert estimate.confident_joint(GOOD_LABELS, probs).counts.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]


# --- cleanlab -------------------------------------------------------------------------------------------

try:
    from cleanlab import count as cleanlab_count
except ImportError:  # not a dependency; the comparison runs where it happens to be installed
    cleanlab_count = None


@pytest.mark.skipif(cleanlab_count is None, reason="cleanlab is not installed (not a dependency of dmcore); "
                                                   "the comparison with cleanlab.count runs where it is")
@pytest.mark.parametrize("scheme, rate", [("symmetric", 0.2), ("pair", 0.4)])
def test_agrees_with_cleanlab(scheme, rate):
    """cleanlab rounds the calibrated counts to integers (each entry moves by less than one count) and
    raises a zero diagonal count to 1; on these data every diagonal count is positive."""
    clean = clean_labels(0)
    probs = model_probs(clean, MU_90, 1000)
    noisy = noise.by_name(clean, scheme, rate, C, seed=0)
    ours = estimate.confident_joint(noisy.labels, probs)
    assert (ours.counts.diagonal() > 0).all()
    counts = cleanlab_count.compute_confident_joint(noisy.labels.numpy(), probs.numpy(), calibrate=False)
    np.testing.assert_array_equal(counts, ours.counts.numpy())
    theirs = cleanlab_count.estimate_joint(noisy.labels.numpy(), probs.numpy())
    np.testing.assert_allclose(theirs, ours.joint.numpy(), rtol=0, atol=1 / N)
    assert 1 - np.trace(theirs) == pytest.approx(ours.rate, abs=C / N)
