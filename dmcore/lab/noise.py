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
- :func:`instance_dependent`: exactly ``round(rate * N)`` examples, chosen by how much a model trained
  on the clean labels doubts them, get that model's most likely wrong class (Chen et al., AAAI 2021).

:func:`clean_is_most_frequent` checks a realised transition for the learnability condition that the
clean class keeps the largest share of each row.

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

__all__ = ["NoisyLabels", "symmetric", "pair", "class_dependent", "from_transition", "instance_dependent",
           "clean_is_most_frequent", "by_name", "SCHEMES", "CIFAR10_MAP", "MNIST_MAP"]

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


def _check_probs(probs, labels, num_classes) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``probs`` as float64 ``(N, C)`` rows of probabilities, the labels checked against ``C`` and ``N``."""
    probs = torch.as_tensor(probs)
    if probs.dim() != 2 or not probs.is_floating_point():
        raise ValueError(f"probs must be a 2-D floating-point tensor (N, C) of class probabilities, got {probs.dtype} "
                         f"of shape {tuple(probs.shape)}")
    if num_classes is None:
        num_classes = probs.shape[1]
    elif num_classes != probs.shape[1]:
        raise ValueError(f"probs has {probs.shape[1]} columns (shape {tuple(probs.shape)}) "
                         f"but num_classes is {num_classes!r}")
    clean = _check_labels(labels, num_classes)
    if probs.shape[0] != len(clean):
        raise ValueError(f"probs of shape {tuple(probs.shape)} does not match labels of shape {tuple(clean.shape)}: "
                         f"expected ({len(clean)}, {num_classes})")
    probs = probs.detach().cpu().double()
    finite = torch.isfinite(probs)
    if not finite.all():
        row = int((~finite).any(1).nonzero()[0])
        raise ValueError(f"probs must be finite (no NaN or inf); row {row} holds {probs[row][~finite[row]][0].item()}")
    if (probs < 0).any():
        row = int((probs < 0).any(1).nonzero()[0])
        raise ValueError(f"probs must be non-negative; row {row} holds {probs[row].min().item():.6g}")
    row_sums = probs.sum(1)
    if ((row_sums - 1).abs() > 1e-4).any():
        row = int(((row_sums - 1).abs() > 1e-4).nonzero()[0])
        raise ValueError(f"each row of probs must sum to 1 (within 1e-4); row {row} sums to {row_sums[row].item():.6g}")
    return probs, clean, num_classes


def instance_dependent(labels, probs, rate: float, seed: int = 0, num_classes: int | None = None,
                       sample: bool = True) -> NoisyLabels:
    r"""Instance-dependent noise: the examples a model trained on the clean labels doubts most get its
    most likely wrong class, as human annotators' mistakes fall on the ambiguous examples.

    ``probs`` ``(N, C)`` are the class probabilities that a model trained on the *clean* labels gives
    each example (rows non-negative, summing to 1 within 1e-4); ``labels`` ``(N)`` are the clean labels.
    A chosen example ``i`` with clean label :math:`y_i` becomes the model's most likely wrong class,

    .. math::

        \tilde y_i = \operatorname*{arg\,max}_{j \ne y_i} p_{ij} \quad \text{(ties to the smallest index)},

    and exactly :math:`k = \operatorname{round}(\text{rate} \cdot N)` examples are chosen, so every
    chosen label changes:

    - ``sample=True`` (the default): :math:`k` examples drawn without replacement with probability
      proportional to the model's mass on the wrong classes,

      .. math::

          w_i = 1 - p_{i y_i} = \sum_{j \ne y_i} p_{ij}

      (computed as the sum, exact where :math:`p_{i y_i}` is near 1), as :math:`k` successive draws
      would: the :math:`k` smallest :math:`E_i / w_i` with :math:`E_i \sim \operatorname{Exp}(1)` from
      ``torch.Generator().manual_seed(seed)`` (Efraimidis and Spirakis, "Weighted random sampling
      with a reservoir", IPL 2006). Examples with :math:`w_i = 0` (the model is certain of the clean
      label) come last: where fewer than :math:`k` examples have :math:`w_i > 0`, all of those are
      chosen and the rest are filled uniformly from the others, so with all weights zero the choice
      is uniform (the destination is then the smallest wrong index).
    - ``sample=False``: Chen et al.'s deterministic protocol: the :math:`k` examples with the largest
      probability of the class they would receive, :math:`\max_{j \ne y_i} p_{ij}` (ties to the lower
      index; ``seed`` is unused). This ranks by the single most confusing class, not by :math:`w_i`:
      an example whose doubt is spread over many classes ranks lower than under sampling.

    Reference: P. Chen, J. Ye, G. Chen, J. Zhao and P.-A. Heng, "Beyond class-conditional assumption:
    a primary attempt to combat instance-dependent label noise", AAAI 2021 (code
    github.com/chenpf1025/IDN, ``cifar10_gen_dependent.py``). There ``probs`` is the softmax on the
    training examples averaged over every epoch of training on the clean labels (a WRN-28-10 for
    150 epochs on CIFAR-10), so that examples the network fits only late keep their doubt, and
    ``k = int(rate * N)`` (truncated; here rounded, as in the module's other generators). Xia et al.,
    "Part-dependent label noise: towards instance-dependent label noise" (NeurIPS 2020), generate
    instead a flip probability per example from a normal around the rate truncated to [0, 1] and a
    destination from a softmax of a random linear map of its features, so their noise depends on the
    instance but not on what a model finds confusing, and its rate is realised only on average.

    The realised transition is an average over each class's examples: it can pass
    :func:`clean_is_most_frequent` while the ambiguous examples between two classes are mostly
    mislabelled. Nor is the check guaranteed: a class the model doubts more than others loses more
    than its share, most of all under ``sample=False``, which takes only the most doubted examples
    (on Chen et al.'s released CIFAR-10 labels at rate 0.4, cat keeps 1703 of 5000 and gives 1661 to
    dog); sampling spreads the flips more evenly over the classes. Check each realisation.

    Returns a :class:`NoisyLabels`: the labels ``(N)``, the mask of the ``k`` changed labels ``(N)``
    and the realised transition ``(C, C)``.

    Example::

        >>> import torch
        >>> from dmcore import noise
        >>> clean = torch.tensor([0, 0, 1, 1])
        >>> probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.0, 1.0]])
        >>> noise.instance_dependent(clean, probs, rate=0.5, sample=False).labels.tolist()
        [0, 1, 0, 1]
    """
    probs, clean, num_classes = _check_probs(probs, labels, num_classes)
    rate = _check_rate(rate)
    n = len(clean)
    k = round(rate * n)
    rows = torch.arange(n)
    wrong = probs.clone()
    wrong[rows, clean] = -1.0                   # below every probability: the clean class is never chosen
    destination = wrong.argmax(1)               # the first maximum: ties to the smallest index
    if sample:
        mass = wrong.clamp_min(0).sum(1)        # w_i = sum over j != y_i of p_ij
        race = torch.empty(n, dtype=torch.float64).exponential_(generator=torch.Generator().manual_seed(seed))
        positive, zero = (mass > 0).nonzero().squeeze(1), (mass == 0).nonzero().squeeze(1)
        ranked = torch.cat([positive[torch.argsort(race[positive] / mass[positive], stable=True)],
                            zero[torch.argsort(race[zero], stable=True)]])
    else:
        ranked = torch.argsort(wrong.max(1).values, descending=True, stable=True)
    chosen = ranked[:k]
    noisy = clean.clone()
    noisy[chosen] = destination[chosen]
    return _realised(clean, noisy, num_classes)


def clean_is_most_frequent(transition) -> bool:
    r"""Whether the clean class keeps the largest share of every row of a transition matrix,
    :math:`T_{ii} > T_{ij}` for every :math:`j \ne i` (strictly).

    ``transition`` is ``(C, C)`` with ``T[i, j]`` the fraction of class-``i`` examples labelled ``j``, as
    :class:`NoisyLabels` realises it (a class without examples has the identity row, and passes).
    This is the condition under which the most frequent noisy label of each class is the clean one,
    and under which a symmetric loss such as MAE is tolerant of class-conditional noise (Ghosh, Kumar
    and Sastry, "Robust loss functions under label noise for deep neural networks", AAAI 2017). It is
    weaker than diagonal dominance in the matrix sense (:math:`T_{ii} > 1/2`): symmetric noise at rate
    0.6 over 10 classes passes (:math:`T_{ii} = 0.4 > 0.6/9`), pair noise at 0.5 does not (a tie).
    For instance-dependent noise it is a check on each class's average only (see
    :func:`instance_dependent`).
    """
    transition = torch.as_tensor(transition, dtype=torch.float64)
    if transition.dim() != 2 or transition.shape[0] != transition.shape[1]:
        raise ValueError(f"the transition matrix must be square (C, C), got shape {tuple(transition.shape)}")
    off = transition.clone()
    off.fill_diagonal_(-math.inf)
    return bool((transition.diagonal() > off.max(1).values).all())


#: The schemes :func:`by_name` knows (``instance`` only with the clean-trained model's ``probs``).
SCHEMES = ("symmetric", "symmetric-keep", "pair", "mnist-map", "cifar10-map", "instance")


def by_name(labels, scheme: str, rate: float, num_classes: int, seed: int, probs=None) -> NoisyLabels:
    """Noisy labels by the scheme's name, as the sweeps and records name them: ``symmetric``,
    ``symmetric-keep`` (may keep the true class), ``pair``, the class-dependent maps ``mnist-map``
    (:data:`MNIST_MAP`) and ``cifar10-map`` (:data:`CIFAR10_MAP`), or ``instance``
    (:func:`instance_dependent`, sampled), which needs ``probs`` ``(N, C)``, a model's class
    probabilities on ``labels``' examples after training on the clean labels; the other schemes
    ignore ``probs``."""
    if scheme == "symmetric":
        return symmetric(labels, rate, num_classes, seed=seed)
    if scheme == "symmetric-keep":
        return symmetric(labels, rate, num_classes, seed=seed, keep_true=True)
    if scheme == "pair":
        return pair(labels, rate, num_classes, seed=seed)
    if scheme in ("mnist-map", "cifar10-map"):
        return class_dependent(labels, rate, MNIST_MAP if scheme == "mnist-map" else CIFAR10_MAP, num_classes, seed=seed)
    if scheme == "instance":
        if probs is None:
            raise ValueError("noise scheme 'instance' needs probs=(N, C), the class probabilities of a model trained "
                             "on the clean labels, and none were given")
        return instance_dependent(labels, probs, rate, seed=seed, num_classes=num_classes)
    raise ValueError(f"unknown noise scheme {scheme!r}: expected one of {', '.join(SCHEMES)}")
