"""
`segtrack_node`: camera images in; annotated images, label images and detections out.

A managed (lifecycle) node that only moves messages: configure builds the segmenter and the
frame pipeline, activate subscribes to the cameras, deactivate stops taking frames (the model and
the tracks stay), cleanup frees the model. The work itself (newest-frame mailboxes, batched
inference, drawing, encoding, per-frame error containment) is `segtrack_ros.pipeline`'s.

The longest module of the package, on purpose: the lifecycle transitions, parameter events and
each camera's topics (colour, depth, label_info) are the wiring of one object. What stands on
its own lives beside it: `parameters` (descriptors), `diagnostics` (statuses), `input_health`.
"""

import threading
import time

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.exceptions import ParameterException
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.qos import (DurabilityPolicy, qos_profile_sensor_data, QoSPolicyKind, QoSProfile,
                       ReliabilityPolicy)
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.serialization import deserialize_message
from segtrack_ros.core.render import RenderConfig
from segtrack_ros.core.runtime import apply_process_defaults
from segtrack_ros.core.segmenter import check_tracker, Segmenter, SegmenterConfig, SegmenterError
from segtrack_ros.params import BY_NAME, check_combination, PARAMETERS
from segtrack_ros.pipeline import FramePipeline
from segtrack_ros.ros.diagnostics import camera_status, diagnostic_array, idle_status
from segtrack_ros.ros.input_health import InputHealth
from segtrack_ros.ros.parameters import descriptor, plain
from segtrack_ros.ros.program import return_freed_memory, run_node
from segtrack_ros.runners import LiveRunner
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header
from std_srvs.srv import Trigger

try:
    from segtrack_ros.io.detection_msg import to_label_info
    from vision_msgs.msg import Detection2DArray, Detection3DArray, LabelInfo
    from visualization_msgs.msg import MarkerArray
except ImportError:  # vision_msgs not installed: every other output still works
    Detection2DArray = Detection3DArray = LabelInfo = MarkerArray = None

THROTTLE_SECONDS = 5.0
SEGMENTER_FIELDS = ('mode', 'tracker', 'conf', 'iou', 'imgsz', 'max_det', 'classes',
                    'retina_masks')
RENDER_FIELDS = ('line_width', 'show_labels', 'show_conf', 'mask_alpha', 'trail_length')
OUTPUT_QOS = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)
LABEL_INFO_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                            durability=DurabilityPolicy.TRANSIENT_LOCAL)
# The camera subscription's qos_overrides parameters; its reliability is qos_reliability's.
SUBSCRIPTION_OVERRIDES = (QoSPolicyKind.HISTORY, QoSPolicyKind.DEPTH)
IMAGE_OUTPUTS = {'annotated_image': Image, 'annotated_image/compressed': CompressedImage,
                 'instance_mask': Image, 'class_mask': Image}


class StartupError(Exception):
    """The node cannot start with these parameters; the message says why."""


class Camera:
    """One camera's topics: its subscription, publishers and input health."""

    def __init__(self, name):
        self.name = name
        self.prefix = f'{name}/' if name else ''
        self.subscription = None
        self.health = None
        self.depth_subscriptions = []
        self.depth_health = None
        self.publishers = {}
        self.label_info = None


class SegTrackNode(LifecycleNode):
    """
    Segment (and track) the frames of one or more camera topics and publish the results.

    >>> node = SegTrackNode()   # parameters from the command line or a params file
    >>> rclpy.spin(node)        # autostart: configured and active; else wait for a manager
    """

    def __init__(self, **kwargs):
        # Set first: rclpy's context destroys the node at shutdown even when this constructor
        # failed half-way (a bad parameter), and destroying releases these.
        self._pipeline = self._runner = self._segmenter = None
        self._cameras = []
        super().__init__('segtrack_node', **kwargs)
        self._values = self._declare_parameters()
        self._input_type = None
        self._configure_error = None
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.create_service(Trigger, '~/reset_tracker', self._on_reset)
        self._reported = {}  # (camera, kind) -> when it was last logged
        self._reported_lock = threading.Lock()
        self._diagnostics = self.create_publisher(
            DiagnosticArray, '/diagnostics', 10,
            qos_overriding_options=QoSOverridingOptions.with_default_policies())
        self.create_timer(1.0, self._publish_diagnostics)
        if self._values['autostart']:
            self._start()

    def _start(self):
        """Configure and activate; a failure to configure is a startup error."""
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            raise StartupError(self._configure_error)
        self.trigger_activate()

    # -- lifecycle ------------------------------------------------------------------------------

    def on_configure(self, state):
        """Validate the parameters, load and warm up the model, build the pipeline."""
        values = self._values
        try:
            reason = check_combination(values) or self._tracker_problem(values)
            if reason is None:
                self._segmenter = Segmenter(SegmenterConfig(
                    model=values['model'], device=values['device'], half=values['half'],
                    export_format=values['export_format'], export_dir=values['export_dir'],
                    batch=len(values['cameras']) or 1, **self._segmenter_values(values)),
                    log=self.get_logger().info)
        except SegmenterError as error:
            reason = str(error)
        except Exception as error:  # e.g. out of GPU memory: fail the transition, stay alive
            reason = f'{error!r}'
        if reason is not None:
            self._configure_error = reason
            self.get_logger().error(f'configure failed: {reason}')
            return TransitionCallbackReturn.FAILURE
        segmenter = self._segmenter
        names = values['cameras'] or ['']
        self._cameras = [Camera(name) for name in names]
        compressed = values['input_transport'] == 'compressed'
        self._input_type = CompressedImage if compressed else Image
        self._pipeline = FramePipeline(
            segmenter, self._render_config(values), streams=names,
            max_input_pixels=values['max_input_pixels'], report=self._report,
            deserialize=lambda stream, data: deserialize_message(data, self._input_type),
            now=lambda: self.get_clock().now().nanoseconds * 1e-9,
            depth_tolerance=values['depth_tolerance'] if values['depth'] else None)
        for camera in self._cameras:
            self._make_publishers(camera)
        # On a CPU model with a torch thread per core, a second thread drawing and publishing
        # during inference stalls torch's threads at every parallel region (bench/node-notes.md).
        overlap = segmenter.leaves_cpu_free
        self._runner = LiveRunner(self._pipeline, self._deliver, self._wanted, overlap)
        self.get_logger().info(
            f"model {values['model']} on {segmenter.config.device}, mode {values['mode']}, "
            f'{len(names)} camera(s); outputs drawn and published '
            + ('on their own thread, during the next inference' if overlap
               else 'between inferences, as no core is free'))
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state):
        """Subscribe to the cameras and announce the class map."""
        for camera in self._cameras:
            self._subscribe(camera)
            self._publish_label_info(camera)
        return super().on_activate(state)

    def on_deactivate(self, state):
        """Stop taking frames; the model and the tracks stay."""
        for camera in self._cameras:
            self.destroy_subscription(camera.subscription)
            camera.subscription = camera.health = None
            self._unsubscribe_depth(camera)
        self._runner.clear()
        return super().on_deactivate(state)

    def on_cleanup(self, state):
        """Free the pipeline and the model (and its GPU memory), and give the memory back."""
        self._release()
        return_freed_memory()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state):
        """Stop from any state: close the pipeline first, so nothing publishes afterwards."""
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _release(self):
        if self._runner is not None:
            self._runner.close()
        for camera in self._cameras:
            if camera.subscription is not None:
                self.destroy_subscription(camera.subscription)
            self._unsubscribe_depth(camera)
            for publisher in (*camera.publishers.values(), camera.label_info):
                if publisher is not None:
                    self.destroy_publisher(publisher)
        if self._segmenter is not None:
            self._segmenter.release()
        self._pipeline = self._runner = self._segmenter = None
        self._cameras = []

    # -- parameters -------------------------------------------------------------------------

    def _declare_parameters(self):
        values = {}
        for spec in PARAMETERS:
            try:
                value = self.declare_parameter(spec.name, spec.default, descriptor(spec)).value
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
        configured = self._pipeline is not None
        for parameter in parameters:
            spec = BY_NAME.get(parameter.name)
            if spec is None:
                continue  # qos_overrides.* and use_sim_time are rclpy's own
            value = plain(parameter.value)
            if spec.fixed and configured and value != self._values[spec.name]:
                return SetParametersResult(
                    successful=False,
                    reason=f'{spec.name} is read-only while the node is configured: deactivate '
                           'and clean it up first, then configure again')
            reason = spec.check(value)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
            new[spec.name] = value
        reason = check_combination(new) or (configured and (
            self._tracker_problem(new) or self._fixed_size_problem(new)))
        if reason:
            return SetParametersResult(successful=False, reason=reason)
        old, self._values = self._values, new
        if configured:
            self._pipeline.max_input_pixels = new['max_input_pixels']
            self._pipeline.configure(self._render_config(new), **self._segmenter_values(new))
            for stream in self._pipeline.streams.values():
                if stream.depth is not None:
                    stream.depth.tolerance = new['depth_tolerance']
            if new['conf'] != old['conf']:
                for camera in self._cameras:
                    if camera.subscription is not None:  # inactive: activation announces it
                        self._publish_label_info(camera)
        return SetParametersResult(successful=True)

    @staticmethod
    def _tracker_problem(values):
        """Return why tracking cannot run with these values (track mode only), or None."""
        if values['mode'] != 'track':
            return None
        try:
            check_tracker(values['tracker'])
        except SegmenterError as error:
            return str(error)
        return None

    def _fixed_size_problem(self, values):
        """Return why imgsz cannot change now: a model whose input size was fixed at export."""
        fixed = self._segmenter.fixed_imgsz
        if fixed is None or values['imgsz'] == self._values['imgsz']:
            return None
        return (f'imgsz: the model takes {fixed[1]}x{fixed[0]} inputs, fixed at export: '
                'deactivate and clean up, then configure again (export_format exports at the '
                'new size)')

    @staticmethod
    def _segmenter_values(values):
        result = {name: values[name] for name in SEGMENTER_FIELDS}
        result['classes'] = tuple(result['classes'])
        return result

    @staticmethod
    def _render_config(values):
        return RenderConfig(color_by=values['color_mode'],
                            **{name: values[name] for name in RENDER_FIELDS})

    # -- topics and services -------------------------------------------------------------------

    def _make_publishers(self, camera):
        overrides = QoSOverridingOptions.with_default_policies()
        for name, kind in IMAGE_OUTPUTS.items():
            camera.publishers[name] = self.create_publisher(
                kind, camera.prefix + name, OUTPUT_QOS, qos_overriding_options=overrides)
        if Detection2DArray is None:
            self.get_logger().warning('vision_msgs is not installed: no detections, no label_info')
            return
        camera.publishers['detections'] = self.create_publisher(
            Detection2DArray, camera.prefix + 'detections', OUTPUT_QOS,
            qos_overriding_options=overrides)
        camera.label_info = self.create_publisher(LabelInfo, camera.prefix + 'label_info',
                                                  LABEL_INFO_QOS, qos_overriding_options=overrides)
        if self._values['depth']:
            for name, kind in (('detections_3d', Detection3DArray), ('markers', MarkerArray),
                               ('points', PointCloud2)):
                camera.publishers[name] = self.create_publisher(
                    kind, camera.prefix + name, OUTPUT_QOS, qos_overriding_options=overrides)

    def _subscribe(self, camera):
        """
        Subscribe to a camera, with sensor-data QoS (REP-2003) and `qos_reliability`.

        Messages are taken serialized: a frame that a newer one replaces is never turned into a
        Python message (with a fast camera most are; bench/node-notes.md).
        """
        qos = QoSProfile(**{key: getattr(qos_profile_sensor_data, key)
                            for key in ('history', 'depth', 'durability')})
        qos.reliability = (ReliabilityPolicy.RELIABLE
                           if self._values['qos_reliability'] == 'reliable'
                           else ReliabilityPolicy.BEST_EFFORT)
        topic = camera.prefix + ('image/compressed' if self._input_type is CompressedImage
                                 else 'image')
        camera.health = InputHealth(self, topic, self._input_type)
        health, stream = camera.health, camera.name

        def on_image(serialized):
            health.received()
            self._runner.put(stream, serialized)

        # No qos_overrides parameter for the reliability: rclpy declares it (read-only) at the
        # first subscription and applies its first value to every later one, so a
        # qos_reliability set before the next configure would be ignored. One knob decides it.
        camera.subscription = self.create_subscription(
            self._input_type, topic, on_image, qos, raw=True,
            event_callbacks=health.event_callbacks(),
            qos_overriding_options=QoSOverridingOptions(SUBSCRIPTION_OVERRIDES))
        if self._values['depth']:
            self._subscribe_depth(camera, qos)

    def _subscribe_depth(self, camera, qos):
        """
        Subscribe to a camera's depth image and its camera info (same QoS as the image).

        Their messages are kept by the stream's `DepthInput`, which pairs them with the colour
        frames by stamp: while a 3D output is subscribed it keeps the depth images a colour
        frame may still take (at most 2 s, 64 images), otherwise only the newest.
        """
        depth = self._pipeline.streams[camera.name].depth
        topic = camera.prefix + 'depth/image'
        camera.depth_health = InputHealth(self, topic, Image)
        health = camera.depth_health

        def on_depth(message):
            health.received()
            depth.put_image(message)

        camera.depth_subscriptions = [
            self.create_subscription(Image, topic, on_depth, qos,
                                     event_callbacks=health.event_callbacks()),
            self.create_subscription(CameraInfo, camera.prefix + 'depth/camera_info',
                                     depth.put_info, qos)]

    def _unsubscribe_depth(self, camera):
        for subscription in camera.depth_subscriptions:
            self.destroy_subscription(subscription)
        camera.depth_subscriptions, camera.depth_health = [], None
        depth = self._pipeline.streams[camera.name].depth if self._pipeline else None
        if depth is not None:
            depth.clear()

    def _publish_label_info(self, camera):
        if camera.label_info is not None:
            header = Header(stamp=self.get_clock().now().to_msg())
            camera.label_info.publish(to_label_info(self._segmenter.class_names,
                                                    self._values['conf'], header))

    def _wanted(self, stream):
        """Name the outputs of camera `stream` that have subscribers: nothing else is made."""
        camera = next(c for c in self._cameras if c.name == stream)
        return {name for name, publisher in camera.publishers.items()
                if publisher.get_subscription_count() > 0}

    def _deliver(self, result):
        if not self.context.ok():
            return  # shutting down: the publishers are gone with the context
        camera = next(c for c in self._cameras if c.name == result.stream)
        if camera.subscription is None:
            return  # deactivated while this frame was in the pipeline: inactive is silent
        for name, message in result.messages.items():
            camera.publishers[name].publish(message)

    def _report(self, kind, stream, text):
        if not self.context.ok():
            return
        # Throttled per camera and kind: rclpy's own throttle is per call site, where one
        # camera's line would hide every other camera's. A reset by a parameter change is
        # the user's own doing, one line each time.
        now = time.monotonic()
        with self._reported_lock:
            last = self._reported.get((stream, kind))
            if (kind != 'tracks_reset' and last is not None
                    and now - last < THROTTLE_SECONDS):
                return
            self._reported[stream, kind] = now
        text = (f'camera {stream}: ' if stream else '') + text
        logger = self.get_logger()
        # One call site per severity: rclpy raises ValueError when one call site logs at
        # another severity than the first time.
        if kind in ('bad_input', 'bad_depth'):
            logger.warning(text)
        elif kind == 'error':
            logger.error(text)
        else:
            logger.info(text)

    def _on_reset(self, request, response):
        if self._pipeline is None:
            response.success = False
            response.message = 'not configured: no tracks to reset'
            return response
        self._pipeline.reset()
        response.success = True
        response.message = 'tracks reset before the next frame; ids start again at 1'
        return response

    # -- diagnostics -----------------------------------------------------------------------------

    def _publish_diagnostics(self):
        state = self._state_machine.current_state[1]
        node = self.get_fully_qualified_name()
        statuses = [self._camera_status(f'{node}: {camera.name or "pipeline"}', camera, state)
                    for camera in self._cameras]
        self._diagnostics.publish(diagnostic_array(
            statuses or [idle_status(f'{node}: pipeline', state)],
            self.get_clock().now().to_msg()))

    def _camera_status(self, name, camera, state):
        figures = self._pipeline.streams[camera.name].stats.snapshot()
        problem, explanation = camera.health.check() if camera.health else ('none', '')
        figures['input_problem'] = problem
        figures['state'] = state
        depth = self._depth_status(camera, figures)
        problems = [('input', problem, explanation), ('depth', *depth)]
        return camera_status(name, figures, problems, state, self._segmenter.config.device)

    def _depth_status(self, camera, figures):
        """Add a camera's depth figures and `depth_problem`; return the problem, explained."""
        depth = self._pipeline.streams[camera.name].depth
        if depth is None:
            return 'none', ''
        figures.update(depth.figures())
        problem, explanation = (camera.depth_health.check() if camera.depth_health
                                else ('none', ''))
        if problem == 'none':
            problem, explanation = depth.problem()
        figures['depth_problem'] = problem
        return problem, explanation

    def destroy_node(self):
        """Close the pipeline, then the node and its lifecycle state machine."""
        self._release()
        super().destroy_node()
        # rclpy's LifecycleNode leaves its state machine, which keeps the node and so the DDS
        # participant alive until garbage collection; run_node exits before that, and Fast DDS's
        # shared-memory files (35 MB) would stay in /dev/shm after every run.
        self._state_machine.destroy_when_not_in_use()


def main(args=None):
    """Run `segtrack_node` until Ctrl-C or shutdown; exit 1 with one line on a bad start."""
    apply_process_defaults()
    run_node('segtrack_node', SegTrackNode, StartupError, args)


if __name__ == '__main__':
    main()
