"""Emphasis density functions (EDFs): the weight of an example as a function of p.

An EDF ``w(p)`` says how much an example whose labelled class has probability ``p`` moves the
model. Every EDF here is one SymPy expression in ``p`` (:mod:`dmcore.symbolic`), from which the
torch function is generated, so the formula that is printed, solved and integrated is the formula
that trains.

=====================  ==========================================  ==================
EDF                    :math:`w(p)`                                emphasis mode
=====================  ==========================================  ==================
``cce()``              :math:`2(1-p)`                              0
``mae()``              :math:`2p(1-p)`                             1/2
``mse()``              :math:`4p(1-p)^2`                           1/3
``dft()``              :math:`2p(1-p)`                             1/2
``gce(q)``             :math:`2p^q(1-p)`                           q/(q+1)
``sce(alpha, beta)``   :math:`2(1-p)(\\alpha - A\\beta p)`             max(0, 1/2 + alpha/(2 A beta))
``poly1(epsilon)``     :math:`2(1-p)(1 + \\epsilon p)`                max(0, (epsilon-1)/(2 epsilon))
``imae(T)``            :math:`\\exp(T p (1-p))`                     1/2
``dm(lam, beta)``      :math:`\\exp(\\beta p^\\lambda (1-p))`         lambda/(lambda+1)
``normal(psi, beta)``  :math:`\\exp(-\\beta p (p - 2\\psi))`          psi
``exponential(beta)``  :math:`\\exp(\\beta (1-p))`                    0 (1 if beta < 0)
``beta_density(a, e)`` :math:`p^{a-1}(1-p)^{e-1}`                  (a-1)/(a+e-2)
=====================  ==========================================  ==================

The first seven are the natural weights of the losses, derived from their definitions
(:func:`dmcore.symbolic.derivative_magnitude`); the others are defined directly, as in the DM paper
(X. Wang et al., *Derivative manipulation for general example weighting*, arXiv:1905.11233).

Example::

    >>> import torch
    >>> from dmcore import edf
    >>> w = edf.dm(lam=0.5, beta=8)
    >>> w.mode
    0.3333333333333333
    >>> w(torch.tensor([0.0, 1 / 3, 1.0]))
    tensor([ 1.0000, 21.7410,  1.0000])
"""

from __future__ import annotations

import inspect
import math
import numbers
from functools import lru_cache
from typing import Callable

import sympy as sp
import torch
from numpy import bool_ as numpy_bool

from . import symbolic
from .symbolic import alpha, beta, eta, lam, p, psi, q, T

__all__ = ["EDF", "cce", "mae", "mse", "dft", "gce", "sce", "poly1", "imae", "dm", "normal", "exponential", "beta_density",
           "from_sympy", "from_callable", "implied_loss", "check_parameter", "default"]


class EDF:
    """An emphasis density function: callable on a tensor of ``p``, with its formula and mode.

    Build one with the constructors of this module (:func:`dm`, :func:`imae`, ..., :func:`from_sympy`,
    :func:`from_callable`) rather than directly.

    Attributes:
        name: a short name, with its parameters (``"dm(lam=0.5, beta=8)"``).
        params: the hyper-parameters, by name.
    """

    def __init__(self, name: str, expr: sp.Expr | None = None, fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 params: dict[str, float] | None = None):
        if (expr is None) == (fn is None):
            raise ValueError("an EDF needs exactly one of a SymPy expression and a Python callable")
        if expr is not None:
            stray = expr.free_symbols - {p}
            if stray:
                raise ValueError(f"EDF {name!r}: the expression must depend on p alone, found {sorted(map(str, stray))}")
            fn = sp.lambdify(p, expr, modules="torch")
        self.name = name
        self.params = dict(params or {})
        self._expr = expr
        self._fn = fn
        self._mode: float | None = None

    def __call__(self, prob: torch.Tensor) -> torch.Tensor:
        """The weights ``w(p)``, same shape and dtype as ``prob``."""
        out = self._fn(prob)
        if not torch.is_tensor(out):  # a constant weight (e.g. beta = 0) comes back as a number
            return torch.full_like(prob, float(out))
        return out.to(prob.dtype).expand_as(prob)

    def sympy(self) -> sp.Expr:
        """The SymPy expression of ``w(p)``.

        Raises:
            ValueError: for an EDF built from a Python callable, which has none.
        """
        if self._expr is None:
            raise ValueError(f"EDF {self.name!r} was built from a Python callable and has no SymPy expression")
        return self._expr

    @property
    def mode(self) -> float:
        """The emphasis mode, argmax of ``w`` on [0, 1]: solved with SymPy, or for an EDF built from a
        callable found on a grid of 100001 points."""
        if self._mode is None:
            if self._expr is not None:
                self._mode = float(symbolic.emphasis_mode(self._expr))
            else:
                grid = torch.linspace(0, 1, 100_001, dtype=torch.float64)
                self._mode = float(grid[torch.argmax(self(grid))])
        return self._mode

    def __repr__(self) -> str:
        return f"EDF({self.name})"

    def __getstate__(self) -> dict:
        """Pickled without the generated torch function, which is rebuilt from the SymPy expression
        (an EDF built from a callable pickles with its callable, as far as that one pickles)."""
        state = dict(self.__dict__)
        if self._expr is not None:
            state["_fn"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self._fn is None:
            self._fn = sp.lambdify(p, self._expr, modules="torch")


def check_parameter(name: str, value, low: float = -math.inf, high: float = math.inf, *, low_open=False) -> float:
    """A finite real number (Python's, NumPy's or a 0-d tensor's) within [low, high] (or (low, high]),
    as a float; else a ValueError that names it."""
    if torch.is_tensor(value) and value.dim() == 0 and not value.dtype.is_complex and value.dtype != torch.bool:
        value = value.item()
    if isinstance(value, (bool, numpy_bool)) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if value < low or value > high or (low_open and value == low):
        bracket = "(" if low_open else "["
        raise ValueError(f"{name} must lie in {bracket}{low}, {high}], got {value}")
    return value


def default(constructor: Callable, name: str) -> float:
    """The default of parameter ``name`` in ``constructor``'s signature: each default is written once,
    in the EDF's constructor, and read from there by the losses and the name grammar."""
    return inspect.signature(constructor).parameters[name].default


def _exact(value: float) -> sp.Expr:
    """A hyper-parameter as an exact SymPy number (0.5 -> 1/2, 2.0 -> 2), so that formulas print and
    solve exactly: ``sqrt(p)``, not ``p**0.5``."""
    return sp.nsimplify(float(value), rational=True)


def _named(name: str, **params: float) -> str:
    return f"{name}(" + ", ".join(f"{k}={v:g}" for k, v in params.items()) + ")" if params else name


@lru_cache(maxsize=256)
def _loss_weight(loss: str, **params: float) -> EDF:
    """The derived weight of ``loss`` with its parameters set; absolute values are resolved for
    ``0 < p < 1`` (written as ``p = 1 / (1 + r)``, ``r > 0``) where the parameters fix their sign."""
    symbols = {"q": q, "alpha": symbolic.alpha, "beta": symbolic.beta, "epsilon": symbolic.epsilon, "A": symbolic.RCE_A}
    expr = symbolic.derivative_magnitude(loss).subs({symbols[k]: _exact(v) for k, v in params.items()})
    if expr.has(sp.Abs):
        r = sp.Symbol("r", positive=True)
        expr = sp.factor(sp.simplify(sp.simplify(expr.subs(p, 1 / (1 + r))).subs(r, (1 - p) / p)))
    return EDF(_named(loss, **params), expr, params=params)


@lru_cache(maxsize=256)
def _defined(family: str, **params: float) -> EDF:
    """The defined EDF ``family`` with its parameters (validated floats) set; memoised on them, so that
    equal parameters give the same EDF object and its generated function."""
    expr = symbolic.edf_expression(family).subs({getattr(symbolic, k): _exact(v) for k, v in params.items()})
    return EDF(_named(family, **params), expr, params=params)


def cce() -> EDF:
    """CCE's weight, :math:`2(1-p)`: derived from :math:`-\\log p`."""
    return _loss_weight("cce")


def mae() -> EDF:
    """MAE's weight in the DM paper's scaling, :math:`2p(1-p)`: derived from :math:`1 - p`."""
    return _loss_weight("mae")


def mse() -> EDF:
    """MSE's weight in the DM paper's form, :math:`4p(1-p)^2`: derived from :math:`(1-p)^2`."""
    return _loss_weight("mse")


def dft() -> EDF:
    """Dynamic fine-tuning's weight, :math:`2p(1-p)`: derived from :math:`-\\mathrm{sg}(p)\\log p`, the
    cross-entropy of each token scaled by its own probability held constant (Wu et al., *On the
    generalization of SFT*, arXiv:2508.05629). It is MAE's weight: the two losses differ in value,
    not in gradient."""
    return _loss_weight("dft")


def gce(q: float = 0.7) -> EDF:
    """GCE's weight, :math:`2p^q(1-p)`: derived from :math:`(1-p^q)/q`, with ``0 < q <= 1``."""
    return _loss_weight("gce", q=check_parameter("q", q, 0, 1, low_open=True))


#: The reverse cross-entropy's log of zero as the code behind the SCE and APL papers takes it: the
#: one-hot label clamped at 1e-4, ``A = ln(1e-4) = -9.2103`` (the SCE paper's text says ``A = -4``).
RCE_A = math.log(1e-4)


def sce(alpha: float = 0.1, beta: float = 1.0, A: float = RCE_A) -> EDF:
    """Symmetric cross-entropy's weight, :math:`2(1-p)(\\alpha - A\\beta p)`: derived from
    :math:`\\alpha(-\\log p) + \\beta(-A)(1 - p)` (Wang et al., ICCV 2019; their CIFAR-10 setting
    ``alpha = 0.1, beta = 1``), ``alpha, beta >= 0``, not both 0, and the reverse cross-entropy's
    ``log 0 := A < 0``: by default :data:`RCE_A` ``= ln(1e-4)``, the papers' code; ``A = -4`` is the
    SCE paper's text."""
    alpha_, beta_ = check_parameter("alpha", alpha, 0), check_parameter("beta", beta, 0)
    if alpha_ == 0 and beta_ == 0:
        raise ValueError("alpha and beta must not both be 0: the loss would be constant")
    A_ = check_parameter("A", A, high=0)
    if A_ == 0:
        raise ValueError("A (the reverse cross-entropy's log 0) must be < 0, got 0")
    return _loss_weight("sce", alpha=alpha_, beta=beta_, A=A_)


def poly1(epsilon: float = 1.0) -> EDF:
    """Poly-1's weight, :math:`2(1-p)(1 + \\epsilon p)`: derived from :math:`-\\log p + \\epsilon(1 - p)`
    (Leng et al., ICLR 2022), ``epsilon >= -1`` (below, the loss would grow with ``p`` near 1)."""
    return _loss_weight("poly1", epsilon=check_parameter("epsilon", epsilon, -1))


def imae(T: float = 8) -> EDF:
    """IMAE's weight, :math:`\\exp(T p (1-p))`, ``T >= 0`` (IMAE paper's default 8)."""
    return _defined("imae", T=check_parameter("T", T, 0))


def dm(lam: float = 0.5, beta: float = 8) -> EDF:
    """DM's main EDF, :math:`\\exp(\\beta p^\\lambda (1-p))`: mode ``lam/(lam+1)`` (``lam >= 0``),
    spread ``beta >= 0`` (``beta = 0`` weights every example equally; ``lam = 1`` is IMAE)."""
    lam_, beta_ = check_parameter("lam", lam, 0), check_parameter("beta", beta, 0)
    return _defined("dm", lam=lam_, beta=beta_)


def normal(psi: float = 0.5, beta: float = 8) -> EDF:
    """The normal-like EDF, :math:`\\exp(-\\beta p (p - 2\\psi))`: mode ``psi`` in [0, 1], spread ``beta >= 0``."""
    psi_, beta_ = check_parameter("psi", psi, 0, 1), check_parameter("beta", beta, 0)
    return _defined("normal", psi=psi_, beta=beta_)


def exponential(beta: float = 1) -> EDF:
    """The exponential EDF, :math:`\\exp(\\beta (1-p))` (DM with ``lam = 0``); ``beta < 0`` emphasises
    easy examples."""
    beta_ = check_parameter("beta", beta)
    return _defined("exponential", beta=beta_)


def beta_density(alpha: float = 2, eta: float = 2) -> EDF:
    """The beta-density-like EDF, :math:`p^{\\alpha-1}(1-p)^{\\eta-1}`, ``alpha, eta >= 1`` (finite on
    [0, 1]); (1, 2), (2, 2), (2, 3) and (q+1, 2) are CCE, MAE, MSE and GCE up to a constant."""
    alpha_, eta_ = check_parameter("alpha", alpha, 1), check_parameter("eta", eta, 1)
    return _defined("beta_density", alpha=alpha_, eta=eta_)


def from_sympy(expr, name: str = "custom") -> EDF:
    """A user EDF from a SymPy expression in :data:`dmcore.symbolic.p` (or a string SymPy can parse in ``p``).

    >>> from_sympy("exp(3 * p)").mode
    1.0
    """
    if isinstance(expr, str):
        expr = sp.sympify(expr, locals={"p": p})
    if not isinstance(expr, sp.Expr):
        raise ValueError(f"from_sympy needs a SymPy expression in p, got {type(expr).__name__}")
    return EDF(name, expr)


def from_callable(fn: Callable[[torch.Tensor], torch.Tensor], name: str = "custom") -> EDF:
    """A user EDF from a Python callable mapping a tensor of ``p`` to weights of the same shape."""
    if not callable(fn):
        raise ValueError(f"from_callable needs a callable, got {type(fn).__name__}")
    return EDF(name, fn=fn)


def implied_loss(edf: EDF, prob: torch.Tensor, reference: float = 0.5, nodes: int = 200) -> torch.Tensor:
    r"""The per-example loss whose gradient w.r.t. the logits is ``w(p)`` times the unit-L1 CCE direction.

    A loss of ``p`` alone has ``dL/dz = -L'(p) p (e_y - p)``; equating it with
    ``w(p) (p - e_y) / (2 (1 - p))`` gives ``L'(p) = -w(p) / (2 p (1 - p))``. With the log-odds
    ``s = log(t / (1 - t))``, ``dt = t (1 - t) ds``, so

    .. math::

        L(p) = \int_p^{p_0} \frac{w(t)}{2 t (1 - t)}\, dt
             = \frac12 \int_{\mathrm{logit}\, p}^{\mathrm{logit}\, p_0} w(\sigma(s))\, ds,

    defined up to a constant (``L(p_0) = 0``): a bounded integrand, integrated by Gauss-Legendre. For
    CCE's weight ``2(1-p)`` it is ``-log p + log p_0``. Where ``w(1) > 0`` (DM, IMAE) it falls like
    ``-w(1) logit(p) / 2`` as ``p -> 1``: the implied objective is unbounded below, and the manipulated
    gradient never vanishes.

    Args:
        edf: the emphasis density function.
        prob: probabilities in ``(0, 1)``, any shape (float64 is used inside).
        reference: ``p_0`` in ``(0, 1)``, where the loss is zero.
        nodes: Gauss-Legendre nodes per integral.

    Returns:
        ``L(prob)`` in float64, the shape of ``prob``.
    """
    import numpy as np

    prob = torch.as_tensor(prob, dtype=torch.float64)
    if not 0 < reference < 1:
        raise ValueError(f"reference must lie in (0, 1), got {reference}")
    if bool(((prob <= 0) | (prob >= 1)).any()):
        raise ValueError("implied_loss needs probabilities strictly inside (0, 1): it diverges at 0 or 1 for most EDFs")
    x, wts = (torch.as_tensor(a, dtype=torch.float64) for a in np.polynomial.legendre.leggauss(nodes))
    a = torch.logit(prob).reshape(-1, 1)
    b = torch.full_like(a, math.log(reference / (1 - reference)))
    s = (b - a) / 2 * x + (b + a) / 2                     # nodes mapped to [logit p, logit p0]
    return ((b - a) / 4 * (edf(torch.sigmoid(s)) * wts).sum(1, keepdim=True)).reshape(prob.shape)
