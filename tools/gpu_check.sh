#!/usr/bin/env bash
# The checks that need a GPU, prepared to run in one go on a machine with CUDA (none of the book's CI has one):
#   tools/gpu_check.sh [OUT_DIR]          (default _build/gpu)
# 1. the Triton kernels' tests on CUDA tensors (the EDF losses' and the fused linear + EDF loss's), which CI runs
#    under Triton's interpreter on the CPU;
# 2. bench --linear on CUDA (bfloat16: 8192 x 4096 x 32k and 4096 x 2048 x 128k tokens x hidden x vocabulary),
#    recorded with the machine as bench-linear-gpu.json, to be copied into book/records;
# 3. bench on CUDA (the EDF losses on stored logits), recorded as bench-gpu.json.
# Needs a Python with a CUDA build of torch, triton, and this checkout installed (pip install -e ".[book,triton]");
# Liger-Kernel and Cut Cross-Entropy join the benchmarks where they import.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-_build/gpu}
mkdir -p "$out"
python -c "import torch, triton; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())"
python -m pytest -q -p no:cacheprovider tests/lib/test_linear_edf.py tests/lib/test_kernels.py 2>&1 | tee "$out/tests.log"
python -m dmcore bench --linear --device cuda --record "$out/bench-linear-gpu.json" 2>&1 | tee "$out/bench-linear.txt"
python -m dmcore bench --device cuda --record "$out/bench-gpu.json" 2>&1 | tee "$out/bench.txt"
