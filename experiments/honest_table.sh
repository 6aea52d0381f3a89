#!/usr/bin/env bash
# The honest table: every task of the training suite and one it never saw (a narrower host),
# evaluation seeds 0..4 (training used 100..105), five ways to spend the same 20 epochs:
# the host alone, random growth, the heuristic, the shipped GNN policy, and a static model of
# about the grown size trained from scratch. Then one table: python -m esper.report.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-outputs/honest_table}
TASKS=eval_spirals_mlp,eval_digits_mlp,eval_digits_cnn,eval_spirals_narrow
$PY run.py -m experiment=$TASKS policy=none,random,heuristic,gnn seed=0,1,2,3,4 \
  trainer.progress=false hydra.sweep.dir="$OUT/grown" hydra/launcher=joblib hydra.launcher.n_jobs=2
$PY run.py -m experiment="${TASKS//,/_static,}_static" policy=none seed=0,1,2,3,4 \
  trainer.progress=false hydra.sweep.dir="$OUT/static" hydra/launcher=joblib hydra.launcher.n_jobs=2
$PY -m esper.report "$OUT/grown" "$OUT/static"
