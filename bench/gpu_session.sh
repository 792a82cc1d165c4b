#!/usr/bin/env bash
# One prepared GPU session (a lent machine's time is short, about 10 minutes of it here): run
# from the repository root on a CUDA machine that has PyTorch, with Fashion-MNIST's four .gz
# files in $FMNIST (default .devdata/fashion-mnist; the machine may have no network). Every
# step has its own time limit and a failed step does not stop the next; logs go to $OUT
# (default /tmp/gpu_session); the figures to $OUT/gpu_engine.json, to be copied to
# bench/results/gpu_engine.json with a table for readers.
#   1. the device and torch; tests/test_cuda.py (repeatable training, CUDA inference = CPU,
#      a group on CUDA = its members on the CPU, graphed steps = eager steps)        ~1.5 min
#   2. bench/engine.py: ms per student-step of one student and of groups of 8, 32 and 128,
#      convnet_w32 KD at batch 32; resnet18_modified at 32 px, batch 64, groups 1, 8, 32;
#      each eager and with the step replayed as a CUDA graph (ccfs.stepgraph)         ~6 min
#   3. (parts 3 and 4 with CCFS_CUDA_GRAPHS=1 unless set) `ccfs run fmnist-ipc50 select.method=[random,ccfs] eval.seeds=[0] train.steps=4800`
#      from an empty run directory, stage by stage (issue 9's 232 s command)           ~3 min
#   4. the Fashion-MNIST sweep's CCFS, self-evolved, random and random + distilled rows at 5 %
#      and 20 %, seeds 0-2 (KD only)                                                    ~3 min
# One device call runs at most 600 s: run it in two, PARTS="1 2" then PARTS="3 4" (the JSON is
# rebuilt from the logs $OUT holds after each; keep $OUT between the calls or merge the two).
set -u
PARTS=${PARTS:-1 2 3 4}
part() { [[ " $PARTS " == *" $1 "* ]]; }
OUT=${OUT:-/tmp/gpu_session}; mkdir -p "$OUT"
FMNIST=${FMNIST:-.devdata/fashion-mnist}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 MPLBACKEND=Agg CCFS_CACHE=/tmp/ccfs-cache
export CCFS_CUDA_GRAPHS=${CCFS_CUDA_GRAPHS:-1}  # parts 3 and 4 with the step captured (0: eager, for a before/after)
PY=${PY:-python3}
STEPS=${STEPS:-}          # e.g. STEPS="train.steps=50 teacher.train.epochs=1" for a dry run
T_ENGINE=${T_ENGINE:-200}; T_RUN=${T_RUN:-280}; T_SWEEP=${T_SWEEP:-280}
GROUPS_SMALL=${GROUPS_SMALL:-1,8,32,128}; GROUPS_RESNET=${GROUPS_RESNET:-1,8,32}

{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  $PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
torch.cuda.get_device_name() if torch.cuda.is_available() else "")'; nproc; echo "CCFS_CUDA_GRAPHS=$CCFS_CUDA_GRAPHS"
  git rev-parse --short HEAD; } >"$OUT/env.txt" 2>&1

part 1 && timeout 120 $PY -m pytest -q -rf -p no:cacheprovider tests/test_cuda.py >"$OUT/test_cuda.log" 2>&1

part 2 && rm -f "$OUT/engine.jsonl" && { timeout "$T_ENGINE" $PY bench/engine.py --root "$FMNIST" --groups "$GROUPS_SMALL" --json "$OUT/engine.jsonl"
  timeout "$T_ENGINE" $PY bench/engine.py --root "$FMNIST" --model resnet18_modified --size 32 --channels 3 \
    --batch 64 --groups "$GROUPS_RESNET" --steps 150 --json "$OUT/engine.jsonl"; } >"$OUT/engine.log" 2>&1

# $1 log name, $2 time limit, then the ccfs arguments: every stage in turn, its wall-clock seconds
stages() {
  local name=$1 limit=$2; shift 2
  local end=$(( $(date +%s) + limit ))
  for stage in teacher distill select evaluate export report; do
    left=$(( end - $(date +%s) )); [ "$left" -gt 5 ] || { echo "out of time before $stage"; break; }
    t0=$EPOCHREALTIME
    timeout "$left" $PY -m ccfs "$stage" "$@" progress=false 2>&1 | tail -n 25
    rc=${PIPESTATUS[0]}
    printf "STAGE %s rc %s %s s\n" "$stage" "$rc" "$($PY -c "print(round($EPOCHREALTIME - $t0, 1))")"
    [ "$rc" = 0 ] || break
  done >"$OUT/$name.log" 2>&1
}
part 3 && rm -rf /tmp/gpu-ipc50 && stages run_ipc50 "$T_RUN" fmnist-ipc50 "select.method=[random,ccfs]" "eval.seeds=[0]" train.steps=4800 \
  out=/tmp/gpu-ipc50 "data.root=$FMNIST" $STEPS
part 4 && rm -rf /tmp/gpu-sweep && stages sweep_rows "$T_SWEEP" fmnist-sweep "select.ipc=[275,1100]" "select.method=[ccfs,self_evolved,random,random_distilled]" \
  "eval.seeds=[0,1,2]" eval.hard_labels=false out=/tmp/gpu-sweep "data.root=$FMNIST" $STEPS
part 3 && cp /tmp/gpu-ipc50/results.jsonl "$OUT/ipc50_results.jsonl" 2>/dev/null
part 4 && cat /tmp/gpu-sweep/ipc*/results.jsonl >"$OUT/sweep_results.jsonl" 2>/dev/null

$PY - "$OUT" <<'PY'
import json, re, sys, pathlib
out = pathlib.Path(sys.argv[1])
env = (out / "env.txt").read_text().splitlines()
def stages(name):
    p = out / f"{name}.log"
    found = re.findall(r"STAGE (\w+) rc (\d+) ([\d.]+) s", p.read_text()) if p.is_file() else []
    return {s: {"rc": int(rc), "seconds": float(t)} for s, rc, t in found}
rows = [json.loads(l) for l in (out / "engine.jsonl").read_text().splitlines()] if (out / "engine.jsonl").is_file() else []
ipc50, sweep = stages("run_ipc50"), stages("sweep_rows")
doc = {"device": next((l for l in env if "torch" in l), ""), "date": env[0] if env else "", "commit": env[-1] if env else "",
       "cuda_graphs_in_parts_3_4": next((l.split("=")[1] == "1" for l in env if l.startswith("CCFS_CUDA_GRAPHS=")), None),
       "student_steps": rows,
       "ipc50_command": {"stages": ipc50, "total_s": round(sum(v["seconds"] for v in ipc50.values()), 1)},
       "sweep_rows_5_and_20_percent": {"stages": sweep, "total_s": round(sum(v["seconds"] for v in sweep.values()), 1)}}
(out / "gpu_engine.json").write_text(json.dumps(doc, indent=1) + "\n")
print(json.dumps({k: v for k, v in doc.items() if k != "student_steps"}, indent=1))
PY
ls -la "$OUT"
