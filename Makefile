# segtrack_ros, pip route: everything lives in .venv at the repo root (see README).
SHELL := bash
.SHELLFLAGS := -eo pipefail -c
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# pip's global config on these machines names local mirrors that may be absent: hide that noise.
PIP_QUIET := 2>&1 | { grep -v 'is ignored: it is neither' || true; }

# DDS stays on this machine and parallel runs don't meet, unless the caller chose otherwise.
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST
export ROS_DOMAIN_ID ?= $(shell shuf -i 1-100 -n 1)
export YOLO_OFFLINE ?= 1

.PHONY: venv demo test model eval bench soak pictures lint clean

venv: $(STAMP)

VISION_MSGS_SOURCES := $(wildcard third_party/vision_msgs/msg/*.msg) \
	third_party/vision_msgs/CMakeLists.txt tools/build_vision_msgs.sh \
	tools/fix_wheel_cmake_targets.cmake

# The real launch / launch_ros, a test tool (not on PyPI): installed when ../shared holds it (CI),
# from a temporary copy (../shared may be read-only); without it the launch tests skip.
ROS_LAUNCH := ../shared/ros-launch
ROS_LAUNCH_INSTALL := $(wildcard $(ROS_LAUNCH)/install.sh)

$(STAMP): requirements.txt requirements-dev.txt requirements-fleet.txt setup.py $(VISION_MSGS_SOURCES) $(ROS_LAUNCH_INSTALL)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt -r requirements-fleet.txt \
	  $(PIP_QUIET)
	$(PY) -m pip install -q --no-deps -e . $(PIP_QUIET)
	bash tools/build_vision_msgs.sh $(VENV)
	$(if $(ROS_LAUNCH_INSTALL),bash $(ROS_LAUNCH_INSTALL) $(VENV) tools/fix_wheel_cmake_targets.cmake \
	  2>&1 | { grep -vE 'dependency resolver|requires ament_index_python|is ignored' || true; })
	$(PY) -c 'import rclpy, ultralytics, vision_msgs.msg, segtrack_ros'
	touch $@

demo: $(STAMP)
	$(PY) tools/demo.py

test: $(STAMP)
	$(PY) -m pytest test

# Train the bundled model (segtrack_ros/data/shapes-seg.pt) from generated scenes, CPU, ~30 min.
model: $(STAMP)
	$(PY) tools/train_model.py

# The package and a direct ultralytics loop, scored against exact ground truth (segtrack-eval).
eval: $(STAMP)
	$(PY) -m segtrack_ros.eval.evaluate

# Every benchmark, each writing its table to bench/: the package against the model and the
# guide's loop (results.md), masks as instances and pixels grow (masks.md), several cameras
# (cameras.md), segtrack-bag against segtrack-video (bag.md), segtrack-fleet on Ray (fleet.md),
# exported models against their .pt (exports.md).
bench: $(STAMP)
	$(PY) tools/bench.py
	$(PY) tools/bench_masks.py
	$(PY) tools/bench_cameras.py
	$(PY) tools/bench_bag.py
	$(PY) tools/bench_fleet.py
	$(PY) tools/bench_exports.py

# The node's memory over 10 minutes at 30 Hz.
soak: $(STAMP)
	$(PY) tools/soak.py

# Every picture of docs/ (README, bench/README.md), made again from the bundled model, a
# generated scene and the bench/ tables.
pictures: $(STAMP)
	$(PY) tools/pictures.py

config/segtrack.yaml: segtrack_ros/params.py
	$(PY) -m segtrack_ros.params > $@

clean:
	rm -rf build install log output .pytest_cache
