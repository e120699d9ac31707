"""The loss contract a library user relies on: second derivatives, data-parallel calls, every target
dtype, pickling, validation, soft targets and label smoothing, torch.compile and the custom operator."""

import doctest
import functools
import io
import math
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dmcore import edf, edf_operator, losses

EDF_MODULES = {"dm": lambda **kw: losses.DMLoss(**kw), "imae": lambda **kw: losses.IMAELoss(**kw),
               "normal": lambda **kw: losses.EDFLoss(edf.normal(0.7, 4), **kw)}
ALL_NAMES = losses.names()


@pytest.fixture
def batch(make_batch):
    """``batch(shape, seed=0, dtype=torch.float64)``: logits that require grad, scaled by 2, and every
    target counted (conftest's ``make_batch``)."""
    return functools.partial(make_batch, scale=2.0, ignore_every=0)


def soft_targets(shape, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.softmax(2 * torch.randn(shape, generator=gen, dtype=torch.float64), 1)


# ---------------------------------------------------------------- second derivatives

@pytest.mark.parametrize("name", list(EDF_MODULES))
@pytest.mark.parametrize("reduction, normalizer", [("mean", "batch"), ("mean", "count"), ("none", "batch")])
@pytest.mark.parametrize("targets", ["index", "soft", "smoothed"])
def test_double_backward_is_the_derivative_of_the_manipulated_gradient(name, reduction, normalizer, targets, batch):
    """gradgradcheck: the second derivative autograd gives equals finite differences of the gradient."""
    x, target = batch((6, 4), seed=3)
    target[1] = -100
    smoothing = 0.1 if targets == "smoothed" else 0.0
    if targets == "soft":
        target = soft_targets((6, 4))
    loss = EDF_MODULES[name](reduction=reduction, normalizer=normalizer, label_smoothing=smoothing)
    assert torch.autograd.gradgradcheck(lambda z: loss(z, target), (x,), eps=1e-6, atol=1e-5, rtol=1e-4)


def test_a_gradient_penalty_keeps_its_term(batch):
    x, target = batch((8, 5), seed=4)
    (grad,) = torch.autograd.grad(losses.DMLoss()(x, target), x, create_graph=True)
    assert grad.requires_grad                      # it did not before: the penalty silently vanished
    penalty = grad.pow(2).sum()
    (second,) = torch.autograd.grad(penalty, x)
    step = 1e-6
    direction = torch.randn_like(x)
    def pen(z):
        (g,) = torch.autograd.grad(losses.DMLoss()(z, target), z)
        return g.pow(2).sum()
    numeric = (pen((x + step * direction).detach().requires_grad_()) -
               pen((x - step * direction).detach().requires_grad_())) / (2 * step)
    assert float((second * direction).sum()) == pytest.approx(float(numeric), rel=1e-5)


# ---------------------------------------------------------------- data-parallel calls

def _ddp_gradients(rank, world, features, target, state):
    """An evaluation on rank 0 alone, then rank ``rank``'s share of the batch through
    DistributedDataParallel with a process group passed to the loss: the parameters' gradients."""
    model = torch.nn.Linear(features.shape[1], 7).double()
    model.load_state_dict(state)
    if rank == 0:                                   # an evaluation on rank 0 alone must not wait for rank 1
        with torch.no_grad():
            losses.DMLoss()(model(features), target)
        losses.DMLoss()(model(features).detach(), target)
    group = torch.distributed.new_group([0, 1])
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    shard = slice(rank * len(target) // world, (rank + 1) * len(target) // world)
    losses.DMLoss(process_group=group)(ddp(features[shard]), target[shard]).backward()
    return {k: v.grad for k, v in model.named_parameters()}


def test_rank_zero_evaluation_returns_and_a_process_group_can_be_passed(two_ranks):
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(40, 6, generator=gen, dtype=torch.float64)
    target = torch.randint(0, 7, (40,), generator=gen)
    model = torch.nn.Linear(6, 7).double()
    losses.DMLoss()(model(features), target).backward()
    distributed = two_ranks(_ddp_gradients, features, target, model.state_dict())
    for name, param in model.named_parameters():
        torch.testing.assert_close(distributed[name], param.grad, rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------- targets of any integer dtype

@pytest.mark.parametrize("name", ALL_NAMES)
def test_uint8_targets_keep_class_156(name, batch):
    """-100 wraps to 156 when compared with uint8: the class must still count."""
    x, target = batch((6, 200), seed=5, dtype=torch.float32)
    target[:3] = 156
    loss = losses.from_name(name)
    expected = loss(x, target)
    (expected_grad,) = torch.autograd.grad(expected, x)
    value = loss(x, target.to(torch.uint8))
    (grad,) = torch.autograd.grad(value, x)
    torch.testing.assert_close(value, expected)
    torch.testing.assert_close(grad, expected_grad)
    assert grad[0].abs().sum() > 0


# ---------------------------------------------------------------- pickling

def test_losses_pickle_and_save_with_their_modules(batch):
    x, target = batch((5, 4), seed=6, dtype=torch.float32)
    for name in ALL_NAMES + ["dm:lam=1,beta=16"]:
        loss = losses.from_name(name)
        copy = pickle.loads(pickle.dumps(loss))
        torch.testing.assert_close(copy(x, target), loss(x, target))
    model = torch.nn.Sequential(torch.nn.Linear(3, 4))
    model.criterion = losses.EDFLoss(edf.from_sympy("exp(3 * p * (1 - p))"))
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    restored = torch.load(buffer, weights_only=False)
    torch.testing.assert_close(restored.criterion(x, target), model.criterion(x, target))


# ---------------------------------------------------------------- validation

@pytest.mark.parametrize("name", ["dm", "cce", "gce", "sce"])
@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_bad_class_weights_are_named(name, bad, batch):
    x, target = batch((4, 3))
    weight = torch.tensor([1.0, bad, 1.0], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"weight must be finite and >= 0 for every class, got .* for class 1"):
        type(losses.from_name(name))(weight=weight)
    function = {"dm": losses.dm_loss, "cce": losses.cce_loss, "gce": losses.gce_loss, "sce": losses.sce_loss}[name]
    with pytest.raises(ValueError, match="for class 1"):
        function(x, target, weight=weight)


@pytest.mark.parametrize("name", ["dm", "cce"])
def test_ignore_index_must_be_an_integer(name, batch):
    x, target = batch((4, 3))
    for bad in (None, 1.5, True):
        with pytest.raises(TypeError, match="ignore_index must be an integer"):
            type(losses.from_name(name))(ignore_index=bad)
        with pytest.raises(TypeError, match="ignore_index must be an integer"):
            losses.from_name(name).__class__.function(x, target, ignore_index=bad) if name == "cce" else \
                losses.dm_loss(x, target, ignore_index=bad)
    assert losses.CCELoss(ignore_index=np.int64(2))(x, target) is not None


def test_parameters_are_checked_even_when_an_equal_edf_is_cached():
    edf.dm(1, 8)
    with pytest.raises(ValueError, match="lam must be a real number, got True"):
        edf.dm(True, 8)
    with pytest.raises(ValueError, match="q must be a real number"):
        edf.gce(False)


def test_numpy_and_tensor_parameters_are_accepted():
    assert losses.DMLoss(lam=np.float32(0.5), beta=np.int64(8)).edf is edf.dm(0.5, 8)
    assert losses.GCELoss(q=np.float64(0.7)).q == pytest.approx(0.7)
    assert edf.imae(torch.tensor(8.0)) is edf.imae(8)


def test_class_weight_gradients(batch):
    x, target = batch((6, 3))
    weight = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64, requires_grad=True)
    losses.cce_loss(x, target, weight=weight).backward()           # closed form: autograd reaches the weight
    assert weight.grad is not None and weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="weight requires grad, but the EDF losses give class weights no gradient"):
        losses.dm_loss(x, target, weight=weight)
    with pytest.raises(ValueError, match="weight requires grad"):
        losses.DMLoss(weight=weight)


def test_an_integer_weight_error_names_its_dtype(batch):
    x, target = batch((4, 3))
    with pytest.raises(TypeError, match="weight must be a floating-point tensor, got dtype torch.int64"):
        losses.dm_loss(x, target, weight=torch.ones(3, dtype=torch.long))
    with pytest.raises(TypeError, match="got dtype torch.int64"):
        losses.CCELoss(weight=torch.ones(3, dtype=torch.long))


@pytest.mark.parametrize("name", ALL_NAMES)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_ignored_elements_weigh_nothing_whatever_their_logits(name, bad, batch):
    x, target = batch((5, 4), dtype=torch.float32)
    x = x.detach().clone()
    x[2] = bad
    target[2] = -100
    x.requires_grad_()
    value = losses.from_name(name)(x, target)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(x.grad).all()
    assert (x.grad[2] == 0).all()


# ---------------------------------------------------------------- no synchronisation with check=False

@pytest.mark.parametrize("name", ALL_NAMES)
def test_check_false_never_reads_a_value_back(name, monkeypatch, batch):
    """No Python-level read of a tensor's value: on a GPU each would wait for the device. (A branch for
    CPU tensors alone may compare tensors in C++, as the EDF losses' backward does for g == 1.)"""
    x, target = batch((6, 4), dtype=torch.float32)
    loss = losses.from_name(name)
    loss.check = False

    def sync(*args, **kwargs):
        raise AssertionError("a device-to-host read")
    for method in ("tolist", "item", "__bool__", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, method, sync)
    loss(x, target).backward()
    monkeypatch.undo()
    assert torch.isfinite(x.grad).all()


# ---------------------------------------------------------------- probability targets and label smoothing

@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("shape", [(7, 5), (3, 4, 2, 3)])
def test_cce_matches_cross_entropy_with_soft_targets_and_smoothing(reduction, weighted, shape, batch):
    x, target = batch(shape, seed=7)
    target.view(-1)[::4] = -100
    weight = torch.tensor([1.0, 2.0, 0.5, 1.5, 3.0][:shape[1]], dtype=torch.float64) if weighted else None
    soft = soft_targets(shape)
    for t, smoothing in ((target, 0.2), (soft, 0.0), (soft, 0.3)):
        kw = dict(weight=weight, reduction=reduction, label_smoothing=smoothing)
        ours = losses.cce_loss(x, t, **kw)
        theirs = F.cross_entropy(x, t, **kw)
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
        g_ours, = torch.autograd.grad(ours.sum(), x)
        g_theirs, = torch.autograd.grad(theirs.sum(), x)
        torch.testing.assert_close(g_ours, g_theirs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("smoothing", [0.0, 0.25])
def test_edf_with_cce_weight_gives_the_soft_cross_entropy_gradient(smoothing, batch):
    """With w = 2(1 - p_t) and u = (softmax - t) / (2(1 - p_t)), the gradient is softmax - t."""
    x, _ = batch((9, 6), seed=8)
    soft = soft_targets((9, 6))
    ours = losses.edf_loss(x, soft, edf.cce(), normalizer="count", label_smoothing=smoothing)
    theirs = F.cross_entropy(x, soft, label_smoothing=smoothing)
    torch.testing.assert_close(torch.autograd.grad(ours, x)[0], torch.autograd.grad(theirs, x)[0],
                               rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["dm", "imae", "normal"])
def test_one_hot_probability_targets_reduce_to_class_indices(name, batch):
    x, target = batch((12, 5), seed=9)
    one_hot = F.one_hot(target, 5).double()
    loss = EDF_MODULES[name](reduction="none")
    torch.testing.assert_close(loss(x, one_hot), loss(x, target), rtol=1e-12, atol=1e-12)
    g_soft, = torch.autograd.grad(loss(x, one_hot).sum(), x)
    g_hard, = torch.autograd.grad(loss(x, target).sum(), x)
    torch.testing.assert_close(g_soft, g_hard, rtol=1e-10, atol=1e-12)


def test_smoothing_zero_and_soft_targets_of_the_smoothed_distribution_agree(batch):
    x, target = batch((8, 4), seed=10)
    smoothed = F.one_hot(target, 4).double() * 0.8 + 0.2 / 4
    for loss in (losses.DMLoss(), losses.GCELoss(), losses.NCERCELoss()):
        loss.label_smoothing = 0.2
        a = loss(x, target)
        loss.label_smoothing = 0.0
        torch.testing.assert_close(a, loss(x, smoothed), rtol=1e-12, atol=1e-12)


def test_closed_form_losses_take_the_expectation_over_the_target(batch):
    x, _ = batch((4, 3), seed=11)
    soft = soft_targets((4, 3))
    p = torch.softmax(x.detach(), 1)
    expected = (soft * (1 - p ** 0.7) / 0.7).sum(1)
    torch.testing.assert_close(losses.gce_loss(x, soft, reduction="none"), expected)


def test_probability_targets_are_checked(batch):
    x, _ = batch((4, 3))
    with pytest.raises(ValueError, match="must be finite and >= 0"):     # a total other than 1 is taken
        losses.dm_loss(x, torch.full((4, 3), -0.5, dtype=torch.float64))
    with pytest.raises(ValueError, match="label_smoothing must be a number in"):
        losses.DMLoss(label_smoothing=1.5)


# ---------------------------------------------------------------- the implementation switch

def test_impl_switch_is_explicit_and_visible(caplog, batch):
    x, target = batch((4, 3))
    assert "impl=torch" in repr(losses.DMLoss(impl="torch"))
    with pytest.raises(ValueError, match="impl must be one of"):
        losses.DMLoss(impl="cuda")
    with pytest.raises(ValueError, match="impl='c' needs float32 logits on CPU .* got torch.float64"):
        losses.DMLoss(impl="c")(x, target)
    assert edf_operator.implementation(x, target) == "torch"
    edf_operator._logged.clear()
    with caplog.at_level("INFO", logger="dmcore.losses"):
        losses.DMLoss(impl="torch")(x, target)
    assert "torch path for torch.float64 logits on cpu" in caplog.text


# ---------------------------------------------------------------- torch.compile and the custom operator

def test_custom_operator_passes_opcheck(batch):
    x, target = batch((6, 4))
    soft = soft_targets((6, 4))
    key = edf_operator.edf_key(edf.dm(0.5, 8))
    op = torch.ops.dmcore.edf_loss.default
    cases = [(x, target, None, "mean", "batch", 1e-6, 0.0, True),
             (x, target, torch.rand(4, dtype=torch.float64), "none", "count", 0.0, 0.1, True),
             (x, soft, None, "sum", "batch", 1e-6, 0.0, True),
             (x.detach(), target, None, "mean", "batch", 0.0, 0.0, False),
             (x.detach().float().requires_grad_(), target, None, "mean", "batch", 1e-6, 0.0, True)]
    for z, t, w, reduction, normalizer, eps, smoothing, need in cases:
        torch.library.opcheck(op, (z, t, w, key, -100, reduction, normalizer, "", eps, smoothing, True, "auto", need))


@pytest.mark.slow
def test_fullgraph_compile_of_a_model_and_its_loss(batch):
    torch._dynamo.reset()
    x, target = batch((16, 8), seed=12, dtype=torch.float32)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8))
    for loss in (losses.DMLoss(), losses.IMAELoss(label_smoothing=0.1), losses.GCELoss(check=False), losses.CCELoss()):
        def step(inputs, labels):
            return loss(model(inputs), labels)
        eager = step(x.detach(), target)
        eager_grads = torch.autograd.grad(eager, list(model.parameters()))
        compiled = torch.compile(step, fullgraph=True)(x.detach(), target)
        grads = torch.autograd.grad(compiled, list(model.parameters()))
        torch.testing.assert_close(compiled, eager)
        for a, b in zip(grads, eager_grads):
            torch.testing.assert_close(a, b)


# ---------------------------------------------------------------- documentation

def test_the_docstring_examples_run():
    from dmcore import linear_edf, targets
    for module in (losses, edf, targets, linear_edf):
        result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert result.failed == 0 and (module is targets or result.attempted > 0)


def test_every_public_loss_has_a_formula_an_example_and_a_reference():
    for name in losses.__all__:
        thing = getattr(losses, name)
        if not callable(thing) or name in ("from_name", "names"):
            continue
        doc = thing.__doc__ or ""
        assert ">>>" in doc, f"{name} has no example"
        assert any(s in doc for s in (":math:", ".. math::", "log p", "1 - p", "w(p)")), f"{name} has no formula"
        assert any(s in doc for s in ("arXiv", "et al.", "nn.CrossEntropyLoss", "as a module", "F.cross_entropy")), name


def test_each_default_is_written_once():
    assert losses.DMLoss().edf is edf.dm() and losses.IMAELoss().edf is edf.imae()
    assert losses.GCELoss().edf is edf.gce() and losses.from_name("gce").q == edf.default(edf.gce, "q")
    assert losses.from_name("dm").edf is edf.dm() and losses.from_name("dm").eps == losses.PAPER_EPS
