"""
InputHealth over real DDS: one test per input problem, with cameras in other processes.

The host node subscribes the way segtrack_node does (serialized messages, sensor-data QoS, best
effort unless reliable is asked for) and checks its input health on a timer; its log lines are
read back from /rosout.
"""

import subprocess
import sys
import threading
import time

import pytest
from rcl_interfaces.msg import Log
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, qos_profile_sensor_data, QoSProfile, ReliabilityPolicy
from ros_harness import ProbeNode, wait_until
from segtrack_ros.ros.input_health import InputHealth, type_name, UNKNOWN_NODE
from sensor_msgs.msg import CompressedImage, Image

STALL_SECONDS = 1.0
CHECK_PERIOD = 0.1
TIMEOUT = 20.0

# A camera: publishes tiny images at 20 Hz while on; stdin lines `on` / `off` switch it.
CAMERA = r"""
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
import sys, threading, time

kind, topic, reliability, state = sys.argv[1:]
on = threading.Event()
if state == 'on':
    on.set()

def listen():
    for line in sys.stdin:
        on.set() if line.strip() == 'on' else on.clear()
    rclpy.try_shutdown()

rclpy.init()
node = rclpy.create_node('camera')
policy = ReliabilityPolicy.RELIABLE if reliability == 'reliable' else ReliabilityPolicy.BEST_EFFORT
message = (Image(height=2, width=2, encoding='bgr8', step=6, data=bytes(12)) if kind == 'Image'
           else CompressedImage(format='jpeg', data=bytes(16)))
publisher = node.create_publisher(type(message), topic, QoSProfile(depth=5, reliability=policy))
threading.Thread(target=listen, daemon=True).start()
while rclpy.ok():
    if on.is_set():
        try:
            publisher.publish(message)
        except Exception:
            break
    time.sleep(0.05)
"""


class Camera:
    """A publisher of tiny images in its own process, switched on and off through stdin."""

    def __init__(self, topic, kind='Image', reliability='reliable', on=True):
        self.process = subprocess.Popen(
            [sys.executable, '-c', CAMERA, kind, topic, reliability, 'on' if on else 'off'],
            stdin=subprocess.PIPE, text=True)

    def switch(self, on):
        """Start or stop publishing; the publisher stays."""
        self.process.stdin.write('on\n' if on else 'off\n')
        self.process.stdin.flush()

    def stop(self):
        """End the process (it leaves the graph)."""
        self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Host:
    """A node with one camera subscription and its InputHealth, checked on a timer."""

    def __init__(self, namespace, topic='image', message_type=Image, reliable=False):
        self.node = rclpy.create_node('segtrack_node', namespace=namespace)
        self.health = InputHealth(self.node, topic, message_type, stall_seconds=STALL_SECONDS)
        qos = QoSProfile(depth=qos_profile_sensor_data.depth,
                         history=qos_profile_sensor_data.history,
                         reliability=(ReliabilityPolicy.RELIABLE if reliable
                                      else ReliabilityPolicy.BEST_EFFORT))
        self.node.create_subscription(message_type, topic, lambda _: self.health.received(), qos,
                                      raw=True, event_callbacks=self.health.event_callbacks())
        self.node.create_publisher(Image, 'annotated_image', 2)  # an output, never an input
        self.results = [('none', '')]
        self.node.create_timer(CHECK_PERIOD, lambda: self.results.append(self.health.check()))
        self.logger = self.node.get_logger().name
        self._executor = SingleThreadedExecutor()
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._executor.spin, daemon=True)
        self._thread.start()

    def wait_for(self, problem):
        """Wait until the check says `problem`; return its explanation."""
        assert wait_until(lambda: self.results[-1][0] == problem, TIMEOUT), self.results[-1]
        return self.results[-1][1]

    def holds(self, problem, seconds):
        """Return whether the check says `problem` throughout the next `seconds`."""
        start = len(self.results)
        wait_until(lambda: len(self.results) > start + seconds / CHECK_PERIOD, TIMEOUT)
        return all(result[0] == problem for result in self.results[start:])

    def destroy(self):
        """Stop spinning and destroy the node."""
        self._executor.shutdown()
        self.node.destroy_node()


@pytest.fixture(scope='module')
def probe():
    """Make the test's own node; `probe.rosout` collects every log line of the ROS graph."""
    rclpy.init()
    probe = ProbeNode('input_health_test')
    probe.rosout = probe.collect(Log, '/rosout', QoSProfile(
        depth=1000, reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL))
    try:
        yield probe
    finally:
        probe.destroy()
        rclpy.try_shutdown()


@pytest.fixture
def cleanup():
    """Stop the cameras and destroy the hosts that a test made."""
    made = []
    yield made.append
    for thing in reversed(made):
        thing.stop() if isinstance(thing, Camera) else thing.destroy()


def lines(probe, host, level):
    """Return the host's log lines of `level`."""
    return [log.msg for log in probe.rosout.messages
            if log.name == host.logger and log.level == level]


def assert_logged(probe, host, warnings, infos):
    """Wait for exactly that many WARN and INFO lines of the host, and no more."""
    assert wait_until(lambda: len(lines(probe, host, Log.WARN)) >= warnings
                      and len(lines(probe, host, Log.INFO)) >= infos, TIMEOUT)
    host.holds(host.results[-1][0], 3 * CHECK_PERIOD)
    assert len(lines(probe, host, Log.WARN)) == warnings, lines(probe, host, Log.WARN)
    assert len(lines(probe, host, Log.INFO)) == infos, lines(probe, host, Log.INFO)


def start_camera(cleanup, probe, topic, **options):
    """
    Start a camera and wait until the graph shows one more publisher of `topic`, by node name.

    DDS can announce the publisher before its node's name (ROS sends node names on a topic of
    its own); the explanations under test name the node, so the graph must know it first.
    """
    before = probe.node.count_publishers(topic)
    camera = Camera(topic, **options)
    cleanup(camera)
    assert wait_until(lambda: probe.node.count_publishers(topic) > before and all(
        info.node_name != UNKNOWN_NODE for info in probe.node.get_publishers_info_by_topic(topic)),
        TIMEOUT)
    return camera


def test_no_publisher(probe, cleanup):
    elsewhere = start_camera(cleanup, probe, '/t_none/camera/image_raw')
    host = Host('/t_none')
    cleanup(host)
    explanation = host.wait_for('no_publisher')
    assert explanation.startswith('nobody publishes /t_none/image (sensor_msgs/msg/Image)')
    assert '/t_none/camera/image_raw (sensor_msgs/msg/Image)' in explanation
    assert '-r image:=' in explanation
    assert '/t_none/annotated_image' not in explanation  # the node's own output
    assert_logged(probe, host, warnings=1, infos=0)
    warning, = lines(probe, host, Log.WARN)
    assert warning == f'input problem no_publisher: {explanation}'

    elsewhere.stop()
    start_camera(cleanup, probe, '/t_none/image')
    host.wait_for('none')
    assert_logged(probe, host, warnings=1, infos=1)
    assert lines(probe, host, Log.INFO) == [
        'input /t_none/image: messages arrive again (was no_publisher)']


def test_no_image_topic_at_all(probe, cleanup):
    host = Host('/t_empty', 'front/image/compressed', CompressedImage)
    cleanup(host)
    explanation = host.wait_for('no_publisher')
    assert explanation.startswith(
        'nobody publishes /t_empty/front/image/compressed (sensor_msgs/msg/CompressedImage) '
        'nor /t_empty/front/image')
    assert_logged(probe, host, warnings=1, infos=0)


def test_wrong_type(probe, cleanup):
    start_camera(cleanup, probe, '/t_type/image', kind='CompressedImage')
    host = Host('/t_type')
    cleanup(host)
    explanation = host.wait_for('wrong_type')
    assert 'publishes /t_type/image as sensor_msgs/msg/CompressedImage, not ' \
        'sensor_msgs/msg/Image' in explanation
    assert explanation.endswith(
        'set input_transport:=compressed and remap -r image/compressed:=/t_type/image')
    assert_logged(probe, host, warnings=1, infos=0)

    start_camera(cleanup, probe, '/t_type/image', kind='Image')
    host.wait_for('none')
    assert_logged(probe, host, warnings=1, infos=1)


def test_incompatible_qos(probe, cleanup):
    start_camera(cleanup, probe, '/t_qos/image', reliability='best_effort')
    host = Host('/t_qos', reliable=True)
    cleanup(host)
    explanation = host.wait_for('incompatible_qos')
    assert 'publishes /t_qos/image with a QoS this subscription cannot match ' \
        '(RELIABILITY policy)' in explanation
    assert 'set qos_reliability:=best_effort' in explanation
    assert wait_until(lambda: host.results[-1][1].startswith('/camera publishes'), TIMEOUT)
    assert host.holds('incompatible_qos', 2 * STALL_SECONDS)  # not taken for a stall
    assert_logged(probe, host, warnings=1, infos=0)

    start_camera(cleanup, probe, '/t_qos/image')  # a compatible one joins and delivers
    host.wait_for('none')
    assert_logged(probe, host, warnings=1, infos=1)


@pytest.mark.parametrize('topic, message_type, published, kind, fix', [
    ('image', Image, 'image/compressed', 'CompressedImage', 'input_transport:=compressed'),
    ('image/compressed', CompressedImage, 'image', 'Image', 'input_transport:=raw'),
])
def test_other_transport(probe, cleanup, topic, message_type, published, kind, fix):
    namespace = f'/t_{kind.lower()}'
    start_camera(cleanup, probe, f'{namespace}/{published}', kind=kind)
    host = Host(namespace, topic, message_type)
    cleanup(host)
    explanation = host.wait_for('other_transport')
    assert explanation == (f'nobody publishes {namespace}/{topic} ({type_name(message_type)}), '
                           f'but /camera publishes {namespace}/{published}: set {fix}')
    assert_logged(probe, host, warnings=1, infos=0)

    start_camera(cleanup, probe, f'{namespace}/{topic}', kind=message_type.__name__)
    host.wait_for('none')
    assert_logged(probe, host, warnings=1, infos=1)


def test_stalled(probe, cleanup):
    camera = start_camera(cleanup, probe, '/t_stall/image', on=False)
    host = Host('/t_stall')
    cleanup(host)
    explanation = host.wait_for('stalled')  # a publisher, never a message
    assert explanation.startswith('/camera publishes /t_stall/image, but nothing arrived for')
    assert 'try qos_reliability:=reliable' in explanation  # best effort here, reliable there
    assert_logged(probe, host, warnings=1, infos=0)

    camera.switch(True)
    host.wait_for('none')
    assert_logged(probe, host, warnings=1, infos=1)
    camera.switch(False)  # messages, then silence
    host.wait_for('stalled')
    camera.switch(True)
    host.wait_for('none')
    assert_logged(probe, host, warnings=2, infos=2)


def test_incompatible_qos_ends_with_its_publisher(probe, cleanup):
    camera = start_camera(cleanup, probe, '/t_qos_gone/image', reliability='best_effort')
    host = Host('/t_qos_gone', reliable=True)
    cleanup(host)
    host.wait_for('incompatible_qos')
    camera.stop()
    host.wait_for('no_publisher')
    assert_logged(probe, host, warnings=2, infos=0)


def test_camera_starting_after_the_node(probe, cleanup):
    host = Host('/t_late')
    cleanup(host)
    time.sleep(STALL_SECONDS / 3)
    publisher = probe.publisher(Image, '/t_late/image')
    timer = probe.node.create_timer(0.05, lambda: publisher.publish(
        Image(height=2, width=2, encoding='bgr8', step=6, data=bytes(12))))
    try:
        assert wait_until(lambda: host.results[-1] == ('none', 'receiving /t_late/image'),
                          TIMEOUT), host.results[-1]
        assert host.holds('none', 2 * STALL_SECONDS)
    finally:
        probe.node.destroy_timer(timer)
        probe.node.destroy_publisher(publisher)
    assert_logged(probe, host, warnings=0, infos=0)
