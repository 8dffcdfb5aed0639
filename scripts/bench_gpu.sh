#!/usr/bin/env bash
# Every GPU check and benchmark of issues 7 and 8 in one command, for a session that is lent a CUDA GPU:
#
#   bash scripts/bench_gpu.sh [OUT_DIR]        (default OUT_DIR: $OUT if set, else bench_gpu_out)
#
# 1. GPU parity tests of the Triton kernels (bf16/fp16/fp32 against the float64 reference),
# 2. kernel timings (ours vs eager, torch.compile, SDPA, FlexAttention) at the reference/kernels.md sizes,
# 3. the train step (ours vs MONAI AttentionUnet/BasicUNet, batch 2 x 128^3, widths 32..256, bf16 autocast),
# 4. `medseg predict` vs the hand-written MONAI pipeline on a 512x512x300 volume.
# Each step writes JSON + the printed table into OUT_DIR and a failure of one step does not stop the others; the
# exit code is the number of failed steps. Needs medseg installed (pip install -e ".[test]") with a CUDA torch; on a
# lent device without network, scripts/device_wheels.sh prepares what to carry (not yet tried on a device).
set -u
OUT_DIR=${1:-${OUT:-bench_gpu_out}}
mkdir -p "$OUT_DIR"
failed=0
step() {  # step NAME COMMAND...: run, tee the output to OUT_DIR/NAME.txt, count failures
    local name=$1
    shift
    echo "== $name: $*"
    "$@" 2>&1 | tee "$OUT_DIR/$name.txt"
    local rc=${PIPESTATUS[0]}
    [ "$rc" -eq 0 ] || { echo "== $name failed (exit $rc)"; failed=$((failed + 1)); }
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT_DIR/gpu.txt"
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT_DIR/gpu.txt"
step pytest_gpu python -m pytest -q tests/kernels -m gpu
step bench_kernels python scripts/bench_kernels.py --quick --out "$OUT_DIR/bench_kernels.json"
step bench_train python scripts/bench_train.py --device cuda --json "$OUT_DIR/bench_train.json"
step bench_predict python scripts/bench_predict.py --device cuda --json "$OUT_DIR/bench_predict.json"
echo "== $failed step(s) failed; results in $OUT_DIR"
exit "$failed"
