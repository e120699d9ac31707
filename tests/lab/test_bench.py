"""dmcore.lab.bench and the command line: measurements that can be checked exactly, the CLI's output, and the
GPU code path (Triton) run under the interpreter."""

import subprocess
import sys

import pytest
import torch

from dmcore.lab import bench, cli


def test_peak_memory_counts_what_forward_and_backward_allocate():
    logits = torch.randn(256, 100, requires_grad=True)
    target = torch.randint(0, 100, (256,))
    size = logits.numel() * 4

    def three_buffers(x, t):           # two temporaries alive at once, then the gradient
        a, b = x * 2, x * 3
        return (a + b).sum() * 0 + x.sum()

    peak = bench.peak_memory(three_buffers, logits, target)
    assert 3 * size <= peak < 4 * size
    assert bench.peak_memory(torch.nn.functional.cross_entropy, logits, target) >= 2 * size


def test_run_reports_every_loss_and_ratios_to_cross_entropy():
    results = bench.run("cpu", [(64, 10), (2, 3, 4, 4)], repeats=2)
    assert [r.loss for r in results[:4]] == ["F.cross_entropy", "DMLoss", "IMAELoss", "GCELoss"]
    assert all(r.time_ratio == 1.0 for r in results if r.loss == "F.cross_entropy")
    assert all(r.time_ms > 0 and r.peak >= 1.0 for r in results)   # the gradient alone is one logits' worth
    table = bench.format_table(results)
    assert "64x10" in table and "2x3x4x4" in table and len(table.splitlines()) == 1 + len(results)


def test_command_line_bench(tmp_path):
    record = tmp_path / "bench.json"
    out = subprocess.run([sys.executable, "-m", "dmcore", "bench", "--shapes", "128x10", "--repeats", "2",
                          "--record", str(record)], capture_output=True, text=True, timeout=300, check=True).stdout
    assert "DMLoss" in out and "vs CE" in out and "DMLoss time vs F.cross_entropy: max" in out
    recorded = bench.load(record)
    assert recorded.repeats == 2 and [r.shape for r in recorded.results] == [(128, 10)] * 4
    assert recorded.machine["threads"] >= 1 and "fastest of 2" in recorded.describe()
    assert bench.format_table(recorded.results) in out     # the file holds what was printed


@pytest.mark.parametrize("text", ["4096", "4096xa", "0x10"])
def test_command_line_rejects_bad_shapes(text, capsys):
    with pytest.raises(SystemExit):
        cli.main(["bench", "--shapes", text])
    assert "a shape" in capsys.readouterr().err


def test_command_line_without_cuda_says_so(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert cli.main(["bench", "--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_bench_runs_the_gpu_code_path_under_the_interpreter(monkeypatch):
    """``python -m dmcore bench --device cuda`` measures with :func:`dmcore.lab.bench.run`: here on CPU tensors
    under Triton's interpreter (tests/conftest.py) where there is no GPU, with the Triton path forced and the
    GPU's peak bandwidth given, at small shapes of each kind."""
    pytest.importorskip("triton")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    monkeypatch.setattr(bench, "peak_bandwidth", lambda device: 1.0)
    shapes = [((16, 100), torch.bfloat16), ((32, 10), torch.float32), ((1, 3, 4, 4), torch.float32)]
    results = bench.run(device, shapes, repeats=1, impl="triton")
    dm = [r for r in results if r.loss == "DMLoss"]
    assert [r.dtype for r in dm] == ["bfloat16", "float32", "float32"]
    assert all(r.bandwidth_fraction == pytest.approx(r.bandwidth_gbs / 1.0) for r in dm)
    table = bench.format_table(results)
    assert "16x100" in table and "bfloat16" in table and "of peak" in table


@pytest.mark.parametrize("model", ["fashion_cnn", "mnist1d_cnn"])
def test_model_steps_times_every_way(model):
    results = bench.model_steps(model, runs=(1, 3), batch=4, repeats=1, eval_batch=8, eval_repeats=1)
    assert [(r.runs, r.way) for r in results] == [(n, way) for n in (1, 3) for way in bench.MODEL_WAYS]
    assert all(r.wall_ms > 0 and r.cpu_ms >= 0 and r.eval_us >= 0 and r.batch == 4 for r in results)
    assert results[-1].seconds_per_run(3000) == pytest.approx(results[-1].cpu_ms * 3 / 3)
    table = bench.format_model_table(results)
    assert "CPU ms/run-step" in table and len(table.splitlines()) == 1 + len(results)


def test_model_steps_names_the_models_it_times():
    with pytest.raises(ValueError, match="times fashion_cnn\\[_wK\\] and mnist1d_cnn\\[_wK\\], got a CifarResNet"):
        bench.model_steps("resnet20", runs=(1,))
    with pytest.raises(ValueError, match="unknown way 'scan'"):
        bench.model_steps("fashion_cnn", runs=(1,), ways=("scan",), batch=2, repeats=1)


def test_command_line_model_bench():
    out = subprocess.run([sys.executable, "-m", "dmcore", "bench", "--model", "fashion_cnn", "--runs", "2",
                          "--repeats", "1", "--threads", "1"], capture_output=True, text=True, timeout=300, check=True).stdout
    assert "fashion_cnn: training steps of R runs" in out and "1 threads" in out
    assert all(way in out for way in bench.MODEL_WAYS) and len(out.splitlines()) == 2 + len(bench.MODEL_WAYS)


@pytest.mark.parametrize("argv, message", [(["--model", "resnet20"], "got a CifarResNet"),
                                           (["--model", "vgg"], "unknown model 'vgg'"),
                                           (["--model", "fashion_cnn", "--record", "x.json"], "--record belong")])
def test_command_line_model_bench_refuses(argv, message, capsys):
    assert cli.main(["bench", *argv]) == 2
    assert message in capsys.readouterr().err


def test_linear_bench_measures_every_candidate_and_the_fused_loss_keeps_no_logits(tmp_path):
    """At 2048 tokens x 300 classes (blocks of 1024 rows: the default's 4M elements cut to two blocks), the
    fused losses' peak memory beyond the gradients is the blocks' (logits and gradient of one block: about
    one logits' worth), the materialised losses' about the logits' twice (logits and their gradient, less
    the gradients of the inputs, which the measure leaves out and which are 6% of the logits here)."""
    from dmcore import linear_edf
    from dmcore.lab import bench_linear

    record = tmp_path / "linear.json"
    out = subprocess.run([sys.executable, "-m", "dmcore", "bench", "--linear", "--shapes", "48x8x100", "--repeats",
                          "1", "--record", str(record)], capture_output=True, text=True, timeout=300, check=True)
    recorded = bench_linear.load(record)
    assert [r.loss for r in recorded.results] == list(bench_linear.candidates("cpu"))
    assert bench_linear.format_table(recorded.results) in out.stdout
    assert all(r.time_ratio == 1.0 for r in recorded.results if r.loss == bench_linear.REFERENCE)
    old = linear_edf.CHUNK_ELEMENTS
    try:
        linear_edf.CHUNK_ELEMENTS = 1024 * 300
        peaks = {r.loss: r.peak_extra for r in bench_linear.run("cpu", [(2048, 16, 300)], repeats=1)}
    finally:
        linear_edf.CHUNK_ELEMENTS = old
    assert peaks["linear_edf DM"] < 1.2 and peaks["linear_edf CCE"] < 1.2, peaks
    assert peaks["materialised DM"] >= 1.9 and peaks["materialised CE"] >= 1.9, peaks
