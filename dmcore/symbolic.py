"""Symbolic derivations: a loss -> its gradient w.r.t. the logits -> its weight as a function of p.

Every loss here depends on the logits ``z`` only through ``p_y``, the softmax probability of the
labelled class. Its gradient is then the CCE direction rescaled by a scalar,

.. math::

    \\frac{\\partial L}{\\partial z_j} = g(p_y)\\,(p_j - \\delta_{jy}),

and the *weight* of the example is the L1 norm of that gradient over the logits,

.. math::

    w(p_y) = \\sum_j \\left|\\frac{\\partial L}{\\partial z_j}\\right| = 2\\,g(p_y)\\,(1 - p_y).

Nothing of this is typed in. :func:`derive` builds the softmax of ``C`` logits, differentiates the
loss's definition with SymPy, writes the result in terms of ``e_k = exp(z_k) > 0``, proves that the
ratio to ``p_j - delta_jy`` is the same for every ``j`` (the shared direction) and that the L1 norm
depends on the logits only through ``p_y`` (it is constant in every other ``e_k``), and only then
reads the weight off as a function of ``p``. :func:`emphasis_mode` solves ``dw/dp = 0`` on
``(0, 1)`` and compares with the end points; :func:`variance_uniform` integrates ``w`` and ``w^2``
over ``p ~ U[0, 1]``.

References: X. Wang et al., *IMAE for noise-robust learning*, arXiv:1903.12141 (weights and their
variance); X. Wang et al., *Derivative manipulation for general example weighting*,
arXiv:1905.11233 (emphasis density functions).

Example::

    >>> from dmcore import symbolic
    >>> symbolic.derivative_magnitude("gce")
    2*p**q*(1 - p)
    >>> symbolic.emphasis_mode(symbolic.derivative_magnitude("mse"))
    1/3
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Sequence

import sympy as sp

__all__ = [
    "p", "q", "T", "lam", "beta", "psi", "alpha", "eta", "epsilon", "RCE_A", "stop_gradient",
    "LOSSES", "EDFS", "Derivation", "derive", "derivative_magnitude", "gradient_scale",
    "loss_of_p", "edf_expression", "emphasis_mode", "variance_uniform", "readable",
]

#: The probability of the labelled class, the variable every weight is a function of.
p = sp.Symbol("p", positive=True)
#: GCE's exponent (Zhang & Sabuncu 2018); both papers use q = 0.7.
q = sp.Symbol("q", positive=True)
#: IMAE's temperature: w = exp(T p (1 - p)).
T = sp.Symbol("T", positive=True)
#: DM's emphasis mode parameter lambda and spread parameter beta: w = exp(beta p^lambda (1 - p)).
lam = sp.Symbol("lambda", positive=True)
beta = sp.Symbol("beta", positive=True)
#: The normal-like EDF's mode psi, and the beta-density-like EDF's exponents alpha and eta.
psi = sp.Symbol("psi", positive=True)
alpha = sp.Symbol("alpha", positive=True)
eta = sp.Symbol("eta", positive=True)
#: Poly-1's coefficient (Leng et al., ICLR 2022): L = -log p + epsilon (1 - p); it may be negative.
epsilon = sp.Symbol("epsilon", real=True)
#: The reverse cross-entropy's log of zero, ``A < 0`` (Wang et al., ICCV 2019): the paper's text sets
#: A = -4; the code behind the SCE and APL papers clamps the one-hot label at 1e-4, i.e. A = ln(1e-4).
RCE_A = sp.Symbol("A", negative=True)


class stop_gradient(sp.Function):
    """``sg(x)``: the value ``x`` whose derivative is taken to be zero (PyTorch's ``x.detach()``).
    :func:`derive` differentiates through it as a constant and then replaces it by ``x``."""

    def fdiff(self, argindex=1):
        return sp.S.Zero


def _one_hot(j: int, y: int) -> int:
    return 1 if j == y else 0


#: Each loss's definition, as a function of the probability vector and the label index.
LOSSES: dict[str, Callable[[Sequence[sp.Expr], int], sp.Expr]] = {
    # categorical cross-entropy
    "cce": lambda P, y: -sp.log(P[y]),
    # mean absolute error in the DM paper's scaling: 1 - p_y
    "mae": lambda P, y: 1 - P[y],
    # mean absolute error in the IMAE paper's scaling: the L1 distance to the one-hot label
    "mae_imae": lambda P, y: sum(sp.Abs(P[j] - _one_hot(j, y)) for j in range(len(P))),
    # mean squared error in the DM paper's form: (1 - p_y)^2
    "mse": lambda P, y: (1 - P[y]) ** 2,
    # generalised cross-entropy: (1 - p_y^q) / q
    "gce": lambda P, y: (1 - P[y] ** q) / q,
    # symmetric cross-entropy (Wang et al., ICCV 2019): alpha CCE + beta RCE, where the reverse
    # cross-entropy -sum_k p_k log e_{y,k} takes log 0 = A
    "sce": lambda P, y: alpha * -sp.log(P[y]) + beta * -sum(P[k] * (0 if k == y else RCE_A) for k in range(len(P))),
    # dynamic fine-tuning (Wu et al., arXiv:2508.05629): the cross-entropy of each token weighted by its
    # own probability, held constant (stop-gradient): -sg(p_y) log p_y
    "dft": lambda P, y: -stop_gradient(P[y]) * sp.log(P[y]),
    # Poly-1 (Leng et al., ICLR 2022): the cross-entropy plus epsilon times its first polynomial term
    "poly1": lambda P, y: -sp.log(P[y]) + epsilon * (1 - P[y]),
    # normalised cross-entropy (Ma et al., ICML 2020): -log p_y over -sum_k log p_k. It depends on
    # every class's probability, so derive() refuses it: it is no weighting of the CCE direction.
    "nce": lambda P, y: sp.log(P[y]) / sum(sp.log(P[k]) for k in range(len(P))),
}

#: Emphasis density functions that are defined directly as weights (no loss behind them):
#: IMAE's, DM's main form, and the three the DM paper derives from probability densities.
EDFS: dict[str, sp.Expr] = {
    "imae": sp.exp(T * p * (1 - p)),
    "dm": sp.exp(beta * p**lam * (1 - p)),
    "normal": sp.exp(-beta * p * (p - 2 * psi)),
    "exponential": sp.exp(beta * (1 - p)),
    "beta_density": p ** (alpha - 1) * (1 - p) ** (eta - 1),
}


@dataclass(frozen=True)
class Derivation:
    """The outcome of :func:`derive` for one loss.

    Attributes:
        loss: the loss's name, a key of :data:`LOSSES`.
        num_classes: ``C``, the number of logits the derivation was carried out with.
        gradient: ``dL/dz_j`` for ``j = 0 .. C-1`` (label ``y = 0``), in terms of ``e_k = exp(z_k)``.
        scale: ``g(p)``, the common factor with ``dL/dz = g(p_y) (p - e_y)``.
        weight: ``w(p)``, the L1 norm of ``dL/dz`` as a function of ``p = p_y``.
    """

    loss: str
    num_classes: int
    gradient: tuple[sp.Expr, ...]
    scale: sp.Expr
    weight: sp.Expr


def _as_function_of_p(expr: sp.Expr, e: Sequence[sp.Symbol], what: str) -> sp.Expr:
    """Rewrite ``expr(e_0, ..., e_{C-1})`` as a function of ``p = e_0 / sum(e)`` alone.

    With ``e_0 = r * (e_1 + ... + e_{C-1})`` the odds ``r = p / (1 - p)`` carry ``p``; the result
    must be constant in every other ``e_k``, which is checked, not assumed.
    """
    r = sp.Symbol("r", positive=True)
    in_r = sp.simplify(expr.subs(e[0], r * sum(e[1:])))
    for ek in e[1:]:
        if sp.simplify(sp.diff(in_r, ek)) != 0:
            raise ValueError(f"the {what} depends on the logits through more than p_y")
    in_r = in_r.subs({ek: 1 for ek in e[1:]})
    return sp.factor(sp.simplify(in_r.subs(r, p / (1 - p))))


@lru_cache(maxsize=None)
def derive(loss: str, num_classes: int = 3) -> Derivation:
    """Differentiate ``loss`` through the softmax of ``num_classes`` logits and read off its weight.

    Args:
        loss: a key of :data:`LOSSES` (``"cce"``, ``"mae"``, ``"mae_imae"``, ``"mse"``, ``"gce"``).
        num_classes: ``C >= 2``; the result as a function of ``p`` does not depend on it.

    Returns:
        A :class:`Derivation` whose ``weight`` is the derivative magnitude ``w(p)``.

    Raises:
        ValueError: for an unknown loss, ``C < 2``, or a loss whose gradient does not share the CCE
            direction or depends on more than ``p_y``.
    """
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; expected one of {sorted(LOSSES)}")
    if int(num_classes) != num_classes or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    C, y = int(num_classes), 0
    z = sp.symbols(f"z0:{C}", real=True)
    e = sp.symbols(f"e0:{C}", positive=True)
    softmax = [sp.exp(zk) / sum(sp.exp(zm) for zm in z) for zk in z]
    L = LOSSES[loss](softmax, y)
    to_e = {sp.exp(zk): ek for zk, ek in zip(z, e)}
    gradient = tuple(sp.simplify(sp.diff(L, zj).replace(stop_gradient, lambda x: x).subs(to_e)) for zj in z)

    probs = [ek / sum(e) for ek in e]
    ratios = [sp.simplify(g / (probs[j] - _one_hot(j, y))) for j, g in enumerate(gradient)]
    if any(sp.simplify(rj - ratios[0]) != 0 for rj in ratios[1:]):
        raise ValueError(f"the gradient of {loss!r} does not point along p - e_y")
    scale = _as_function_of_p(ratios[0], e, "gradient scale")
    l1_norm = sum(sp.Abs(sp.factor(g)) for g in gradient)
    weight = _as_function_of_p(l1_norm, e, "derivative magnitude")
    return Derivation(loss, C, gradient, scale, weight)


def loss_of_p(loss: str) -> sp.Expr:
    """The loss as a function of ``p = p_y``, for display: its definition on the probability vector
    ``(p, 1 - p)``, with absolute values resolved for ``0 < p < 1``.

    >>> loss_of_p("mae_imae")
    2 - 2*p
    """
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; expected one of {sorted(LOSSES)}")
    u = sp.Symbol("u", positive=True)  # u = 1 - p > 0 decides the signs inside |.|
    in_u = sp.simplify(LOSSES[loss]([1 - u, u], 0))
    return sp.simplify(in_u.subs(u, 1 - p))


def derivative_magnitude(loss: str, num_classes: int = 3) -> sp.Expr:
    """``w(p)``: the L1 norm of ``dL/dz`` as a function of ``p``, derived by :func:`derive`.

    >>> derivative_magnitude("cce")
    2 - 2*p
    """
    return derive(loss, num_classes).weight


def gradient_scale(loss: str, num_classes: int = 3) -> sp.Expr:
    """``g(p)`` with ``dL/dz = g(p_y) (p - e_y)``, derived by :func:`derive`."""
    return derive(loss, num_classes).scale


def edf_expression(name: str) -> sp.Expr:
    """The SymPy expression of a directly defined emphasis density function (:data:`EDFS`)."""
    if name not in EDFS:
        raise ValueError(f"unknown emphasis density function {name!r}; expected one of {sorted(EDFS)}")
    return EDFS[name]


def _at(weight: sp.Expr, point: sp.Expr) -> sp.Expr:
    """The weight at ``point``, as a one-sided limit at the ends of [0, 1]."""
    if point == 0:
        return sp.limit(weight, p, 0, "+")
    if point == 1:
        return sp.limit(weight, p, 1, "-")
    return sp.simplify(weight.subs(p, point))


def _ge(a: sp.Expr, b: sp.Expr) -> bool | None:
    """Decide ``a >= b`` under the symbols' assumptions; None when SymPy cannot tell."""
    d = sp.simplify(a - b)
    if d.is_nonnegative is not None:
        return bool(d.is_nonnegative)
    if a.is_positive and b.is_positive:  # compare logarithms, which decides exp(...) forms
        d = sp.simplify(sp.expand_log(sp.log(a) - sp.log(b), force=True))
        if d.is_nonnegative is not None:
            return bool(d.is_nonnegative)
    return None


def emphasis_mode(weight: sp.Expr) -> sp.Expr:
    """The emphasis mode: the ``p`` in ``[0, 1]`` where ``weight`` is largest.

    The candidates are the solutions of ``dw/dp = 0`` inside ``(0, 1)`` and the two end points;
    the winner must be provably no smaller than every other candidate under the symbols'
    assumptions (all parameters positive).

    Raises:
        ValueError: when SymPy cannot decide the comparison; substitute numbers for the parameters.
    """
    weight = sp.nsimplify(weight, rational=True)  # exact exponents: p**0.5 -> sqrt(p)
    stationary = []
    for s in sp.solve(sp.diff(weight, p), p):
        inside = sp.And(sp.simplify(s) > 0, sp.simplify(1 - s) > 0)
        if inside is sp.true:
            stationary.append(sp.simplify(s))
        elif inside is not sp.false:
            raise ValueError(f"cannot decide whether the stationary point {s} lies in (0, 1)")
    candidates = stationary + [sp.Integer(0), sp.Integer(1)]
    values = [_at(weight, c) for c in candidates]
    for c, v in zip(candidates, values):
        verdicts = [_ge(v, other) for other in values]
        if all(verdicts):
            return c
    raise ValueError(f"cannot decide the maximum of {weight} on [0, 1]; substitute numbers for its parameters")


def variance_uniform(weight: sp.Expr) -> sp.Expr:
    """``Var[w(p)]`` for ``p ~ U[0, 1]``: the integral of ``w^2`` minus the squared integral of ``w``.

    Exponents are expanded to polynomials in ``p`` first, so that SymPy finds the error-function
    antiderivative of ``exp(T p (1 - p))`` and its square; floats become rationals (``q = 0.7`` is
    integrated as ``7/10``), since SymPy integrates exact powers only.
    """
    weight = sp.nsimplify(weight, rational=True)

    def expand_exponents(expr: sp.Expr) -> sp.Expr:
        return expr.replace(sp.exp, lambda arg: sp.exp(sp.expand(arg)))

    mean = sp.integrate(expand_exponents(weight), (p, 0, 1))
    mean_sq = sp.integrate(expand_exponents(weight**2), (p, 0, 1))
    return sp.simplify(mean_sq - mean**2)


def readable(expr: sp.Expr) -> sp.Expr:
    """The same expression with ``1 - p`` as a factor, for printing: ``2(1 - p)``, not ``-2(p - 1)``."""
    sign, factors = sp.Integer(1), []
    for f in sp.Mul.make_args(sp.factor(expr)):
        base, exponent = f.as_base_exp()
        if sp.expand(base - (p - 1)) == 0:
            sign *= (-1) ** exponent
            factors.append(sp.UnevaluatedExpr(1 - p) ** exponent)
        else:
            factors.append(f)
    return sp.Mul(sign, *factors)
