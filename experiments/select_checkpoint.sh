#!/usr/bin/env bash
# Choose among GNN checkpoints by validation only (selection seeds 50..59, no test read):
#   experiments/select_checkpoint.sh CKPT [CKPT ...]
# EXTRA="key=value ..." applies the same overrides to random and to every checkpoint (e.g.
# EXTRA=seeds.contribution=shadow, the protocol a checkpoint trained under it is judged by).
# GNN="key=value ..." applies to the checkpoints alone and may sweep inference settings
# (e.g. GNN="policy.max_seeds=null,1 policy.greedy=false,true"); SEEDS=a,b,... other selection seeds.
set -euo pipefail
if [ $# -eq 0 ]; then  # helper-found: the whole random sweep ran before policy.checkpoint='' failed
  echo "usage: experiments/select_checkpoint.sh CKPT [CKPT ...] (GNN checkpoints to choose among)" >&2
  exit 2
fi
CHECKPOINTS=()
for ckpt in "$@"; do  # read from where the script was called, handed on as absolute paths
  [ -f "$ckpt" ] || { echo "experiments/select_checkpoint.sh: $ckpt: no such file" >&2; exit 2; }
  CHECKPOINTS+=("$(cd "$(dirname "$ckpt")" && pwd)/$(basename "$ckpt")")
done
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-outputs/select_checkpoint}
SEEDS=${SEEDS:-50,51,52,53,54,55,56,57,58,59}
TASKS=eval_spirals_mlp,eval_digits_mlp,eval_digits_cnn,eval_spirals_narrow
read -r -a EXTRA <<< "${EXTRA:-}"
read -r -a GNN <<< "${GNN:-}"
CKPTS=$(IFS=,; echo "${CHECKPOINTS[*]}")
$PY run.py -m experiment=$TASKS policy=random seed=$SEEDS "${EXTRA[@]}" trainer.quiet=true \
  hydra.sweep.dir="$OUT/random" hydra/launcher=joblib hydra.launcher.n_jobs=2
$PY run.py -m experiment=$TASKS policy=gnn "policy.checkpoint=$CKPTS" seed=$SEEDS "${EXTRA[@]}" \
  "${GNN[@]}" trainer.quiet=true hydra.sweep.dir="$OUT/gnn" hydra/launcher=joblib hydra.launcher.n_jobs=2
$PY experiments/select_checkpoint.py "$OUT"
