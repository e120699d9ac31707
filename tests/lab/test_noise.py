"""dmcore.lab.noise: exact realised rates, masks, realised matrices, determinism, bad input."""

import pytest
import torch

from dmcore.lab import noise

CLEAN = torch.arange(2000) % 10          # 200 examples per class
UNEVEN = torch.cat([torch.full((n,), c) for c, n in enumerate([150, 37, 91, 8, 300])])


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 0.3333])
def test_symmetric_flips_exactly_round_rate_n_to_other_classes(rate):
    labels, mask, transition = noise.symmetric(CLEAN, rate, 10, seed=3)
    assert int(mask.sum()) == round(rate * len(CLEAN))
    assert (labels[mask] != CLEAN[mask]).all() and (labels[~mask] == CLEAN[~mask]).all()
    assert torch.allclose(transition.sum(1), torch.ones(10, dtype=torch.float64))
    flipped = round(rate * len(CLEAN)) / len(CLEAN)                        # equal class sizes: the mean flip rate
    assert abs(1 - transition.diagonal().mean().item() - flipped) < 1e-12


def test_symmetric_destinations_are_uniform_over_the_other_classes():
    labels, mask, _ = noise.symmetric(torch.zeros(90000, dtype=torch.long), 1.0, 10, seed=0)
    counts = torch.bincount(labels, minlength=10)
    assert counts[0] == 0 and (counts[1:] - 10000).abs().max() < 400       # 4 standard deviations


def test_symmetric_variant_may_keep_the_true_class():
    labels, mask, _ = noise.symmetric(CLEAN, 0.9, 10, seed=1, keep_true=True)
    changed = int(mask.sum())
    assert changed < round(0.9 * len(CLEAN))              # some resampled labels kept their class
    assert abs(changed - 0.9 * 0.9 * len(CLEAN)) < 60     # about (C-1)/C of the resampled ones change


@pytest.mark.parametrize("rate", [0.2, 0.45])
def test_pair_and_class_dependent_are_exact_per_class(rate):
    labels, mask, transition = noise.pair(UNEVEN, rate, 5, seed=2)
    for c, n in enumerate([150, 37, 91, 8, 300]):
        members = UNEVEN == c
        assert abs(int(mask[members].sum()) - rate * n) <= 0.5
        assert (labels[members & mask] == (c + 1) % 5).all()
    assert torch.allclose(transition.sum(1), torch.ones(5, dtype=torch.float64))

    labels, mask, _ = noise.class_dependent(CLEAN, rate, noise.CIFAR10_MAP, 10, seed=2)
    for c in range(10):
        flipped = mask[CLEAN == c]
        if c in noise.CIFAR10_MAP:
            assert int(flipped.sum()) == round(rate * 200)
            assert (labels[(CLEAN == c) & mask] == noise.CIFAR10_MAP[c]).all()
        else:
            assert not flipped.any()


def test_from_transition_realises_each_row():
    matrix = torch.tensor([[0.5, 0.25, 0.25], [0.0, 1.0, 0.0], [0.1, 0.2, 0.7]])
    clean = torch.arange(3000) % 3
    result = noise.from_transition(clean, matrix, seed=4)
    torch.testing.assert_close(result.transition, matrix.double())
    assert result.rate == pytest.approx((0.5 + 0 + 0.3) / 3)
    labels, mask, transition = result                    # unpacks like a tuple
    assert torch.equal(labels, result.labels)


def test_mnist_map_and_determinism():
    a = noise.class_dependent(CLEAN, 0.3, noise.MNIST_MAP, 10, seed=7)
    b = noise.class_dependent(CLEAN, 0.3, noise.MNIST_MAP, 10, seed=7)
    c = noise.class_dependent(CLEAN, 0.3, noise.MNIST_MAP, 10, seed=8)
    assert torch.equal(a.labels, b.labels) and not torch.equal(a.labels, c.labels)
    assert set(CLEAN[a.noise_mask].unique().tolist()) == set(noise.MNIST_MAP)
    assert torch.equal(noise.symmetric(CLEAN, 0.4, 10, seed=5).labels, noise.symmetric(CLEAN, 0.4, 10, seed=5).labels)


@pytest.mark.parametrize("call, message", [
    (lambda: noise.symmetric(CLEAN, 1.2, 10), r"rate must be a number in \[0, 1\]"),
    (lambda: noise.symmetric(CLEAN, -0.1, 10), "rate must be"),
    (lambda: noise.symmetric(CLEAN, 0.2, 5), r"label 5 is outside \[0, 4\]"),
    (lambda: noise.symmetric(CLEAN.float(), 0.2, 10), "1-D integer tensor"),
    (lambda: noise.symmetric(CLEAN.view(100, 20), 0.2, 10), "1-D integer tensor"),
    (lambda: noise.symmetric(CLEAN, 0.2, 1), "num_classes must be an integer >= 2"),
    (lambda: noise.from_transition(CLEAN % 2, [[0.9, 0.2], [0.0, 1.0]]), "row 0 sums to 1.1"),
    (lambda: noise.from_transition(CLEAN % 2, [[1.5, -0.5], [0.0, 1.0]]), "non-negative"),
    (lambda: noise.from_transition(CLEAN % 2, [[1.0, 0.0, 0.0]]), "must be square"),
    (lambda: noise.class_dependent(CLEAN, 0.2, {3: 3}, 10), "two different classes"),
    (lambda: noise.class_dependent(CLEAN, 0.2, {3: 12}, 10), "two different classes"),
])
def test_bad_input_is_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# Instance-dependent noise (Chen et al., AAAI 2021): flips to a clean-trained model's most likely wrong class.

def _dirichlet_probs(n, num_classes, seed):
    """Random probability rows ``(n, C)`` with distinct values, as a model's softmax."""
    g = torch.Generator().manual_seed(seed)
    raw = -torch.log(torch.rand(n, num_classes, generator=g, dtype=torch.float64))
    return raw / raw.sum(1, keepdim=True)


def _confusable_probs(clean, num_classes=10, seed=0):
    """A clean-trained model's softmax with CIFAR-like structure: each class has a partner (c xor 1, as
    cat and dog) it is confused with, more strongly for some classes than for others."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.arange(len(clean))
    logits = torch.randn(len(clean), num_classes, generator=g, dtype=torch.float64)
    logits[rows, clean] += 3.0
    logits[rows, clean ^ 1] += torch.linspace(0.5, 2.5, num_classes, dtype=torch.float64)[clean]
    return logits.softmax(1)


def _by_loops(clean, noisy, num_classes):
    """The realised transition recomputed with plain loops."""
    counts = [[0] * num_classes for _ in range(num_classes)]
    for y, z in zip(clean.tolist(), noisy.tolist()):
        counts[y][z] += 1
    return torch.tensor([[c / sum(row) if sum(row) else float(i == j) for j, c in enumerate(row)]
                         for i, row in enumerate(counts)], dtype=torch.float64)


@pytest.mark.parametrize("sample", [True, False])
@pytest.mark.parametrize("n", [0, 1, 7, 1001])
@pytest.mark.parametrize("rate", [0.0, 0.1, 0.3333, 0.5, 1.0])
def test_instance_dependent_flips_exactly_round_rate_n_to_the_most_likely_wrong_class(n, rate, sample):
    clean = torch.arange(n) % 4
    probs = _dirichlet_probs(n, 4, seed=n)
    labels, mask, transition = noise.instance_dependent(clean, probs, rate, seed=1, sample=sample)
    assert int(mask.sum()) == round(rate * n)
    assert torch.equal(mask, labels != clean) and (labels[~mask] == clean[~mask]).all()
    for i in mask.nonzero().squeeze(1).tolist():                    # the argmax over the wrong classes
        wrong = {j: probs[i, j].item() for j in range(4) if j != clean[i]}
        assert labels[i] == max(wrong, key=wrong.get)
    torch.testing.assert_close(transition, _by_loops(clean, labels, 4), rtol=0, atol=1e-15)
    assert noise.NoisyLabels(labels, mask, transition).rate == (round(rate * n) / n if n else 0.0)


def test_instance_dependent_destination_ties_go_to_the_smallest_wrong_index():
    clean = torch.tensor([0, 2, 3, 1])
    probs = torch.tensor([[0.4, 0.2, 0.2, 0.2], [0.3, 0.1, 0.3, 0.3], [0.0, 0.0, 0.0, 1.0], [0.25, 0.25, 0.25, 0.25]])
    labels, mask, _ = noise.instance_dependent(clean, probs, 1.0)
    assert labels.tolist() == [1, 0, 0, 0] and mask.all()


def test_instance_dependent_is_deterministic_in_its_seed():
    clean = CLEAN
    probs = _dirichlet_probs(len(clean), 10, seed=0)
    a = noise.instance_dependent(clean, probs, 0.3, seed=7)
    b = noise.instance_dependent(clean, probs, 0.3, seed=7)
    c = noise.instance_dependent(clean, probs, 0.3, seed=8)
    assert torch.equal(a.labels, b.labels) and torch.equal(a.transition, b.transition)
    assert not torch.equal(a.noise_mask, c.noise_mask)
    top = [noise.instance_dependent(clean, probs, 0.3, seed=s, sample=False).labels for s in (7, 8)]
    assert torch.equal(*top)                                         # the deterministic variant ignores the seed


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_examples_the_model_doubts_flip_far_more_often(seed):
    clean = CLEAN
    rows = torch.arange(len(clean))
    doubt = torch.where(rows < 1000, 0.9, 0.01).double()             # the first half: wrong-class mass 0.9
    probs = torch.zeros(len(clean), 10, dtype=torch.float64)
    probs[rows, clean] = 1 - doubt
    probs[rows, (clean + 1) % 10] = doubt
    labels, mask, _ = noise.instance_dependent(clean, probs, 0.3, seed=seed)
    # a light example (total weight 10 against at least 360) is drawn about 10 times in 600, sd 3: 30 is far out
    assert int(mask[1000:].sum()) < 30 and int(mask.sum()) == 600
    assert (labels[mask] == (clean[mask] + 1) % 10).all()


def test_deterministic_variant_takes_the_top_k_of_chen_et_al():
    clean = UNEVEN
    probs = _dirichlet_probs(len(clean), 5, seed=3)
    for rate in (0.05, 0.25, 0.6):
        k = round(rate * len(clean))
        score = [max(probs[i, j].item() for j in range(5) if j != clean[i]) for i in range(len(clean))]
        top = sorted(range(len(clean)), key=lambda i: (-score[i], i))[:k]
        _, mask, _ = noise.instance_dependent(clean, probs, rate, sample=False)
        assert set(mask.nonzero().squeeze(1).tolist()) == set(top)
    equal = torch.full((10, 5), 0.2, dtype=torch.float64)            # all tied: the lowest indices
    _, mask, _ = noise.instance_dependent(torch.arange(10) % 5, equal, 0.3, sample=False)
    assert mask.nonzero().squeeze(1).tolist() == [0, 1, 2]


def test_examples_the_model_is_certain_of_are_filled_in_uniformly():
    clean = CLEAN
    certain = torch.nn.functional.one_hot(clean, 10).double()       # every weight 1 - p_y is zero
    labels, mask, _ = noise.instance_dependent(clean, certain, 0.4, seed=0)
    assert int(mask.sum()) == 800 and (labels[mask] == (clean[mask] == 0).long()).all()   # smallest wrong index
    assert abs(int(mask[:1000].sum()) - 400) < 70                    # uniform: half of them in each half
    doubtful = certain.clone()
    doubtful[:10] = 0.1                                              # only ten examples with positive weight
    _, mask, _ = noise.instance_dependent(clean, doubtful, 0.05, seed=0)
    assert int(mask.sum()) == 100 and mask[:10].all()


def test_clean_is_most_frequent_for_realistic_instance_dependent_noise_at_40_percent():
    probs = _confusable_probs(CLEAN)
    sampled = noise.instance_dependent(CLEAN, probs, 0.4, seed=0).transition
    assert noise.clean_is_most_frequent(sampled)
    assert sampled.diagonal().min() < 0.6 and sampled.diagonal()[:5].mean() > sampled.diagonal()[5:].mean()
    # the check can fail: taking only the most doubted examples strips the most confusable classes
    top = noise.instance_dependent(CLEAN, probs, 0.4, sample=False).transition
    assert not noise.clean_is_most_frequent(top)
    assert top.diagonal()[:5].min() > 0.5 > top.diagonal()[7:].max()
    assert top[9, 8] > top[9, 9]


def test_clean_is_most_frequent_for_the_other_schemes():
    assert noise.clean_is_most_frequent(noise.symmetric(CLEAN, 0.6, 10).transition)
    assert noise.clean_is_most_frequent(noise.pair(CLEAN, 0.45, 10).transition)
    assert not noise.clean_is_most_frequent(noise.pair(CLEAN, 0.5, 10).transition)   # a tie is not enough
    assert noise.clean_is_most_frequent(noise.instance_dependent(UNEVEN, _dirichlet_probs(586, 5, 0), 0).transition)
    with pytest.raises(ValueError, match="must be square"):
        noise.clean_is_most_frequent(torch.ones(2, 3))


def test_instance_by_name_needs_the_clean_models_probs():
    probs = _dirichlet_probs(len(CLEAN), 10, seed=0)
    assert "instance" in noise.SCHEMES
    assert torch.equal(noise.by_name(CLEAN, "instance", 0.2, 10, seed=4, probs=probs).labels,
                       noise.instance_dependent(CLEAN, probs, 0.2, seed=4).labels)
    with pytest.raises(ValueError, match="'instance' needs probs"):
        noise.by_name(CLEAN, "instance", 0.2, 10, seed=4)
    pair = noise.by_name(CLEAN, "pair", 0.2, 10, 4, probs=probs)                    # the others ignore probs
    assert torch.equal(pair.labels, noise.pair(CLEAN, 0.2, 10, 4).labels)


_PROBS = _dirichlet_probs(len(CLEAN), 10, seed=0)


def _spoilt(row, values):
    probs = _PROBS.clone()
    probs[row] = torch.tensor(values, dtype=torch.float64)
    return probs


@pytest.mark.parametrize("probs, kwargs, message", [
    (_spoilt(5, [-0.1, 0.3] + [0.1] * 8), {}, r"non-negative; row 5 holds -0.1"),
    (_spoilt(7, [0.2, 0.3] + [0.1] * 8), {}, r"sum to 1 \(within 1e-4\); row 7 sums to 1.3"),
    (_spoilt(7, [0.5, 0.4998] + [0.0] * 8), {}, r"row 7 sums to 0.9998"),
    (_spoilt(2, [float("nan")] + [0.1] * 9), {}, r"finite \(no NaN or inf\); row 2 holds nan"),
    (_PROBS[:-1], {}, r"probs of shape \(1999, 10\) does not match labels of shape \(2000,\)"),
    (_PROBS[:, :5].softmax(1), {}, r"label 5 is outside \[0, 4\]"),
    (_PROBS, {"num_classes": 12}, r"probs has 10 columns .* num_classes is 12"),
    (_PROBS[:, 0], {}, r"2-D floating-point tensor \(N, C\)"),
    (torch.ones(2000, 10, dtype=torch.long), {}, r"2-D floating-point tensor"),
])
def test_instance_dependent_bad_probs_are_named(probs, kwargs, message):
    with pytest.raises(ValueError, match=message):
        noise.instance_dependent(CLEAN, probs, 0.2, **kwargs)


def test_instance_dependent_accepts_rows_within_the_tolerance_and_float32():
    probs = _spoilt(7, [0.5, 0.49995] + [0.0] * 8).float()
    assert int(noise.instance_dependent(CLEAN, probs, 0.2).noise_mask.sum()) == 400


def test_instance_dependent_checks_rate_and_labels():
    with pytest.raises(ValueError, match=r"rate must be a number in \[0, 1\]"):
        noise.instance_dependent(CLEAN, _PROBS, 1.5)
    with pytest.raises(ValueError, match="1-D integer tensor"):
        noise.instance_dependent(CLEAN.float(), _PROBS, 0.2)
