#!/usr/bin/env bash
# Re-train, evaluate and export the bundled default model femur-t1-coronal 0.4 from real data.
# Long (about 4.3 hours of 2 free CPU threads for the network, 3 more for the cross-validation):
# run it in the background, never in CI. Resumable: run it again with the same folders and every
# network continues from its last checkpoint (a resumed run ends with the weights of an
# uninterrupted one).
#
#   make train-default                          # = scripts/train_default_model.sh
#   DATA=/data/hip-mri-t1 RUNS=runs scripts/train_default_model.sh
#
# DATA is a dataset in nnU-Net's raw layout: imagesTr/<case>_0000.nii.gz, labelsTr/<case>.nii.gz
# (0 background, 1 femur, 2 ilium, 3 spine, 4 sacrum) and dataset.json.
#
# Steps:
#  1. the recipe's 4-fold cross-validation (config default_25d_f16l5_half: 30 epochs per fold,
#     about 45 minutes of one thread each) and its evaluation on each fold's validation cases
#     through the product's inference path: the card's metrics and threshold, Table 2. With
#     CV_FROM_MODEL=DIR the folds of an exported ensemble of that recipe (e.g. femur-t1-coronal
#     0.3.0) are unpacked instead of trained (femurseg-train unpack) and evaluated again;
#  2. one network of the same recipe trained 8x longer on every case (config
#     default_25d_f16l5_long, 240 epochs; femurseg-train fit --fold all): no validation cases,
#     so no early stopping and no choice of epoch: the last epoch's weights are shipped;
#  3. the export of that network with the cross-validation's metrics and threshold on its card
#     (export --cv-run) and the notes of scripts/$NAME.card.json, into Resources/Models/$NAME.
#
# An existing model folder is never replaced silently: the export stops with "output exists".
# To replace the bundled model, run with OVERWRITE=1 (the old folder is replaced only after the
# new one is complete and checked), or export elsewhere with OUT=DIR and compare first.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${DATA:?DATA (the dataset folder, nnU-Net raw layout) is required}
RUNS=${RUNS:-runs}
CV_CONFIG=${CV_CONFIG:-default_25d_f16l5_half}
CONFIG=${CONFIG:-default_25d_f16l5_long}
CV_RUN=${CV_RUN:-$RUNS/$(basename "$CV_CONFIG" .json)}
RUN=${RUN:-$RUNS/$(basename "$CONFIG" .json)}
NAME=${NAME:-femur-t1-coronal}
VERSION=${VERSION:-0.4.0}
CARD_EXTRA=${CARD_EXTRA:-scripts/$NAME.card.json}
OUT=${OUT:-Resources/Models/$NAME}
THREADS=${THREADS:-2}
DEVICE=${DEVICE:-cpu}

if [ ! -f "$CV_RUN/evaluation/summary.json" ]; then
  if [ -n "${CV_FROM_MODEL:-}" ]; then
    [ -d "$CV_RUN" ] || $PY -m FemurSegTraining.cli unpack "$CV_FROM_MODEL" "$CV_RUN"
  else
    $PY -m FemurSegTraining.cli cv "$CV_CONFIG" --data "$DATA" --run-dir "$CV_RUN" --resume \
        --quiet --threads "$THREADS" --device "$DEVICE"
  fi
  $PY -m FemurSegTraining.cli evaluate "$CV_RUN" --data "$DATA" --quiet
fi
$PY -m FemurSegTraining.cli fit "$CONFIG" --fold all --data "$DATA" --run-dir "$RUN" --resume \
    --quiet --threads "$THREADS" --device "$DEVICE"
overwrite=()
[ "${OVERWRITE:-0}" = 1 ] && overwrite=(--overwrite)
$PY -m FemurSegTraining.cli export "$RUN" "$OUT" --cv-run "$CV_RUN" --name "$NAME" \
    --version "$VERSION" --card-extra "$CARD_EXTRA" "${overwrite[@]}"
echo "model folder: $OUT"
echo "list its files in FemurSeg/CMakeLists.txt (MODULE_BUNDLED_MODEL_FILES) to ship it in the extension"
