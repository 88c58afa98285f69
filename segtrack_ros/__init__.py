"""
YOLOv8-seg instance segmentation and tracking for ROS 2 and video files.

The core (segmenter, detections, render, labels) needs no ROS; the node and the video publisher are
thin ROS glue around it. Importing the package keeps Ultralytics from using the network on its own:
no online checks, telemetry or package auto-install (model weights of official names are still
downloaded when missing). Users can override both variables in their environment.
"""

import os

os.environ.setdefault('YOLO_OFFLINE', '1')
os.environ.setdefault('YOLO_AUTOINSTALL', 'false')
