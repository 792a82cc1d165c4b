# Sourced by scripts/main.sh and scripts/test.sh: creates .venv (or $CCFS_VENV) with ccfs
# installed in editable mode. Uses the torch already importable there; otherwise installs
# torch==2.13.0, which on the project's machines is a local CPU build (a bare `torch`
# requirement would pull a multi-GB CUDA build). Users with a GPU install their own torch
# into the venv first; the project only asks for torch>=2.1,<3.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${CCFS_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating virtual environment $VENV"
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
if ! "$PY" -c "import torch" 2>/dev/null; then
  echo "setup: installing torch==2.13.0 (CPU build)"
  "$PY" -m pip install -q "torch==2.13.0" || {
    echo "setup: could not install torch==2.13.0; install a torch>=2.1 build for your platform into $VENV and re-run" >&2
    exit 1
  }
fi
stamp="$VENV/.ccfs-install-$(sha1sum pyproject.toml | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "setup: installing ccfs and its dependencies"
  "$PY" -m pip install -q -e ".[test]"
  touch "$stamp"
fi
