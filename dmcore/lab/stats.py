"""Statistics a referee accepts: paired tests over seeds, multiplicity corrections, equivalence.

Every comparison of the book pairs two configurations seed by seed: seed ``s`` of each trains on the
same noisy labels from the same initialisation, so the per-seed differences ``d_s = a_s - b_s`` remove
the seeds' shared luck.

- :func:`paired_t`: the mean difference, its 95% t-interval, the two-sided p-value of the paired
  t-test (``t = mean / (sd / sqrt(n))``, ``n - 1`` degrees of freedom) and the sign count (seeds won
  and lost), :class:`PairedTest`.
- :func:`holm`: Holm's step-down adjustment of a family of p-values (Holm 1979): sorted ascending,
  ``p_(i)`` becomes ``max_{j <= i} min(1, (m - j + 1) p_(j))``; it controls the family-wise error rate
  under any dependence. :func:`benjamini_hochberg`: the false-discovery-rate adjustment (Benjamini and
  Hochberg 1995), ``min_{j >= i} min(1, m p_(j) / j)``, shown beside it.
- :func:`tost`: equivalence by two one-sided paired t-tests against a margin ``delta`` (Schuirmann 1987):
  ``p = max(P(T >= (mean + delta)/se), P(T <= (mean - delta)/se))``; equivalent where ``p < alpha``,
  the same as the ``1 - 2 alpha`` interval lying within ``(-delta, delta)``.

Example::

    >>> from dmcore.lab import stats
    >>> t = stats.paired_t([0.02, 0.03, 0.01, 0.04, 0.02])
    >>> (t.wins, t.losses, round(t.p, 4))
    (5, 0, 0.0093)
    >>> [round(p, 3) for p in stats.holm([0.01, 0.04, 0.03])]
    [0.03, 0.06, 0.06]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats as _scipy

__all__ = ["PairedTest", "Equivalence", "paired_t", "holm", "benjamini_hochberg", "tost"]


def _moments(differences) -> tuple[list[float], float, float]:
    values = [float(d) for d in differences]
    if len(values) < 2:
        raise ValueError(f"a paired test needs at least 2 pairs, got {len(values)}")
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return values, mean, sd / math.sqrt(n)


@dataclass(frozen=True)
class PairedTest:
    """A paired t-test of differences ``a - b``: mean, 95% interval half-width, two-sided p-value,
    number of pairs, and seeds won (``a`` ahead) and lost. NaN mean and p where a value is NaN."""

    mean: float
    ci95: float
    p: float
    n: int
    wins: int
    losses: int

    def fmt(self, scale: float = 100.0, digits: int = 1) -> str:
        """``+2.3 ± 1.1 (5-0)``: the mean and interval in points, then seeds won and lost."""
        if math.isnan(self.mean):
            return "diverged"
        return f"{scale * self.mean:+.{digits}f} ± {scale * self.ci95:.{digits}f} ({self.wins}-{self.losses})"


def paired_t(differences) -> PairedTest:
    """The paired t-test of ``differences`` (one per seed)."""
    values, mean, se = _moments(differences)
    n = len(values)
    wins, losses = sum(v > 0 for v in values), sum(v < 0 for v in values)
    if math.isnan(mean):
        return PairedTest(math.nan, math.nan, math.nan, n, wins, losses)
    quantile = float(_scipy.t.ppf(0.975, n - 1))
    if se == 0:
        p = 1.0 if mean == 0 else 0.0
    else:
        p = float(2 * _scipy.t.sf(abs(mean) / se, n - 1))
    return PairedTest(mean, quantile * se, p, n, wins, losses)


def _check_pvalues(pvalues) -> list[float]:
    values = [float(p) for p in pvalues]
    for p in values:
        if math.isnan(p) or not 0 <= p <= 1:
            raise ValueError(f"p-values must lie in [0, 1], got {p!r}")
    return values


def holm(pvalues) -> list[float]:
    """Holm-adjusted p-values of a family, in the order given."""
    values = _check_pvalues(pvalues)
    m = len(values)
    order = sorted(range(m), key=lambda i: values[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * values[i]))
        adjusted[i] = running
    return adjusted


def benjamini_hochberg(pvalues) -> list[float]:
    """Benjamini-Hochberg-adjusted p-values (q-values) of a family, in the order given."""
    values = _check_pvalues(pvalues)
    m = len(values)
    order = sorted(range(m), key=lambda i: values[i], reverse=True)
    adjusted, running = [0.0] * m, 1.0
    for k, i in enumerate(order):
        rank = m - k
        running = min(running, min(1.0, m * values[i] / rank))
        adjusted[i] = running
    return adjusted


@dataclass(frozen=True)
class Equivalence:
    """A TOST equivalence test: the margin, the larger one-sided p-value, the ``1 - 2 alpha`` interval
    of the mean difference, and whether the test shows equivalence at ``alpha``."""

    margin: float
    p: float
    low: float
    high: float
    equivalent: bool

    def fmt(self, scale: float = 100.0, digits: int = 1) -> str:
        """``[-1.2, +0.8] within ±2.5``: the interval in points against the margin."""
        return (f"[{scale * self.low:+.{digits}f}, {scale * self.high:+.{digits}f}] "
                f"{'within' if self.equivalent else 'not within'} ±{scale * self.margin:.{digits}f}")


def tost(differences, margin: float, alpha: float = 0.05) -> Equivalence:
    """Two one-sided paired t-tests that the mean of ``differences`` lies within ``(-margin, margin)``."""
    if not margin > 0:
        raise ValueError(f"the equivalence margin must be positive, got {margin!r}")
    values, mean, se = _moments(differences)
    n = len(values)
    if math.isnan(mean):
        return Equivalence(margin, math.nan, math.nan, math.nan, False)
    if se == 0:
        p = 0.0 if abs(mean) < margin else 1.0
    else:
        p = float(max(_scipy.t.sf((mean + margin) / se, n - 1), _scipy.t.cdf((mean - margin) / se, n - 1)))
    half = float(_scipy.t.ppf(1 - alpha, n - 1)) * se
    return Equivalence(margin, p, mean - half, mean + half, p < alpha)
