"""The compiled fast paths of the EDF losses, each against the PyTorch path and a float64 reference: the
C kernel (float32 on CPU), and the Triton kernels (on a GPU where there is one, else on CPU tensors
under Triton's interpreter) over shapes, reductions, dtypes and special rows; how a path is chosen,
switched off, and reported where it cannot be built."""

import functools
import importlib.util
import math
import os
import shutil

import pytest
import torch
from test_losses import loop_reference

from dmcore import edf, edf_operator, kernels, losses

# ---------------------------------------------------------------- the compiled CPU kernel

C_EDFS = {"dm": edf.dm(0.5, 8), "imae": edf.imae(8), "cce": edf.cce(), "normal": edf.normal(0.7, 4)}


@pytest.fixture
def kernel_on(monkeypatch):
    """The compiled kernel enabled for the test, whatever DMCORE_CPU_KERNEL the suite runs under."""
    monkeypatch.setenv("DMCORE_CPU_KERNEL", "1")


@pytest.mark.usefixtures("kernel_on")
@pytest.mark.skipif(shutil.which("gcc") is None and shutil.which("cc") is None and "CC" not in os.environ,
                    reason="the CPU kernel needs a C compiler")
class TestCKernel:
    """The compiled CPU kernel, enabled for each test, where a C compiler exists."""

    def test_builds_and_is_used_for_float32(self):
        assert kernels.cpu() is not None and kernels.cpu() is kernels.cpu()

    @pytest.mark.parametrize("name", C_EDFS)
    @pytest.mark.parametrize("reduction", ["mean", "none"])
    @pytest.mark.parametrize("shape", [(40, 5), (40, 70), (3, 4, 2, 300)])
    def test_matches_plain_loop_reference(self, name, reduction, shape, make_batch, tolerances):
        logits, target = make_batch(shape, seed=13)
        x = logits.detach().float().requires_grad_()
        value = losses.edf_loss(x, target, C_EDFS[name], reduction=reduction)
        value.sum().backward()
        ref_value, ref_grad = loop_reference(x.detach().double(), target, C_EDFS[name], reduction=reduction)
        torch.testing.assert_close(value.double(), ref_value, rtol=2e-6, atol=1e-7)
        torch.testing.assert_close(x.grad.double(), ref_grad, **tolerances[torch.float32])

    @pytest.mark.parametrize("shape", [(300, 7), (64, 100), (5, 3, 17, 19)])
    def test_agrees_with_the_pytorch_path_on_special_elements(self, shape, make_batch, tolerances):
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
        torch.testing.assert_close(results[0][1], results[1][1], **tolerances[torch.float32])

    @pytest.mark.parametrize("classes", [10, 100])
    def test_gives_an_element_the_same_bits_wherever_it_sits_in_the_batch(self, classes, make_batch):
        """An element's value and gradient do not depend on its neighbours or its position (vector body or
        scalar tail of a tile), so a run trained with others equals the run trained alone, bit for bit."""
        logits, target = make_batch((61, classes), seed=5, dtype=torch.float32, scale=4.0, ignore_every=0)
        logits = logits.detach()
        outputs = []
        for before in (0, 3, 64, 70):       # rows prepended: the same rows land on other lanes and tiles
            pad, pad_t = make_batch((before, classes), seed=6, dtype=torch.float32, ignore_every=0) if before else (
                torch.empty(0, classes), torch.empty(0, dtype=torch.long))
            x = torch.cat([pad.detach(), logits]).requires_grad_()
            value = losses.edf_loss(x, torch.cat([pad_t, target]), edf.dm(0.5, 8), reduction="none")
            value.backward(torch.ones_like(value))
            outputs.append((value[before:].detach(), x.grad[before:]))
        for value, grad in outputs[1:]:
            assert torch.equal(value, outputs[0][0]) and torch.equal(grad, outputs[0][1])

    def test_exp_is_accurate(self):
        # the kernel's softmax over the other classes, for differences spanning the whole float range
        diffs = torch.linspace(-87, 0, 20001)
        logits = torch.stack([torch.full_like(diffs, 50.0), torch.zeros_like(diffs), diffs], dim=1).requires_grad_()
        target = torch.zeros(len(diffs), dtype=torch.long)
        losses.edf_loss(logits, target, edf.dm(0, 0), reduction="sum").backward()   # w = 1: grad = u
        expected = 0.5 * torch.exp(diffs.double()) / (1 + torch.exp(diffs.double()))   # u_2 = q_2 / 2
        torch.testing.assert_close(logits.grad[:, 2].double(), expected, rtol=4 * 2**-23, atol=0)


def test_cpu_kernel_can_be_switched_off(monkeypatch, make_batch):
    monkeypatch.setenv("DMCORE_CPU_KERNEL", "0")
    assert kernels.cpu() is None
    logits, target = make_batch((8, 4), dtype=torch.float32)
    losses.DMLoss()(logits, target).backward()     # the PyTorch path
    assert torch.isfinite(logits.grad).all()


def test_cpu_kernel_build_failure_falls_back_and_says_so(monkeypatch, tmp_path, make_batch):
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


# ---------------------------------------------------------------- the Triton kernels

TRITON_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TRITON_EDFS = [edf.dm(0.5, 8), edf.imae(8), edf.normal(0.7, 4), edf.exponential(-2), edf.beta_density(2, 3), edf.cce(),
               edf.gce(0.7), edf.sce(0.1, 1)]


def value_and_grad(x, target, impl, upstream=None, **kw):
    x = x.detach().clone().requires_grad_()
    value = losses.edf_loss(x, target, impl=impl, **kw)
    value.backward(torch.ones_like(value) if upstream is None else upstream.to(value))
    return value.detach(), x.grad


def compare(x, target, tolerance, upstream=None, check_value=True, **kw):
    """The Triton path against the PyTorch path on the same logits and against float64 (the value
    too, except where a p = 0 clips -log p at the dtype's own limit), within ``tolerance``."""
    value, grad = value_and_grad(x, target, "triton", upstream, **kw)
    ref_value, ref_grad = value_and_grad(x, target, "torch", upstream, **kw)
    exact_value, exact_grad = value_and_grad(x.double(), target, "torch", upstream, **kw)
    assert value.dtype == x.dtype and grad.dtype == x.dtype and torch.isfinite(grad).all()
    torch.testing.assert_close(value.float(), ref_value.float(), **tolerance)
    torch.testing.assert_close(grad.float(), ref_grad.float(), **tolerance)
    torch.testing.assert_close(grad.double(), exact_grad, **tolerance)
    if check_value:
        torch.testing.assert_close(value.double(), exact_value, **tolerance)
    return grad


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")
class TestTriton:
    """The Triton kernels (``impl='triton'``), in float32 unless a test parametrises ``dtype``."""

    @pytest.fixture
    def dtype(self):
        return torch.float32

    @pytest.fixture
    def batch(self, make_batch, dtype):
        """Logits in ``dtype`` on the Triton device, every fourth target ignored unless said otherwise."""
        return functools.partial(make_batch, dtype=dtype, ignore_every=4, device=TRITON_DEVICE, requires_grad=False)

    def test_the_triton_path_is_the_one_taken(self, batch):
        x, target = batch((4, 5))
        assert edf_operator.implementation(x, target, "triton") == "triton"
        assert "impl=triton" in repr(losses.DMLoss(impl="triton"))
        with pytest.raises(ValueError, match="impl='triton' needs float16, bfloat16 or float32 logits"):
            losses.DMLoss(impl="triton")(x.double(), target)
        with pytest.raises(ValueError, match="with label_smoothing=0.1"):
            losses.DMLoss(impl="triton", label_smoothing=0.1)(x, target)

    @pytest.mark.parametrize("shape", [(6, 2), (9, 5), (5, 97), (4, 64), (4, 65), (3, 131), (2, 32000), (2, 5, 3, 4),
                                       (1, 7, 11)], ids=lambda s: "x".join(map(str, s)))
    def test_shapes_odd_prime_and_across_the_block_size(self, shape, batch, tolerance):
        x, target = batch(shape, seed=sum(shape))
        compare(x, target, tolerance, edf=edf.dm(0.5, 8), eps=losses.PAPER_EPS)

    @pytest.mark.parametrize("w", TRITON_EDFS, ids=lambda w: w.name)
    def test_every_edf(self, w, batch, tolerance):
        x, target = batch((12, 9), seed=3)
        compare(x, target, tolerance, edf=w, normalizer="count")

    @pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
    @pytest.mark.parametrize("normalizer", ["batch", "count"])
    @pytest.mark.parametrize("weighted", [False, True])
    def test_reductions_weights_and_a_non_uniform_upstream_gradient(self, reduction, normalizer, weighted, batch,
                                                                     tolerance):
        x, target = batch((10, 7, 3), seed=4)
        weight = torch.linspace(0.2, 2.0, 7, device=TRITON_DEVICE) if weighted else None
        upstream = torch.linspace(-1.0, 2.0, 30).reshape(10, 3) if reduction == "none" else None
        compare(x, target, tolerance, edf=edf.imae(8), reduction=reduction, normalizer=normalizer, weight=weight,
                eps=1e-6, upstream=upstream)

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
    def test_dtypes_are_computed_in_float32(self, dtype, batch, tolerance):
        x, target = batch((16, 33), seed=5)
        assert x.dtype == dtype
        compare(x, target, tolerance, edf=edf.dm(0.5, 8), reduction="none", upstream=torch.linspace(0.5, 1.5, 16))

    @pytest.mark.filterwarnings("ignore::RuntimeWarning")     # the interpreter's numpy on the -inf rows
    def test_special_rows(self, batch, tolerance):
        x, target = batch((8, 6), seed=6, ignore_every=0)
        x = x.clone()
        x[0], target[0] = 0.0, 2                              # uniform
        x[1, 3], target[1] = 1e4, 3                           # p = 1 exactly
        x[2], target[2] = -math.inf, 1                        # every other class masked: p = 1, direction -e_y
        x[2, 1] = 5.0
        x[3, 4], target[3] = -math.inf, 4                     # label masked: p = 0
        x[4], target[4] = math.nan, -100                      # NaN in an ignored row
        x[5, 0], x[5, 1], target[5] = 1e4, -1e4, 0            # extreme logits
        for eps in (0.0, 1e-6):
            grad = compare(x, target, tolerance, edf=edf.dm(0.5, 8), eps=eps, reduction="sum", check_value=False)
            assert (grad[4] == 0).all()

    def test_rows_that_are_all_ignored_and_empty_batches(self, batch):
        x, target = batch((5, 4), seed=7)
        target[:] = -100
        value, grad = value_and_grad(x, target, "triton", edf=edf.dm(0.5, 8))
        assert float(value) == 0 and (grad == 0).all()
        value, grad = value_and_grad(x[:0], target[:0], "triton", edf=edf.dm(0.5, 8))
        assert float(value) == 0 and grad.shape == (0, 4)

    def test_bad_input_is_named_as_on_the_other_paths(self, batch):
        x, target = batch((4, 3), seed=8)
        with pytest.raises(ValueError, match=r"target 3 at index \(1,\) is outside \[0, 2\]"):
            losses.DMLoss(impl="triton")(x, torch.tensor([0, 3, 1, 2], device=TRITON_DEVICE))
        bad = x.clone()
        bad[2, 1] = math.nan
        with pytest.raises(ValueError, match=r"NaN or \+inf .* first at index \(2,\)"):
            losses.DMLoss(impl="triton")(bad, torch.tensor([0, 1, 1, 2], device=TRITON_DEVICE))
        bad[2, 1] = math.inf
        with pytest.raises(ValueError, match=r"first at index \(2,\)"):
            losses.DMLoss(impl="triton")(bad, torch.tensor([0, 1, 1, 2], device=TRITON_DEVICE))
