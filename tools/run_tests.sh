#!/usr/bin/env bash
# The test command: sets up (or updates) the project venv, then runs the whole test suite.
# Extra arguments go to pytest (e.g. `bash tools/run_tests.sh -k keyframes`).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/tools/setup_env.sh" "$ROOT/.venv"
cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m pytest test "$@"
