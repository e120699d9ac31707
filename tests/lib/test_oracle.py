"""The losses against an independent oracle: each EDF loss recomputed from its definition element by element
in Python floats, and ``nn.CrossEntropyLoss`` wherever the call conventions meet (class weights with target
distributions, unbatched logits, unnormalised probability targets); the error messages, the PyTorch path's
allocations and the declared dependencies."""

import ast
import importlib.metadata
import math
import pathlib
import re
import sys
import tomllib

import pytest
import sympy as sp
import torch
import torch.nn.functional as F

import dmcore
from dmcore import edf, edf_operator, losses

ROOT = pathlib.Path(__file__).resolve().parents[2]
TINY64 = torch.finfo(torch.float64).tiny


def batch(shape, seed=0, scale=2.0, ignore_every=4):
    gen = torch.Generator().manual_seed(seed)
    x = (scale * torch.randn(shape, generator=gen, dtype=torch.float64)).requires_grad_()
    index = torch.randint(0, shape[1], (shape[0],) + tuple(shape[2:]), generator=gen)
    if ignore_every:
        index.view(-1)[::ignore_every] = -100
    return x, index


def distribution(shape, seed=1, mass=None):
    """Class probabilities ``(N, C, d...)``; with ``mass``, rows of that total (1.7, or random in [0, 3] with a
    zero row for ``'random'``)."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.softmax(2 * torch.randn(shape, generator=gen, dtype=torch.float64), 1)
    if mass == "random":
        t = 3 * torch.rand(shape, generator=gen, dtype=torch.float64)
        t.movedim(1, -1).reshape(-1, shape[1])[1] = 0.0
    elif mass is not None:
        t = mass * t
    return t


def oracle(logits, target, w, weight=None, ignore_index=-100, reduction="mean", normalizer="batch", eps=0.0,
           label_smoothing=0.0):
    """Value and gradient of an EDF loss from its definition, one element at a time in Python floats.

    An element's target ``t`` (``e_y``, smoothed ``(1 - s) t + s / C``) with class weights ``a`` is the mass
    ``c = sum_k a_k t_k`` of the distribution ``r = a t / c``; with ``p = r . softmax`` and
    ``1 - p = sum_k softmax_k (1 - r_k)``, its value is ``c w(p) H``, ``H = sum_k r_k (-log softmax_k)``,
    and its gradient ``c w(p) / Z (softmax - r) / (2(1 - p) + eps)``; ``Z`` as in ``dmcore.losses``."""
    num_classes = logits.shape[1]
    rows = logits.detach().double().movedim(1, -1).reshape(-1, num_classes).tolist()
    soft = target.is_floating_point()
    targets_ = (target.detach().double().movedim(1, -1).reshape(-1, num_classes).tolist() if soft
                else target.reshape(-1).tolist())
    a = [1.0] * num_classes if weight is None else [float(v) for v in weight]
    elements = []
    for row, given in zip(rows, targets_):
        if not soft and given == ignore_index:
            elements.append(None)
            continue
        t = given if soft else [float(k == given) for k in range(num_classes)]
        t = [(1 - label_smoothing) * tk + label_smoothing / num_classes for tk in t]
        count = 1.0 if soft else a[given]
        mass = sum(ak * tk for ak, tk in zip(a, t))
        r = [ak * tk / mass if mass > 0 else 0.0 for ak, tk in zip(a, t)]
        top = max(row)
        total = sum(math.exp(v - top) for v in row)
        probs = [math.exp(v - top) / total for v in row]
        log_probs = [v - top - math.log(total) for v in row]
        p = sum(rk * sk for rk, sk in zip(r, probs))
        rest = sum(sk * (1 - rk) for rk, sk in zip(r, probs))
        entropy = sum(rk * min(-lk, -math.log(TINY64)) for rk, lk in zip(r, log_probs) if rk > 0)
        wp = float(w(torch.tensor([p], dtype=torch.float64))[0])
        elements.append((count, mass, wp, entropy, rest, probs, r))
    counted = [e for e in elements if e is not None]
    z = 1.0
    if reduction == "mean":
        z = sum(m * wp for _, m, wp, *_ in counted) if normalizer == "batch" else sum(e[0] for e in counted)
        z = z if z > 0 else 1.0
    values = [0.0 if e is None else e[1] * e[2] * e[3] / z for e in elements]
    grads = [[0.0] * num_classes if e is None else
             [e[1] * e[2] / z * (sk - rk) / (2 * e[4] + eps) for sk, rk in zip(e[5], e[6])] for e in elements]
    shape = logits.movedim(1, -1).shape
    grad = torch.tensor(grads, dtype=torch.float64).reshape(shape).movedim(-1, 1)
    value = torch.tensor(values, dtype=torch.float64).reshape(shape[:-1])
    return (value if reduction == "none" else value.sum()), grad


def value_and_grad(loss, x, target, upstream=None):
    x = x.detach().clone().requires_grad_()
    value = loss(x, target)
    if upstream is None:
        upstream = torch.linspace(0.5, 1.5, value.numel(), dtype=torch.float64).reshape(value.shape)
    (grad,) = torch.autograd.grad(value, x, upstream.to(value.dtype))
    return value.detach(), grad, upstream


TARGETS = ["index, smoothed", "distribution", "distribution, smoothed", "mass 1.7", "random mass, smoothed"]


def make_target(kind, x, index):
    if kind.startswith("index"):
        return index
    return distribution(tuple(x.shape), mass={"mass 1.7": 1.7, "random mass, smoothed": "random"}.get(kind))


# ---------------------------------------------------------------- class weights with target distributions

def test_weighted_soft_target_direction_is_derived():
    """Weighted soft cross-entropy ``-sum_k a_k t_k log softmax_k`` (any ``t >= 0``, not only the simplex) has
    the gradient ``c w(p) (softmax - r) / (2(1 - p))`` with cross-entropy's weight ``w = 2(1 - p)``, for the
    mass ``c = a . t``, the distribution ``r = a t / c`` and ``p = r . softmax``; ``t = e_y`` gives
    ``c = a_y``, ``r = e_y``: the class-index direction."""
    z = sp.symbols("z0:3", real=True)
    t = sp.symbols("t0:3", nonnegative=True)
    a = sp.symbols("a0:3", positive=True)
    soft = [sp.exp(zc) / sum(sp.exp(zk) for zk in z) for zc in z]
    loss = -sum(ak * tk * sp.log(sk) for ak, tk, sk in zip(a, t, soft))
    c = sum(ak * tk for ak, tk in zip(a, t))
    r = [ak * tk / c for ak, tk in zip(a, t)]
    p = sum(rk * sk for rk, sk in zip(r, soft))
    for j in range(3):
        manipulated = c * 2 * (1 - p) * (soft[j] - r[j]) / (2 * (1 - p))
        assert sp.simplify(manipulated - sp.diff(loss, z[j])) == 0
    hard = {t[0]: 1, t[1]: 0, t[2]: 0}
    assert sp.simplify(c.subs(hard) - a[0]) == 0 and [sp.simplify(rk.subs(hard)) for rk in r] == [1, 0, 0]
    assert sp.simplify((1 - p) - sum(sk * (1 - rk) for rk, sk in zip(r, soft))) == 0    # on the simplex of r


def test_class_weight_and_label_smoothing_the_issues_case():
    x = torch.tensor([[2.0, 0.0, -1.0]], dtype=torch.float64, requires_grad=True)
    target, weight = torch.tensor([0]), torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    ours = losses.EDFLoss(edf.cce(), weight=weight, label_smoothing=0.3, normalizer="count")(x, target)
    theirs = F.cross_entropy(x, target, weight=weight, label_smoothing=0.3)
    torch.testing.assert_close(torch.autograd.grad(ours, x)[0], torch.autograd.grad(theirs, x)[0],
                               rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("kind", TARGETS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("shape", [(7, 5), (3, 4, 2, 3)], ids=lambda s: "x".join(map(str, s)))
def test_cce_weight_gives_cross_entropys_gradient(reduction, kind, weighted, shape):
    """``edf.cce()`` with ``normalizer='count'`` is ``F.cross_entropy``'s gradient for every target form,
    with its normaliser: ``N`` for probabilities, ``sum weight[y]`` for class indices."""
    x, index = batch(shape, seed=7)
    target = make_target(kind, x, index)
    smoothing = 0.3 if "smoothed" in kind else 0.0
    weight = torch.tensor([1.0, 2.0, 0.5, 1.5, 3.0][:shape[1]], dtype=torch.float64) if weighted else None
    kw = dict(weight=weight, reduction=reduction, label_smoothing=smoothing)
    for loss in (losses.EDFLoss(edf.cce(), normalizer="count", **kw),
                 lambda z, y: losses.edf_loss(z, y, edf.cce(), normalizer="count", **kw)):
        _, ours, upstream = value_and_grad(loss, x, target)
        _, theirs, _ = value_and_grad(lambda z, y: F.cross_entropy(z, y, **kw), x, target, upstream)
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)
    value, grad, _ = value_and_grad(lambda z, y: losses.cce_loss(z, y, **kw), x, target, upstream)
    torch.testing.assert_close(value, F.cross_entropy(x.detach(), target, **kw), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, theirs, rtol=1e-12, atol=1e-14)


def test_other_natural_weights_are_exact_for_class_indices_only():
    """The stated limit: on a target distribution the closed-form MAE is the expectation over the classes,
    which reads every ``p_c``; the EDF path with MAE's weight reads the one ``p = r . softmax``. One-hot
    distributions agree."""
    x, index = batch((6, 4), seed=15, ignore_every=0)
    edf_mae = losses.EDFLoss(edf.mae(), normalizer="count")
    for target, agree in ((F.one_hot(index, 4).double(), True), (distribution((6, 4)), False)):
        _, ours, _ = value_and_grad(edf_mae, x, target)
        _, closed, _ = value_and_grad(losses.MAELoss(), x, target)
        assert torch.allclose(ours, closed, rtol=1e-12, atol=1e-14) == agree


@pytest.mark.parametrize("w", [edf.dm(0.5, 8), edf.cce(), edf.normal(0.7, 4)], ids=lambda w: w.name)
@pytest.mark.parametrize("reduction, normalizer", [("mean", "batch"), ("mean", "count"), ("sum", "batch"),
                                                   ("none", "batch")])
@pytest.mark.parametrize("kind", ["index"] + TARGETS)
@pytest.mark.parametrize("eps", [0.0, 1e-2])
def test_edf_losses_match_the_oracle(w, reduction, normalizer, kind, eps):
    x, index = batch((3, 4, 5), seed=3)
    target = make_target(kind, x, index)
    smoothing = 0.2 if "smoothed" in kind else 0.0
    weight = torch.tensor([0.5, 2.0, 1.0, 3.0], dtype=torch.float64)
    kw = dict(weight=weight, reduction=reduction, normalizer=normalizer, eps=eps, label_smoothing=smoothing)
    value, grad, upstream = value_and_grad(lambda z, y: losses.edf_loss(z, y, w, **kw), x, target)
    ref_value, ref_grad = oracle(x, target, w, **kw)
    torch.testing.assert_close(value, ref_value, rtol=1e-12, atol=1e-13)
    expected = ref_grad * (upstream.unsqueeze(1) if reduction == "none" else upstream)
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("kind", ["distribution", "random mass, smoothed"])
def test_second_derivatives_with_weights_and_target_distributions(kind):
    x, index = batch((5, 4), seed=5)
    target = make_target(kind, x, index)
    weight = torch.tensor([0.5, 2.0, 1.0, 3.0], dtype=torch.float64)
    loss = losses.DMLoss(weight=weight, label_smoothing=0.1 if "smoothed" in kind else 0.0)
    assert torch.autograd.gradgradcheck(lambda z: loss(z, target), (x,), eps=1e-6, atol=1e-5, rtol=1e-4)


def test_float32_on_cpu_takes_the_pytorch_path_for_distributions_and_smoothing(monkeypatch):
    """The kernels take class indices without smoothing: ``impl='auto'`` routes the rest to PyTorch's ops (the
    same result), and ``impl='c'`` refuses it by name."""
    monkeypatch.setenv("DMCORE_CPU_KERNEL", "1")
    x, index = batch((16, 6), seed=9)
    x = x.detach().float()
    weight = torch.linspace(0.5, 2.0, 6)
    soft = distribution((16, 6)).float()
    for target, smoothing in ((index, 0.2), (soft, 0.0)):
        assert edf_operator.implementation(x, target, "auto", smoothing) == "torch"
        kw = dict(weight=weight, label_smoothing=smoothing)
        _, ours, _ = value_and_grad(losses.EDFLoss(edf.cce(), normalizer="count", **kw), x, target)
        _, theirs, _ = value_and_grad(lambda z, y: F.cross_entropy(z, y, **kw), x, target)
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)
        with pytest.raises(ValueError, match="impl='c' needs .* class-index targets without label smoothing"):
            losses.EDFLoss(edf.cce(), impl="c", **kw)(x.requires_grad_(), target)


# ---------------------------------------------------------------- unbatched logits

def unbatched_cases():
    gen = torch.Generator().manual_seed(11)
    x = (2 * torch.randn(5, generator=gen, dtype=torch.float64))
    return [(x, torch.tensor(3)), (x, torch.tensor(3, dtype=torch.uint8)), (x, distribution((1, 5))[0]),
            (x, torch.tensor(-100))]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("case", range(4), ids=["index", "uint8", "distribution", "ignored"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_unbatched_logits_match_nn_cross_entropy(reduction, case, weighted, smoothing):
    x, target = unbatched_cases()[case]
    weight = torch.linspace(0.5, 2.5, 5, dtype=torch.float64) if weighted else None
    kw = dict(weight=weight, reduction=reduction, label_smoothing=smoothing)
    reference = torch.nn.CrossEntropyLoss(**kw)
    upstream = torch.tensor(1.3, dtype=torch.float64)
    ref_value, ref_grad, _ = value_and_grad(reference, x, target if target.is_floating_point() else target.long(),
                                            upstream)
    if case == 3 and reduction == "mean":       # all ignored: PyTorch's 0/0; dmcore's documented 0
        ref_value, ref_grad = torch.zeros_like(ref_value), torch.zeros_like(ref_grad)
    for loss in (losses.CCELoss(**kw), losses.EDFLoss(edf.cce(), normalizer="count", **kw)):
        value, grad, _ = value_and_grad(loss, x, target, upstream)
        assert value.shape == () and grad.shape == (5,)
        torch.testing.assert_close(grad, ref_grad, rtol=1e-12, atol=1e-14)
        if isinstance(loss, losses.CCELoss):
            torch.testing.assert_close(value, ref_value, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", losses.names())
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("case", range(3), ids=["index", "uint8", "distribution"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_every_loss_takes_unbatched_logits_as_a_batch_of_one(name, reduction, case, dtype):
    """On every path (float32 on CPU: the C kernel for class indices, where it builds)."""
    x, target = unbatched_cases()[case]
    x = x.to(dtype)
    loss = losses.from_name(name)
    loss.reduction, loss.weight = reduction, torch.linspace(0.5, 2.5, 5, dtype=dtype)
    value, grad, upstream = value_and_grad(loss, x, target, torch.tensor(0.7, dtype=torch.float64))
    ref_value, ref_grad, _ = value_and_grad(loss, x.unsqueeze(0), target.unsqueeze(0),
                                            upstream.reshape(() if reduction != "none" else (1,)))
    assert value.shape == ()
    torch.testing.assert_close(value, ref_value.reshape(()), rtol=0, atol=0)
    torch.testing.assert_close(grad, ref_grad[0], rtol=0, atol=0)


def test_unbatched_shapes_that_do_not_fit_are_named():
    with pytest.raises(ValueError, match=r"logits must have shape \(C\), \(N, C\) or \(N, C, d1, ..., dk\), got \(\)"):
        losses.DMLoss()(torch.tensor(1.0), torch.tensor(0))
    with pytest.raises(ValueError, match=r"class-index target shape \(1,\) does not match logits \(5,\): expected \(\)"):
        losses.CCELoss()(torch.zeros(5), torch.tensor([1]))
    with pytest.raises(ValueError, match=r"class-probability target shape \(1, 5\) does not match logits \(5,\)"):
        losses.DMLoss()(torch.zeros(5), torch.full((1, 5), 0.2))
    with pytest.raises(ValueError, match=r"target 5 is outside \[0, 4\] and is not ignore_index=-100"):
        losses.DMLoss()(torch.zeros(5), torch.tensor(5))
    with pytest.raises(ValueError, match="at least 2 classes"):
        losses.DMLoss()(torch.zeros(1), torch.tensor(0))


# ---------------------------------------------------------------- probability targets that do not sum to 1

@pytest.mark.parametrize("mass", [1.7, "random"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_unnormalised_probability_targets_are_taken_as_pytorch_takes_them(mass, reduction):
    x, _ = batch((6, 5), seed=12)
    target = distribution((6, 5), mass=mass)
    weight = torch.linspace(0.5, 2.5, 5, dtype=torch.float64)
    _, theirs, upstream = value_and_grad(lambda z, y: F.cross_entropy(z, y, weight=weight, reduction=reduction),
                                         x, target)
    value, grad, _ = value_and_grad(losses.CCELoss(weight=weight, reduction=reduction), x, target, upstream)
    torch.testing.assert_close(value, F.cross_entropy(x.detach(), target, weight=weight, reduction=reduction))
    torch.testing.assert_close(grad, theirs, rtol=1e-12, atol=1e-14)
    _, grad, _ = value_and_grad(losses.EDFLoss(edf.cce(), normalizer="count", weight=weight, reduction=reduction),
                                x, target, upstream)
    torch.testing.assert_close(grad, theirs, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["dm", "imae", "normal:psi=0.7,beta=4"])
def test_an_unnormalised_target_is_its_mass_times_its_distribution(name):
    """For an EDF loss, ``m t`` (``t`` on the simplex) weighs ``m`` times what ``t`` weighs: the same ``p``,
    the same direction, the element's value and gradient times ``m``."""
    x, _ = batch((6, 5), seed=13)
    t = distribution((6, 5))
    m = torch.tensor([0.5, 1.0, 2.0, 3.5, 0.0, 1.25], dtype=torch.float64)
    loss = losses.from_name(name)
    loss.reduction = "none"
    value, grad, upstream = value_and_grad(loss, x, m.unsqueeze(1) * t)
    ref_value, ref_grad, _ = value_and_grad(loss, x, t, upstream)
    torch.testing.assert_close(value, m * ref_value, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(grad, m.unsqueeze(1) * ref_grad, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["dm", "cce"])
def test_negative_or_non_finite_probability_targets_are_still_refused(name):
    x, _ = batch((3, 3))
    for bad in (-0.1, math.nan, math.inf):
        target = torch.tensor([[0.2, 0.3, 0.5], [0.1, bad, 0.5], [1.0, 0.0, 0.0]], dtype=torch.float64)
        with pytest.raises(ValueError, match="class-probability targets must be finite and >= 0"):
            losses.from_name(name)(x, target)


def test_the_documented_errors_are_the_raised_ones():
    """The docstrings list what is refused; a target's total is not among it, and they say so."""
    refused = " ".join(losses.__doc__.split("Bad input raises")[1].split("\n\n")[0].split())
    assert "probability targets" in refused and "sum to 1" not in refused
    assert "do not need to sum to 1" in losses.__doc__ and "not necessarily summing to 1" in losses.edf_loss.__doc__
    assert "sum to 1" not in edf_operator.__doc__


# ---------------------------------------------------------------- error messages name the number of classes

@pytest.mark.parametrize("weight, got", [(torch.ones(4), r"\(4,\)"), (torch.ones(3, 1), r"\(3, 1\)"),
                                         ([1.0, 2.0, 3.0], "list")])
def test_weight_shape_errors_name_the_number_of_classes(weight, got):
    x, target = batch((4, 3))
    calls = [lambda: losses.dm_loss(x, target, weight=weight), lambda: losses.cce_loss(x, target, weight=weight),
             lambda: losses.dm_loss(x[0], target[1], weight=weight)]
    for call in calls:
        with pytest.raises((ValueError, TypeError), match=rf"weight must .*shape \(3,\), got {got}") as error:
            call()
        assert "(C,)" not in str(error.value)
    if torch.is_tensor(weight) and weight.shape == (4,):
        loss = losses.DMLoss(weight=weight)
        with pytest.raises(ValueError, match=r"weight must have shape \(3,\), got \(4,\)"):
            loss(x, target)
        return
    with pytest.raises((ValueError, TypeError), match=rf"weight must be .*one weight per class.*, got {got}") as error:
        losses.DMLoss(weight=weight)
    assert "(C,)" not in str(error.value)


# ---------------------------------------------------------------- the PyTorch path's memory

def logits_sized_allocations(loss, x, target) -> int:
    """Allocations of at least the logits' size during one forward and backward (CPU, profiler events)."""
    from dmcore.lab import bench
    return bench.logits_sized_allocations(loss, x, target)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", [(64, 300), (4, 7, 8, 9)], ids=lambda s: "x".join(map(str, s)))
def test_the_pytorch_path_allocates_what_the_kernel_does(dtype, shape, monkeypatch):
    """Class indices: one logits-sized tensor, the gradient (as on the C path). Target distributions and
    label smoothing: the distribution, the log-probabilities, the probabilities (which become the gradient)
    and one scratch tensor."""
    monkeypatch.setenv("DMCORE_CPU_KERNEL", "0")
    x, index = batch(shape, seed=14)
    x = x.detach().to(dtype).requires_grad_()
    assert logits_sized_allocations(losses.DMLoss(impl="torch"), x, index) == 1
    assert logits_sized_allocations(losses.DMLoss(), x, index) == 1
    weight = torch.linspace(0.5, 2.0, shape[1], dtype=dtype)
    assert logits_sized_allocations(losses.DMLoss(weight=weight, label_smoothing=0.1), x, index) <= 4
    assert logits_sized_allocations(losses.DMLoss(weight=weight), x, distribution(shape).to(dtype)) <= 4


# ---------------------------------------------------------------- documentation and packaging

def test_the_implementations_are_listed_with_triton_wherever_impl_is_described():
    for doc in (losses.__doc__, losses.edf_loss.__doc__, edf_operator.__doc__, edf_operator.implementation.__doc__):
        assert all(f"'{name}'" in doc for name in edf_operator.IMPLS), doc


def test_every_third_party_import_is_a_declared_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {re.split(r"[=<>\[ ]", d)[0].lower() for d in project["dependencies"]}
    declared |= {re.split(r"[=<>\[ ]", d)[0].lower() for extra in project["optional-dependencies"].values()
                 for d in extra}
    distributions = importlib.metadata.packages_distributions()
    missing = {}
    for path in pathlib.Path(dmcore.__file__).parent.rglob("*.py"):
        tree = ast.parse(path.read_text())
        optional = {id(n) for t in ast.walk(tree) if isinstance(t, ast.Try)     # try: import x / except ImportError
                    and any(isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                            for h in t.handlers) for stmt in t.body for n in ast.walk(stmt)}
        for node in ast.walk(tree):
            if id(node) in optional:
                continue
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == "dmcore":
                    continue
                dists = {d.lower() for d in distributions.get(top, [top])}
                if not dists & declared:
                    missing.setdefault(top, set()).add(path.name)
    assert missing == {}
    assert "scipy" in {re.split(r"[=<>\[ ]", d)[0].lower() for d in project["dependencies"]}
