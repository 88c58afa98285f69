"""The command lines without ROS: segtrack-video and segtrack-bag."""
