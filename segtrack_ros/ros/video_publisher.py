"""`video_publisher`: a video file or camera published as `sensor_msgs/Image` (bgr8) on `image`."""

import cv2
from rcl_interfaces.msg import FloatingPointRange, ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from segtrack_ros.io.image_codec import to_image_msg
from segtrack_ros.io.video_io import open_source, VideoError
from segtrack_ros.ros.program import run_node
from sensor_msgs.msg import Image
from std_msgs.msg import Header


class VideoPublisher(Node):
    """
    Publish the frames of a video file or camera at a fixed rate, stamped with the current time.

    Parameters: `source` (file or camera index), `rate` (Hz, 0 = the file's fps), `loop`
    (start again at the end of a file), `frame_id`.
    """

    def __init__(self, **kwargs):
        super().__init__('video_publisher', **kwargs)
        self._source = self.declare_parameter(
            'source', '0', ParameterDescriptor(description='Video file or camera index.',
                                               read_only=True)).value
        rate = self.declare_parameter(
            'rate', 0.0, ParameterDescriptor(
                description='Frames per second; 0 = the video file fps.', read_only=True,
                floating_point_range=[FloatingPointRange(from_value=0.0, to_value=1000.0)])).value
        self._loop = self.declare_parameter(
            'loop', False, ParameterDescriptor(description='Start again at the end of a file.')
        ).value
        self._frame_id = self.declare_parameter(
            'frame_id', 'camera', ParameterDescriptor(description='frame_id of the headers.')
        ).value
        self._capture, info = open_source(self._source)
        self.published = 0
        self._publisher = self.create_publisher(
            Image, 'image', QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE),
            qos_overriding_options=QoSOverridingOptions.with_default_policies())
        self.create_timer(1.0 / (rate or info.fps), self._publish_next)
        self.get_logger().info(
            f'publishing {self._source} ({info.width}x{info.height}) at {rate or info.fps:g} Hz')

    def _publish_next(self):
        ok, frame = self._capture.read()
        if not ok and self._loop and not str(self._source).isdigit():
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self._capture.read()
        if not ok:
            self.get_logger().info(f'{self._source}: end of video after {self.published} frames')
            raise SystemExit(0)
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id=self._frame_id)
        self._publisher.publish(to_image_msg(frame, 'bgr8', header))
        self.published += 1


def main(args=None):
    """Run `video_publisher` until the video ends (unless looping), Ctrl-C or shutdown."""
    run_node('video_publisher', VideoPublisher, VideoError, args)


if __name__ == '__main__':
    main()
