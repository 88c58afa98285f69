"""
Tests of the vision_msgs interfaces that segtrack_ros publishes.

On the pip route they come from tools/build_vision_msgs.sh (third_party/vision_msgs), on a ROS
install from the real vision_msgs package: either way they must match upstream vision_msgs 4.x
field for field and travel over DDS intact.
"""

import json
import os
from pathlib import Path
import signal
import subprocess
import sys
import time


import pytest  # noqa: E402
import rclpy  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from rosidl_parser import definition  # noqa: E402

try:
    import vision_msgs
    from vision_msgs.msg import (
        BoundingBox2D, BoundingBox3D, Detection2D, Detection2DArray, Detection3D,
        Detection3DArray, LabelInfo, ObjectHypothesis, ObjectHypothesisWithPose, Point2D, Pose2D,
        VisionClass,
    )
except ImportError as error:  # pragma: no cover - explains the usual cause
    pytest.fail(
        f'vision_msgs is not importable ({error}); on the pip route build it with '
        'tools/build_vision_msgs.sh', pytrace=False)

# Fields of upstream vision_msgs 4.x (ros2 branch, vision_msgs/msg/*.msg), in order, as rosidl
# names their types. None of these messages has constants.
EXPECTED_FIELDS = {
    Detection2DArray: [
        ('header', 'std_msgs/Header'),
        ('detections', 'sequence<vision_msgs/Detection2D>'),
    ],
    Detection2D: [
        ('header', 'std_msgs/Header'),
        ('results', 'sequence<vision_msgs/ObjectHypothesisWithPose>'),
        ('bbox', 'vision_msgs/BoundingBox2D'),
        ('id', 'string'),
    ],
    ObjectHypothesisWithPose: [
        ('hypothesis', 'vision_msgs/ObjectHypothesis'),
        ('pose', 'geometry_msgs/PoseWithCovariance'),
    ],
    ObjectHypothesis: [
        ('class_id', 'string'),
        ('score', 'double'),
    ],
    BoundingBox2D: [
        ('center', 'vision_msgs/Pose2D'),
        ('size_x', 'double'),
        ('size_y', 'double'),
    ],
    Pose2D: [
        ('position', 'vision_msgs/Point2D'),
        ('theta', 'double'),
    ],
    Point2D: [
        ('x', 'double'),
        ('y', 'double'),
    ],
    Detection3DArray: [
        ('header', 'std_msgs/Header'),
        ('detections', 'sequence<vision_msgs/Detection3D>'),
    ],
    Detection3D: [
        ('header', 'std_msgs/Header'),
        ('results', 'sequence<vision_msgs/ObjectHypothesisWithPose>'),
        ('bbox', 'vision_msgs/BoundingBox3D'),
        ('id', 'string'),
    ],
    BoundingBox3D: [
        ('center', 'geometry_msgs/Pose'),
        ('size', 'geometry_msgs/Vector3'),
    ],
    LabelInfo: [
        ('header', 'std_msgs/Header'),
        ('class_map', 'sequence<vision_msgs/VisionClass>'),
        ('threshold', 'float'),
    ],
    VisionClass: [
        ('class_id', 'uint16'),
        ('class_name', 'string'),
    ],
}

# RIHS01 type hashes of upstream vision_msgs 4.1.1 (computed by rosidl from upstream's .msg files
# against the std_msgs / geometry_msgs in use). Equal hashes mean equal structure on the wire.
UPSTREAM_TYPE_HASHES = {
    'BoundingBox2D': 'RIHS01_008eacbb0cf8f26e83795547bed013eec3675485ef386ec056d80eaaf1c1ce2f',
    'BoundingBox3D': 'RIHS01_bbb73a65c163d7f9bb29009c7bde9f7faa576bd2d23299c4511d19230dab4698',
    'Detection3D': 'RIHS01_ddd703be132ab0b69d33121f1bb034132bfbb3b0ac5f9fb1516005ba1c8a265b',
    'Detection3DArray': 'RIHS01_793f5eab9595ac1c0da07873cc859db42eae51f0ee76056db8562515d830e018',
    'Detection2D': 'RIHS01_0d12b69df5c593b3455b7346fac8205437a7d4bcb09b9e0e0b2dde787ded38ea',
    'Detection2DArray': 'RIHS01_214274120007f4a683866481336b70310268cfa107aebe9d594a6acf75bda968',
    'ObjectHypothesis': 'RIHS01_51da43cec11c01957a64d1e05a24acd18aae7745ec30b74348ad5f6d634f7f90',
    'ObjectHypothesisWithPose':
        'RIHS01_41c12344c0396c48b81df12467c192d99b2a0eb1463c5c37194e4223251c80bc',
    'Point2D': 'RIHS01_eab0e83f44ab4de92ceaf76dd7d0e7638f2bdd1d16ffbe16c7a136c48e407247',
    'Pose2D': 'RIHS01_b0b5d1d7b4c20dd4fcde3ed1d4b289a919290572007d67a97043814db25d3648',
    'LabelInfo': 'RIHS01_3d37df4015cdf660cc851c51897f2acd957e1ca6205ba0a99aebffb9406b0783',
    'VisionClass': 'RIHS01_1e4a11f0fed50b5623cb8ff26ca0e37952a48a9c074d16f804b44e9164c2037a',
}

TOPIC = 'segtrack_test_detections'
TIMEOUT_S = 20.0


def _type_name(slot_type):
    """Name a rosidl_parser type the way get_fields_and_field_types() does."""
    if isinstance(slot_type, definition.NamespacedType):
        return '/'.join(slot_type.namespaces[:1] + [slot_type.name])
    if isinstance(slot_type, definition.UnboundedSequence):
        return f'sequence<{_type_name(slot_type.value_type)}>'
    if isinstance(slot_type, definition.UnboundedString):
        return 'string'
    if isinstance(slot_type, definition.BasicType):
        return slot_type.typename
    raise AssertionError(f'unexpected slot type {slot_type!r}')


@pytest.mark.parametrize('msg_type', list(EXPECTED_FIELDS), ids=lambda t: t.__name__)
def test_fields_match_upstream(msg_type):
    """Names, types and order of the fields are those of upstream vision_msgs 4.x."""
    expected = EXPECTED_FIELDS[msg_type]
    assert list(msg_type.get_fields_and_field_types().items()) == expected
    assert [_type_name(t) for t in msg_type.SLOT_TYPES] == [t for _, t in expected]


def _share_dir():
    """Return the share/vision_msgs directory of the vision_msgs in use."""
    if os.environ.get('AMENT_PREFIX_PATH'):
        from ament_index_python.packages import get_package_share_directory
        return Path(get_package_share_directory('vision_msgs'))
    # No ament environment (pip venv): <prefix>/lib/pythonX.Y/site-packages/vision_msgs/
    return Path(vision_msgs.__file__).resolve().parents[4] / 'share' / 'vision_msgs'


@pytest.mark.parametrize('name', sorted(UPSTREAM_TYPE_HASHES))
def test_type_hash_matches_upstream(name):
    """The type description hash of each message equals upstream's."""
    description = json.loads((_share_dir() / 'msg' / f'{name}.json').read_text())
    hashes = {h['type_name']: h['hash_string'] for h in description['type_hashes']}
    assert hashes[f'vision_msgs/msg/{name}'] == UPSTREAM_TYPE_HASHES[name]


def _make_array():
    """Build a Detection2DArray with two detections, every field set to a distinct value."""
    array = Detection2DArray()
    array.header.frame_id = 'camera_optical'
    array.header.stamp.sec = 1700000000
    array.header.stamp.nanosec = 123456789
    for index in range(2):
        detection = Detection2D()
        detection.header = array.header
        detection.id = f'track-{index + 7}'
        detection.bbox.center.position.x = 100.25 + index
        detection.bbox.center.position.y = 50.5 + index
        detection.bbox.center.theta = 0.125 * (index + 1)
        detection.bbox.size_x = 40.0 + index
        detection.bbox.size_y = 80.0 + index
        for rank in range(index + 1):
            result = ObjectHypothesisWithPose()
            result.hypothesis.class_id = f'class_{index}_{rank}'
            result.hypothesis.score = 0.9 - 0.25 * rank
            result.pose.pose.position.x = 1.5 * (index + 1)
            result.pose.pose.orientation.w = 1.0
            result.pose.covariance[0] = 0.01 * (rank + 1)
            result.pose.covariance[35] = 0.5 + index
            detection.results.append(result)
        array.detections.append(detection)
    return array


def _assert_intact(received, sent):
    """Check that a received Detection2DArray equals the sent one, field for field."""
    assert isinstance(received, Detection2DArray)
    assert len(received.detections) == 2
    assert [d.id for d in received.detections] == ['track-7', 'track-8']
    assert [len(d.results) for d in received.detections] == [1, 2]
    second = received.detections[1]
    assert second.results[1].hypothesis.class_id == 'class_1_1'
    assert second.results[1].hypothesis.score == pytest.approx(0.65)
    assert second.bbox.center.theta == 0.25
    assert second.results[1].pose.covariance[35] == 1.5
    assert received.header.stamp.nanosec == 123456789
    # Generated __eq__ compares every field, recursively. (The CDR bytes are no test: Fast CDR
    # leaves alignment padding uninitialised, so two serialisations of one message can differ.)
    assert received == sent


def _receive(executor, inbox, publish=None, topic=TOPIC):
    """Spin until a message arrives in inbox (publishing with publish() meanwhile)."""
    deadline = time.monotonic() + TIMEOUT_S
    next_publish = 0.0
    while not inbox and time.monotonic() < deadline:
        if publish is not None and time.monotonic() >= next_publish:
            publish()
            next_publish = time.monotonic() + 0.1
        executor.spin_once(timeout_sec=0.05)
    assert inbox, f'nothing received on /{topic} within {TIMEOUT_S} s'
    return inbox[0]


def _qos():
    """Reliable QoS, so a message once matched is not lost."""
    return QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def test_detection_array_round_trip_between_nodes():
    """A Detection2DArray goes from one node to another over DDS intact."""
    sent = _make_array()
    rclpy.init()
    try:
        talker = rclpy.create_node('segtrack_test_vision_talker')
        listener = rclpy.create_node('segtrack_test_vision_listener')
        inbox = []
        publisher = talker.create_publisher(Detection2DArray, TOPIC, _qos())
        listener.create_subscription(Detection2DArray, TOPIC, inbox.append, _qos())
        executor = SingleThreadedExecutor()
        executor.add_node(talker)
        executor.add_node(listener)
        received = _receive(executor, inbox, lambda: publisher.publish(sent))
        _assert_intact(received, sent)
        executor.shutdown()
    finally:
        rclpy.try_shutdown()


# Publishes the Detection2DArray whose CDR bytes (hex) come on stdin until it is killed or 30 s
# have passed.
_CHILD = """
import sys, time
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from vision_msgs.msg import Detection2DArray
msg = deserialize_message(bytes.fromhex(sys.stdin.read()), Detection2DArray)
rclpy.init()
try:
    node = rclpy.create_node('segtrack_test_vision_child_talker')
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    publisher = node.create_publisher(Detection2DArray, sys.argv[1], qos)
    deadline = time.monotonic() + 30.0
    while rclpy.ok() and time.monotonic() < deadline:
        publisher.publish(msg)
        time.sleep(0.1)
except Exception:
    if rclpy.ok():
        raise
finally:
    rclpy.try_shutdown()
"""


def test_detection_array_from_another_process():
    """A Detection2DArray published by another process arrives intact."""
    sent = _make_array()
    # The child rebuilds the message from its bytes: the check is on the way back, over DDS.
    assert deserialize_message(serialize_message(sent), Detection2DArray) == sent
    child = subprocess.Popen(
        [sys.executable, '-c', _CHILD, TOPIC], stdin=subprocess.PIPE, text=True)
    try:
        child.stdin.write(serialize_message(sent).hex())
        child.stdin.close()
        rclpy.init()
        try:
            listener = rclpy.create_node('segtrack_test_vision_parent_listener')
            inbox = []
            listener.create_subscription(Detection2DArray, TOPIC, inbox.append, _qos())
            executor = SingleThreadedExecutor()
            executor.add_node(listener)
            received = _receive(executor, inbox)
            executor.shutdown()
        finally:
            rclpy.try_shutdown()
        assert child.poll() is None, f'publisher process exited early ({child.returncode})'
        _assert_intact(received, sent)
    finally:
        # SIGINT, not SIGKILL: a killed process leaves its DDS shared memory in /dev/shm.
        child.send_signal(signal.SIGINT)
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def test_label_info_reaches_a_late_subscriber():
    """A LabelInfo published once, transient local, reaches a subscriber created afterwards."""
    sent = LabelInfo(threshold=0.25)
    sent.header.frame_id = 'camera_optical'
    sent.class_map = [VisionClass(class_id=1, class_name='person'),
                      VisionClass(class_id=65535, class_name='café')]
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
    topic = 'segtrack_test_label_info'
    rclpy.init()
    try:
        talker = rclpy.create_node('segtrack_test_label_talker')
        talker.create_publisher(LabelInfo, topic, latched).publish(sent)
        listener = rclpy.create_node('segtrack_test_label_listener')
        inbox = []
        listener.create_subscription(LabelInfo, topic, inbox.append, latched)
        executor = SingleThreadedExecutor()
        executor.add_node(talker)
        executor.add_node(listener)
        received = _receive(executor, inbox, topic=topic)
        executor.shutdown()
    finally:
        rclpy.try_shutdown()
    assert received == sent
    assert [(c.class_id, c.class_name) for c in received.class_map] == [
        (1, 'person'), (65535, 'café')]
    assert received.threshold == 0.25
