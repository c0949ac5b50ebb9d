#!/usr/bin/env bash
# Train, evaluate and export a cross-validated model within a time budget, e.g. on a GPU
# machine lent for a short while (the paper's F32 L4 rows or a much larger network):
#
#   DEVICE=cuda MINUTES=10 CONFIG=paper_3d_f32l4 RUN=runs/f32l4 OUT=models/femur-f32l4 \
#       scripts/train_on_budget.sh
#
# The cross-validation gets TRAIN_SHARE (default 0.75) of the budget: every fold plans its
# epochs after its first one (femurseg-train cv --time-budget), so its learning-rate schedule
# still ends. Evaluation on each fold's validation cases and the export of the fold ensemble
# (ONNX graphs checked against PyTorch) use the rest. Resumable: run it again with the same RUN.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${DATA:-../shared/data/hip-mri-t1}
CONFIG=${CONFIG:?CONFIG (a config name or file) is required}
MINUTES=${MINUTES:?MINUTES (the whole budget) is required}
RUN=${RUN:-runs/$(basename "$CONFIG" .json)-budget}
OUT=${OUT:-$RUN/model}
NAME=${NAME:-$(basename "$CONFIG" .json)}
VERSION=${VERSION:-0.0.1}
DEVICE=${DEVICE:-auto}
TRAIN_SHARE=${TRAIN_SHARE:-0.75}
if [ "$DEVICE" = auto ]; then
  DEVICE=$($PY -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
fi
train_minutes=$($PY -c "print(float('$MINUTES') * float('$TRAIN_SHARE'))")
start=$(date +%s)
$PY -m FemurSegTraining.cli cv "$CONFIG" --data "$DATA" --run-dir "$RUN" --device "$DEVICE" \
    --time-budget "$train_minutes" --resume --quiet
$PY -m FemurSegTraining.cli evaluate "$RUN" --device "$DEVICE" --quiet
overwrite=()
[ "${OVERWRITE:-0}" = 1 ] && overwrite=(--overwrite)
$PY -m FemurSegTraining.cli export "$RUN" "$OUT" --name "$NAME" --version "$VERSION" \
    "${overwrite[@]}"
echo "model folder: $OUT ($(( $(date +%s) - start )) s of a $MINUTES min budget)"
