#!/usr/bin/env bash
# Cross-validate the 2D + largest-component row (config default_2d_f16l4) on the same folds as the
# default 3D model, evaluate it, and write one Table 2 with both rows, DSC per fold and per case.
# Long (about 1.5 h on 2 CPU cores): run it in the background, never in CI. Resumable.
#
#   RUN3D=runs/default_3d_f8l4_half RUN2D=runs/default_2d_f16l4 scripts/compare_2d_3d.sh
#
# Needs an evaluated 3D run (scripts/train_default_model.sh); its splits.json is reused, so both
# rows see the same folds.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${DATA:-../shared/data/hip-mri-t1}
RUN3D=${RUN3D:-runs/default_3d_f8l4_half}
RUN2D=${RUN2D:-runs/default_2d_f16l4}
EPOCHS=${EPOCHS:-6}
OUT=${OUT:-runs/table2_2d_vs_3d}

mkdir -p "$RUN2D"
[ -f "$RUN2D/splits.json" ] || cp "$RUN3D/splits.json" "$RUN2D/splits.json"
$PY -m FemurSegTraining.cli cv default_2d_f16l4 --data "$DATA" --run-dir "$RUN2D" --epochs "$EPOCHS" --resume --quiet
$PY -m FemurSegTraining.cli evaluate "$RUN2D" --quiet
$PY -m FemurSegTraining.cli table "$RUN3D" "$RUN2D" -o "$OUT" --pp both
echo "Table 2 with both rows: $OUT/table.md"
