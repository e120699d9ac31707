"""dmcore.symbolic: derived weights against torch.autograd, and the papers' figures.

The torch losses below are written from the definitions, independently of the SymPy ones, so that
a wrong derivation (or a wrong definition on either side) makes these comparisons fail.
"""

import math

import numpy as np
import pytest
import sympy as sp
import torch

from dmcore import edf, symbolic
from dmcore.symbolic import beta, lam, p, q, T

Q = 0.7  # the papers' GCE exponent
SCE = (0.1, 1.0)    # SCE's alpha and beta (Wang et al.'s CIFAR-10 setting)
EPSILON = 2.0       # Poly-1's coefficient
A = -9.21034037197618    # the reverse cross-entropy's log 0: ln(1e-4), as the SCE/APL code clamps the label
#: The losses that are weightings of the CCE direction (NCE is not: derive() refuses it).
WEIGHTED = sorted(name for name in symbolic.LOSSES if name != "nce")


def torch_loss(name, logits, target):
    """Per-example losses written from their definitions, in float64."""
    prob = torch.softmax(logits, dim=1)
    p_y = prob.gather(1, target[:, None])[:, 0]
    one_hot = torch.nn.functional.one_hot(target, logits.shape[1]).to(logits.dtype)
    if name == "cce":
        return -torch.log_softmax(logits, dim=1).gather(1, target[:, None])[:, 0]
    if name == "mae":
        return 1 - p_y
    if name == "mae_imae":
        return (prob - one_hot).abs().sum(dim=1)
    if name == "mse":
        return (1 - p_y) ** 2
    if name == "gce":
        return (1 - p_y**Q) / Q
    if name == "sce":   # alpha CCE + beta RCE, with log 0 = A in the reverse cross-entropy
        return SCE[0] * -torch.log(p_y) + SCE[1] * -(prob * (1 - one_hot) * A).sum(dim=1)
    if name == "poly1":
        return -torch.log(p_y) + EPSILON * (1 - p_y)
    if name == "dft":   # the token's cross-entropy scaled by its probability, held constant
        return -p_y.detach() * torch.log(p_y)
    raise KeyError(name)


def as_torch_function(expr):
    """A derived expression in p (q, SCE's alpha and beta and Poly-1's epsilon fixed) as a float64 torch function."""
    fixed = {q: Q, symbolic.alpha: SCE[0], symbolic.beta: SCE[1], symbolic.epsilon: EPSILON, symbolic.RCE_A: A}
    return sp.lambdify(p, expr.subs(fixed), modules="torch")


@pytest.mark.parametrize("name", WEIGHTED)
@pytest.mark.parametrize("num_classes", [2, 3, 7, 10, 31, 100])
def test_derived_weight_and_direction_match_autograd(name, num_classes):
    gen = torch.Generator().manual_seed(1000 * num_classes + len(name))
    n = 64
    logits = (3 * torch.randn(n, num_classes, generator=gen, dtype=torch.float64)).requires_grad_()
    target = torch.randint(0, num_classes, (n,), generator=gen)
    torch_loss(name, logits, target).sum().backward()
    grad = logits.grad

    with torch.no_grad():
        prob = torch.softmax(logits, dim=1)
        p_y = prob.gather(1, target[:, None])[:, 0]
        one_hot = torch.nn.functional.one_hot(target, num_classes).to(torch.float64)
        weight = as_torch_function(symbolic.derivative_magnitude(name))(p_y)
        scale = as_torch_function(symbolic.gradient_scale(name))(p_y)
        if not torch.is_tensor(scale):  # a constant scale (CCE's is 1) comes back as a number
            scale = torch.full_like(p_y, float(scale))

    torch.testing.assert_close(grad.abs().sum(dim=1), weight, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad, scale[:, None] * (prob - one_hot), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", WEIGHTED)
def test_weight_does_not_depend_on_the_number_of_classes(name):
    reference = symbolic.derivative_magnitude(name, 3)
    for num_classes in (2, 4):
        assert sp.simplify(symbolic.derivative_magnitude(name, num_classes) - reference) == 0


def test_derived_weights_are_the_papers_table():
    expected = {  # ../shared/paper/README.md, "Notation"
        "cce": 2 * (1 - p),
        "mae": 2 * p * (1 - p),
        "mae_imae": 4 * p * (1 - p),
        "mse": 4 * p * (1 - p) ** 2,
        "gce": 2 * p**q * (1 - p),
        "dft": 2 * p * (1 - p),     # MAE's weight: DFT and MAE differ in value, not in gradient
    }
    for name, w in expected.items():
        assert sp.simplify(symbolic.derivative_magnitude(name) - w) == 0, name


def test_variances_for_uniform_p_are_the_papers_figures():
    var = {name: symbolic.variance_uniform(symbolic.derivative_magnitude(name)) for name in ("cce", "mae_imae")}
    assert var["cce"] == sp.Rational(1, 3)
    assert var["mae_imae"] == sp.Rational(4, 45)
    assert f"{float(var['cce']):.2f}" == "0.33"
    assert f"{float(var['mae_imae']):.2f}" == "0.09"
    imae = symbolic.variance_uniform(symbolic.edf_expression("imae"))
    assert f"{float(imae.subs(T, 8)):.2f}" == "4.55"


def test_variance_matches_numerical_quadrature():
    rng = np.linspace(0, 1, 200_001)
    for expr in (symbolic.derivative_magnitude("gce").subs(q, Q), symbolic.edf_expression("imae").subs(T, 3)):
        w = sp.lambdify(p, expr, "numpy")(rng)
        numeric = np.trapezoid(w**2, rng) - np.trapezoid(w, rng) ** 2
        assert math.isclose(float(symbolic.variance_uniform(expr)), numeric, rel_tol=1e-8)


def test_emphasis_modes_are_solved_symbolically():
    # the losses with one weight (SCE's and Poly-1's modes depend on their parameters: test_edf checks them)
    mode = {name: symbolic.emphasis_mode(symbolic.derivative_magnitude(name)) for name in ("cce", "mae", "mae_imae", "mse", "gce")}
    assert mode == {"cce": 0, "mae": sp.Rational(1, 2), "mae_imae": sp.Rational(1, 2), "mse": sp.Rational(1, 3),
                    "gce": q / (q + 1)}
    assert symbolic.emphasis_mode(symbolic.edf_expression("imae")) == sp.Rational(1, 2)
    assert sp.simplify(symbolic.emphasis_mode(symbolic.edf_expression("dm")) - lam / (lam + 1)) == 0
    assert symbolic.emphasis_mode(symbolic.edf_expression("dm").subs(lam, 0)) == 0  # lambda = 0: hardest first


@pytest.mark.parametrize("params", [{lam: 0.5, beta: 8}, {lam: 2, beta: 12}, {lam: 0.25, beta: 1}])
def test_dm_mode_agrees_with_a_grid_search(params):
    expr = symbolic.edf_expression("dm").subs(params)
    grid = np.linspace(0, 1, 100_001)
    argmax = grid[np.argmax(sp.lambdify(p, expr, "numpy")(grid))]
    assert abs(float(symbolic.emphasis_mode(expr)) - argmax) < 1e-4


def test_readable_keeps_one_minus_p_as_a_factor():
    assert sp.latex(symbolic.readable(symbolic.derivative_magnitude("mse"))) == r"4 p \left(1 - p\right)^{2}"
    assert sp.simplify(symbolic.readable(symbolic.derivative_magnitude("mse")).doit()
                       - symbolic.derivative_magnitude("mse")) == 0


def test_a_loss_that_depends_on_more_than_p_y_is_rejected(monkeypatch):
    # the full squared error sum_j (p_j - [j = y])^2 depends on every p_j, not on p_y alone
    monkeypatch.setitem(symbolic.LOSSES, "full_squared_error",
                        lambda P, y: sum((P[j] - (1 if j == y else 0)) ** 2 for j in range(len(P))))
    with pytest.raises(ValueError, match="does not point along p - e_y"):
        symbolic.derive("full_squared_error")


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        symbolic.derive("hinge")
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
        symbolic.derive("cce", 1)
    with pytest.raises(ValueError, match="unknown emphasis density function"):
        symbolic.edf_expression("focal")


def test_sce_and_poly1_weights_are_derived_and_nce_is_refused():
    """SCE and Poly-1 depend on the logits through p_y only, so they are weightings of the CCE
    direction; NCE divides by every class's log-probability, and the derivation says so."""
    from dmcore.symbolic import alpha, beta, epsilon, p

    A = symbolic.RCE_A                          # log 0 in the reverse cross-entropy, A < 0
    assert sp.simplify(symbolic.derivative_magnitude("sce") - 2 * (1 - p) * (alpha - A * beta * p)) == 0
    r = sp.Symbol("r", positive=True)          # p = 1 / (1 + r) is in (0, 1)
    on_unit = symbolic.derivative_magnitude("poly1", 4).subs(p, 1 / (1 + r)) - (2 * (1 - p) * sp.Abs(1 + epsilon * p)).subs(p, 1 / (1 + r))
    assert sp.simplify(on_unit) == 0
    for value in (2, -1, sp.Rational(1, 2)):    # the EDFs resolve |1 + epsilon p| for epsilon >= -1
        assert sp.simplify(edf.poly1(float(value)).sympy() - 2 * (1 - p) * (1 + value * p)) == 0
    assert sp.simplify(symbolic.loss_of_p("poly1") - (-sp.log(p) + epsilon * (1 - p))) == 0
    with pytest.raises(ValueError, match="does not point along p - e_y"):
        symbolic.derive("nce")
