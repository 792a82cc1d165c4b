#!/usr/bin/env bash
# The official CCFS CIFAR-10 setting, scaled to a CPU, run by ccfs (configs/refbench-cifar10.yaml).
#
#   bash bench/refbench.sh REFBENCH_DIR [key=value ...]
#
# REFBENCH_DIR holds make_cifar_like.py and train_teacher.py, which rebuild the inputs the
# official code's users have: Fashion-MNIST as CIFAR-10 python pickles under
# /tmp/refdata/cifar-10-batches-py (5 000 train / 1 000 test, seed 0), 10 placeholder
# "distilled" images per class, and a torchvision ResNet-18 (modified) teacher trained 3
# epochs with the official normalisation, with its forgetting scores. Those scripts need
# torchvision; they run in their own venv (/tmp/refvenv). The torchvision wheel on these
# machines is built against CUDA torch, so its C ops are not registered (ResNet-18 does not
# use them). Then `ccfs run` on the setting with the same 2 threads, timed; the output is the
# run's log, its timing breakdown (bench/passes.py) and the summary table.
set -euo pipefail
REF="${1:?usage: bash bench/refbench.sh REFBENCH_DIR [key=value ...]}"; shift
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
DATA=/tmp/refdata TEACH=/tmp/refteacher RV=/tmp/refvenv SHIM=/tmp/refvenv-shim
if [ ! -f "$DATA/cifar-10-batches-py/batches.meta" ]; then
  "$VENV/bin/python" "$REF/make_cifar_like.py" --out "$DATA" --n-train 5000 --n-test 1000 --seed 0 \
    --distilled-out "$DATA/distilled_placeholder_k10" --distilled-per-class 10
fi
if [ ! -f "$TEACH/resnet18_teacher.pth" ]; then
  [ -x "$RV/bin/python" ] || { python3 -m venv "$RV"; "$RV/bin/pip" install -q torch==2.13.0 torchvision==0.28.0 numpy pillow; }
  mkdir -p "$SHIM"
  cat > "$SHIM/sitecustomize.py" <<'PY'
import torch.library as _lib
_orig = _lib.register_fake
def _register_fake(op, *args, **kwargs):  # torchvision's CUDA-built ops are absent on CPU torch
    if isinstance(op, str) and op.startswith("torchvision::"):
        return lambda fn: fn
    return _orig(op, *args, **kwargs)
_lib.register_fake = _register_fake
PY
  PYTHONPATH="$SHIM" "$RV/bin/python" "$REF/train_teacher.py" --data "$DATA" --ckpt "$TEACH/resnet18_teacher.pth" \
    --forgetting "$TEACH/forgetting.npy" --metrics "$TEACH/metrics.json" --epochs 3 --seed 0 --threads 2
fi
"$VENV/bin/python" bench/passes.py refbench-cifar10 threads=2 "$@"
