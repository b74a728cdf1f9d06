#!/usr/bin/env bash
# Debian packages for headless MuJoCo rendering on a CPU (Mesa llvmpipe through EGL, or OSMesa).
set -euo pipefail
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq libegl1 libegl-mesa0 libgl1-mesa-dri libglx-mesa0 libgl1 libopengl0 libosmesa6 >/dev/null
echo "GL installed: render with MUJOCO_GL=egl (or MUJOCO_GL=osmesa)"
