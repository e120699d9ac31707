"""Label-noise generators with exact realised rates, noise masks and realised transition matrices.

Every generator takes clean integer labels ``(N)`` and returns a :class:`NoisyLabels` (which also
unpacks as ``labels, noise_mask, transition``):

- :func:`symmetric`: exactly ``round(rate * N)`` examples, chosen uniformly, get a label drawn
  uniformly from the *other* classes (the papers' protocol); with ``keep_true=True`` the new label is
  drawn from all classes, so some of the chosen examples keep theirs.
- :func:`pair`: class ``c`` goes to ``(c + 1) mod C``, exactly ``round(rate * N_c)`` examples per class.
- :func:`class_dependent`: a map ``{source: destination}``, per class exactly; :data:`CIFAR10_MAP`
  (truck -> automobile, bird -> airplane, deer -> horse, cat <-> dog) and :data:`MNIST_MAP`
  (2 -> 7, 3 -> 8, 5 <-> 6, 7 -> 1) are the maps of Patrini et al. (CVPR 2017), used since in
  GCE, Co-teaching and the DM paper's successors.
- :func:`from_transition`: any row-stochastic matrix ``T`` (``T[i, j]`` = probability that a class-``i``
  label becomes ``j``); the counts of each row are realised exactly by largest remainders.

``noise_mask`` marks the examples whose label changed; ``transition[i, j]`` is the realised fraction
of class-``i`` examples labelled ``j``. All draws come from ``torch.Generator().manual_seed(seed)``.

Example::

    >>> import torch
    >>> from dmcore import noise
    >>> clean = torch.arange(1000) % 10
    >>> labels, mask, T = noise.symmetric(clean, rate=0.4, num_classes=10, seed=0)
    >>> int(mask.sum()), bool((labels[mask] != clean[mask]).all())
    (400, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["NoisyLabels", "symmetric", "pair", "class_dependent", "from_transition", "by_name", "SCHEMES", "CIFAR10_MAP",
           "MNIST_MAP"]

#: CIFAR-10 (airplane 0, automobile 1, bird 2, cat 3, deer 4, dog 5, frog 6, horse 7, ship 8, truck 9).
CIFAR10_MAP = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}
#: MNIST digits.
MNIST_MAP = {2: 7, 3: 8, 5: 6, 6: 5, 7: 1}


@dataclass(frozen=True)
class NoisyLabels:
    """Noisy labels ``(N)``, the mask of changed labels ``(N)`` and the realised transition matrix ``(C, C)``."""

    labels: torch.Tensor
    noise_mask: torch.Tensor
    transition: torch.Tensor

    def __iter__(self):
        return iter((self.labels, self.noise_mask, self.transition))

    @property
    def rate(self) -> float:
        """The realised fraction of changed labels."""
        return float(self.noise_mask.double().mean()) if len(self.labels) else 0.0


def _check_labels(labels, num_classes: int) -> torch.Tensor:
    if not torch.is_tensor(labels) or labels.dim() != 1 or labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be a 1-D integer tensor, got {getattr(labels, 'dtype', type(labels).__name__)} "
                         f"of shape {tuple(getattr(labels, 'shape', ()))}")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    labels = labels.long().cpu()
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)][0]
        raise ValueError(f"label {int(bad)} is outside [0, {num_classes - 1}]")
    return labels


def _check_rate(rate) -> float:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
        raise ValueError(f"rate must be a number in [0, 1], got {rate!r}")
    return float(rate)


def _realised(clean, noisy, num_classes) -> NoisyLabels:
    counts = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    counts.index_put_((clean, noisy), torch.ones(len(clean), dtype=torch.float64), accumulate=True)
    totals = counts.sum(1, keepdim=True)
    transition = torch.where(totals > 0, counts / totals.clamp_min(1), torch.eye(num_classes, dtype=torch.float64))
    return NoisyLabels(noisy, noisy != clean, transition)


def symmetric(labels, rate: float, num_classes: int, seed: int = 0, keep_true: bool = False) -> NoisyLabels:
    """Replace exactly ``round(rate * N)`` uniformly chosen labels by a uniformly drawn other class
    (any class, the true one included, with ``keep_true=True``)."""
    clean = _check_labels(labels, num_classes)
    rate = _check_rate(rate)
    gen = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(clean), generator=gen)[: round(rate * len(clean))]
    noisy = clean.clone()
    if keep_true:
        noisy[chosen] = torch.randint(0, num_classes, (len(chosen),), generator=gen)
    else:  # an offset in 1 .. C-1 never lands on the true class
        offset = torch.randint(1, num_classes, (len(chosen),), generator=gen)
        noisy[chosen] = (clean[chosen] + offset) % num_classes
    return _realised(clean, noisy, num_classes)


def from_transition(labels, matrix, seed: int = 0) -> NoisyLabels:
    """Noise from a row-stochastic matrix, each row realised exactly within its class.

    In class ``i`` (``N_i`` examples) the number relabelled ``j`` is ``T[i, j] N_i`` rounded by the
    largest-remainder method, so the counts add up to ``N_i``; which examples get which label is random.
    """
    matrix = torch.as_tensor(matrix, dtype=torch.float64)
    if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"the transition matrix must be square (C, C), got shape {tuple(matrix.shape)}")
    num_classes = matrix.shape[0]
    clean = _check_labels(labels, num_classes)
    if not torch.isfinite(matrix).all() or (matrix < 0).any():
        raise ValueError("the transition matrix must have finite, non-negative entries")
    row_sums = matrix.sum(1)
    if not torch.allclose(row_sums, torch.ones_like(row_sums), atol=1e-6):
        bad = int(torch.argmax((row_sums - 1).abs()))
        raise ValueError(f"each row of the transition matrix must sum to 1; row {bad} sums to {row_sums[bad].item():.6g}")
    gen = torch.Generator().manual_seed(seed)
    noisy = clean.clone()
    for i in range(num_classes):
        members = (clean == i).nonzero().squeeze(1)
        if len(members) == 0:
            continue
        ideal = matrix[i] * len(members)
        counts = ideal.floor().long()
        remainder = len(members) - int(counts.sum())
        if remainder:  # largest remainders, ties to the lower class index
            order = sorted(range(num_classes), key=lambda j: (-(ideal[j] - counts[j]).item(), j))
            for j in order[:remainder]:
                counts[j] += 1
        shuffled = members[torch.randperm(len(members), generator=gen)]
        noisy[shuffled] = torch.repeat_interleave(torch.arange(num_classes), counts)
    return _realised(clean, noisy, num_classes)


def class_dependent(labels, rate: float, mapping: dict[int, int], num_classes: int, seed: int = 0) -> NoisyLabels:
    """In each source class of ``mapping``, exactly ``round(rate * N_c)`` labels become ``mapping[c]``."""
    rate = _check_rate(rate)
    clean = _check_labels(labels, num_classes)
    matrix = torch.eye(num_classes, dtype=torch.float64)
    for source, destination in mapping.items():
        if not (0 <= source < num_classes and 0 <= destination < num_classes) or source == destination:
            raise ValueError(f"the map {source} -> {destination} must join two different classes in [0, {num_classes - 1}]")
        matrix[source, source], matrix[source, destination] = 1 - rate, rate
    return from_transition(clean, matrix, seed)


def pair(labels, rate: float, num_classes: int, seed: int = 0) -> NoisyLabels:
    """Pair-flip noise: exactly ``round(rate * N_c)`` labels of class ``c`` become ``(c + 1) mod C``."""
    return class_dependent(labels, rate, {c: (c + 1) % num_classes for c in range(num_classes)}, num_classes, seed)


#: The schemes :func:`by_name` knows.
SCHEMES = ("symmetric", "symmetric-keep", "pair", "mnist-map", "cifar10-map")


def by_name(labels, scheme: str, rate: float, num_classes: int, seed: int) -> NoisyLabels:
    """Noisy labels by the scheme's name, as the sweeps and records name them: ``symmetric``,
    ``symmetric-keep`` (may keep the true class), ``pair``, or the class-dependent maps ``mnist-map``
    (:data:`MNIST_MAP`) and ``cifar10-map`` (:data:`CIFAR10_MAP`)."""
    if scheme == "symmetric":
        return symmetric(labels, rate, num_classes, seed=seed)
    if scheme == "symmetric-keep":
        return symmetric(labels, rate, num_classes, seed=seed, keep_true=True)
    if scheme == "pair":
        return pair(labels, rate, num_classes, seed=seed)
    if scheme in ("mnist-map", "cifar10-map"):
        return class_dependent(labels, rate, MNIST_MAP if scheme == "mnist-map" else CIFAR10_MAP, num_classes, seed=seed)
    raise ValueError(f"unknown noise scheme {scheme!r}: expected one of {', '.join(SCHEMES)}")
