#!/usr/bin/env bash
# The test suite (CPU only, tiny synthetic data, a few minutes). Extra arguments go to pytest.
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
exec "$VENV/bin/python" -m pytest -q "$@"
