#!/usr/bin/env bash
# The main job: sets up (or updates) the project venv, then plays the bundled real stereo pair
# (Middlebury Motorcycle, from scikit-image) through the live node over DDS on loopback and writes
# splats.ply, trajectory.tum and preview.png to out/demo (or the --out given).
# Extra arguments go to `noposplat-ros demo` (see `--help`).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/tools/setup_env.sh" "$ROOT/.venv"
cd "$ROOT"
exec "$ROOT/.venv/bin/noposplat-ros" demo "$@"
