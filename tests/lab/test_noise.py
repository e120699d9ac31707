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
