"""
segtrack_node as a managed node, over real DDS: lifecycle, label_info and bounded inputs.

Each node runs in its own process with the bundled shapes model (real detections and tracks);
the test process drives it through the standard lifecycle services, as a lifecycle manager does,
and publishes and collects as a camera and its users do.
"""

import re
import threading
import time

import cv2
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import State, Transition, TransitionEvent
from lifecycle_msgs.srv import ChangeState, GetAvailableStates, GetAvailableTransitions, GetState
import numpy as np
import pytest
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from ros_harness import NodeProcess, running_probe, wait_until
from segtrack_ros.core.segmenter import BUNDLED_MODEL
from segtrack_ros.eval.synthetic import generate_scene, SceneConfig
from segtrack_ros.io import image_codec
from sensor_msgs.msg import CompressedImage, Image
from test_io_image_codec import gray_png
from vision_msgs.msg import Detection2DArray, LabelInfo

TIMEOUT = 60.0
SHAPES = {'model': str(BUNDLED_MODEL), 'device': 'cpu', 'imgsz': 320, 'mode': 'track'}
OUTPUTS = {'annotated_image': Image, 'annotated_image/compressed': CompressedImage,
           'instance_mask': Image, 'class_mask': Image, 'detections': Detection2DArray}
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


@pytest.fixture(scope='module')
def probe():
    """Make the test's own node; it publishes with the large-data profile, as cameras do."""
    with running_probe('segtrack_lifecycle_test') as node:
        yield node


@pytest.fixture(scope='module')
def scene():
    """Return 30 frames of a synthetic 320x240 scene of moving shapes."""
    return [frame for frame, _ in generate_scene(SceneConfig(width=320, height=240, seed=3,
                                                             frames=30))]


def call(probe, service_type, name, request):
    """Call a service of the node under test and return its response."""
    client = probe.node.create_client(service_type, name)
    try:
        assert client.wait_for_service(timeout_sec=TIMEOUT), f'no service {name}'
        future = client.call_async(request)
        assert wait_until(future.done, 120.0), f'{name} did not answer'
        return future.result()
    finally:
        probe.node.destroy_client(client)


class Managed:
    """A segtrack_node process driven through its lifecycle services, with its topics."""

    def __init__(self, probe, namespace, parameters, transport='raw'):
        self.probe, self.namespace = probe, namespace
        self.name = f'{namespace}/segtrack_node'
        self.events = probe.collect(TransitionEvent, f'{self.name}/transition_event')
        self.outputs = {topic: probe.collect(kind, f'{namespace}/{topic}')
                        for topic, kind in OUTPUTS.items()}
        self.label_info = probe.collect(LabelInfo, f'{namespace}/label_info', LATCHED)
        self.diagnostics = probe.collect(DiagnosticArray, '/diagnostics')
        self.input_type = CompressedImage if transport == 'compressed' else Image
        suffix = '/compressed' if transport == 'compressed' else ''
        self.input_topic = f'{namespace}/image{suffix}'
        self.camera = probe.publisher(self.input_type, self.input_topic)
        self.process = NodeProcess('segtrack_node', {**parameters,
                                                     'input_transport': transport}, namespace)

    def state(self):
        """Return the label of the node's current state."""
        return call(self.probe, GetState, f'{self.name}/get_state',
                    GetState.Request()).current_state.label

    def change(self, transition):
        """Trigger a transition by id; return whether it succeeded."""
        request = ChangeState.Request(transition=Transition(id=transition))
        return call(self.probe, ChangeState, f'{self.name}/change_state', request).success

    def set_parameters(self, **values):
        """Set parameters through the parameter service; return the results."""
        client = AsyncParameterClient(self.probe.node, self.name)
        assert client.wait_for_services(timeout_sec=TIMEOUT)
        future = client.set_parameters([Parameter(name, value=value)
                                        for name, value in values.items()])
        assert wait_until(future.done), self.process.output
        return future.result().results

    def message(self, frame, header):
        """Return `frame` as a message of the node's input type."""
        if self.input_type is CompressedImage:
            return image_codec.to_compressed_msg(frame, header)
        return image_codec.to_image_msg(frame, 'bgr8', header)

    def send(self, frame, timeout=TIMEOUT):
        """Publish `frame` until its detections come back (discovery may lose the first)."""
        header = self.probe.header()

        def answered():
            self.camera.publish(self.message(frame, header))
            return wait_until(lambda: self.outputs['detections'].by_stamp(header.stamp), 2.0)
        assert wait_until(answered, timeout), self.process.output
        return self.outputs['detections'].by_stamp(header.stamp)[0]

    def subscribed(self):
        """Return whether the node subscribes to its camera."""
        return self.probe.node.count_subscribers(self.input_topic) > 0

    def output_count(self):
        """Return the number of output messages received so far, all topics together."""
        return sum(len(collector.messages) for collector in self.outputs.values())

    def status(self, key):
        """Return the value of `key` in the node's newest /diagnostics status."""
        for array in reversed(self.diagnostics.messages):
            for status in array.status:
                if status.name.startswith(self.name + ':'):
                    return next((v.value for v in status.values if v.key == key), None)
        return None

    def memory_mib(self, key='VmRSS'):
        """Return the node process's VmRSS (or VmHWM, its peak) in MiB."""
        text = open(f'/proc/{self.process.process.pid}/status').read()
        return int(re.search(rf'^{key}:\s+(\d+) kB', text, re.M).group(1)) / 1024

    def stop(self):
        """Stop the process: exit code 0, no traceback."""
        code, _ = self.process.stop()
        assert code == 0 and 'Traceback' not in self.process.output, self.process.output


def ids(detections):
    """Return the track ids of a Detection2DArray."""
    return [int(d.id) for d in detections.detections]


def stamp_ns(message):
    """Return the header stamp of a message in nanoseconds."""
    return message.header.stamp.sec * 10 ** 9 + message.header.stamp.nanosec


def label_image(message):
    """Return a mono16 label image message as an array."""
    return np.frombuffer(bytes(message.data), np.uint16).reshape(message.height, message.width)


def same_objects(first, second):
    """Pair the detections of two frames by nearest box centre; return their id pairs."""
    def centres(detections):
        return np.array([(d.bbox.center.position.x, d.bbox.center.position.y)
                         for d in detections.detections]).reshape(-1, 2)
    a, b = centres(first), centres(second)
    pairs = []
    for index, centre in enumerate(b):
        distances = np.linalg.norm(a - centre, axis=1)
        if len(distances) and distances.min() < 10:
            pairs.append((ids(first)[int(distances.argmin())], ids(second)[index]))
    return pairs


def settle(managed):
    """Wait until no more outputs arrive (frames in flight come out)."""
    count = -1
    while count != managed.output_count():
        count = managed.output_count()
        time.sleep(1.0)


@pytest.fixture(scope='module')
def managed(probe):
    """Start a segtrack_node with autostart:=false: it waits, unconfigured."""
    node = Managed(probe, '/managed', {**SHAPES, 'autostart': False})
    assert wait_until(lambda: probe.node.count_publishers(f'{node.name}/transition_event'),
                      TIMEOUT), node.process.output
    yield node
    node.stop()


def bring_up(managed):
    """Configure and activate the node from whichever state it is in."""
    for label, transition in (('unconfigured', Transition.TRANSITION_CONFIGURE),
                              ('inactive', Transition.TRANSITION_ACTIVATE)):
        if managed.state() == label:
            assert managed.change(transition), managed.process.output
    assert managed.state() == 'active'


def test_waits_unconfigured_with_the_standard_services(probe, managed):
    """autostart:=false: unconfigured, nothing subscribed or published, the standard services."""
    assert managed.state() == 'unconfigured'
    states = call(probe, GetAvailableStates, f'{managed.name}/get_available_states',
                  GetAvailableStates.Request()).available_states
    assert {'unconfigured', 'inactive', 'active', 'finalized', 'configuring', 'activating',
            'deactivating', 'cleaningup', 'shuttingdown'} <= {s.label for s in states}
    transitions = call(probe, GetAvailableTransitions,
                       f'{managed.name}/get_available_transitions',
                       GetAvailableTransitions.Request()).available_transitions
    assert {t.transition.label for t in transitions} == {'configure', 'shutdown'}
    assert not managed.subscribed()
    assert probe.node.count_publishers(f'{managed.namespace}/detections') == 0
    assert wait_until(lambda: managed.status('state') == 'unconfigured'), 'no diagnostics'


def test_transitions_keep_the_tracks_and_publish_only_while_active(probe, managed, scene):
    """Configure -> inactive (silent) -> active -> inactive (silent) -> active: ids go on."""
    assert managed.state() == 'unconfigured'
    events = len(managed.events.messages)
    assert managed.change(Transition.TRANSITION_CONFIGURE), managed.process.output
    assert managed.state() == 'inactive'
    assert wait_until(lambda: [(e.start_state.id, e.goal_state.id)
                               for e in managed.events.messages[events:]]
                      == [(State.PRIMARY_STATE_UNCONFIGURED, State.TRANSITION_STATE_CONFIGURING),
                          (State.TRANSITION_STATE_CONFIGURING, State.PRIMARY_STATE_INACTIVE)])
    assert probe.node.count_publishers(f'{managed.namespace}/detections') == 1
    assert not managed.subscribed()

    assert managed.change(Transition.TRANSITION_ACTIVATE)
    assert managed.state() == 'active'
    assert wait_until(managed.subscribed)
    before = [managed.send(frame) for frame in scene[:10]]
    assert all(ids(d) for d in before), 'the shapes model found nothing'
    assert ids(before[-1]) != list(range(1, len(before[-1].detections) + 1)), \
        'ids 1..n in score order: a restart could not be told from a continuation'

    assert managed.change(Transition.TRANSITION_DEACTIVATE)
    assert managed.state() == 'inactive'
    assert wait_until(lambda: not managed.subscribed())
    settle(managed)
    count = managed.output_count()
    for frame in scene[10:12]:
        managed.camera.publish(managed.message(frame, probe.header()))
        time.sleep(0.5)
    assert wait_until(lambda: managed.status('state') == 'inactive')
    assert managed.output_count() == count, 'outputs while inactive'
    announced = len(managed.label_info.messages)
    assert managed.set_parameters(conf=0.26)[0].successful  # a new threshold: said when active
    time.sleep(1.0)
    assert len(managed.label_info.messages) == announced, 'label_info while inactive'

    assert managed.change(Transition.TRANSITION_ACTIVATE)
    assert managed.label_info.wait_for_count(announced + 1, TIMEOUT)
    assert managed.label_info.messages[-1].threshold == pytest.approx(0.26)
    after = [managed.send(frame) for frame in scene[10:14]]
    # The same objects keep their ids: the tracker was kept, not restarted at 1.
    pairs = same_objects(before[-1], after[0])
    assert len(pairs) >= 3 and all(old == new for old, new in pairs), pairs
    assert [(e.start_state.label, e.goal_state.label) for e in managed.events.messages[-2:]] \
        == [('inactive', 'activating'), ('activating', 'active')]
    assert managed.set_parameters(conf=0.25)[0].successful


def test_a_frame_in_the_pipeline_at_deactivate_is_not_published(probe, managed, scene):
    """Deactivated while a frame is being processed: that frame's outputs are not published."""
    bring_up(managed)
    frame = cv2.resize(scene[22], (640, 480))
    assert all(result.successful for result in managed.set_parameters(imgsz=640, conf=0.001))
    stop = threading.Event()

    def camera():
        while not stop.wait(1 / 30):
            managed.camera.publish(managed.message(frame, probe.header()))
    thread = threading.Thread(target=camera, daemon=True)
    thread.start()
    detections = managed.outputs['detections']
    try:
        # As a frame comes out, the next one, waiting in the mailbox, goes in.
        assert detections.wait_for_count(len(detections.messages) + 2, TIMEOUT)
        assert managed.change(Transition.TRANSITION_DEACTIVATE)
        done = {stamp_ns(message) for message in detections.messages}
    finally:
        stop.set()
        thread.join()
    frame_seconds = float(managed.status('inference_ms')) / 1000
    time.sleep(2 * frame_seconds + 1.0)  # the frame in the pipeline is through
    late = [topic for topic, collector in managed.outputs.items()
            for message in collector.messages if stamp_ns(message) not in done]
    assert not late, f'outputs after deactivate: {late}'
    assert all(result.successful for result in managed.set_parameters(imgsz=320, conf=0.25))


def test_late_subscriber_gets_label_info_that_decodes_a_class_mask(probe, managed, scene):
    """label_info is latched: a subscriber made after activation gets it; it decodes class_mask."""
    bring_up(managed)
    managed.send(scene[20])
    late = probe.collect(LabelInfo, f'{managed.namespace}/label_info', LATCHED)
    assert late.wait_for_count(1, TIMEOUT), 'a late subscriber got no label_info'
    info = late.messages[0]
    assert info.threshold == pytest.approx(0.25)
    names = {entry.class_id: entry.class_name for entry in info.class_map}

    detections = managed.send(scene[21])
    stamp = detections.header.stamp
    masks = [managed.outputs[topic] for topic in ('class_mask', 'instance_mask')]
    assert wait_until(lambda: all(m.by_stamp(stamp) for m in masks))
    classes, instances = (label_image(m.by_stamp(stamp)[0]) for m in masks)
    decoded = np.vectorize(names.__getitem__, otypes=[object])(classes)
    assert set(decoded[instances == 0]) == {'background'}
    decoded_instances = 0
    for detection in detections.detections:
        own = instances == int(detection.id)
        if own.any():  # an instance may be fully covered by a higher-scoring one
            assert set(decoded[own]) == {detection.results[0].hypothesis.class_id}
            decoded_instances += 1
    assert decoded_instances >= 2

    assert managed.set_parameters(conf=0.4)[0].successful
    assert late.wait_for_count(2, TIMEOUT), 'label_info not re-published on a new conf'
    assert late.messages[-1].threshold == pytest.approx(0.4)
    assert late.messages[-1].class_map == info.class_map
    assert managed.set_parameters(conf=0.25)[0].successful


def test_cleanup_and_configure_again_start_new_tracks(probe, managed, scene):
    """Cleanup drops the model and the tracks; configured and activated again, ids restart."""
    bring_up(managed)
    for frame in scene[14:18]:
        managed.send(frame)
    assert managed.change(Transition.TRANSITION_DEACTIVATE)
    assert managed.change(Transition.TRANSITION_CLEANUP), managed.process.output
    assert managed.state() == 'unconfigured'
    assert wait_until(lambda: probe.node.count_publishers(f'{managed.namespace}/detections')
                      == 0)
    bring_up(managed)
    first = managed.send(scene[18])
    assert ids(first) == list(range(1, len(first.detections) + 1)), \
        'a new model and new tracks: ids start again at 1'


@pytest.fixture(scope='module')
def larger_weights(tmp_path_factory):
    """Save an untrained yolov8s-seg (12 M parameters, 3.5 x yolov8n's) to load in the node."""
    from ultralytics import YOLO

    path = tmp_path_factory.mktemp('weights') / 'untrained-yolov8s-seg.pt'
    YOLO('yolov8s-seg.yaml').save(str(path))
    return str(path)


def test_cleanup_gives_the_model_memory_back(probe, larger_weights, scene):
    """RSS falls at cleanup by the model's memory, and does not grow from cycle to cycle."""
    node = Managed(probe, '/memory', {**SHAPES, 'model': larger_weights, 'mode': 'predict',
                                      'autostart': False})
    try:
        assert wait_until(lambda: probe.node.count_publishers(f'{node.name}/transition_event'),
                          TIMEOUT), node.process.output
        unconfigured = node.memory_mib()
        sizes = []
        for _ in range(2):
            assert node.change(Transition.TRANSITION_CONFIGURE), node.process.output
            assert node.change(Transition.TRANSITION_ACTIVATE)
            node.send(scene[0])
            assert node.change(Transition.TRANSITION_DEACTIVATE)
            configured = node.memory_mib()
            assert node.change(Transition.TRANSITION_CLEANUP)
            sizes.append((configured, node.memory_mib()))
        print(f'node RSS MiB: unconfigured {unconfigured:.0f}, configured and cleaned up '
              + ', '.join(f'{a:.0f} -> {b:.0f}' for a, b in sizes))
        # The first configure also imports torch and ultralytics, which stay. Without
        # malloc_trim glibc kept it all and the RSS grew at each configure (bench/node-notes.md).
        (configured, cleaned), (_, again) = sizes
        assert configured - cleaned > 80, sizes
        assert again < cleaned + 30, sizes
    finally:
        node.stop()


def own_qos(infos, namespace):
    """Return the QoS profile of the endpoint of the node in `namespace` among `infos`."""
    mine = [info.qos_profile for info in infos
            if info.node_name == 'segtrack_node' and info.node_namespace == namespace]
    return mine[0] if mine else None


def subscription_reliability(probe, namespace):
    """Return the reliability the node in `namespace` subscribes to its camera with."""
    qos = own_qos(probe.node.get_subscriptions_info_by_topic(f'{namespace}/image'), namespace)
    return qos and qos.reliability


@pytest.fixture(scope='module')
def overridden(probe):
    """Start a node that waits unconfigured, with qos_overrides of /diagnostics and label_info."""
    namespace = '/qos'
    node = Managed(probe, namespace, {
        **SHAPES, 'autostart': False,
        'qos_overrides./diagnostics.publisher.reliability': 'best_effort',
        f'qos_overrides.{namespace}/label_info.publisher.reliability': 'best_effort',
        f'qos_overrides.{namespace}/label_info.publisher.depth': 3})
    assert wait_until(lambda: probe.node.count_publishers(f'{node.name}/transition_event'),
                      TIMEOUT), node.process.output
    yield node
    node.stop()


def test_qos_reliability_holds_at_every_configure(probe, overridden):
    """
    qos_reliability set while unconfigured decides the next subscription, not the first one's.

    rclpy declares the subscription's qos_overrides parameters at its first creation and would
    apply their (read-only) values to every later one.
    """
    for reliability, policy in (('best_effort', ReliabilityPolicy.BEST_EFFORT),
                                ('reliable', ReliabilityPolicy.RELIABLE),
                                ('best_effort', ReliabilityPolicy.BEST_EFFORT)):
        assert overridden.set_parameters(qos_reliability=reliability)[0].successful
        bring_up(overridden)
        assert wait_until(lambda: subscription_reliability(probe, overridden.namespace)
                          == policy), (reliability, overridden.process.output)
        assert overridden.change(Transition.TRANSITION_DEACTIVATE)
        assert overridden.change(Transition.TRANSITION_CLEANUP)


def test_qos_overrides_of_label_info_and_diagnostics(probe, overridden):
    """label_info and /diagnostics take qos_overrides parameters, as the other publishers."""
    bring_up(overridden)
    namespace = overridden.namespace
    for topic in ('/diagnostics', f'{namespace}/label_info'):
        assert wait_until(lambda: own_qos(probe.node.get_publishers_info_by_topic(topic),
                                          namespace)), topic
        qos = own_qos(probe.node.get_publishers_info_by_topic(topic), namespace)
        assert qos.reliability == ReliabilityPolicy.BEST_EFFORT, topic
    client = AsyncParameterClient(probe.node, overridden.name)
    assert client.wait_for_services(timeout_sec=TIMEOUT)
    future = client.get_parameters([f'qos_overrides.{namespace}/label_info.publisher.depth',
                                    'qos_overrides./diagnostics.publisher.depth'])
    assert wait_until(future.done)
    assert [value.integer_value for value in future.result().values] == [3, 10]
    assert overridden.change(Transition.TRANSITION_DEACTIVATE)
    assert overridden.change(Transition.TRANSITION_CLEANUP)


def test_model_is_read_only_while_configured(probe, managed):
    """Changing the model needs cleanup first; the refusal says so."""
    bring_up(managed)
    result = managed.set_parameters(model='other-seg.pt')[0]
    assert not result.successful and 'read-only' in result.reason


def test_shutdown_from_active_finalizes(probe, managed):
    """Shutdown from active: finalized, nothing subscribed, the process still answers."""
    bring_up(managed)
    assert managed.change(Transition.TRANSITION_ACTIVE_SHUTDOWN)
    assert managed.state() == 'finalized'
    assert wait_until(lambda: not managed.subscribed())
    assert managed.process.process.poll() is None


def test_bad_model_fails_configure_and_a_good_one_then_works(probe, scene):
    """A bad model fails configure: alive, unconfigured, reason logged; a good one then works."""
    node = Managed(probe, '/bad_model', {**SHAPES, 'model': '/no/such/model.pt',
                                         'autostart': False})
    try:
        assert not node.change(Transition.TRANSITION_CONFIGURE)
        assert node.state() == 'unconfigured'
        assert node.process.process.poll() is None
        assert wait_until(lambda: re.search('configure failed: .*/no/such/model.pt',
                                            node.process.output)), node.process.output
        assert node.set_parameters(model=str(BUNDLED_MODEL))[0].successful
        assert node.change(Transition.TRANSITION_CONFIGURE), node.process.output
        assert node.change(Transition.TRANSITION_ACTIVATE)
        assert ids(node.send(scene[0]))
    finally:
        node.stop()


def test_autostart_and_a_png_bomb(probe, scene):
    """
    Autostart (the default) comes up active; a PNG declaring 20000x20000 is a bad input.

    The PNG is real and decodable (all black): with max_input_pixels raised above its size,
    decoding it took gigabytes and stalled the node for a minute (bench/node-notes.md). Refused
    by its header, it is counted and logged, the peak RSS does not move, and the next good frame
    is processed.
    """
    node = Managed(probe, '/bounded', SHAPES, transport='compressed')
    try:
        assert node.state() == 'active'
        node.send(scene[0])
        peak = node.memory_mib('VmHWM')
        bomb = CompressedImage(header=probe.header(), format='png')
        bomb.data = gray_png(20000, 20000)
        node.camera.publish(bomb)
        assert wait_until(lambda: int(node.status('bad_inputs') or 0) >= 1), node.process.output
        assert wait_until(lambda: 'declares 20000x20000' in node.process.output)
        assert ids(node.send(scene[1]))
        after = node.memory_mib('VmHWM')
        print(f'node peak RSS (VmHWM) before the PNG {peak:.0f} MiB, after {after:.0f} MiB')
        assert after < peak + 50, (peak, after)
    finally:
        node.stop()
