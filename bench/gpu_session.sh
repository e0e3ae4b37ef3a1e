#!/usr/bin/env bash
# The one prepared run for a lent GPU machine (README: "On a GPU"): the CUDA tests, then a
# fine-tune of the shipped model with the model card's step 4 recipe (rhd_train-weighted,
# 30 epochs: a second round of the step that made it), exported as a release file under $OUT. The release steps that follow (calibration, side
# probe, benchmarks) run on the CPU machine afterwards.
#
# The machine has its own PyTorch but no FrEIA and no ../shared, so both travel with the call:
#   here, once:  .venv/bin/python -m pip wheel --no-deps -w .whl freia==0.2
#                (FrEIA 0.2 is a source distribution; its wheel is pure Python)
#   the call:    carry .whl data/pseudo/hands_subhi data/pseudo/ti1k data/pseudo/rhd_train
#                      data/pseudo/sign_digits
#                command: bash bench/gpu_session.sh        (timeout_s 600)
# About 58 MiB travel (the tree 10, the pseudo-labelled photos 48), under the 64 MiB limit.
# TRAIN_MIN (default 6) bounds the training so that the whole command ends inside 10 minutes;
# a run cut short by it is still exported (its best epoch) and says so in train.log.
# A rehearsal on the CPU machine: OUT=/tmp/gpu_out DEVICE=cpu TRAIN_MIN=1 WORKERS=1 \
#     PY=.venv/bin/python bash bench/gpu_session.sh
set -uo pipefail
: "${OUT:?OUT must name the folder whose files come back}"
DEVICE=${DEVICE:-cuda}
TRAIN_MIN=${TRAIN_MIN:-6}
WORKERS=${WORKERS:-12}
PY=${PY:-python3}
export PYTHONUNBUFFERED=1
step() { printf '\n== %s (%s)\n' "$1" "$(date +%T)"; }

step "environment"
if compgen -G ".whl/*.whl" >/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
[ "$DEVICE" = cpu ] || nvidia-smi -L
$PY - "$DEVICE" <<'EOF' || exit 1
import sys
import FrEIA  # noqa: F401
import torch
from training.engine import resolve_precision
device = torch.device(sys.argv[1])
name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
print(f"torch {torch.__version__}, {name}, --precision auto -> "
      f"{resolve_precision('auto', device)}")
EOF
for source in hands_subhi ti1k rhd_train sign_digits; do
    [ -f "data/pseudo/$source/annotations.json" ] || {
        echo "data/pseudo/$source is missing: carry it (see the top of this script)"; exit 1; }
done

# A failing CUDA test is reported, not fatal: the training below is the call's main product.
step "CUDA tests"
$PY -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$OUT/tests.log" | tail -n 25

step "synthetic set (as make demo writes it)"
if [ ! -f data/SYNTH/RHD/RHD_published_v2/evaluation/anno_evaluation.pickle ]; then
    $PY -m datasets.synthetic --out data/SYNTH --num_train 2000 --num_test 300 \
        --difficulty easy --seed 0 --workers "$WORKERS" || exit 1
fi

step "fine-tune: the model card's step 4 recipe, ${TRAIN_MIN} min at most"
R=data/pseudo
CKP=${CKP:-/tmp/rhdw}
$PY training/train_seednet_fastflow.py --preset real --init_weights checkpoints/pretrained \
    --residual_flow --datasets coco synth \
    --coco_json $R/hands_subhi $R/ti1k $R/rhd_train $R/sign_digits \
    --dataset_weights 0.8 0.2 --coco_weights 0.37 0.19 0.2 0.39 --epoch_size 4000 \
    --val_datasets coco --context_prob 0.35 --context_scale_max 4 -lr 3e-4 --epochs 30 \
    --device "$DEVICE" --precision auto -j "$WORKERS" --data_root data -ckp "$CKP" \
    --time_budget_min "$TRAIN_MIN" 2>&1 | tee "$OUT/train.log" | grep -v "^epoch\|^val:"
cp "$CKP/metrics.jsonl" "$CKP/config.yaml" "$CKP/curves.png" "$OUT/" 2>/dev/null

step "export (the best epoch, as a release file)"
$PY training/export_pretrained.py "$CKP" "$OUT/release" || exit 1
ls -l "$OUT" "$OUT/release"
$PY - "$CKP/metrics.jsonl" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
for r in rows:
    print(f"epoch {r['epoch_float']:>6.2f}  step {r['step']:>5}  val_auc {r['val_auc']:.4f}  "
          f"elapsed {r['elapsed_s']:.0f} s")
EOF
