#!/usr/bin/env bash
# The main job: a real CCFS run on Fashion-MNIST (teacher, CDA images, 3 curricula,
# KD students for CCFS and random, report). Extra arguments are config overrides,
# e.g. `bash scripts/main.sh eval.seeds=[0]`.
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
FMNIST=/usr/share/datasets/fashion-mnist
if [ ! -f "$FMNIST/train-images-idx3-ubyte.gz" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing Fashion-MNIST (apt-get install dataset-fashion-mnist)"
    apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "Fashion-MNIST is missing: run 'sudo apt-get install -y dataset-fashion-mnist', or put the" >&2
    echo "four IDX files in a folder and pass data.root=FOLDER" >&2
    exit 1
  fi
fi
exec "$VENV/bin/ccfs" run fmnist-quick "$@"
