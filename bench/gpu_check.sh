#!/usr/bin/env bash
# The GPU measurements of issue #7 in one run (a few minutes on one GPU, install included):
#   1. the CUDA path computes what the CPU path computes: one deterministic training step on each (fp32, TF32
#      off), losses and gradients compared by bench/compare_steps.py;
#   2. the target: a training step at MAX_SIZE_TRAIN 1600 with batch 2 (two 896x1600 images, the largest padded
#      batch MIN_SIZE_TRAIN <= 896 and aspect-ratio grouping give, 20 words each) under AMP float16 (SOLVER.AMP's
#      default), bfloat16 and in fp32: the CUDA allocator's peaks, to hold against 24 GB;
#   3. bench/live_memory.py's live-tensor peak (what the CPU benchmarks report) against the CUDA allocator's;
#   4. one inference.
# Each case runs in a fresh process; the JSON records go to $OUT/gpu.jsonl, all console output to $OUT/gpu.log.
# A failing case is logged with its exit status and the next one runs; the script exits non-zero if any failed.
#
#   OUT=output/gpu_check bash bench/gpu_check.sh                   # ests-d2 installed in python3's environment
#   WHEELHOUSE=DIR OUT=... bash bench/gpu_check.sh                 # offline: install first from DIR
#                                                                  #   (made by scripts/wheelhouse.sh)
# Sizes and precisions are variables so that the script itself can be tried on a CPU at toy sizes (a CPU
# without bf16/fp16 instructions emulates them, slowly), e.g.
#   DEVICE=cpu TARGET_ARGS="--size 64 --width 96 --batch 2 --gt 4" TARGET_DTYPES=fp32 TRACK_SIZE=64 \
#     TRACK_DTYPES=fp32 EVAL_SIZE=64 COMPARE_SIZE=64 bash bench/gpu_check.sh
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-$ROOT/output/gpu_check}"
PY="${PYTHON:-python3}"
DEVICE="${DEVICE:-cuda}"
COMPARE_DEVICE="${COMPARE_DEVICE:-cpu}"  # the reference device of check 1
TARGET_ARGS="${TARGET_ARGS:---size 896 --width 1600 --batch 2 --gt 20}"
TARGET_DTYPES="${TARGET_DTYPES:-fp16 bf16 fp32}"
COMPARE_SIZE="${COMPARE_SIZE:-256}"
TRACK_SIZE="${TRACK_SIZE:-640}"
TRACK_DTYPES="${TRACK_DTYPES:-fp32 bf16}"
EVAL_SIZE="${EVAL_SIZE:-1024}"
THREADS="${THREADS:-8}"
mkdir -p "$OUT"
SCRATCH="$(mktemp -d)"  # the saved steps hold every gradient (~180 MB each): not results to keep
trap 'rm -rf "$SCRATCH"' EXIT
failures=0

log() { echo "$*" | tee -a "$OUT/gpu.log"; }
# run NAME CMD...: one case; its last JSON line (if any) is appended to gpu.jsonl with the case's name
run() {
  local name="$1"; shift
  log "==> $name: $*"
  "$@" > "$SCRATCH/case.out" 2>&1
  local rc=$?
  cat "$SCRATCH/case.out" >> "$OUT/gpu.log"
  local record
  record="$(grep '^{' "$SCRATCH/case.out" | tail -1)"
  "$PY" -c 'import json, sys; r = json.loads(sys.argv[2] or "{}"); r.update(case=sys.argv[1], rc=int(sys.argv[3]))
print(json.dumps(r))' "$name" "$record" "$rc" >> "$OUT/gpu.jsonl"
  if [ "$rc" -ne 0 ]; then
    failures=$((failures + 1))
    log "    FAILED with exit status $rc: $(tail -1 "$SCRATCH/case.out")"
  fi
}
step() { "$PY" "$ROOT/bench/bench_model_step.py" --threads "$THREADS" "$@"; }

if [ -n "${WHEELHOUSE:-}" ]; then
  run install env ESTS_USE_CURRENT_PYTHON=1 PYTHON="$PY" bash "$ROOT/scripts/install.sh" || true
fi
{ nvidia-smi 2>&1 || true; "$PY" -c 'import torch; print("torch", torch.__version__)'; } >> "$OUT/gpu.log"

# 1. Same math on both devices. TF32 would round fp32 products to 10-bit mantissas on the GPU.
export NVIDIA_TF32_OVERRIDE=0
run "compare reference $COMPARE_DEVICE" step --device "$COMPARE_DEVICE" --mode train --size "$COMPARE_SIZE" \
  --no-dn-noise --save-step "$SCRATCH/reference.pt"
run "compare $DEVICE" step --device "$DEVICE" --mode train --size "$COMPARE_SIZE" --no-dn-noise \
  --save-step "$SCRATCH/device.pt"
run "compare steps" "$PY" "$ROOT/bench/compare_steps.py" "$SCRATCH/reference.pt" "$SCRATCH/device.pt"
unset NVIDIA_TF32_OVERRIDE

# 2. The memory target, in SOLVER.AMP's precision first.
for dtype in $TARGET_DTYPES; do
  # shellcheck disable=SC2086  # TARGET_ARGS is a list of arguments
  run "target train $dtype" step --device "$DEVICE" --mode train $TARGET_ARGS --dtype "$dtype"
done

# 3. The tracker against the allocator (and 4. inference).
for dtype in $TRACK_DTYPES; do
  run "tracked train $TRACK_SIZE $dtype" step --device "$DEVICE" --mode train --size "$TRACK_SIZE" \
    --dtype "$dtype" --track-memory
done
run "eval $EVAL_SIZE fp32" step --device "$DEVICE" --mode eval --size "$EVAL_SIZE"

log "$failures case(s) failed; records in $OUT/gpu.jsonl"
[ "$failures" -eq 0 ]
