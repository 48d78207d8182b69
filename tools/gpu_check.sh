#!/usr/bin/env bash
# One-command GPU check: every `cuda`-marked test + the CUDA benchmarks -> one Markdown report.
# Needs only the README's set-up (bash tools/setup_env.sh); installs nothing.
#   bash tools/gpu_check.sh [--out gpu_report.md] [--budget-s 450]   # on a CUDA machine (< 8 min)
#   bash tools/gpu_check.sh --cpu                                    # CUDA parts skipped (CI, anyone)
# Exit: 0 ok, 1 a CUDA test failed, 2 a benchmark section raised, 3 no CUDA device (without --cpu).
# The logic lives in tools/gpu_check.py.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${NOPOSPLAT_PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PY" ] || { echo "gpu_check: $PY not found; run 'bash tools/setup_env.sh' first" >&2; exit 4; }
exec "$PY" "$ROOT/tools/gpu_check.py" "$@"
