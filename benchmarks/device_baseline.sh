#!/bin/sh
# The converged VGG-16-BN w0.5 baseline (60 epochs, cosine, lr 0.05) in one call on a GPU machine: the one baseline
# issue 19 asks for that a 2-core CPU session cannot train (2-6 min an epoch, and its 30 MB training state is over
# the 20 MB commit limit, so it cannot be carried from session to session either).
#
# On the development machine, once:  make device-prep    (the wheels the GPU image lacks -> .whl/, the data -> .data/)
# Then one device call:              sh benchmarks/device_baseline.sh   carrying .whl and .data, timeout 600 s
# What comes back under $OUT: the checkpoint (15 MB), its train_baseline JSON (per-epoch curve, wall time), the log.
# Commit the checkpoint to benchmarks/results/vgg16_w0.5_e60_cifar10.pt with its sha256 line (record_sha256).
#
# The same script smoke-tests on a CPU: OUT=/tmp/o EPOCHS=1 WIDTH=0.125 sh benchmarks/device_baseline.sh
set -eu
: "${OUT:?set OUT to the folder that receives the results}"
EPOCHS=${EPOCHS:-60}
WIDTH=${WIDTH:-0.5}
PY=${PY:-python3}
if [ -d .whl ]; then  # the image's torch, torchvision, click, scipy, matplotlib, tqdm; ours: deap, torch-pruning
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export EVOPRUNE_SHARED_DATA="${EVOPRUNE_SHARED_DATA:-$PWD/.data}" PYTHONUNBUFFERED=1
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
run=runs/device-baseline-vgg16-w$WIDTH-e$EPOCHS   # inside the repo: kept between calls while the machine is warm
resume=""
[ -f "$run/train_state.pt" ] && resume="--resume"
"$PY" benchmarks/train_baseline.py --width "$WIDTH" --epochs "$EPOCHS" --out "$run" $resume \
    --save-checkpoint "$OUT/vgg16_w${WIDTH}_e${EPOCHS}_cifar10.pt" >"$OUT/train.log" 2>&1 || {
    tail -40 "$OUT/train.log"; cp "$run.log" "$OUT/" 2>/dev/null; exit 1; }
cat "$OUT/train.log"
cp "$run.log" "$OUT/"
cp "benchmarks/results/train_baseline_vgg16_w${WIDTH}_e${EPOCHS}.json" "$OUT/"
sha256sum "$OUT/vgg16_w${WIDTH}_e${EPOCHS}_cifar10.pt"
