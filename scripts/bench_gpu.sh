#!/usr/bin/env bash
# Every GPU check and benchmark of issues 7 and 8 in one command, for a session that is lent a CUDA GPU:
#
#   bash scripts/bench_gpu.sh [OUT_DIR]        (default OUT_DIR: $OUT if set, else bench_gpu_out)
#
# Steps, most important first (each one's output goes to OUT_DIR/NAME.txt, its JSON beside it):
#  1. bench_train: the train step, ours vs MONAI AttentionUnet/BasicUNet, batch 2 x 128^3, widths 32..256, bf16 autocast;
#  2. pytest_gpu: every gpu-marked test (kernels vs the float64 reference in bf16/fp16/fp32, bf16 autocast; 7 of them
#     have never run on a GPU);
#  3. ablation_merge_add: attention_unet and its gate-less twin with model.net.merge=add (the variant that reaches 2x
#     MONAI on the CPU: does it keep the gates' share <= 1.15 on a GPU?);
#  4. bench_kernels: kernel timings (ours vs eager, torch.compile, SDPA, FlexAttention) at the reference sizes;
#  5. bench_predict: `medseg predict` vs the hand-written MONAI pipeline on a 512x512x300 volume;
#  6. train_demo: `medseg train` on the demo data on the GPU (bf16-mixed; wall time and validation Dice);
#  7. ablation_*: attention_unet in its textbook form and without channels-last (what each speed choice buys on a GPU);
#  8. compile: attention_unet through torch.compile.
# Steps 1, 5, 6 and 7 were measured on an H100 (docs/benchmarks.md); 2-4 are what is still missing.
# BUDGET_S (seconds, default 0 = none) bounds the whole script: each step is cut at its own limit or at the budget,
# and steps that no longer fit are skipped, so a lent machine's time limit never loses the finished results. At the
# end PACK=1 packs the results into OUT_DIR/gpu_results.tgz instead (a device call brings back at most 8 files).
# A failed step does not stop the others; the exit code is the number of failed steps. DEVICE=cpu SMALL=1 is a
# dry run of the script itself on a CPU (tiny sizes). Needs medseg importable with a CUDA torch; on a lent machine
# without network see scripts/device_wheels.sh for what to carry and the command line.
set -u
OUT_DIR=${1:-${OUT:-bench_gpu_out}}
DEVICE=${DEVICE:-cuda}
BUDGET_S=${BUDGET_S:-0}
mkdir -p "$OUT_DIR"
WORK=$(mktemp -d)
START=$(date +%s)
failed=0
if [ "${SMALL:-0}" = 1 ]; then
    TRAIN=(--patch 32 --warmup 1 --repeats 2)
    PREDICT=(--shape 96 96 40)
    DEMO=(trainer.max_epochs=2)
else
    TRAIN=()
    PREDICT=(--shape 512 512 300 --threads 16)
    DEMO=()
fi
ABLATION_TEXTBOOK=(model/net/skip_gate=attention model/net/decoder_block=double_conv model.net.channels_last=false)

step() {  # step NAME LIMIT_S COMMAND...: run under a time limit, tee the output to OUT_DIR/NAME.txt, count failures
    local name=$1 limit=$2
    shift 2
    if [ "$BUDGET_S" -gt 0 ]; then
        local left=$((BUDGET_S - ($(date +%s) - START) - 15))
        if [ "$left" -lt 30 ]; then
            echo "== $name skipped: ${left}s of the budget left" | tee "$OUT_DIR/$name.txt"
            return
        fi
        [ "$left" -lt "$limit" ] && limit=$left
    fi
    echo "== $name (limit ${limit}s, t=$(($(date +%s) - START))s): $*"
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$OUT_DIR/$name.txt"
    local rc=${PIPESTATUS[0]}
    [ "$rc" -eq 0 ] || { echo "== $name failed (exit $rc)"; failed=$((failed + 1)); }
}

{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
    python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
    nproc
} | tee "$OUT_DIR/gpu.txt"
step bench_train 240 python3 scripts/bench_train.py --device "$DEVICE" "${TRAIN[@]}" --json "$OUT_DIR/bench_train.json"
step pytest_gpu 240 python3 -m pytest -q -p no:cacheprovider tests -m gpu
step ablation_merge_add 120 python3 scripts/bench_train.py --device "$DEVICE" "${TRAIN[@]}" \
    --nets attention_unet attention_unet_no_gates --override model.net.merge=add --json "$OUT_DIR/ablation_merge_add.json"
step bench_kernels 150 python3 scripts/bench_kernels.py --quick --out "$OUT_DIR/bench_kernels.json"
step bench_predict 240 python3 scripts/bench_predict.py --device "$DEVICE" "${PREDICT[@]}" --json "$OUT_DIR/bench_predict.json"
step train_demo 180 python3 -m medseg.cli train "hydra.run.dir=$WORK/demo_run" "trainer.accelerator=$DEVICE" "${DEMO[@]}"
cp "$WORK/demo_run/metrics.json" "$OUT_DIR/train_demo_metrics.json" 2>/dev/null
step ablation_textbook 90 python3 scripts/bench_train.py --device "$DEVICE" "${TRAIN[@]}" --nets attention_unet \
    --override "${ABLATION_TEXTBOOK[@]}" --json "$OUT_DIR/ablation_textbook.json"
step ablation_no_channels_last 90 python3 scripts/bench_train.py --device "$DEVICE" "${TRAIN[@]}" --nets attention_unet \
    --override model.net.channels_last=false --json "$OUT_DIR/ablation_no_channels_last.json"
step compile 180 python3 scripts/bench_train.py --device "$DEVICE" "${TRAIN[@]}" --nets attention_unet --compile \
    --json "$OUT_DIR/compile.json"
echo "== $failed step(s) failed after $(($(date +%s) - START))s; results in $OUT_DIR"
if [ "${PACK:-0}" = 1 ]; then
    tar czf "$WORK/gpu_results.tgz" -C "$OUT_DIR" . && rm -rf "${OUT_DIR:?}"/* && mv "$WORK/gpu_results.tgz" "$OUT_DIR/"
fi
rm -rf "$WORK"
exit "$failed"
