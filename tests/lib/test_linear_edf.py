"""dmcore.linear_edf: the fused linear + EDF loss against the materialised reference (``edf_loss`` on
``hidden @ weight.T + bias``, differentiated by autograd), against ``F.linear_cross_entropy`` for the
natural cross-entropy weight, and its memory bound (peak resident memory of a process)."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from dmcore import edf, linear_edf, losses

EDFS = {"cce": edf.cce(), "mae": edf.mae(), "gce": edf.gce(0.7), "imae": edf.imae(8), "dm": edf.dm(0.5, 8),
        "poly1": edf.poly1(1.0), "dft": edf.from_sympy("2 * p * (1 - p)", "dft"),          # DFT: CE weighted by p
        "user": edf.from_callable(lambda p: 1 + torch.sin(3 * p) ** 2, "user")}


def _inputs(n=37, h=5, v=11, dtype=torch.float64, seed=0, bias=True):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=g, dtype=torch.float64).to(dtype)
    weight = (2 * torch.randn(v, h, generator=g, dtype=torch.float64)).to(dtype)
    b = torch.randn(v, generator=g, dtype=torch.float64).to(dtype) if bias else None
    target = torch.randint(0, v, (n,), generator=g)
    return hidden, weight, b, target


def _grads(fn, hidden, weight, bias, upstream=None):
    """The value and the gradients of ``fn(hidden, weight, bias)`` w.r.t. the three (``None`` for no bias)."""
    leaves = [x.detach().clone().requires_grad_() if x is not None else None for x in (hidden, weight, bias)]
    value = fn(*leaves)
    (value if upstream is None else value * upstream).sum().backward()
    return [value.detach()] + [x.grad if x is not None else None for x in leaves]


def _reference(edf_, target, **kw):
    class_weight = kw.pop("class_weight", None)
    return lambda h, w, b: losses.edf_loss(F.linear(h, w, b), target, edf_, weight=class_weight, **kw)


def _fused(edf_, target, **kw):
    return lambda h, w, b: linear_edf.linear_edf_loss(h, w, target, edf_, bias=b, **kw)


def _close(a, b, rtol, atol):
    """Values and gradients alike: ``atol`` is relative to each tensor's largest magnitude (a gradient
    entry is a sum whose terms can cancel: its rounding scales with the terms, not with the sum)."""
    for x, y in zip(a, b):
        if x is None or y is None:
            assert x is None and y is None
        else:
            torch.testing.assert_close(x, y, rtol=rtol, atol=atol * max(float(y.abs().max()), 1.0) if y.numel()
                                       else atol)


def _upstream(n, device="cpu"):
    """A non-uniform upstream gradient for ``reduction='none'``, seeded."""
    return (torch.rand(n, generator=torch.Generator().manual_seed(5), dtype=torch.float64) + 0.5).to(device)


@pytest.mark.parametrize("name", list(EDFS))
@pytest.mark.parametrize("reduction,normalizer", [("mean", "batch"), ("mean", "count"), ("sum", "batch"),
                                                  ("none", "batch")])
def test_every_edf_and_reduction_equals_the_materialised_loss_in_float64(name, reduction, normalizer):
    hidden, weight, bias, target = _inputs()
    upstream = _upstream(len(target)) if reduction == "none" else None
    kw = dict(reduction=reduction, normalizer=normalizer)
    expected = _grads(_reference(EDFS[name], target, **kw), hidden, weight, bias, upstream)
    got = _grads(_fused(EDFS[name], target, chunk_size=8, **kw), hidden, weight, bias, upstream)
    _close(got, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("options", [
    {"eps": 1e-6}, {"ignore_index": 3}, {"class_weight": "random"}, {"label_smoothing": 0.1},
    {"label_smoothing": 0.2, "class_weight": "random", "ignore_index": 3}, {"check": False},
    {"normalizer": "count", "class_weight": "random", "ignore_index": 3}], ids=str)
@pytest.mark.parametrize("name", ["cce", "dm", "gce"])
def test_each_option_equals_the_materialised_loss_in_float64(name, options):
    hidden, weight, bias, target = _inputs(n=41, v=9)
    options = dict(options)
    if options.get("class_weight") == "random":
        options["class_weight"] = torch.rand(9, generator=torch.Generator().manual_seed(1), dtype=torch.float64) + 0.1
    if "ignore_index" in options:        # every fourth row ignored (and any other row labelled 3)
        target = torch.where(torch.arange(41) % 4 == 0, options["ignore_index"], target)
    expected = _grads(_reference(EDFS[name], target, **dict(options)), hidden, weight, bias)
    got = _grads(_fused(EDFS[name], target, chunk_size=6, **options), hidden, weight, bias)
    _close(got, expected, rtol=1e-10, atol=1e-12)


def test_all_ignored_rows_give_zero_loss_and_gradient():
    hidden, weight, bias, target = _inputs(n=9)
    target = torch.full_like(target, -100)
    value, dh, dw, db = _grads(_fused(EDFS["dm"], target, chunk_size=4), hidden, weight, bias)
    assert value.item() == 0 and not dh.any() and not dw.any() and not db.any()


@pytest.mark.parametrize("n,v,chunk", [(1, 2, None), (5, 2, 2), (1, 7, 3), (64, 3, 1), (10, 13, 10), (10, 13, 64)])
def test_odd_shapes_and_blocks(n, v, chunk):
    hidden, weight, bias, target = _inputs(n=n, v=v)
    for name in ("cce", "dm"):
        expected = _grads(_reference(EDFS[name], target), hidden, weight, bias)
        got = _grads(_fused(EDFS[name], target, chunk_size=chunk), hidden, weight, bias)
        _close(got, expected, rtol=1e-10, atol=1e-12)


def test_leading_dimensions_unbatched_input_and_no_bias():
    hidden, weight, _, target = _inputs(n=12, bias=False)
    h3, t3 = hidden.view(3, 4, -1), target.view(3, 4)
    expected = _grads(_reference(EDFS["dm"], target, reduction="none"), hidden, weight, None)
    got = _grads(_fused(EDFS["dm"], t3, reduction="none", chunk_size=5), h3, weight, None)
    assert got[0].shape == (3, 4)
    _close([got[0].reshape(-1), got[1].reshape(12, -1), got[2]], expected[:3], rtol=1e-10, atol=1e-12)
    one = linear_edf.linear_edf_loss(hidden[0], weight, target[0], EDFS["cce"], reduction="none")
    assert one.shape == () and torch.allclose(one, losses.edf_loss(weight @ hidden[0], target[0], EDFS["cce"],
                                                                   reduction="none"), rtol=1e-12, atol=0)


@pytest.mark.parametrize("dtype,rtol,atol", [(torch.float32, 1e-5, 1e-6), (torch.bfloat16, 2e-2, 2e-3)])
@pytest.mark.parametrize("name", ["cce", "dm"])
def test_low_precision_against_the_materialised_loss(dtype, rtol, atol, name):
    """float32 (the C kernel's path on CPU) and bfloat16 (multiplied in bfloat16, terms in float32) against
    the materialised loss in the same dtype; the bfloat16 tolerance is that of its 8-bit mantissa, over
    sums of a few hundred products."""
    hidden, weight, bias, target = _inputs(n=300, h=32, v=70, dtype=dtype)
    expected = _grads(_reference(EDFS[name], target), hidden, weight, bias)
    got = _grads(_fused(EDFS[name], target, chunk_size=64), hidden, weight, bias)
    assert all(x.dtype == dtype for x in got)
    _close([x.float() for x in got], [x.float() for x in expected], rtol=rtol, atol=atol)


@pytest.mark.parametrize("kw", [{}, {"reduction": "sum"}, {"reduction": "none"}, {"label_smoothing": 0.1},
                                {"weight": "random", "ignore_index": 2}], ids=str)
def test_the_natural_weight_is_pytorchs_linear_cross_entropy(kw):
    """CCE's weight with the count normaliser: the gradients of ``F.linear_cross_entropy`` (the value an EDF
    loss returns is the emphasis-weighted cross-entropy, for monitoring: :mod:`dmcore.losses`)."""
    hidden, weight, bias, target = _inputs(n=50, v=12)
    kw = dict(kw)
    if kw.get("weight") == "random":
        kw["weight"] = torch.rand(12, generator=torch.Generator().manual_seed(2), dtype=torch.float64) + 0.1
    upstream = _upstream(50) if kw.get("reduction") == "none" else None
    expected = _grads(lambda h, w, b: F.linear_cross_entropy(h, w, target, linear_bias=b, **kw), hidden, weight,
                      bias, upstream)
    ours = {("class_weight" if k == "weight" else k): v for k, v in kw.items()}
    got = _grads(_fused(EDFS["cce"], target, normalizer="count", chunk_size=16, **ours), hidden, weight, bias,
                 upstream)
    _close(got[1:], expected[1:], rtol=1e-10, atol=1e-12)   # the gradients; the value is the monitored one


def test_the_default_block_keeps_an_eighth_of_the_logits_or_the_small_ones_whole():
    rows = linear_edf.chunk_rows
    assert rows(100, 1000) == 100                                    # 1e5 logits: one block
    assert rows(1024, 32000) == 43                                   # 1/24 of the rows, 1.4M logits
    assert rows(8192, 32000) == linear_edf.CHUNK_ELEMENTS // 32000   # 131 rows: 16 MB of float32
    assert rows(4, 10 ** 7) == 1 and rows(37, 11, chunk_size=8) == 8 and rows(5, 11, chunk_size=64) == 5


def test_the_module_matches_the_function_and_keeps_its_class_weight():
    hidden, weight, bias, target = _inputs()
    cw = torch.rand(11, dtype=torch.float64) + 0.5
    module = linear_edf.LinearEDFLoss(EDFS["dm"], class_weight=cw, eps=1e-6, chunk_size=7)
    assert torch.equal(module.class_weight, cw)
    a = module(hidden, weight, target, bias=bias)
    b = linear_edf.linear_edf_loss(hidden, weight, target, EDFS["dm"], bias=bias, class_weight=cw, eps=1e-6)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=0)
    with pytest.raises(TypeError, match="unknown options"):
        linear_edf.LinearEDFLoss(EDFS["dm"], weight=cw)


def test_bad_input_raises_a_clear_error():
    hidden, weight, bias, target = _inputs()
    fn = linear_edf.linear_edf_loss
    with pytest.raises(ValueError, match="weight must have shape"):
        fn(hidden, weight.t(), target, EDFS["cce"])
    with pytest.raises(ValueError, match="target shape"):
        fn(hidden, weight, target[:-1], EDFS["cce"])
    with pytest.raises(TypeError, match="class-index targets only"):
        fn(hidden, weight, torch.rand(37, 11, dtype=torch.float64), EDFS["cce"])
    with pytest.raises(ValueError, match="bias must be"):
        fn(hidden, weight, target, EDFS["cce"], bias=bias[:-1])
    with pytest.raises(ValueError, match="share dtype"):
        fn(hidden.float(), weight, target, EDFS["cce"])
    with pytest.raises(ValueError, match="chunk_size"):
        fn(hidden, weight, target, EDFS["cce"], chunk_size=0)
    with pytest.raises(ValueError, match="at least 2 classes"):       # as edf_loss on (N, 1) logits
        fn(hidden, weight[:1], torch.zeros_like(target), EDFS["cce"])
    with pytest.raises(ValueError, match=r"targets? .*outside|out of range|\[0, 11\)"):
        fn(hidden, weight, torch.where(target == 0, 11, target), EDFS["cce"])
    bad = hidden.clone()
    bad[3, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN|non-finite"):
        fn(bad, weight, target, EDFS["dm"], chunk_size=2)


def test_backward_twice_is_refused_with_a_message():
    hidden, weight, bias, target = _inputs()
    w = weight.clone().requires_grad_()
    loss = linear_edf.linear_edf_loss(hidden, w, target, EDFS["dm"])
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="computed once"):
        loss.backward()


_PEAK = r"""
import json, sys, torch
from dmcore import edf, linear_edf, losses
torch.manual_seed(0)
n, h, v, fused = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "fused"
hidden = torch.randn(n, h, requires_grad=True)
weight = torch.randn(v, h, requires_grad=True)
target = torch.randint(0, v, (n,))
def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
if fused:          # warm up once at a small size: the kernels' first use loads code
    linear_edf.linear_edf_loss(hidden[:8], weight, target[:8], edf.dm(0.5, 8)).backward()
else:
    losses.edf_loss(hidden[:8] @ weight.T, target[:8], edf.dm(0.5, 8)).backward()
hidden.grad = weight.grad = None
hidden.grad, weight.grad = torch.zeros_like(hidden), torch.zeros_like(weight)
open("/proc/self/clear_refs", "w").write("5")     # reset the peak to the current resident size
base = rss("VmRSS:")
if fused:
    linear_edf.linear_edf_loss(hidden, weight, target, edf.dm(0.5, 8)).backward()
else:
    losses.edf_loss(hidden @ weight.T, target, edf.dm(0.5, 8)).backward()
print(json.dumps({"extra": rss("VmHWM:") - base, "logits": n * v * 4}))
"""


def _peak(kind, n=16384, h=32, v=8192):
    """The run's extra peak resident memory, in a process of its own. glibc is told to map every block
    above 64 kB on its own and to return it when freed (MALLOC_MMAP_THRESHOLD_), so that the resident
    size follows what is allocated: with its default, moving threshold, freed blocks stayed resident and
    the same run measured between 36 and 205 MB."""
    out = subprocess.run([sys.executable, "-c", _PEAK, str(n), str(h), str(v), kind], capture_output=True, text=True,
                         check=True, env={**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "65536"})
    return json.loads(out.stdout)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the peak resident size from /proc")
def test_peak_extra_memory_is_an_eighth_of_the_logits():
    """The process's peak resident memory above its size before the call (inputs and gradient buffers
    allocated): the fused loss at 16384 tokens x 8192 classes (512 MB of float32 logits) stays under
    1/8 of the logits; the materialised loss, the measurement's check, takes more than the logits."""
    fused, plain = _peak("fused"), _peak("plain")
    assert fused["extra"] < fused["logits"] / 8, fused
    assert plain["extra"] > plain["logits"], plain


# ---------------------------------------------------------------- the fused Triton kernels

TRITON_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"     # on CPU: under TRITON_INTERPRET=1 (conftest)
needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")


@needs_triton
def test_the_fused_path_is_taken_where_it_applies():
    hidden, weight, bias, target = _inputs(dtype=torch.float32)
    assert linear_edf.implementation(hidden.to(TRITON_DEVICE), "triton") == "fused"
    assert linear_edf.implementation(hidden, "c") == "blocks"
    with pytest.raises(ValueError, match="impl='triton' needs float16, bfloat16 or float32"):
        linear_edf.linear_edf_loss(hidden.double(), weight.double(), target, EDFS["dm"], impl="triton")
    with pytest.raises(ValueError, match="label_smoothing"):
        linear_edf.linear_edf_loss(hidden, weight, target, EDFS["dm"], impl="triton", label_smoothing=0.1)


@needs_triton
@pytest.mark.parametrize("name", ["cce", "dm", "gce", "dft"])
@pytest.mark.parametrize("reduction,normalizer", [("mean", "batch"), ("mean", "count"), ("sum", "batch"),
                                                  ("none", "batch")])
@pytest.mark.parametrize("shape", [(37, 20, 11), (16, 16, 16), (1, 33, 2), (5, 7, 50)], ids=str)
def test_the_fused_kernels_equal_the_materialised_loss_in_float32(name, reduction, normalizer, shape):
    """Shapes that are and are not multiples of the 16-wide tiles (V = 2 and 50, H = 7 and 33, N = 1)."""
    n, h, v = shape
    hidden, weight, bias, target = (x.to(TRITON_DEVICE) if x is not None else None
                                    for x in _inputs(n=n, h=h, v=v, dtype=torch.float32))
    upstream = _upstream(n, TRITON_DEVICE).float() if reduction == "none" else None
    kw = dict(reduction=reduction, normalizer=normalizer)
    expected = _grads(_reference(EDFS[name], target, impl="torch", **kw), hidden, weight, bias, upstream)
    got = _grads(_fused(EDFS[name], target, impl="triton", **kw), hidden, weight, bias, upstream)
    _close(got, expected, rtol=2e-5, atol=2e-6)


@needs_triton
@pytest.mark.parametrize("options", [{"eps": 1e-6}, {"ignore_index": 3}, {"class_weight": "random"},
                                     {"check": False}, {"bias": None}], ids=str)
def test_the_fused_kernels_take_every_option(options):
    hidden, weight, bias, target = (x.to(TRITON_DEVICE) for x in _inputs(n=41, h=18, v=9, dtype=torch.float32))
    options = dict(options)
    if options.pop("bias", bias) is None:
        bias = None
    if options.get("class_weight") == "random":
        options["class_weight"] = torch.rand(9, generator=torch.Generator().manual_seed(1)).to(TRITON_DEVICE) + 0.1
    if "ignore_index" in options:
        target = torch.where(torch.arange(41, device=TRITON_DEVICE) % 4 == 0, options["ignore_index"], target)
    expected = _grads(_reference(EDFS["dm"], target, impl="torch", **dict(options)), hidden, weight, bias)
    got = _grads(_fused(EDFS["dm"], target, impl="triton", **options), hidden, weight, bias)
    _close(got, expected, rtol=2e-5, atol=2e-6)


@needs_triton
def test_the_fused_kernels_in_bfloat16_and_with_every_row_ignored():
    """bfloat16 inputs: the fused kernels keep the logits in float32 (the materialised loss rounds them
    to bfloat16 first), so they are compared with the exact loss of the same inputs, in float64, to
    the rounding of bfloat16 outputs (8 bits)."""
    hidden, weight, bias, target = (x.to(TRITON_DEVICE) for x in _inputs(n=40, h=32, v=24, dtype=torch.bfloat16))
    exact = _grads(_reference(EDFS["dm"], target), hidden.double(), weight.double(), bias.double())
    got = _grads(_fused(EDFS["dm"], target, impl="triton"), hidden, weight, bias)
    assert all(x.dtype == torch.bfloat16 for x in got)
    _close([x.double() for x in got], exact, rtol=1e-2, atol=1e-3)
    value, dh, dw, db = _grads(_fused(EDFS["dm"], torch.full_like(target, -100), impl="triton"), hidden, weight, bias)
    assert value.item() == 0 and not dh.any() and not dw.any() and not db.any()


@needs_triton
def test_the_fused_kernels_report_bad_input():
    hidden, weight, bias, target = (x.to(TRITON_DEVICE) for x in _inputs(n=8, h=16, v=6, dtype=torch.float32))
    with pytest.raises(ValueError, match=r"\[0, 6\)|outside|out of range"):
        linear_edf.linear_edf_loss(hidden, weight, torch.where(target == 0, 6, target), EDFS["dm"], impl="triton")
    bad = hidden.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN|non-finite"):
        linear_edf.linear_edf_loss(bad, weight, target, EDFS["dm"], impl="triton")


# ---------------------------------------------------------------- data-parallel training

class _Head(torch.nn.Module):
    """An output layer whose forward returns its fused loss (as a language model's head would)."""

    def __init__(self, size, vocab):
        super().__init__()
        self.proj = torch.nn.Linear(size, vocab).double()

    def forward(self, hidden, target):
        return linear_edf.linear_edf_loss(hidden, self.proj.weight, target, EDFS["dm"], bias=self.proj.bias,
                                          chunk_size=3)


def _ddp_gradients(rank, world, hidden, target, state):
    head = _Head(hidden.shape[1], 7)
    head.load_state_dict(state)
    ddp = torch.nn.parallel.DistributedDataParallel(head)
    shard = slice(rank * len(target) // world, (rank + 1) * len(target) // world)
    ddp(hidden[shard], target[shard]).backward()
    return {k: v.grad for k, v in head.named_parameters()}


def test_data_parallel_gradients_equal_one_process_with_the_whole_batch(two_ranks):
    """The batch normaliser summed over the ranks: two ranks with half the batch each give the gradients of
    one process with the whole batch (uneven counts of ignored rows per rank too)."""
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(40, 6, generator=gen, dtype=torch.float64)
    target = torch.randint(0, 7, (40,), generator=gen)
    target[:13:3] = -100
    head = _Head(6, 7)
    head(hidden, target).backward()
    distributed = two_ranks(_ddp_gradients, hidden, target, head.state_dict())
    for name, param in head.named_parameters():
        torch.testing.assert_close(distributed[name], param.grad, rtol=1e-12, atol=1e-14)
