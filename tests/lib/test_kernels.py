"""The Triton kernels of the EDF losses, on CPU tensors under Triton's interpreter (on a GPU where there is
one): against the PyTorch path and a float64 reference, over shapes, reductions, dtypes and special rows."""

import math
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")      # before the kernels are first imported
pytest.importorskip("triton")

from dmcore import edf, edf_operator, losses  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOLERANCE = {torch.float32: dict(rtol=2e-5, atol=1e-6), torch.float16: dict(rtol=2e-3, atol=2e-4),
             torch.bfloat16: dict(rtol=1.6e-2, atol=2e-3)}
EDFS = [edf.dm(0.5, 8), edf.imae(8), edf.normal(0.7, 4), edf.exponential(-2), edf.beta_density(2, 3), edf.cce(),
        edf.gce(0.7), edf.sce(0.1, 1)]


def batch(shape, seed=0, dtype=torch.float32, scale=3.0, ignore_every=4):
    gen = torch.Generator().manual_seed(seed)
    x = (scale * torch.randn(shape, generator=gen, dtype=torch.float64))
    target = torch.randint(0, shape[1], (shape[0],) + tuple(shape[2:]), generator=gen)
    if ignore_every:
        target.view(-1)[::ignore_every] = -100
    return x.to(DEVICE, dtype), target.to(DEVICE)


def value_and_grad(x, target, impl, upstream=None, **kw):
    x = x.detach().clone().requires_grad_()
    value = losses.edf_loss(x, target, impl=impl, **kw)
    value.backward(torch.ones_like(value) if upstream is None else upstream.to(value))
    return value.detach(), x.grad


def compare(x, target, dtype=torch.float32, upstream=None, check_value=True, **kw):
    """The Triton path against the PyTorch path on the same logits and against float64 (the value
    too, except where a p = 0 clips -log p at the dtype's own limit)."""
    value, grad = value_and_grad(x, target, "triton", upstream, **kw)
    ref_value, ref_grad = value_and_grad(x, target, "torch", upstream, **kw)
    exact_value, exact_grad = value_and_grad(x.double(), target, "torch", upstream, **kw)
    assert value.dtype == x.dtype and grad.dtype == x.dtype and torch.isfinite(grad).all()
    torch.testing.assert_close(value.float(), ref_value.float(), **TOLERANCE[dtype])
    torch.testing.assert_close(grad.float(), ref_grad.float(), **TOLERANCE[dtype])
    torch.testing.assert_close(grad.double(), exact_grad, **TOLERANCE[dtype])
    if check_value:
        torch.testing.assert_close(value.double(), exact_value, **TOLERANCE[dtype])
    return grad


def test_the_triton_path_is_the_one_taken():
    x, target = batch((4, 5))
    assert edf_operator.implementation(x, target, "triton") == "triton"
    assert "impl=triton" in repr(losses.DMLoss(impl="triton"))
    with pytest.raises(ValueError, match="impl='triton' needs float16, bfloat16 or float32 logits"):
        losses.DMLoss(impl="triton")(x.double(), target)
    with pytest.raises(ValueError, match="with label_smoothing=0.1"):
        losses.DMLoss(impl="triton", label_smoothing=0.1)(x, target)


@pytest.mark.parametrize("shape", [(6, 2), (9, 5), (5, 97), (4, 64), (4, 65), (3, 131), (2, 32000), (2, 5, 3, 4),
                                   (1, 7, 11)], ids=lambda s: "x".join(map(str, s)))
def test_shapes_odd_prime_and_across_the_block_size(shape):
    x, target = batch(shape, seed=sum(shape))
    compare(x, target, edf=edf.dm(0.5, 8), eps=losses.PAPER_EPS)


@pytest.mark.parametrize("w", EDFS, ids=lambda w: w.name)
def test_every_edf(w):
    x, target = batch((12, 9), seed=3)
    compare(x, target, edf=w, normalizer="count")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("normalizer", ["batch", "count"])
@pytest.mark.parametrize("weighted", [False, True])
def test_reductions_weights_and_a_non_uniform_upstream_gradient(reduction, normalizer, weighted):
    x, target = batch((10, 7, 3), seed=4)
    weight = torch.linspace(0.2, 2.0, 7, device=DEVICE) if weighted else None
    upstream = torch.linspace(-1.0, 2.0, 30).reshape(10, 3) if reduction == "none" else None
    compare(x, target, edf=edf.imae(8), reduction=reduction, normalizer=normalizer, weight=weight, eps=1e-6,
            upstream=upstream)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_dtypes_are_computed_in_float32(dtype):
    x, target = batch((16, 33), seed=5, dtype=dtype)
    compare(x, target, dtype=dtype, edf=edf.dm(0.5, 8), reduction="none",
            upstream=torch.linspace(0.5, 1.5, 16))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")     # the interpreter's numpy on the -inf rows
def test_special_rows():
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
        grad = compare(x, target, edf=edf.dm(0.5, 8), eps=eps, reduction="sum", check_value=False)
        assert (grad[4] == 0).all()


def test_rows_that_are_all_ignored_and_empty_batches():
    x, target = batch((5, 4), seed=7)
    target[:] = -100
    value, grad = value_and_grad(x, target, "triton", edf=edf.dm(0.5, 8))
    assert float(value) == 0 and (grad == 0).all()
    value, grad = value_and_grad(x[:0], target[:0], "triton", edf=edf.dm(0.5, 8))
    assert float(value) == 0 and grad.shape == (0, 4)


def test_bad_input_is_named_as_on_the_other_paths():
    x, target = batch((4, 3), seed=8)
    with pytest.raises(ValueError, match=r"target 3 at index \(1,\) is outside \[0, 2\]"):
        losses.DMLoss(impl="triton")(x, torch.tensor([0, 3, 1, 2], device=DEVICE))
    bad = x.clone()
    bad[2, 1] = math.nan
    with pytest.raises(ValueError, match=r"NaN or \+inf .* first at index \(2,\)"):
        losses.DMLoss(impl="triton")(bad, torch.tensor([0, 1, 1, 2], device=DEVICE))
    bad[2, 1] = math.inf
    with pytest.raises(ValueError, match=r"first at index \(2,\)"):
        losses.DMLoss(impl="triton")(bad, torch.tensor([0, 1, 1, 2], device=DEVICE))


def test_bench_runs_the_gpu_code_path_under_the_interpreter(monkeypatch):
    """``python -m dmcore bench --device cuda`` measures with :func:`dmcore.lab.bench.run`: here on CPU tensors,
    with the Triton path forced and the GPU's peak bandwidth given, at small shapes of each kind."""
    from dmcore.lab import bench
    monkeypatch.setattr(bench, "peak_bandwidth", lambda device: 1.0)
    shapes = [((16, 100), torch.bfloat16), ((32, 10), torch.float32), ((1, 3, 4, 4), torch.float32)]
    results = bench.run(DEVICE, shapes, repeats=1, impl="triton")
    dm = [r for r in results if r.loss == "DMLoss"]
    assert [r.dtype for r in dm] == ["bfloat16", "float32", "float32"]
    assert all(r.bandwidth_fraction == pytest.approx(r.bandwidth_gbs / 1.0) for r in dm)
    table = bench.format_table(results)
    assert "16x100" in table and "bfloat16" in table and "of peak" in table
