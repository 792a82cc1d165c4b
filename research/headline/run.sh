#!/usr/bin/env bash
# Issue 26, items 4 and 5, from the fixed commit 554a961 (every record of their tables carries it):
#   bash research/headline/run.sh [RUNS_DIR]      (default ../runs-study; hours of 2 cores)
# 1. the headline sweep's teacher (seed 0) at 5 and 10 %, CCFS and self-evolved, seeds 0-2: item 4's teacher 0;
# 2. teachers of seeds 1 and 2, the same (docs/method.md §3, "Does the distilled part help?");
# 3. the rest of the sweep: the whole preset over the same out= (only what is missing trains).
# Each command resumes where it stopped (run this again after an interruption: finished students are
# skipped); a fresh machine retrains the teachers and distilled images bit for bit (same commit, 2 threads),
# so their records pair with the committed ones (the same teacher_sha1). After each part the records go to
# docs/records/ (research/collect_records.py); commit them, then `python -m ccfs.report.results_page`.
set -euo pipefail
shopt -s nullglob
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
R=$(realpath -m "${1:-$ROOT/../runs-study}"); mkdir -p "$R"
WT=$R/worktree-554a961
[ -d "$WT" ] || git -C "$ROOT" worktree add "$WT" 554a961
PY=$ROOT/.venv/bin/python
export OMP_WAIT_POLICY=PASSIVE  # spinning OpenMP threads slowed a neighbour up to 24x on 2 cores
run() { (cd "$WT" && PYTHONPATH=$WT $PY -m ccfs run fmnist-sweep "$@" threads=2 progress=false); }
collect() {
  (cd "$ROOT" && $PY -m research.collect_records distilled_part "$R/fmnist-sweep" "$R"/teacher[12] \
     && $PY -m research.collect_records fmnist_headline "$R/fmnist-sweep")  # each file's scope: collect_records.SCOPES
}
item4=("select.ipc=[275,550]" "select.method=[ccfs,self_evolved]" "eval.seeds=[0,1,2]" eval.hard_labels=false)
run "${item4[@]}" out="$R/fmnist-sweep" > "$R/part1.log" 2>&1; collect
for S in 1 2; do run seed=$S "${item4[@]}" out="$R/teacher$S" > "$R/teacher$S.log" 2>&1; collect; done
run out="$R/fmnist-sweep" > "$R/rest.log" 2>&1; collect
