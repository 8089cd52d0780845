#!/usr/bin/env bash
# Sets up the environment if needed (dev/setup_env.sh), then runs the test suite.
# Extra arguments go to pytest, e.g. `bash dev/run_tests.sh tests/modeling -k nms`.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/dev/setup_env.sh"
VENV=${YOLACT_VENV:-$ROOT/.venv}
cd "$ROOT"
# Two workers (pytest-xdist), one per core: each test runs on one torch thread (tests/conftest.py).
echo "[tests] $VENV/bin/python -m pytest -n 2 $*"
# pytest exits 5 when it collected no test: that is a failure here, as is any other non-zero code.
exec "$VENV/bin/python" -m pytest -n 2 "$@"
