"""
YOLOv8-seg instance segmentation and tracking for ROS 2 and video files.

The package is layered, and each folder is a dependency rule (checked by test/test_layers.py):
`core` (model, tracking, masks, drawing; no ROS), `io` (messages, videos, bags; no rclpy
nodes), the shared frame pipeline and parameter table here, then the programs: `ros` (the
nodes), `cli` (the command lines) and `eval` (generated scenes and scoring). Importing it changes
nothing global: the programs call `segtrack_ros.core.runtime.apply_process_defaults()` first.
"""
