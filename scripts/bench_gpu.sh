#!/usr/bin/env bash
# Every GPU check and benchmark of issue 20 (and the older ones of issues 7 and 8) in one command, for a session that
# is lent a CUDA GPU (15-minute lease: about 8 minutes of work, so BUDGET_S=480):
#
#   BUDGET_S=480 PACK=1 bash scripts/bench_gpu.sh [OUT_DIR]     (default OUT_DIR: $OUT if set, else bench_gpu_out)
#
# Steps, issue 20's priorities first (each one's output goes to OUT_DIR/NAME.txt, its JSON beside it):
#  1. pytest_gpu: every gpu-marked test (kernels vs the float64 reference in bf16/fp16/fp32, the routed global
#     attention, bf16 autocast);
#  2. bench_kernels: --quick, bf16: fused gate x 1x64x128^3 / g 1x128x64^3 / F 32, neighbourhood attention 7^3 on 64^3
#     tokens 4x32, global attention 32^3 tokens 4x32 and the DANet shape: ours vs eager, torch.compile, SDPA,
#     FlexAttention, and the routed default;
#  3. bench_train: batch 2 x 128^3, bf16: ours at its default widths and at nnU-Net's widths/depth against nnU-Net's
#     PlainConvUNet (3d_fullres plan), MONAI DynUNet and MONAI AttentionUnet; step time, peak memory, MFU;
#  4. ablation_merge_add: attention_unet and its gate-less twin with model.net.merge=add (decides model.net.merge);
#  5. predict_600: `medseg predict` on a 512x512x600 CT-like volume (bench_predict, medseg pipeline);
#  6. if budget is left: bench_predict against the MONAI pipeline (512x512x300), train_demo, ablation_textbook,
#     ablation_no_channels_last, compile.
# BUDGET_S (seconds, default 0 = none) bounds the whole script: each step is cut at its own limit or at the budget,
# and steps that no longer fit are skipped, so a lent machine's time limit never loses the finished results. At the
# end PACK=1 packs the results into OUT_DIR/gpu_results.tgz instead (a device call brings back at most 8 files).
# A failed step does not stop the others; the exit code is the number of failed steps. DEVICE=cpu SMALL=1 is a
# dry run of the script itself on a CPU (tiny sizes). Needs medseg importable with a CUDA torch, and
# dynamic-network-architectures for nnU-Net's network (else that row is skipped with a message); on a lent machine
# without network see scripts/device_wheels.sh for what to carry and the command line.
set -u
OUT_DIR=${1:-${OUT:-bench_gpu_out}}
DEVICE=${DEVICE:-cuda}
BUDGET_S=${BUDGET_S:-0}
mkdir -p "$OUT_DIR"
WORK=$(mktemp -d)
START=$(date +%s)
failed=0
# on a CPU (the dry run) every step gets 4x its GPU time limit
SCALE=1
[ "$DEVICE" = cpu ] && SCALE=4
if [ "${SMALL:-0}" = 1 ]; then
    TRAIN=(--patch 16 --widths 8 16 32 --warmup 1 --repeats 1)
    PREDICT=(--shape 96 96 40)
    PREDICT_600=(--shape 96 96 48)
    DEMO=(trainer.max_epochs=2)
else
    TRAIN=()
    PREDICT=(--shape 512 512 300 --threads 16)
    PREDICT_600=(--shape 512 512 600 --threads 16)
    DEMO=()
fi
PEERS=(attention_unet attention_unet_nnunet_widths nnunet_plain monai_dynunet monai_attention_unet)
ABLATION_TEXTBOOK=(model/net/skip_gate=attention model/net/decoder_block=double_conv model.net.channels_last=false)

step() {  # step NAME LIMIT_S COMMAND...: run under a time limit, tee the output to OUT_DIR/NAME.txt, count failures
    local name=$1 limit=$(($2 * SCALE))
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
step pytest_gpu 160 python3 -m pytest -q -p no:cacheprovider --durations=15 tests -m gpu
step bench_kernels 110 python3 scripts/bench_kernels.py --quick --out "$OUT_DIR/bench_kernels.json"
step bench_train 90 python3 scripts/bench_train.py --device "$DEVICE" "${TRAIN[@]}" --nets "${PEERS[@]}" \
    --json "$OUT_DIR/bench_train.json"
step ablation_merge_add 50 python3 scripts/bench_train.py --device "$DEVICE" "${TRAIN[@]}" \
    --nets attention_unet attention_unet_no_gates --override model.net.merge=add --json "$OUT_DIR/ablation_merge_add.json"
step predict_600 70 python3 scripts/bench_predict.py --device "$DEVICE" "${PREDICT_600[@]}" --pipelines medseg \
    --json "$OUT_DIR/predict_600.json"
# ---- the rest only if budget is left (measured before on an H100: docs/benchmarks.md)
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
