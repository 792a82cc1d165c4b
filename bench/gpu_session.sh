#!/usr/bin/env bash
# One prepared GPU check (a lent machine's time is short): run from the repository root on a
# CUDA machine that has PyTorch, with Fashion-MNIST's four .gz files in $FMNIST (default
# .devdata/fashion-mnist). Every step has its own time limit and a failed step does not stop
# the next; logs go to $OUT (default /tmp/gpu_session). Results: bench/results/gpu_h200.md.
#   1. the device and torch; tests/test_cuda.py (repeatable training, CUDA inference = CPU);
#      bench/cuda_determinism.py (what deterministic kernels cost);
#   2. bench/gpu.py: teacher epoch / coarse pass / KD student with AMP and channels-last on and off,
#      and the KD student with train.compile (cold and warm);
#   3. the issue-9 timing command, `ccfs run fmnist-ipc50 select.method=[random,ccfs]
#      eval.seeds=[0]` from an empty run directory, one stage at a time with wall-clock times;
#   4. the test suite on that machine (CUDA visible), in parallel if pytest-xdist is there.
set -u
OUT=${OUT:-/tmp/gpu_session}; mkdir -p "$OUT"
FMNIST=${FMNIST:-.devdata/fashion-mnist}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 MPLBACKEND=Agg CCFS_CACHE=/tmp/ccfs-cache
PY=${PY:-python3}
STEPS=${STEPS:-}          # e.g. STEPS="train.steps=50 teacher.train.epochs=1" for a dry run
T_BENCH=${T_BENCH:-120}; T_RUN=${T_RUN:-300}; T_TEST=${T_TEST:-150}

{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  $PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
torch.cuda.get_device_name() if torch.cuda.is_available() else "")'; nproc; } >"$OUT/env.txt" 2>&1

timeout 60 $PY -m pytest -q -rf -p no:cacheprovider tests/test_cuda.py >"$OUT/test_cuda.log" 2>&1
timeout 90 $PY bench/cuda_determinism.py --root "$FMNIST" >"$OUT/determinism.log" 2>&1
timeout "$T_BENCH" $PY bench/gpu.py --root "$FMNIST" >"$OUT/gpu_bench.log" 2>&1; echo "rc $?" >>"$OUT/gpu_bench.log"

RUN=/tmp/gpu-ipc50; rm -rf "$RUN"
args=(fmnist-ipc50 "select.method=[random,ccfs]" "eval.seeds=[0]" "out=$RUN" "data.root=$FMNIST" $STEPS)
end=$(( $(date +%s) + T_RUN ))
{ for stage in teacher distill select evaluate export report; do
    left=$(( end - $(date +%s) )); [ "$left" -gt 5 ] || { echo "out of time before $stage"; break; }
    t0=$EPOCHREALTIME
    timeout "$left" $PY -m ccfs "$stage" "${args[@]}" 2>&1 | tr '\r' '\n' | grep -v '^ *$' | tail -n 25
    rc=${PIPESTATUS[0]}
    printf "STAGE %s rc %s %s s\n" "$stage" "$rc" "$(python3 -c "print(round($EPOCHREALTIME - $t0, 1))")"
    [ "$rc" = 0 ] || break
  done; } >"$OUT/run_ipc50.log" 2>&1
cp "$RUN/report.md" "$OUT/ipc50_report.md" 2>/dev/null
cp "$RUN/results.jsonl" "$OUT/ipc50_results.jsonl" 2>/dev/null

xd=""; $PY -c 'import xdist' 2>/dev/null && xd="-n 14 -p no:benchmark"
timeout "$T_TEST" $PY -m pytest -q -rf $xd -p no:cacheprovider tests >"$OUT/pytest.log" 2>&1; echo "rc $?" >>"$OUT/pytest.log"
ls -la "$OUT"
