#!/usr/bin/env bash
# Build the vision_msgs subset in third_party/vision_msgs and install it into a pip venv.
#
# Usage: tools/build_vision_msgs.sh [VENV]   (default: .venv; FORCE=1 rebuilds regardless)
#
# vision_msgs has no PyPI wheel, so on the pip route it is generated here with rosidl from the
# ROS 2 wheels in the venv (requirements*.txt). On a real ROS install rosdep provides it instead.
# Idempotent: skips the build when the venv already holds a build of the same sources against the
# same ROS wheels; otherwise it builds from scratch in build/vision_msgs and installs over it.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${1:-.venv}
if [[ ! -x $venv/bin/python ]]; then
  echo "build_vision_msgs: no Python venv at '$venv'" >&2
  exit 1
fi
venv=$(cd "$venv" && pwd)
py=$venv/bin/python
src=$repo/third_party/vision_msgs
fix=$repo/tools/fix_wheel_cmake_targets.cmake
build=$repo/build/vision_msgs
start=$SECONDS

site=$("$py" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
stamp=$venv/share/vision_msgs/segtrack_build.sha256
# What the build depends on: our sources and scripts, the interpreter and the ROS wheel versions.
key=$(
  {
    cd "$repo"
    sha256sum third_party/vision_msgs/package.xml third_party/vision_msgs/CMakeLists.txt \
      third_party/vision_msgs/msg/*.msg tools/fix_wheel_cmake_targets.cmake \
      tools/build_vision_msgs.sh
    "$py" -c 'import sys; print(sys.version)'
    ls -d "$site"/ros_*.dist-info
  } | sha256sum | cut -d' ' -f1
)

check='from vision_msgs.msg import Detection2DArray, Detection3DArray, LabelInfo
Detection2DArray(); Detection3DArray(); LabelInfo()'
if [[ ${FORCE:-0} != 1 && -f $stamp && $(<"$stamp") == "$key" ]] \
    && "$py" -c "$check" 2>/dev/null; then
  echo "vision_msgs: up to date in $venv"
  exit 0
fi

generator=()
if [[ -z ${CMAKE_GENERATOR:-} ]] && command -v ninja >/dev/null; then
  generator=(-G Ninja)
fi

# rosidl finds the typesupports through the ament index, CMake finds the packages through the
# prefix path: both are the venv alone (a sourced ROS install must not leak in).
export AMENT_PREFIX_PATH=$venv
export CMAKE_PREFIX_PATH=$venv
export PATH=$venv/bin:$PATH
unset PYTHONPATH

rm -rf "$build"
mkdir -p "$build"
log=$build/build.log
if ! {
  cmake -S "$src" -B "$build" "${generator[@]}" \
    -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_INSTALL_PREFIX="$venv" \
    -DCMAKE_PROJECT_INCLUDE="$fix" \
    -DPython3_EXECUTABLE="$py" \
    -DPython3_FIND_VIRTUALENV=ONLY \
    -DBUILD_TESTING=OFF &&
  cmake --build "$build" --parallel "$(nproc)" &&
  cmake --install "$build"
} >"$log" 2>&1; then
  tail -n 40 "$log" >&2
  echo "build_vision_msgs: FAILED (full log: $log)" >&2
  exit 1
fi

# The generated package must import in the venv with no extra environment.
env -u AMENT_PREFIX_PATH -u CMAKE_PREFIX_PATH -u LD_LIBRARY_PATH \
  -u _ROS_WHEELS_BOOTSTRAP_COMPLETE "$py" -c "$check"
echo "$key" >"$stamp"
echo "vision_msgs: built and installed into $venv in $((SECONDS - start)) s"
