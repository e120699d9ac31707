"""dmcore.losses against plain-loop references, autograd, gradcheck, and every kind of bad input."""

import math
import os
import shutil
import socket

import pytest
import torch
import torch.nn.functional as F

from dmcore import edf, kernels, losses

EDFS = {"dm": edf.dm(0.5, 8), "imae": edf.imae(8), "dm_lam2": edf.dm(2, 12), "normal": edf.normal(0.7, 4),
        "cce": edf.cce(), "gce": edf.gce(0.7)}
NATURAL = {  # EDF with its natural weight and normalizer='count'  ==  the closed-form loss
    "cce": (edf.cce(), losses.cce_loss),
    "mae": (edf.mae(), losses.mae_loss),
    "mse": (edf.mse(), losses.mse_loss),
    "gce": (edf.gce(0.7), lambda x, t, **kw: losses.gce_loss(x, t, q=0.7, **kw)),
}


def make_batch(shape=(12, 5), seed=0, dtype=torch.float64, scale=3.0, ignore_some=True):
    gen = torch.Generator().manual_seed(seed)
    logits = (scale * torch.randn(shape, generator=gen, dtype=torch.float64)).to(dtype)
    target_shape = (shape[0],) + tuple(shape[2:])
    target = torch.randint(0, shape[1], target_shape, generator=gen)
    if ignore_some:
        target.view(-1)[::5] = -100
    return logits.requires_grad_(), target


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


# ---------------------------------------------------------------- EDF losses against the loop reference

@pytest.mark.parametrize("name", EDFS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("normalizer", ["batch", "count"])
@pytest.mark.parametrize("shape", [(12, 5), (3, 4, 2, 3)])
def test_edf_loss_matches_plain_loop_reference(name, reduction, normalizer, shape):
    logits, target = make_batch(shape)
    weight = torch.linspace(0.5, 2.0, shape[1], dtype=torch.float64)
    value = losses.edf_loss(logits, target, EDFS[name], weight=weight, reduction=reduction, normalizer=normalizer)
    upstream = torch.rand(value.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    (value * upstream).sum().backward()
    ref_value, ref_grad = loop_reference(logits, target, EDFS[name], weight, reduction=reduction, normalizer=normalizer)
    torch.testing.assert_close(value.detach(), ref_value, rtol=1e-12, atol=1e-12)
    expected = ref_grad * (upstream.unsqueeze(1) if reduction == "none" else upstream)
    torch.testing.assert_close(logits.grad, expected, rtol=1e-10, atol=1e-13)


def test_batch_normalised_gradients_have_unit_total_length():
    """Exactly 1 with eps = 0; with the code's eps each element loses eps / (2(1 - p) + eps) of it."""
    logits, target = make_batch((64, 10), ignore_some=False)
    losses.dm_loss(logits, target, eps=0).backward()
    torch.testing.assert_close(logits.grad.abs().sum(), torch.tensor(1.0, dtype=torch.float64))
    logits.grad = None
    losses.dm_loss(logits, target).backward()
    assert 1 - 1e-4 < logits.grad.abs().sum().item() < 1

@pytest.mark.parametrize("eps", [1e-6, 1e-2])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_eps_is_the_papers_code_rule(eps, dtype):
    """The gradient with ``eps`` is the code's ``w / Z (p - e_y) / (2 - 2p + eps)``, through both the
    kernel (float32 on CPU) and the PyTorch path; the value does not depend on ``eps``."""
    logits, target = make_batch((64, 7), scale=6.0)
    logits = logits.detach().to(dtype).requires_grad_()
    value = losses.dm_loss(logits, target, eps=eps)
    value.backward()
    ref_value, ref_grad = loop_reference(logits, target, EDFS["dm"], eps=eps)
    tol = dict(rtol=1e-10, atol=1e-13) if dtype == torch.float64 else dict(rtol=2e-5, atol=1e-7)
    torch.testing.assert_close(logits.grad.double(), ref_grad, **tol)
    torch.testing.assert_close(value.double(), ref_value, **tol)
    exact = losses.dm_loss(logits, target, eps=0.0)
    torch.testing.assert_close(value, exact, rtol=0, atol=0)


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


@pytest.mark.parametrize("eps", [-1e-6, float("nan"), float("inf"), "1e-6", True])
def test_bad_eps_is_refused(eps):
    logits, target = make_batch()
    with pytest.raises(ValueError, match="eps must be a finite number >= 0"):
        losses.dm_loss(logits, target, eps=eps)
    with pytest.raises(ValueError, match="eps must be a finite number >= 0"):
        losses.DMLoss(eps=eps)

# ---------------------------------------------------------------- one mechanism, independently checked

@pytest.mark.parametrize("name", NATURAL)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(16, 7), (2, 3, 4, 5)])
def test_edf_path_with_natural_weight_reproduces_closed_form_gradients(name, reduction, shape):
    weight_fn, closed = NATURAL[name]
    class_weight = torch.linspace(0.2, 1.5, shape[1], dtype=torch.float64)
    grads = []
    for fn in (lambda x, t: losses.edf_loss(x, t, weight_fn, normalizer="count", weight=class_weight, reduction=reduction),
               lambda x, t: closed(x, t, weight=class_weight, reduction=reduction)):
        logits, target = make_batch(shape, seed=3)
        out = fn(logits, target)
        upstream = torch.rand(out.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
        (out * upstream).sum().backward()
        grads.append(logits.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-11, atol=1e-14)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cce_loss_equals_pytorch_cross_entropy(reduction):
    logits, target = make_batch((4, 6, 3, 2), seed=5)
    weight = torch.rand(6, dtype=torch.float64) + 0.1
    ours = losses.CCELoss(weight=weight, reduction=reduction)(logits, target)
    theirs = F.cross_entropy(logits, target, weight=weight, reduction=reduction)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


def test_closed_form_values_at_uniform_probabilities():
    logits, target = torch.zeros(3, 4, dtype=torch.float64), torch.tensor([0, 1, 2])   # p = 1/4
    assert math.isclose(losses.mae_loss(logits, target).item(), 0.75, rel_tol=1e-14)
    assert math.isclose(losses.mse_loss(logits, target).item(), 0.5625, rel_tol=1e-14)
    assert math.isclose(losses.gce_loss(logits, target, q=0.5).item(), (1 - 0.5) / 0.5, rel_tol=1e-14)
    assert math.isclose(losses.cce_loss(logits, target).item(), math.log(4), rel_tol=1e-14)


@pytest.mark.parametrize("make", [losses.CCELoss, losses.MAELoss, losses.MSELoss, lambda **kw: losses.GCELoss(q=0.6, **kw)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_gradcheck_closed_form_losses(make, reduction):
    logits, target = make_batch((6, 4, 2), seed=7, scale=1.0)
    module = make(weight=torch.rand(4, dtype=torch.float64) + 0.5, reduction=reduction)
    assert torch.autograd.gradcheck(lambda x: module(x, target), (logits,))


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


@pytest.mark.parametrize("name", ["dm", "imae", "dm_lam2", "normal"])
def test_gradcheck_edf_losses_against_their_implied_objective(name):
    logits, target = make_batch((5, 4), seed=11, scale=1.5, ignore_some=False)
    weight = torch.ones(4, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: _ImpliedObjective.apply(x, target, EDFS[name], weight, 5.0), (logits,))


def test_functions_and_modules_agree():
    logits, target = make_batch((10, 6), seed=4)
    pairs = [(losses.DMLoss(lam=1, beta=4, reduction="sum"), lambda x, t: losses.dm_loss(x, t, lam=1, beta=4, reduction="sum")),
             (losses.IMAELoss(T=6), lambda x, t: losses.imae_loss(x, t, T=6)),
             (losses.EDFLoss(edf.normal(0.7, 8), normalizer="count"), lambda x, t: losses.edf_loss(x, t, edf.normal(0.7, 8), normalizer="count")),
             (losses.GCELoss(q=0.4), lambda x, t: losses.gce_loss(x, t, q=0.4)),
             (losses.MAELoss(ignore_index=2), lambda x, t: losses.mae_loss(x, t, ignore_index=2))]
    for module, function in pairs:
        labels = target.masked_fill(target == -100, 2) if module.ignore_index == 2 else target
        torch.testing.assert_close(module(logits, labels), function(logits, labels))
    assert "dm(lam=1, beta=4)" in repr(pairs[0][0])


def test_dm_with_lambda_one_is_imae():
    logits, target = make_batch((20, 5), seed=8)
    a, b = (torch.autograd.grad(f(logits, target), logits)[0] for f in (losses.IMAELoss(T=8), losses.DMLoss(lam=1, beta=8)))
    torch.testing.assert_close(a, b)


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


@pytest.mark.parametrize("dtype, tolerance", [(torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)])
def test_half_precision_is_computed_in_float32(dtype, tolerance, monkeypatch):
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
    torch.testing.assert_close(grads[dtype].float(), grads[torch.float32], rtol=tolerance * 10, atol=tolerance * 1e-2)


# ---------------------------------------------------------------- edge cases with documented results

@pytest.mark.parametrize("loss", [losses.DMLoss(), losses.CCELoss(), losses.GCELoss()])
def test_empty_and_all_ignored_batches_give_zero(loss):
    for logits, target in [(torch.zeros(0, 5, requires_grad=True), torch.zeros(0, dtype=torch.long)),
                           (torch.randn(4, 5, requires_grad=True), torch.full((4,), -100))]:
        value = loss(logits, target)
        value.backward()
        assert value.item() == 0.0 and logits.grad.abs().sum().item() == 0.0


def test_non_finite_logits_in_ignored_elements_do_not_spread():
    logits, target = make_batch((6, 4), seed=2, ignore_some=False)
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
def test_backward_through_a_retained_graph(impl):
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


# ---------------------------------------------------------------- bad input: clear errors

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
    (lambda: (torch.randn(3), torch.tensor(0)), ValueError, r"shape \(N, C\)"),
    (lambda: (torch.randint(0, 3, (4, 3)), torch.zeros(4, dtype=torch.long)), TypeError, "floating-point tensor"),
    (lambda: (torch.tensor([[0.0, math.nan], [1.0, 2.0]]), torch.tensor([0, 1])), ValueError, r"NaN or \+inf .* first at index \(0,\)"),
    (lambda: (torch.tensor([[0.0, 1.0], [math.inf, 2.0]]), torch.tensor([0, 1])), ValueError, r"first at index \(1,\)"),
    (lambda: (torch.tensor([[0.0, 1.0], [-math.inf, -math.inf]]), torch.tensor([0, 1])), ValueError, "only -inf"),
]


@pytest.mark.parametrize("loss", [losses.DMLoss(), losses.CCELoss(), losses.MSELoss()], ids=["dm", "cce", "mse"])
@pytest.mark.parametrize("make, error, message", BAD_INPUTS)
def test_bad_input_is_named(loss, make, error, message):
    logits, target = make()
    with pytest.raises(error, match=message):
        loss(logits, target)


def test_bad_arguments_are_named():
    logits, target = make_batch((4, 3))
    with pytest.raises(ValueError, match="reduction must be one of"):
        losses.DMLoss(reduction="avg")
    with pytest.raises(ValueError, match="normalizer must be one of"):
        losses.dm_loss(logits, target, normalizer="global")
    with pytest.raises(ValueError, match=r"weight must have shape \(3,\), got \(4,\)"):
        losses.dm_loss(logits, target, weight=torch.ones(4))
    with pytest.raises(TypeError, match="edf must be a dmcore.edf.EDF"):
        losses.edf_loss(logits, target, lambda p: p)
    with pytest.raises(ValueError, match="q must lie in"):
        losses.GCELoss(q=2)
    negative = edf.from_callable(lambda p: p - 0.5, name="shifted")
    with pytest.raises(ValueError, match="EDF shifted returned a negative or non-finite weight"):
        losses.edf_loss(logits, target, negative)


# ---------------------------------------------------------------- torch.compile

@pytest.mark.slow
def test_losses_compile_and_agree():
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

def _ddp_worker(rank, world, port, data, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    features, target, state = data
    model = torch.nn.Linear(features.shape[1], 7).double()
    model.load_state_dict(state)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    shard = slice(rank * len(target) // world, (rank + 1) * len(target) // world)
    losses.DMLoss(lam=0.5, beta=8)(ddp(features[shard]), target[shard]).backward()
    if rank == 0:
        torch.save({k: v.grad for k, v in model.named_parameters()}, out)
    torch.distributed.destroy_process_group()


def test_data_parallel_gradients_equal_one_process_with_the_whole_batch(tmp_path):
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(40, 6, generator=gen, dtype=torch.float64)
    target = torch.randint(0, 7, (40,), generator=gen)
    target[:13:3] = -100                                     # uneven counts per rank, too
    model = torch.nn.Linear(6, 7).double()
    losses.DMLoss(lam=0.5, beta=8)(model(features), target).backward()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "grads.pt"
    torch.multiprocessing.spawn(_ddp_worker, args=(2, port, (features, target, model.state_dict()), out), nprocs=2)
    distributed = torch.load(out)
    for name, param in model.named_parameters():
        torch.testing.assert_close(distributed[name], param.grad, rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------- the compiled CPU kernel

@pytest.fixture
def kernel_on(monkeypatch):
    """The compiled kernel enabled for the test, whatever DMCORE_CPU_KERNEL the suite runs under."""
    monkeypatch.setenv("DMCORE_CPU_KERNEL", "1")


def needs_compiler(test):
    """A test of the compiled CPU kernel: it runs with the kernel enabled, where a C compiler exists."""
    missing = shutil.which("gcc") is None and shutil.which("cc") is None and "CC" not in os.environ
    return pytest.mark.usefixtures("kernel_on")(pytest.mark.skipif(missing, reason="the CPU kernel needs a C compiler")(test))


@needs_compiler
def test_cpu_kernel_builds_and_is_used_for_float32():
    assert kernels.cpu() is not None and kernels.cpu() is kernels.cpu()


@needs_compiler
@pytest.mark.parametrize("name", ["dm", "imae", "cce", "normal"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("shape", [(40, 5), (40, 70), (3, 4, 2, 300)])
def test_cpu_kernel_matches_plain_loop_reference(name, reduction, shape):
    logits, target = make_batch(shape, seed=13)
    x = logits.detach().float().requires_grad_()
    value = losses.edf_loss(x, target, EDFS[name], reduction=reduction)
    value.sum().backward()
    ref_value, ref_grad = loop_reference(x.detach().double(), target, EDFS[name], reduction=reduction)
    torch.testing.assert_close(value.double(), ref_value, rtol=2e-6, atol=1e-7)
    torch.testing.assert_close(x.grad.double(), ref_grad, rtol=2e-5, atol=1e-7)


@needs_compiler
@pytest.mark.parametrize("shape", [(300, 7), (64, 100), (5, 3, 17, 19)])
def test_cpu_kernel_agrees_with_the_pytorch_path_on_special_elements(shape, monkeypatch):
    logits, target = make_batch(shape, seed=21, dtype=torch.float32, scale=5.0)
    logits = logits.detach().clone()
    flat_x, flat_t = logits.movedim(1, -1).reshape(-1, shape[1]), target.view(-1)
    flat_x[1] = -math.inf
    flat_x[1, 0], flat_t[1] = 3.0, 0                 # every other class masked: p = 1, direction -e_y / 2
    flat_x[2, 1], flat_t[2] = -math.inf, 1           # label masked: p = 0
    flat_x[3, 2], flat_t[3] = 1e4, 2                 # p = 1 to working precision
    flat_x[4, 0], flat_t[4] = math.nan, -100         # NaN in an ignored element
    flat_x[6], flat_t[6] = 0.0, 2                    # uniform
    logits = flat_x.reshape(logits.movedim(1, -1).shape).movedim(-1, 1).contiguous()
    target = flat_t.reshape(target.shape)
    results = []
    for impl in ("c", "torch"):
        x = logits.clone().requires_grad_()
        value = losses.DMLoss(lam=0.5, beta=8, reduction="none", impl=impl)(x, target)
        (value * torch.linspace(0.5, 1.5, value.numel()).reshape(value.shape)).sum().backward()
        assert torch.isfinite(x.grad).all()
        results.append((value.detach(), x.grad))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=2e-6, atol=1e-6)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=2e-5, atol=1e-7)


@needs_compiler
@pytest.mark.parametrize("classes", [10, 100])
def test_cpu_kernel_gives_an_element_the_same_bits_wherever_it_sits_in_the_batch(classes):
    """An element's value and gradient do not depend on its neighbours or its position (vector body or
    scalar tail of a tile), so a run trained with others equals the run trained alone, bit for bit."""
    logits, target = make_batch((61, classes), seed=5, dtype=torch.float32, scale=4.0, ignore_some=False)
    logits = logits.detach()
    outputs = []
    for before in (0, 3, 64, 70):       # rows prepended: the same rows land on other lanes and tiles
        pad, pad_t = make_batch((before, classes), seed=6, dtype=torch.float32, ignore_some=False) if before else (
            torch.empty(0, classes), torch.empty(0, dtype=torch.long))
        x = torch.cat([pad.detach(), logits]).requires_grad_()
        value = losses.edf_loss(x, torch.cat([pad_t, target]), edf.dm(0.5, 8), reduction="none")
        value.backward(torch.ones_like(value))
        outputs.append((value[before:].detach(), x.grad[before:]))
    for value, grad in outputs[1:]:
        assert torch.equal(value, outputs[0][0]) and torch.equal(grad, outputs[0][1])


@needs_compiler
def test_cpu_kernel_exp_is_accurate():
    # the kernel's softmax over the other classes, for differences spanning the whole float range
    diffs = torch.linspace(-87, 0, 20001)
    logits = torch.stack([torch.full_like(diffs, 50.0), torch.zeros_like(diffs), diffs], dim=1).requires_grad_()
    target = torch.zeros(len(diffs), dtype=torch.long)
    losses.edf_loss(logits, target, edf.dm(0, 0), reduction="sum").backward()   # w = 1: grad = u
    expected = 0.5 * torch.exp(diffs.double()) / (1 + torch.exp(diffs.double()))   # u_2 = q_2 / 2
    torch.testing.assert_close(logits.grad[:, 2].double(), expected, rtol=4 * 2**-23, atol=0)


def test_kernel_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("DMCORE_CPU_KERNEL", "0")
    assert kernels.cpu() is None
    logits, target = make_batch((8, 4), dtype=torch.float32)
    losses.DMLoss()(logits, target).backward()     # the PyTorch path
    assert torch.isfinite(logits.grad).all()


def test_kernel_build_failure_falls_back_and_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv("DMCORE_CPU_KERNEL", "1")      # the build is tried (and fails) whatever the suite runs under
    monkeypatch.setenv("CC", "/bin/false")
    monkeypatch.setenv("DMCORE_CACHE", str(tmp_path))
    monkeypatch.setattr(kernels, "_loaded", {})
    with pytest.warns(RuntimeWarning, match="edf_cpu is not available .*/bin/false failed.*PyTorch path"):
        assert kernels.cpu() is None
    logits, target = make_batch((8, 4), dtype=torch.float32)
    assert losses.edf_operator.implementation(logits, target) == "torch"
    losses.DMLoss()(logits, target).backward()
    with pytest.raises(RuntimeError, match="impl='c': the compiled kernel could not be built"):
        losses.DMLoss(impl="c")(logits, target)


# ---------------------------------------------------------------- the noise-robust baselines: SCE, NCE+RCE, Poly-1

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
        rce = -sum(math.exp(lp) * (0.0 if k == y else -4.0) for k, lp in enumerate(log_probs))   # log 0 := A = -4
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


BASELINES = {"sce": (losses.sce_loss, losses.SCELoss, {"alpha": 0.3, "beta": 1.5}),
             "nce+rce": (losses.nce_rce_loss, losses.NCERCELoss, {"alpha": 2.0, "beta": 0.5}),
             "poly1": (losses.poly1_loss, losses.Poly1Loss, {"epsilon": 2.0})}


@pytest.mark.parametrize("name", BASELINES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(12, 5), (3, 4, 2, 3)])
def test_baselines_match_their_papers_formulas(name, reduction, shape):
    function, module, params = BASELINES[name]
    logits, target = make_batch(shape, seed=21)
    class_weight = torch.linspace(0.3, 1.7, shape[1], dtype=torch.float64)
    expected = _baseline_reference(logits, target, name, class_weight, reduction, **params)
    torch.testing.assert_close(function(logits, target, weight=class_weight, reduction=reduction, **params), expected,
                               rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(module(weight=class_weight, reduction=reduction, **params)(logits, target), expected,
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name, weight", [("sce", edf.sce(0.3, 1.5)), ("poly1", edf.poly1(2.0)), ("poly1", edf.poly1(-1.0))])
def test_sce_and_poly1_gradients_are_their_derived_weights_along_the_cce_direction(name, weight):
    """The weighting view holds for SCE and Poly-1: autograd's gradient is w(p) times the unit CCE direction."""
    function, _, params = BASELINES[name]
    params = dict(params, **weight.params)
    logits, target = make_batch((40, 7), seed=22, ignore_some=False)
    (grad,) = torch.autograd.grad(function(logits, target, reduction="sum", **params), logits)
    prob = logits.detach().softmax(1)
    p = prob.gather(1, target[:, None]).squeeze(1)
    direction = (prob - F.one_hot(target, 7)) / (2 * (1 - p))[:, None]
    torch.testing.assert_close(grad, weight(p)[:, None] * direction, rtol=1e-10, atol=1e-13)


def test_nce_gradient_is_not_a_weighting_of_the_cce_direction():
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


def test_baselines_bad_parameters_are_named():
    logits, target = make_batch((4, 3))
    with pytest.raises(ValueError, match="alpha and beta must not both be 0"):
        losses.SCELoss(alpha=0, beta=0)
    with pytest.raises(ValueError, match="beta must lie in"):
        losses.nce_rce_loss(logits, target, beta=-1)
    with pytest.raises(ValueError, match="epsilon must lie in"):
        losses.Poly1Loss(epsilon=-2)
    with pytest.raises(ValueError, match="NaN or \\+inf"):
        losses.SCELoss()(torch.tensor([[0.0, math.nan], [1.0, 2.0]]), torch.tensor([0, 1]))
