"""dmcore.losses against plain-loop references, the papers' formulas, autograd, gradcheck, and every kind
of bad input.

Every loss gets the checks of :class:`LossTester`, in the manner of kornia's ``BaseTester``: a smoke
test over shapes, reductions, dtypes and devices, the module against the function, gradcheck in
float64, empty and all-ignored batches, and bad input and bad arguments named. Its class adds its
reference: a closed-form loss (:class:`ClosedFormTester`) against the EDF path with its natural weight
and a value by hand, an EDF loss (:class:`EDFTester`) against a plain-loop reference and the objective
its manipulated gradient implies, a baseline (:class:`BaselineTester`) against its paper's formula and
its derived weight. The checks of one property across losses follow the classes."""

import math

import pytest
import torch
import torch.nn.functional as F

from dmcore import edf, losses

REDUCTIONS = ["mean", "sum", "none"]


# ---------------------------------------------------------------- references

def loop_reference(logits, target, w, weight=None, ignore_index=-100, reduction="mean", normalizer="batch", eps=0.0):
    """Value and gradient of an EDF loss with plain Python loops over the elements, from the formulas
    (with ``eps``, the paper's code: ``(p - e_y) / (2 - 2 p + eps)``)."""
    x = logits.detach().double().movedim(1, -1).reshape(-1, logits.shape[1]).tolist()
    t = target.reshape(-1).tolist()
    elements = []
    for row, y in zip(x, t):
        if y == ignore_index:
            elements.append(None)
            continue
        m = max(row)
        exps = [math.exp(v - m) for v in row]
        total = sum(exps)
        prob = [e / total for e in exps]
        c = 1.0 if weight is None else float(weight[y])
        wy = float(w(torch.tensor([prob[y]], dtype=torch.float64))[0])
        direction = [(prob[j] - (j == y)) / (2 * (1 - prob[y]) + eps) for j in range(len(row))]
        elements.append((c, wy, -math.log(prob[y]), direction))
    counted = [e for e in elements if e is not None]
    if reduction == "mean":
        z = sum(c * wy for c, wy, _, _ in counted) if normalizer == "batch" else sum(c for c, _, _, _ in counted)
        z = z if z > 0 else 1.0
    else:
        z = 1.0
    values = [0.0 if e is None else e[0] * e[1] * e[2] / z for e in elements]
    grads = [[0.0] * logits.shape[1] if e is None else [e[0] * e[1] / z * d for d in e[3]] for e in elements]
    grad = torch.tensor(grads, dtype=torch.float64).reshape(logits.movedim(1, -1).shape).movedim(-1, 1)
    value = torch.tensor(values, dtype=torch.float64).reshape(target.shape)
    return (value if reduction == "none" else value.sum()), grad


class _ImpliedObjective(torch.autograd.Function):
    """Forward: sum_i c_i L(p_i) / Z with L the implied loss (numerical quadrature); backward: dmcore's
    manipulated gradient. gradcheck compares the two, so the gradient must be that of the objective."""

    @staticmethod
    def forward(ctx, logits, target, w, weight, z):
        prob = logits.softmax(1).gather(1, target.unsqueeze(1)).squeeze(1)
        c = weight[target]
        ctx.save_for_backward(logits, target, weight)
        ctx.w, ctx.z = w, z
        return (c * edf.implied_loss(w, prob)).sum() / z

    @staticmethod
    def backward(ctx, grad_output):
        logits, target, weight = ctx.saved_tensors
        with torch.enable_grad():
            x = logits.detach().requires_grad_()
            # normalizer='count' with unit class weights over counted elements: Z = number of elements,
            # rescaled so that both sides use the same constant z
            value = losses.edf_loss(x, target, ctx.w, weight=weight, normalizer="count") * len(target) / ctx.z
            (grad,) = torch.autograd.grad(value, x)
        return grad * grad_output, None, None, None, None


def _baseline_reference(logits, target, name, weight=None, reduction="mean", **params):
    """Per-element values from the papers' formulas, with plain loops over the elements."""
    x = logits.detach().double().movedim(1, -1).reshape(-1, logits.shape[1]).tolist()
    values, cs = [], []
    for row, y in zip(x, target.reshape(-1).tolist()):
        if y == -100:
            values.append(0.0)
            cs.append(0.0)
            continue
        m = max(row)
        log_probs = [v - m - math.log(sum(math.exp(u - m) for u in row)) for v in row]
        p = math.exp(log_probs[y])
        log_zero = params.get("A", math.log(1e-4))   # the papers' code clamps the one-hot label at 1e-4
        rce = -sum(math.exp(lp) * (0.0 if k == y else log_zero) for k, lp in enumerate(log_probs))
        if name == "sce":
            value = params["alpha"] * -log_probs[y] + params["beta"] * rce
        elif name == "nce+rce":
            value = params["alpha"] * log_probs[y] / sum(log_probs) + params["beta"] * rce
        else:
            value = -log_probs[y] + params["epsilon"] * (1 - p)
        c = 1.0 if weight is None else float(weight[y])
        values.append(c * value)
        cs.append(c)
    out = torch.tensor(values, dtype=torch.float64).reshape(target.shape)
    if reduction == "none":
        return out
    return out.sum() / (sum(cs) if reduction == "mean" else 1.0)


BAD_INPUTS = [
    (lambda: (torch.randn(4, 3), torch.tensor([0, 1, 3, 0])), ValueError, r"target 3 at index \(2,\) is outside \[0, 2\]"),
    (lambda: (torch.randn(4, 3), torch.tensor([0, -1, 2, 0])), ValueError, r"target -1 at index \(1,\)"),
    (lambda: (torch.randn(4, 3), torch.rand(4, 2)), ValueError, r"class-probability target shape \(4, 2\) does not match"),
    (lambda: (torch.randn(4, 3), torch.tensor([0.0, 1.0, 2.0, 0.0])), ValueError, r"expected \(4, 3\)"),
    (lambda: (torch.randn(4, 3), torch.tensor([True, False, True, True])), TypeError, "targets must be class indices"),
    (lambda: (torch.randn(4, 3), torch.tensor([[0.5, 0.5, 0], [0, 1, 0], [1, 0, 0], [math.nan, 1, 0]])), ValueError,
     "class-probability targets must be finite and >= 0"),
    (lambda: (torch.randn(4, 3), torch.tensor([0, 1, 2])), ValueError, r"target shape \(3,\) does not match"),
    (lambda: (torch.randn(4, 3, 5), torch.zeros(4, dtype=torch.long)), ValueError, r"expected \(4, 5\)"),
    (lambda: (torch.randn(4, 1), torch.zeros(4, dtype=torch.long)), ValueError, "at least 2 classes"),
    (lambda: (torch.tensor(1.0), torch.tensor(0)), ValueError, r"shape \(C\), \(N, C\)"),   # (C,) is unbatched
    (lambda: (torch.randint(0, 3, (4, 3)), torch.zeros(4, dtype=torch.long)), TypeError, "floating-point tensor"),
    (lambda: (torch.tensor([[0.0, math.nan], [1.0, 2.0]]), torch.tensor([0, 1])), ValueError, r"NaN or \+inf .* first at index \(0,\)"),
    (lambda: (torch.tensor([[0.0, 1.0], [math.inf, 2.0]]), torch.tensor([0, 1])), ValueError, r"first at index \(1,\)"),
    (lambda: (torch.tensor([[0.0, 1.0], [-math.inf, -math.inf]]), torch.tensor([0, 1])), ValueError, "only -inf"),
]


def pytest_generate_tests(metafunc):
    """Per-class parametrisation (pytest's documented scheme): a test method of a loss's class with an
    argument ``params`` runs for each setting of the loss's parameters in the class's ``settings``, one
    with an argument ``w`` for each EDF in its ``edfs``."""
    if metafunc.cls is None:
        return
    if "params" in metafunc.fixturenames:
        metafunc.parametrize("params", metafunc.cls.settings,
                             ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()) or "defaults")
    if "w" in metafunc.fixturenames:
        metafunc.parametrize("w", metafunc.cls.edfs, ids=lambda w: w.name)


# ---------------------------------------------------------------- what every loss gets

class LossTester:
    """The checks every loss gets. A subclass names the loss's ``function`` and ``module``, its
    ``settings`` (keyword parameters of both: the first is the one the bad-input checks use),
    ``gradcheck_params`` (the setting of the slowest check, gradcheck), ``bad_params`` (``(keywords,
    error, message)`` that both must refuse), and ``options`` (call options the module and the function
    must agree on beyond the reductions, ``ignore_index`` and ``weight``)."""

    function = None
    module = None
    settings: list[dict] = [{}]
    gradcheck_params: dict = {}
    bad_params: list[tuple] = []
    options: list[dict] = []

    def call(self, logits, target, **kwargs):
        """The loss's function, with the class's first setting updated by ``kwargs``."""
        return type(self).function(logits, target, **{**self.settings[0], **kwargs})

    @pytest.mark.parametrize("shape", [(12, 5), (3, 4, 2, 3)])
    def test_smoke(self, params, shape, device, dtype, make_batch):
        """Every reduction on logits ``(N, C)`` and ``(N, C, d1, d2)``: the result's shape and dtype, and
        finite values and gradients."""
        logits, target = make_batch(shape, dtype=dtype, device=device)
        for reduction in REDUCTIONS:
            value = self.module(**params, reduction=reduction)(logits, target)
            assert value.shape == (target.shape if reduction == "none" else ()) and value.dtype == dtype
            (grad,) = torch.autograd.grad(value.sum(), logits)
            assert grad.shape == logits.shape and grad.dtype == dtype
            assert torch.isfinite(value).all() and torch.isfinite(grad).all()

    def test_module_is_the_function(self, params, make_batch):
        logits, target = make_batch((10, 6), seed=4)
        options = [{}, {"reduction": "sum"}, {"reduction": "none"}, {"ignore_index": 2},
                   {"weight": torch.linspace(0.5, 2.0, 6, dtype=torch.float64)}]
        for option in options + self.options:
            labels = target.masked_fill(target == -100, 2) if option.get("ignore_index") == 2 else target
            torch.testing.assert_close(self.module(**params, **option)(logits, labels),
                                       type(self).function(logits, labels, **params, **option), msg=str(option))

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    def test_gradcheck(self, reduction, make_batch):
        logits, target = make_batch((6, 4, 2), seed=7, scale=1.0)
        module = self.module(**self.gradcheck_params, weight=torch.rand(4, dtype=torch.float64) + 0.5,
                             reduction=reduction)
        assert torch.autograd.gradcheck(lambda x: module(x, target), (logits,))

    def test_empty_and_all_ignored_batches_give_zero(self, params):
        loss = self.module(**params)
        for logits, target in [(torch.zeros(0, 5, requires_grad=True), torch.zeros(0, dtype=torch.long)),
                               (torch.randn(4, 5, requires_grad=True), torch.full((4,), -100))]:
            value = loss(logits, target)
            value.backward()
            assert value.item() == 0.0 and logits.grad.abs().sum().item() == 0.0

    @pytest.mark.parametrize("make, error, message", BAD_INPUTS)
    def test_bad_input_is_named(self, make, error, message):
        logits, target = make()
        with pytest.raises(error, match=message):
            self.module(**self.settings[0])(logits, target)

    def test_bad_arguments_are_named(self, make_batch):
        logits, target = make_batch((4, 3))
        with pytest.raises(ValueError, match=r"weight must have shape \(3,\), got \(4,\)"):
            self.call(logits, target, weight=torch.ones(4))
        for kwargs, error, message in [({"reduction": "avg"}, ValueError, "reduction must be one of"), *self.bad_params]:
            with pytest.raises(error, match=message):
                self.module(**{**self.settings[0], **kwargs})
            with pytest.raises(error, match=message):
                self.call(logits, target, **kwargs)


class ClosedFormTester(LossTester):
    """A closed-form loss: its gradient equals the EDF path's with its ``natural`` weight (an EDF, and the
    loss's parameters that give it) and ``normalizer='count'``; its value at uniform probabilities is
    ``uniform`` (the loss's parameters, the value)."""

    natural: tuple
    uniform: tuple

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("shape", [(16, 7), (2, 3, 4, 5)])
    def test_edf_path_with_the_natural_weight_gives_its_gradients(self, reduction, shape, make_batch):
        weight_fn, params = self.natural
        class_weight = torch.linspace(0.2, 1.5, shape[1], dtype=torch.float64)
        grads = []
        for fn in (lambda x, t: losses.edf_loss(x, t, weight_fn, normalizer="count", weight=class_weight,
                                                reduction=reduction),
                   lambda x, t: type(self).function(x, t, weight=class_weight, reduction=reduction, **params)):
            logits, target = make_batch(shape, seed=3)
            out = fn(logits, target)
            upstream = torch.rand(out.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
            (out * upstream).sum().backward()
            grads.append(logits.grad)
        torch.testing.assert_close(grads[0], grads[1], rtol=1e-11, atol=1e-14)

    def test_value_at_uniform_probabilities(self):
        logits, target = torch.zeros(3, 4, dtype=torch.float64), torch.tensor([0, 1, 2])   # p = 1/4
        params, expected = self.uniform
        assert math.isclose(type(self).function(logits, target, **params).item(), expected, rel_tol=1e-14)


class TestCCELoss(ClosedFormTester):
    function, module = staticmethod(losses.cce_loss), losses.CCELoss
    natural, uniform = (edf.cce(), {}), ({}, math.log(4))

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    def test_equals_pytorch_cross_entropy(self, reduction, make_batch):
        logits, target = make_batch((4, 6, 3, 2), seed=5)
        weight = torch.rand(6, dtype=torch.float64) + 0.1
        ours = losses.CCELoss(weight=weight, reduction=reduction)(logits, target)
        theirs = F.cross_entropy(logits, target, weight=weight, reduction=reduction)
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


class TestMAELoss(ClosedFormTester):
    function, module = staticmethod(losses.mae_loss), losses.MAELoss
    natural, uniform = (edf.mae(), {}), ({}, 0.75)


class TestMSELoss(ClosedFormTester):
    function, module = staticmethod(losses.mse_loss), losses.MSELoss
    natural, uniform = (edf.mse(), {}), ({}, 0.5625)


class TestDFTLoss(ClosedFormTester):
    function, module = staticmethod(losses.dft_loss), losses.DFTLoss
    natural, uniform = (edf.dft(), {}), ({}, math.log(4) / 4)

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    def test_gradcheck(self, reduction, make_batch):
        """The stop-gradient makes DFT's gradient no derivative of its value: it is gradchecked as MAE's,
        whose value's derivative it equals (class weights, ignored targets and every reduction)."""
        logits, target = make_batch((6, 4, 2), seed=7, scale=1.0)
        kw = dict(weight=torch.rand(4, dtype=torch.float64) + 0.5, reduction=reduction)
        upstream = torch.rand(losses.mae_loss(logits, target, **kw).shape, dtype=torch.float64)
        dft, = torch.autograd.grad(losses.DFTLoss(**kw)(logits, target), logits, upstream)
        mae, = torch.autograd.grad(losses.MAELoss(**kw)(logits, target), logits, upstream)
        torch.testing.assert_close(dft, mae, rtol=1e-12, atol=1e-15)
        assert torch.autograd.gradcheck(lambda x: losses.MAELoss(**kw)(x, target), (logits,))

    def test_gradient_is_maes_and_value_is_the_scaled_cross_entropy(self, make_batch):
        logits, target = make_batch((6, 5), ignore_every=0)
        p = logits.softmax(1).gather(1, target[:, None]).squeeze(1)
        value = losses.dft_loss(logits, target, reduction="none")
        torch.testing.assert_close(value, -p.detach() * p.log(), rtol=1e-12, atol=0)
        dft, = torch.autograd.grad(value.sum(), logits)
        mae, = torch.autograd.grad(losses.mae_loss(logits, target, reduction="sum"), logits)
        torch.testing.assert_close(dft, mae, rtol=1e-12, atol=1e-15)


class TestGCELoss(ClosedFormTester):
    function, module = staticmethod(losses.gce_loss), losses.GCELoss
    settings, gradcheck_params = [{}, {"q": 0.4}], {"q": 0.6}
    bad_params = [({"q": 2}, ValueError, "q must lie in")]
    natural, uniform = (edf.gce(0.7), {"q": 0.7}), ({"q": 0.5}, (1 - 0.5) / 0.5)


class EDFTester(LossTester):
    """An EDF loss: for each EDF of the family in ``edfs``, the EDF path against the plain-loop
    reference, and gradcheck against the objective its manipulated gradient implies (a gradcheck
    against its own value would compare two different things)."""

    edfs: list
    options = [{"normalizer": "count"}]
    bad_params = [({"normalizer": "global"}, ValueError, "normalizer must be one of")]

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("normalizer", ["batch", "count"])
    @pytest.mark.parametrize("shape", [(12, 5), (3, 4, 2, 3)])
    def test_matches_plain_loop_reference(self, w, reduction, normalizer, shape, make_batch):
        logits, target = make_batch(shape)
        weight = torch.linspace(0.5, 2.0, shape[1], dtype=torch.float64)
        value = losses.edf_loss(logits, target, w, weight=weight, reduction=reduction, normalizer=normalizer)
        upstream = torch.rand(value.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        (value * upstream).sum().backward()
        ref_value, ref_grad = loop_reference(logits, target, w, weight, reduction=reduction, normalizer=normalizer)
        torch.testing.assert_close(value.detach(), ref_value, rtol=1e-12, atol=1e-12)
        expected = ref_grad * (upstream.unsqueeze(1) if reduction == "none" else upstream)
        torch.testing.assert_close(logits.grad, expected, rtol=1e-10, atol=1e-13)

    def test_gradcheck(self, w, make_batch):
        """gradcheck of the implied objective's value against the manipulated gradient (:class:`_ImpliedObjective`)."""
        logits, target = make_batch((5, 4), seed=11, scale=1.5, ignore_every=0)
        weight = torch.ones(4, dtype=torch.float64)
        assert torch.autograd.gradcheck(lambda x: _ImpliedObjective.apply(x, target, w, weight, 5.0), (logits,))

    @pytest.mark.parametrize("eps", [-1e-6, float("nan"), float("inf"), "1e-6", True])
    def test_bad_eps_is_refused(self, eps, make_batch):
        logits, target = make_batch()
        with pytest.raises(ValueError, match="eps must be a finite number >= 0"):
            self.call(logits, target, eps=eps)
        with pytest.raises(ValueError, match="eps must be a finite number >= 0"):
            self.module(**self.settings[0], eps=eps)


class TestDMLoss(EDFTester):
    function, module = staticmethod(losses.dm_loss), losses.DMLoss
    settings = [{}, {"lam": 1, "beta": 4}]
    edfs = [edf.dm(0.5, 8), edf.dm(2, 12)]

    def test_repr_names_the_parameters(self):
        assert "dm(lam=1, beta=4)" in repr(losses.DMLoss(lam=1, beta=4, reduction="sum"))
        assert "eps=1e-06" in repr(losses.DMLoss())

    def test_batch_normalised_gradients_have_unit_total_length(self, make_batch):
        """Exactly 1 with eps = 0; with the code's eps each element loses eps / (2(1 - p) + eps) of it."""
        logits, target = make_batch((64, 10), ignore_every=0)
        losses.dm_loss(logits, target, eps=0).backward()
        torch.testing.assert_close(logits.grad.abs().sum(), torch.tensor(1.0, dtype=torch.float64))
        logits.grad = None
        losses.dm_loss(logits, target).backward()
        assert 1 - 1e-4 < logits.grad.abs().sum().item() < 1

    @pytest.mark.parametrize("eps", [1e-6, 1e-2])
    def test_eps_is_the_papers_code_rule(self, eps, dtype, tolerance, make_batch):
        """The gradient with ``eps`` is the code's ``w / Z (p - e_y) / (2 - 2p + eps)``, through both the
        kernel (float32 on CPU) and the PyTorch path; the value does not depend on ``eps``."""
        logits, target = make_batch((64, 7), scale=6.0)
        logits = logits.detach().to(dtype).requires_grad_()
        value = losses.dm_loss(logits, target, eps=eps)
        value.backward()
        ref_value, ref_grad = loop_reference(logits, target, edf.dm(), eps=eps)
        torch.testing.assert_close(logits.grad.double(), ref_grad, **tolerance)
        torch.testing.assert_close(value.double(), ref_value, **tolerance)
        exact = losses.dm_loss(logits, target, eps=0.0)
        torch.testing.assert_close(value, exact, rtol=0, atol=0)

    def test_lambda_one_is_imae(self, make_batch):
        logits, target = make_batch((20, 5), seed=8)
        a, b = (torch.autograd.grad(f(logits, target), logits)[0]
                for f in (losses.IMAELoss(T=8), losses.DMLoss(lam=1, beta=8)))
        torch.testing.assert_close(a, b)


class TestIMAELoss(EDFTester):
    function, module = staticmethod(losses.imae_loss), losses.IMAELoss
    settings = [{}, {"T": 6}]
    edfs = [edf.imae(8)]


class TestEDFLoss(EDFTester):
    function, module = staticmethod(losses.edf_loss), losses.EDFLoss
    settings = [{"edf": edf.normal(0.7, 8)}]
    bad_params = EDFTester.bad_params + [({"edf": lambda p: p}, TypeError, "edf must be a dmcore.edf.EDF")]
    edfs = [edf.normal(0.7, 4), edf.cce(), edf.gce(0.7)]

    def test_a_negative_weight_is_named(self, make_batch):
        logits, target = make_batch((4, 3))
        negative = edf.from_callable(lambda p: p - 0.5, name="shifted")
        with pytest.raises(ValueError, match="EDF shifted returned a negative or non-finite weight"):
            losses.edf_loss(logits, target, negative)


class BaselineTester(LossTester):
    """A noise-robust baseline: its value against its paper's formula (``name`` in
    :func:`_baseline_reference`), and its gradient against its derived weight ``w(p)`` times the unit CCE
    direction for each of its EDFs (``edfs``, which fix the loss's parameters)."""

    name: str
    edfs: list

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("shape", [(12, 5), (3, 4, 2, 3)])
    def test_matches_its_papers_formula(self, params, reduction, shape, make_batch):
        logits, target = make_batch(shape, seed=21)
        class_weight = torch.linspace(0.3, 1.7, shape[1], dtype=torch.float64)
        expected = _baseline_reference(logits, target, self.name, class_weight, reduction, **params)
        torch.testing.assert_close(type(self).function(logits, target, weight=class_weight, reduction=reduction, **params),
                                   expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(self.module(weight=class_weight, reduction=reduction, **params)(logits, target),
                                   expected, rtol=1e-12, atol=1e-12)

    def test_gradient_is_its_derived_weight_along_the_cce_direction(self, w, make_batch):
        """The weighting view holds: autograd's gradient is w(p) times the unit CCE direction."""
        logits, target = make_batch((40, 7), seed=22, ignore_every=0)
        (grad,) = torch.autograd.grad(type(self).function(logits, target, reduction="sum", **w.params), logits)
        prob = logits.detach().softmax(1)
        p = prob.gather(1, target[:, None]).squeeze(1)
        direction = (prob - F.one_hot(target, 7)) / (2 * (1 - p))[:, None]
        torch.testing.assert_close(grad, w(p)[:, None] * direction, rtol=1e-10, atol=1e-13)


class TestSCELoss(BaselineTester):
    function, module, name = staticmethod(losses.sce_loss), losses.SCELoss, "sce"
    settings = [{"alpha": 0.3, "beta": 1.5}, {"alpha": 0.3, "beta": 1.5, "A": -4.0}]
    bad_params = [({"alpha": 0, "beta": 0}, ValueError, "alpha and beta must not both be 0"),
                  ({"A": 0.0}, ValueError, "must be < 0"), ({"A": 1.0}, ValueError, "A must lie in")]
    edfs = [edf.sce(0.3, 1.5), edf.sce(0.3, 1.5, A=-4)]


class TestPoly1Loss(BaselineTester):
    function, module, name = staticmethod(losses.poly1_loss), losses.Poly1Loss, "poly1"
    settings = [{"epsilon": 2.0}]
    bad_params = [({"epsilon": -2}, ValueError, "epsilon must lie in")]
    edfs = [edf.poly1(2.0), edf.poly1(-1.0)]


class TestNCERCELoss(BaselineTester):
    function, module, name = staticmethod(losses.nce_rce_loss), losses.NCERCELoss, "nce+rce"
    settings = [{"alpha": 2.0, "beta": 0.5}, {"alpha": 1.0, "beta": 100.0, "A": -4.0}]
    bad_params = [({"beta": -1}, ValueError, "beta must lie in"), ({"A": 0.0}, ValueError, "must be < 0")]
    test_gradient_is_its_derived_weight_along_the_cce_direction = None     # not a weighting:

    def test_gradient_is_not_a_weighting_of_the_cce_direction(self):
        """Where the weighting view stops: two examples with the same p_y but different other probabilities
        get NCE gradients of different lengths, and not along p - e_y."""
        logits = torch.tensor([[2.0, 1.0, 1.0, 1.0], [2.0, 2.5, 0.2, -1.0]], dtype=torch.float64)
        logits[1, 1:] += math.log(logits[0, 1:].exp().sum() / logits[1, 1:].exp().sum())   # the same p_y
        logits.requires_grad_()
        target = torch.tensor([0, 0])
        (grad,) = torch.autograd.grad(losses.nce_rce_loss(logits, target, alpha=1.0, beta=1e-12, reduction="sum"), logits)
        prob = logits.detach().softmax(1)
        assert math.isclose(prob[0, 0].item(), prob[1, 0].item(), rel_tol=1e-12)
        ratio = grad[1] / (prob[1] - torch.tensor([1.0, 0, 0, 0], dtype=torch.float64))
        assert (ratio.max() - ratio.min()).item() > 1e-3                  # not parallel to p - e_y
        assert abs(grad[0].abs().sum().item() - grad[1].abs().sum().item()) > 1e-3


# ---------------------------------------------------------------- one property across the losses

def test_eps_stops_fitted_examples_and_defaults():
    """With the defaults (eps = 1e-6) a confidently fitted example stops pushing, as in the paper's code;
    with eps = 0 it keeps pushing with its weight w(1) = 1 (unit L1 length before normalisation)."""
    confident = torch.tensor([[40.0, 0.0, 0.0]], requires_grad=True)
    for loss, length in ((losses.DMLoss(reduction="sum"), 0.0), (losses.DMLoss(reduction="sum", eps=0), 1.0),
                         (losses.IMAELoss(reduction="sum"), 0.0), (losses.EDFLoss(edf.dm(), reduction="sum"), 1.0)):
        (grad,) = torch.autograd.grad(loss(confident, torch.tensor([0])), confident)
        assert abs(grad.abs().sum().item() - length) < 1e-6, (loss, grad)
    assert losses.DMLoss().eps == losses.IMAELoss().eps == 1e-6 and losses.EDFLoss(edf.dm()).eps == 0
    assert "eps=1e-06" in repr(losses.DMLoss())


# ---------------------------------------------------------------- numerics

def test_exact_and_finite_at_p_equal_one_and_extreme_logits():
    logits = torch.tensor([[1e4, -1e4, 0.0], [0.0, 1e4, -1e4], [-1e4, -1e4, 1e4], [50.0, 0.0, 0.0]],
                          dtype=torch.float32, requires_grad=True)
    target = torch.tensor([0, 0, 2, 0])
    value = losses.DMLoss(lam=0.5, beta=8, reduction="sum", eps=0)(logits, target)
    value.backward()
    g = logits.grad
    assert torch.isfinite(value) and torch.isfinite(g).all()
    # row 0: p = 1; the other classes' softmax is (0, 1) -> u = (-1/2, 0, 1/2), weight w(1) = 1
    torch.testing.assert_close(g[0], torch.tensor([-0.5, 0.0, 0.5]))
    # row 1: p = 0 (label logit 1e4 below the max), weight w(0) = 1, u = (-1/2, 1/2, 0)
    torch.testing.assert_close(g[1], torch.tensor([-0.5, 0.5, 0.0]))
    # row 2: p = 1 and both other classes tie -> u = (1/4, 1/4, -1/2)
    torch.testing.assert_close(g[2], torch.tensor([0.25, 0.25, -0.5]))
    # row 3: 1 - p = 2e^-50 underflows nowhere, and the direction is still exact
    torch.testing.assert_close(g[3], torch.tensor([-0.5, 0.25, 0.25]))


def test_random_logits_up_to_1e4_match_a_float64_reference():
    gen = torch.Generator().manual_seed(0)
    logits64 = ((torch.rand(256, 50, generator=gen) * 2 - 1) * 1e4).double()  # float32 values, held exactly
    target = torch.randint(0, 50, (256,), generator=gen)
    grads = []
    for dtype in (torch.float64, torch.float32):
        x = logits64.detach().to(dtype).clone().requires_grad_()
        losses.dm_loss(x, target, reduction="sum").backward()
        grads.append(x.grad.double())
        assert torch.isfinite(x.grad).all()
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_half_precision_is_computed_in_float32(dtype, tolerances, make_batch):
    logits, target = make_batch((64, 10, 3), seed=9, dtype=torch.float32, scale=4.0)
    grads, values = {}, {}
    for dt in (torch.float32, dtype):      # half inputs take the PyTorch path: compare like with like
        x = logits.detach().to(dt).requires_grad_()
        values[dt] = losses.DMLoss(lam=0.5, beta=8, impl="torch")(x, target)
        values[dt].backward()
        assert values[dt].dtype == dt and x.grad.dtype == dt and torch.isfinite(x.grad).all()
        grads[dt] = x.grad
    # the only differences are the rounding of the inputs and of the returned gradient
    x_rounded = logits.detach().to(dtype).float().requires_grad_()
    losses.DMLoss(lam=0.5, beta=8, impl="torch")(x_rounded, target).backward()
    torch.testing.assert_close(grads[dtype].float(), x_rounded.grad.to(dtype).float(), rtol=0, atol=0)
    rounding = tolerances[dtype]["rtol"]
    torch.testing.assert_close(grads[dtype].float(), grads[torch.float32], rtol=rounding * 10, atol=rounding * 1e-2)


# ---------------------------------------------------------------- edge cases with documented results

def test_non_finite_logits_in_ignored_elements_do_not_spread(make_batch):
    logits, target = make_batch((6, 4), seed=2, ignore_every=0)
    logits = logits.detach().clone()
    logits[1, 2], logits[3] = math.nan, -math.inf
    target[1], target[3] = -100, -100
    x = logits.requires_grad_()
    value = losses.DMLoss(eps=0)(x, target)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(x.grad).all()
    assert x.grad[[1, 3]].abs().sum() == 0
    expected_value, expected_grad = loop_reference(torch.cat([logits[[0, 2, 4, 5]]]), target[[0, 2, 4, 5]], edf.dm())
    torch.testing.assert_close(x.grad[[0, 2, 4, 5]], expected_grad)


def test_minus_inf_on_other_classes_is_a_mask_and_on_the_label_gives_p_zero():
    logits = torch.tensor([[2.0, -math.inf, 0.0], [-math.inf, 1.0, 0.0]], dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, 0])
    value = losses.IMAELoss(reduction="none", eps=0)(logits, target)
    value.sum().backward()
    assert torch.isfinite(value).all() and torch.isfinite(logits.grad).all()
    assert logits.grad[0, 1] == 0                                  # a masked class gets no gradient
    assert value[1].item() == pytest.approx(-math.log(torch.finfo(torch.float64).tiny))  # -log p clipped at p = 0
    torch.testing.assert_close(logits.grad[1, 0], torch.tensor(-0.5, dtype=torch.float64))


@pytest.mark.parametrize("impl", ["torch", "c"])
def test_backward_through_a_retained_graph(impl, make_batch):
    """As with F.cross_entropy: a retained graph can be reused with any upstream gradient, and the
    gradient handed back does not alias what the graph keeps (it accumulates into .grad in place)."""
    if impl == "c" and losses.edf_operator.implementation(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long)) != "c":
        pytest.skip("the compiled kernel is off or cannot be built")
    logits, target = make_batch((4, 3), dtype=torch.float32)
    once = torch.autograd.grad(losses.DMLoss(impl=impl)(logits, target), logits)[0]
    value = losses.DMLoss(impl=impl)(logits, target)
    value.backward(retain_graph=True)
    value.backward(retain_graph=True)                 # upstream gradient 1, twice
    torch.testing.assert_close(logits.grad, 2 * once)
    scaled = 2.5 * losses.DMLoss(impl=impl)(logits, target)
    first = torch.autograd.grad(scaled, logits, retain_graph=True)[0]
    second = torch.autograd.grad(scaled, logits)[0]
    torch.testing.assert_close(first, 2.5 * once)
    torch.testing.assert_close(second, 2.5 * once)
    value.backward()                                  # after .grad was accumulated into: still the same
    torch.testing.assert_close(logits.grad, 3 * once)


# ---------------------------------------------------------------- torch.compile

@pytest.mark.slow
def test_losses_compile_and_agree(make_batch):
    torch._dynamo.reset()
    logits, target = make_batch((32, 10), seed=12, dtype=torch.float32)
    for loss in (losses.DMLoss(lam=0.5, beta=8), losses.GCELoss(q=0.7)):
        eager_x = logits.detach().clone().requires_grad_()
        eager = loss(eager_x, target)
        eager.backward()
        compiled_x = logits.detach().clone().requires_grad_()
        value = torch.compile(loss, backend="inductor")(compiled_x, target)
        value.backward()
        torch.testing.assert_close(value, eager)
        torch.testing.assert_close(compiled_x.grad, eager_x.grad)


# ---------------------------------------------------------------- data-parallel training

def _ddp_gradients(rank, world, features, target, state):
    """Rank ``rank``'s share of the batch through DistributedDataParallel: the parameters' gradients."""
    model = torch.nn.Linear(features.shape[1], 7).double()
    model.load_state_dict(state)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    shard = slice(rank * len(target) // world, (rank + 1) * len(target) // world)
    losses.DMLoss(lam=0.5, beta=8)(ddp(features[shard]), target[shard]).backward()
    return {k: v.grad for k, v in model.named_parameters()}


def test_data_parallel_gradients_equal_one_process_with_the_whole_batch(two_ranks):
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(40, 6, generator=gen, dtype=torch.float64)
    target = torch.randint(0, 7, (40,), generator=gen)
    target[:13:3] = -100                                     # uneven counts per rank, too
    model = torch.nn.Linear(6, 7).double()
    losses.DMLoss(lam=0.5, beta=8)(model(features), target).backward()
    distributed = two_ranks(_ddp_gradients, features, target, model.state_dict())
    for name, param in model.named_parameters():
        torch.testing.assert_close(distributed[name], param.grad, rtol=1e-12, atol=1e-14)
