"""The ROS 2 programs: the segmentation node, the video publisher and their rclpy glue."""
