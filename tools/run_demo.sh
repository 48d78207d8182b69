#!/usr/bin/env bash
# The main job: sets up (or updates) the project venv, then plays a 20-frame camera tour over a real
# scene (Middlebury Motorcycle re-rendered with true depth, from scikit-image's data) through the live
# node over DDS on loopback and writes map.ply (the fused scene map), map_view.png, splats.ply and
# trajectory.tum to out/demo (or the --out given). `--source pair`: the stereo pair instead.
# Extra arguments go to `noposplat-ros demo` (see `--help`).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/tools/setup_env.sh" "$ROOT/.venv"
cd "$ROOT"
exec "$ROOT/.venv/bin/noposplat-ros" demo "$@"
