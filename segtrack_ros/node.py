"""
`segtrack_node`: camera images in; annotated images, label images and detections out.

The node only moves messages. The subscription keeps the newest frame; an inference thread
decodes and segments it, then draws, encodes and publishes only the outputs that have
subscribers. When the model leaves CPU time free (a GPU, or fewer torch threads than cores), the
drawing and publishing move to a second thread, overlapped with the next inference. A frame that
arrives while the model is busy replaces the waiting one, so no queue builds up whatever the
camera rate.
"""

import array
import queue
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)
from rclpy.exceptions import ParameterException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.serialization import deserialize_message
from segtrack_ros import image_codec, labels
from segtrack_ros.params import BY_NAME, check_combination, PARAMETERS
from segtrack_ros.program import run_node
from segtrack_ros.render import RenderConfig, Renderer
from segtrack_ros.segmenter import check_tracker, Segmenter, SegmenterConfig, SegmenterError
from segtrack_ros.stats import PipelineStats
from sensor_msgs.msg import CompressedImage, Image
from std_srvs.srv import Trigger

try:
    from segtrack_ros.detection_msg import to_detection_array
    from vision_msgs.msg import Detection2DArray
except ImportError:  # vision_msgs not installed: every other output still works
    Detection2DArray = None

STREAM = 'camera'
THROTTLE_SECONDS = 5.0
SEGMENTER_FIELDS = ('mode', 'tracker', 'conf', 'iou', 'imgsz', 'max_det', 'classes',
                    'retina_masks')
RENDER_FIELDS = ('line_width', 'show_labels', 'show_conf', 'mask_alpha', 'trail_length')
OUTPUT_QOS = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)


class StartupError(Exception):
    """The node cannot start with these parameters; the message says why."""


class LatestFrame:
    """A one-message mailbox: a new message replaces one that was not taken yet."""

    def __init__(self):
        self._condition = threading.Condition()
        self._item = None
        self._closed = False

    def put(self, item):
        """Store `item`; return True when it replaced a waiting one (a dropped frame)."""
        with self._condition:
            dropped = self._item is not None
            self._item = item
            self._condition.notify()
            return dropped

    def take(self):
        """Wait for the next item; None once closed."""
        with self._condition:
            self._condition.wait_for(lambda: self._item is not None or self._closed)
            item, self._item = self._item, None
            return item

    def close(self):
        """Wake the taker for good."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()


def descriptor(spec):
    """Build the ROS parameter descriptor of a `ParameterSpec`: description, range, read-only."""
    text = spec.description
    if spec.choices:
        text += f' One of: {", ".join(spec.choices)}.'
    result = ParameterDescriptor(description=text, read_only=spec.read_only)
    if spec.low is not None and isinstance(spec.default, float):
        result.floating_point_range = [FloatingPointRange(from_value=spec.low,
                                                          to_value=spec.high)]
    elif spec.low is not None and not isinstance(spec.default, list):
        result.integer_range = [IntegerRange(from_value=spec.low, to_value=spec.high, step=1)]
    return result


def initial_value(spec):
    """
    Return the value to declare: the default, or the bare type for the empty `classes` list.

    rclpy would type an empty list as a byte array; declared by type, it starts unset (read as
    empty by `plain`) and takes integer lists.
    """
    return Parameter.Type.INTEGER_ARRAY if spec.default == [] else spec.default


def plain(value):
    """Return a parameter value as the core wants it: lists for arrays, [] for an unset list."""
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple, array.array)) else value


class SegTrackNode(Node):
    """
    Segment (and track) the frames of one camera topic and publish the results.

    >>> node = SegTrackNode()   # parameters from the command line or a params file
    >>> rclpy.spin(node)
    """

    def __init__(self, **kwargs):
        super().__init__('segtrack_node', **kwargs)
        self._pending = LatestFrame()
        self._outputs = queue.Queue(maxsize=2)
        self._workers = []
        self._values = self._declare_parameters()
        self._changed = threading.Event()
        self._lock = threading.Lock()  # one frame or one reset at a time on the segmenter
        try:
            self._segmenter = Segmenter(SegmenterConfig(
                model=self._values['model'], device=self._values['device'],
                half=self._values['half'], **self._segmenter_values()))
        except SegmenterError as error:
            raise StartupError(str(error)) from error
        self._renderer = Renderer(self._render_config())
        # On a CPU model with a torch thread per core, a second thread drawing and publishing
        # during inference stalls torch's threads at every parallel region: measured on 2
        # cores, yolov8n-seg at 640 went from 78 to 108-134 ms per frame, 12.2 -> 7.7-9.6 fps.
        self._overlap_publishing = self._segmenter.leaves_cpu_free
        self.get_logger().info(
            f"model {self._values['model']} on {self._segmenter.config.device}, "
            f"mode {self._values['mode']}; outputs drawn and published "
            + ('on their own thread, during the next inference' if self._overlap_publishing
               else 'between inferences, as no core is free'))
        self.stats = PipelineStats()
        self._last_stamp = None
        self._make_publishers()
        self._subscribe()
        self.create_service(Trigger, '~/reset_tracker', self._on_reset)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.create_timer(1.0, self._publish_diagnostics)
        self._workers = [threading.Thread(target=self._infer_loop, name='infer', daemon=True)]
        if self._overlap_publishing:
            self._workers.append(threading.Thread(target=self._publish_loop, name='publish',
                                                  daemon=True))
        for worker in self._workers:
            worker.start()

    # -- parameters -------------------------------------------------------------------------

    def _declare_parameters(self):
        values = {}
        for spec in PARAMETERS:
            try:
                value = self.declare_parameter(spec.name, initial_value(spec),
                                               descriptor(spec)).value
            except ParameterException as error:
                raise StartupError(f'parameter {spec.name}: {error}') from error
            value = plain(value)
            reason = spec.check(value)
            if reason:
                raise StartupError(reason)
            values[spec.name] = value
        reason = check_combination(values)
        if reason:
            raise StartupError(reason)
        return values

    def _on_set_parameters(self, parameters):
        new = dict(self._values)
        for parameter in parameters:
            spec = BY_NAME.get(parameter.name)
            if spec is None:
                continue  # qos_overrides.* and use_sim_time are rclpy's own
            value = plain(parameter.value)
            reason = spec.check(value) or self._tracker_problem(spec.name, value)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
            new[spec.name] = value
        reason = check_combination(new)
        if reason:
            return SetParametersResult(successful=False, reason=reason)
        self._values = new
        self._changed.set()
        return SetParametersResult(successful=True)

    @staticmethod
    def _tracker_problem(name, value):
        if name != 'tracker':
            return None
        try:
            check_tracker(value)
        except SegmenterError as error:
            return str(error)
        return None

    def _segmenter_values(self):
        values = {name: self._values[name] for name in SEGMENTER_FIELDS}
        values['classes'] = tuple(values['classes'])
        return values

    def _render_config(self):
        return RenderConfig(color_by=self._values['color_mode'],
                            **{name: self._values[name] for name in RENDER_FIELDS})

    def _apply_changes(self):
        """Take parameter changes into use, between two frames."""
        self._changed.clear()
        self._segmenter.update(**self._segmenter_values())
        self._renderer.config = self._render_config()

    # -- topics and services -------------------------------------------------------------------

    def _make_publishers(self):
        overrides = QoSOverridingOptions.with_default_policies()
        self._annotated = self.create_publisher(Image, 'annotated_image', OUTPUT_QOS,
                                                qos_overriding_options=overrides)
        self._compressed = self.create_publisher(CompressedImage, 'annotated_image/compressed',
                                                 OUTPUT_QOS, qos_overriding_options=overrides)
        self._instance_mask = self.create_publisher(Image, 'instance_mask', OUTPUT_QOS,
                                                    qos_overriding_options=overrides)
        self._class_mask = self.create_publisher(Image, 'class_mask', OUTPUT_QOS,
                                                 qos_overriding_options=overrides)
        self._detections = None
        if Detection2DArray is not None:
            self._detections = self.create_publisher(Detection2DArray, 'detections', OUTPUT_QOS,
                                                     qos_overriding_options=overrides)
        else:
            self.get_logger().warning('vision_msgs is not installed: no detections topic')
        self._diagnostics = self.create_publisher(DiagnosticArray, '/diagnostics', 10)

    def _subscribe(self):
        """
        Subscribe to the camera, with sensor-data QoS (REP-2003) unless overridden.

        Messages are taken serialized: a frame that a newer one replaces is never turned into a
        Python message (at 105 Hz in, 80 % are; inference went from 41 to 31 ms a frame).
        """
        qos = QoSProfile(**{key: getattr(qos_profile_sensor_data, key)
                            for key in ('history', 'depth', 'durability')})
        qos.reliability = (ReliabilityPolicy.RELIABLE
                           if self._values['qos_reliability'] == 'reliable'
                           else ReliabilityPolicy.BEST_EFFORT)
        compressed = self._values['input_transport'] == 'compressed'
        self._input_type = CompressedImage if compressed else Image
        self.create_subscription(
            self._input_type, 'image/compressed' if compressed else 'image',
            self._on_image, qos, raw=True,
            qos_overriding_options=QoSOverridingOptions.with_default_policies())

    def _on_image(self, serialized):
        self.stats.received()
        if self._pending.put(serialized):
            self.stats.count('dropped')

    def _on_reset(self, request, response):
        with self._lock:
            self._reset_tracks()
        response.success = True
        response.message = 'tracks reset; ids start again at 1'
        return response

    def _reset_tracks(self):
        self._segmenter.reset(STREAM)
        self._renderer.reset()

    # -- the worker threads: inference, and publishing when it overlaps ------------------------

    def _infer_loop(self):
        while (serialized := self._pending.take()) is not None:
            try:
                header, frame = self._decode(serialized)
            except image_codec.ImageDecodeError as error:
                self.stats.count('bad_inputs')
                self.get_logger().warning(f'bad input image skipped: {error}',
                                          throttle_duration_sec=THROTTLE_SECONDS)
                continue
            try:
                with self._lock:
                    if self._changed.is_set():
                        self._apply_changes()
                    self._reset_on_time_jump(header.stamp)
                    start = time.perf_counter()
                    detections = self._segmenter.process(frame, STREAM)
                inference_ms = (time.perf_counter() - start) * 1000
            except Exception as error:  # one bad frame must not stop the node
                self.stats.count('errors')
                self.get_logger().error(f'inference failed on a frame: {error!r}',
                                        throttle_duration_sec=THROTTLE_SECONDS)
                continue
            if self._overlap_publishing:
                self._outputs.put((header, frame, detections, inference_ms))
            else:
                self._publish_frame(header, frame, detections, inference_ms)

    def _publish_loop(self):
        while (item := self._outputs.get()) is not None:
            self._publish_frame(*item)

    def _publish_frame(self, header, frame, detections, inference_ms):
        try:
            self._publish(header, frame, detections)
        except Exception as error:  # e.g. a DDS publish error: log, count, go on
            self.stats.count('errors')
            self.get_logger().error(f'publishing failed on a frame: {error!r}',
                                    throttle_duration_sec=THROTTLE_SECONDS)
            return
        stamp = header.stamp.sec + header.stamp.nanosec * 1e-9
        latency_ms = (self.get_clock().now().nanoseconds * 1e-9 - stamp) * 1000
        self.stats.processed(inference_ms, latency_ms)

    def _decode(self, serialized):
        """Return the header and the BGR frame of a serialized camera message."""
        try:
            message = deserialize_message(serialized, self._input_type)
        except Exception as error:  # rclpy names no type; DDS delivered bytes of another type
            raise image_codec.ImageDecodeError(f'cannot deserialize: {error}') from error
        if isinstance(message, CompressedImage):
            return message.header, image_codec.decode_compressed(message)
        return message.header, image_codec.decode_image(message)

    def _reset_on_time_jump(self, stamp):
        stamp = (stamp.sec, stamp.nanosec)
        if self._last_stamp is not None and stamp < self._last_stamp:
            self.get_logger().info(
                f'input stamps jumped backwards ({self._last_stamp[0]} s -> {stamp[0]} s, a '
                'looping bag or a restarted camera?): tracks reset')
            self._reset_tracks()
        self._last_stamp = stamp

    def _publish(self, header, frame, detections):
        """
        Draw, encode and publish what has subscribers; every output copies `header`.

        Cheapest first: the detections need no full-size mask, so they leave before the label
        images and the drawing are made.
        """
        def wanted(publisher):
            return publisher is not None and publisher.get_subscription_count() > 0

        if wanted(self._detections):
            self._detections.publish(to_detection_array(detections, header))
        owner = None
        if wanted(self._instance_mask) or wanted(self._class_mask):
            owner = labels.owner_image(detections)
        if wanted(self._instance_mask):
            self._instance_mask.publish(image_codec.to_image_msg(
                labels.instance_mask(detections, owner), 'mono16', header))
        if wanted(self._class_mask):
            self._class_mask.publish(image_codec.to_image_msg(
                labels.class_mask(detections, owner), 'mono16', header))
        if wanted(self._annotated) or wanted(self._compressed):
            annotated = self._renderer.draw(frame, detections, owner)
            if wanted(self._annotated):
                self._annotated.publish(image_codec.to_image_msg(annotated, 'bgr8', header))
            if wanted(self._compressed):
                self._compressed.publish(image_codec.to_compressed_msg(annotated, header))

    def _publish_diagnostics(self):
        figures = self.stats.snapshot()
        problems = figures['bad_inputs'] + figures['errors']
        status = DiagnosticStatus(
            name=f'{self.get_fully_qualified_name()}: pipeline',
            hardware_id=self._segmenter.config.device,
            level=DiagnosticStatus.WARN if problems else DiagnosticStatus.OK,
            message=(f'{problems} bad inputs or errors so far' if problems
                     else f"{figures['processed_hz']:.1f} Hz processed"),
            values=[KeyValue(key=key, value=f'{value:.3f}' if isinstance(value, float)
                             else str(value)) for key, value in figures.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics.publish(array)

    def destroy_node(self):
        """Stop the worker threads, then the node."""
        self._pending.close()
        if self._workers:
            infer, *publish = self._workers
            infer.join(timeout=2.0)
            if publish:
                self._outputs.put(None)
                publish[0].join(timeout=2.0)
        super().destroy_node()


def main(args=None):
    """Run `segtrack_node` until Ctrl-C or shutdown; exit 1 with one line on a bad start."""
    run_node('segtrack_node', SegTrackNode, StartupError, args)


if __name__ == '__main__':
    main()
