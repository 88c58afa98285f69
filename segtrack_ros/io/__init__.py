"""Messages, videos and bags to and from the core's arrays; no rclpy."""  # noqa: A005
