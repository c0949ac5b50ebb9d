#!/usr/bin/env bash
# Re-train, evaluate and export the bundled default model from the shared real data.
# Long (hours on 2 CPU cores): run it in the background, never in CI. Resumable: run it again.
#
#   DATA=../shared/data/hip-mri-t1 RUN=runs/default_3d_f8l4_half EPOCHS=16 scripts/train_default_model.sh
#
# Steps: 4-fold cross-validation (checkpoint every epoch, --resume continues a killed run),
# evaluation of every fold on its validation cases on the original image grids (Table 2 layout,
# figures), export of the 4-fold ensemble as a model folder with its card (plus the notes and
# inference settings of scripts/femur-t1-coronal.card.json), and installation into
# Resources/Models/femur-t1-coronal (refused if it exists, unless OVERWRITE=1).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${DATA:-../shared/data/hip-mri-t1}
RUN=${RUN:-runs/default_3d_f8l4_half}
EPOCHS=${EPOCHS:-16}
CONFIG=${CONFIG:-default_3d_f8l4_half}
NAME=${NAME:-femur-t1-coronal}
VERSION=${VERSION:-0.2.0}
CARD_EXTRA=${CARD_EXTRA:-scripts/$NAME.card.json}
OUT=${OUT:-Resources/Models/$NAME}

$PY -m FemurSegTraining.cli cv "$CONFIG" --data "$DATA" --run-dir "$RUN" --epochs "$EPOCHS" --resume --quiet
$PY -m FemurSegTraining.cli evaluate "$RUN" --quiet
overwrite=()
[ "${OVERWRITE:-0}" = 1 ] && overwrite=(--overwrite)
$PY -m FemurSegTraining.cli export "$RUN" "$OUT" --name "$NAME" --version "$VERSION" \
    --card-extra "$CARD_EXTRA" "${overwrite[@]}"
echo "model folder: $OUT"
echo "list its files in FemurSeg/CMakeLists.txt (MODULE_BUNDLED_MODEL_FILES) to ship it in the extension"
