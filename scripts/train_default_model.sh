#!/usr/bin/env bash
# Re-train, evaluate and export the bundled default model from the shared real data.
# Long (about 4 hours on 2 CPU cores): run it in the background, never in CI. Resumable: run it
# again and every fold continues from its last checkpoint (a resumed run ends with the weights of
# an uninterrupted one).
#
#   make train-default                         # = scripts/train_default_model.sh
#   DATA=../shared/data/hip-mri-t1 RUN=runs/default_25d_f16l5_half scripts/train_default_model.sh
#
# Steps: 4-fold cross-validation of config default_25d_f16l5_half (checkpoint every epoch), the
# evaluation of every fold on its validation cases through the product's inference path (Table 2
# layout, figures), the robustness table on contrast-changed copies, and the export of the 4-fold
# ensemble with its card (plus the notes of scripts/$NAME.card.json) into
# Resources/Models/$NAME.
#
# An existing model folder is never replaced silently: the export stops with "output exists".
# To replace the bundled model, run with OVERWRITE=1 (the old folder is replaced only after the
# new one is complete and checked), or export elsewhere with OUT=DIR and compare first.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${DATA:-../shared/data/hip-mri-t1}
CONFIG=${CONFIG:-default_25d_f16l5_half}
RUN=${RUN:-runs/$CONFIG}
NAME=${NAME:-femur-t1-coronal}
VERSION=${VERSION:-0.3.0}
CARD_EXTRA=${CARD_EXTRA:-scripts/$NAME.card.json}
OUT=${OUT:-Resources/Models/$NAME}
THREADS=${THREADS:-2}
DEVICE=${DEVICE:-cpu}

$PY -m FemurSegTraining.cli cv "$CONFIG" --data "$DATA" --run-dir "$RUN" --resume --quiet \
    --threads "$THREADS" --device "$DEVICE"
$PY -m FemurSegTraining.cli evaluate "$RUN" --quiet
$PY -m FemurSegTraining.cli robustness "$RUN" --quiet
overwrite=()
[ "${OVERWRITE:-0}" = 1 ] && overwrite=(--overwrite)
$PY -m FemurSegTraining.cli export "$RUN" "$OUT" --name "$NAME" --version "$VERSION" \
    --card-extra "$CARD_EXTRA" "${overwrite[@]}"
echo "model folder: $OUT"
echo "list its files in FemurSeg/CMakeLists.txt (MODULE_BUNDLED_MODEL_FILES) to ship it in the extension"
