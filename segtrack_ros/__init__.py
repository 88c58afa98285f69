"""
YOLOv8-seg instance segmentation and tracking for ROS 2 and video files.

The core (segmenter, detections, render, labels) needs no ROS; the node and the video publisher are
thin ROS glue around it. Importing the package keeps Ultralytics from using the network on its own:
no online checks, telemetry or package auto-install (model weights of official names are still
downloaded when missing). Users can override both variables in their environment.
"""

import os


def usable_cores():
    """Return the number of cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()


os.environ.setdefault('YOLO_OFFLINE', '1')
os.environ.setdefault('YOLO_AUTOINSTALL', 'false')
# Importing ultralytics sets OMP_NUM_THREADS=1 when it is unset (a training default), which
# leaves CPU inference on one core; keep torch's own default: the cores this process may use.
os.environ.setdefault('OMP_NUM_THREADS', str(usable_cores()))
