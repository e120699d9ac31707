"""dmcore.edf: each EDF's torch function against its SymPy formula, modes, families, validation."""

import math

import numpy as np
import pytest
import sympy as sp
import torch

from dmcore import edf, symbolic
from dmcore.symbolic import p

GRID = torch.linspace(0, 1, 2001, dtype=torch.float64)

BUILT_IN = {  # constructor -> expected mode (../shared/paper/README.md)
    "cce": (edf.cce(), 0.0),
    "mae": (edf.mae(), 0.5),
    "mse": (edf.mse(), 1 / 3),
    "gce": (edf.gce(0.7), 0.7 / 1.7),
    "imae": (edf.imae(8), 0.5),
    "dm(0.5, 8)": (edf.dm(0.5, 8), 0.5 / 1.5),
    "dm(2, 12)": (edf.dm(2, 12), 2 / 3),
    "dm(0, 8)": (edf.dm(0, 8), 0.0),
    "normal": (edf.normal(0.7, 8), 0.7),
    "exponential": (edf.exponential(2), 0.0),
    "exponential<0": (edf.exponential(-2), 1.0),
    "beta_density": (edf.beta_density(2, 3), 1 / 3),
    "sce": (edf.sce(0.1, 1), 0.5 + 0.1 / (2 * math.log(1e-4))),   # 2(1-p)(alpha - A beta p): 1/2 + alpha/(2 A beta)
    "sce(1, 1, A=-4)": (edf.sce(1, 1, A=-4), 0.5 - 1 / 8),
    "poly1": (edf.poly1(1), 0.0),                       # 2(1-p)(1 + epsilon p): mode (epsilon-1)/(2 epsilon)
    "poly1(2)": (edf.poly1(2), 0.25),
}


@pytest.mark.parametrize("key", BUILT_IN)
def test_torch_function_is_the_sympy_formula(key):
    w = BUILT_IN[key][0]
    reference = np.array(np.broadcast_to(sp.lambdify(p, w.sympy(), "numpy")(GRID.numpy()), GRID.shape))
    torch.testing.assert_close(w(GRID), torch.as_tensor(reference, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    assert w(GRID.float()).dtype == torch.float32 and w(GRID).shape == GRID.shape


@pytest.mark.parametrize("key", BUILT_IN)
def test_mode_is_solved_and_matches_a_grid_search(key):
    w, expected = BUILT_IN[key]
    assert math.isclose(w.mode, expected, abs_tol=1e-12)
    assert abs(GRID[torch.argmax(w(GRID))].item() - expected) <= 1e-3


def test_natural_weights_are_the_derived_ones():
    for name in ("cce", "mae", "mse"):
        assert getattr(edf, name)().sympy() == symbolic.derivative_magnitude(name)
    assert sp.simplify(edf.gce(0.5).sympy() - 2 * sp.sqrt(p) * (1 - p)) == 0


def test_families_contain_each_other():
    torch.testing.assert_close(edf.dm(1, 8)(GRID), edf.imae(8)(GRID))            # lambda = 1 is IMAE
    torch.testing.assert_close(edf.dm(0, 3)(GRID), edf.exponential(3)(GRID))     # lambda = 0 is exponential
    torch.testing.assert_close(edf.dm(0.5, 0)(GRID), torch.ones_like(GRID))      # beta = 0: equal weights
    inside = GRID[1:-1]
    for (a, e), natural in {(1, 2): edf.cce(), (2, 2): edf.mae(), (2, 3): edf.mse(), (1.7, 2): edf.gce(0.7)}.items():
        ratio = natural(inside) / edf.beta_density(a, e)(inside)                 # constant ratio: same EDF up to scale
        torch.testing.assert_close(ratio, torch.full_like(ratio, ratio[0].item()), rtol=1e-10, atol=0)


def test_user_edfs():
    from_formula = edf.from_sympy("exp(3 * p) * (1 - p)", name="mine")
    assert from_formula.name == "mine" and math.isclose(from_formula.mode, 2 / 3, abs_tol=1e-12)
    torch.testing.assert_close(from_formula(GRID), torch.exp(3 * GRID) * (1 - GRID))
    from_fn = edf.from_callable(lambda q: torch.sin(math.pi * q))
    assert abs(from_fn.mode - 0.5) < 1e-5
    with pytest.raises(ValueError, match="built from a Python callable"):
        from_fn.sympy()


def test_constructors_are_cached():
    assert edf.dm(0.5, 8) is edf.dm(0.5, 8)


@pytest.mark.parametrize("make, message", [
    (lambda: edf.dm(-0.1, 8), "lam must lie in"),
    (lambda: edf.dm(0.5, -1), "beta must lie in"),
    (lambda: edf.dm(0.5, float("inf")), "beta must be finite"),
    (lambda: edf.dm("0.5", 8), "lam must be a real number"),
    (lambda: edf.imae(-2), "T must lie in"),
    (lambda: edf.gce(0), r"q must lie in \(0"),
    (lambda: edf.gce(1.5), "q must lie in"),
    (lambda: edf.normal(1.2, 8), "psi must lie in"),
    (lambda: edf.exponential(float("nan")), "beta must be finite"),
    (lambda: edf.beta_density(0.5, 2), "alpha must lie in"),
    (lambda: edf.beta_density(2, 0), "eta must lie in"),
    (lambda: edf.from_sympy("exp(x * p)"), "must depend on p alone"),
    (lambda: edf.from_sympy(3), "needs a SymPy expression"),
    (lambda: edf.from_callable(3), "needs a callable"),
])
def test_bad_hyper_parameters_are_named(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_implied_loss_of_natural_weights_is_the_loss_itself():
    prob = torch.tensor([1e-9, 1e-3, 0.2, 0.5, 0.8, 1 - 1e-9], dtype=torch.float64)
    half = torch.tensor(0.5, dtype=torch.float64)
    torch.testing.assert_close(edf.implied_loss(edf.cce(), prob), -torch.log(prob) + torch.log(half), rtol=0, atol=1e-12)
    torch.testing.assert_close(edf.implied_loss(edf.mae(), prob), (1 - prob) - 0.5, rtol=0, atol=1e-12)
    torch.testing.assert_close(edf.implied_loss(edf.mse(), prob), (1 - prob) ** 2 - 0.25, rtol=0, atol=1e-12)


def test_implied_loss_of_dm_is_unbounded_below():
    logits = torch.tensor([10.0, 20.0, 30.0], dtype=torch.float64)      # p = sigmoid(logit) -> 1
    values = edf.implied_loss(edf.dm(0.5, 8), torch.sigmoid(logits))
    slopes = torch.diff(values) / torch.diff(logits)
    torch.testing.assert_close(slopes, torch.full_like(slopes, -0.5), rtol=0, atol=1e-3)  # -w(1)/2 per unit of logit
    with pytest.raises(ValueError, match="strictly inside"):
        edf.implied_loss(edf.dm(), torch.tensor([1.0]))
