"""
Real ROS plumbing for the DDS tests.

Node processes, a test node that spins in a thread, and subscriptions that collect what arrives.
"""

from contextlib import contextmanager
import os
from pathlib import Path
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from segtrack_ros.ros.transport import apply_large_data_profile
from std_msgs.msg import Header

BIN = Path(sys.executable).parent
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
BEST_EFFORT = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)


def ros_value(value):
    """Write a Python value as a `-p name:=value` command-line literal."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return '[' + ','.join(ros_value(item) for item in value) + ']'
    return str(value)


class NodeProcess:
    """An executable of the package in its own process, its output captured line by line."""

    def __init__(self, executable, parameters, namespace='/', environment=None):
        command = [str(BIN / executable), '--ros-args', '-r', f'__ns:={namespace}']
        for name, value in parameters.items():
            command += ['-p', f'{name}:={ros_value(value)}']
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True,
                                        env={**os.environ, **(environment or {})})
        self.lines = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self):
        """Return everything the process printed so far."""
        return ''.join(self.lines)

    def wait(self, timeout):
        """Wait for the process to end by itself; return its exit code."""
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=2)
        return code

    def stop(self, sig=signal.SIGINT, timeout=10.0):
        """Send `sig`; return the exit code and the seconds it took to end."""
        if self.process.poll() is not None:
            return self.process.returncode, 0.0
        start = time.monotonic()
        self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._reader.join(timeout=2)
        return code, time.monotonic() - start


def wait_until(predicate, timeout=60.0):
    """Poll `predicate` until it is true or `timeout` passes; return its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    return predicate()


class Collector:
    """Messages of one topic as they arrive, with their arrival times."""

    def __init__(self):
        self.messages = []
        self.arrivals = []
        self._condition = threading.Condition()

    def __call__(self, message):
        with self._condition:
            self.messages.append(message)
            self.arrivals.append(time.monotonic())
            self._condition.notify_all()

    def wait_for_count(self, count, timeout):
        """Wait until `count` messages arrived; True if they did."""
        with self._condition:
            return self._condition.wait_for(lambda: len(self.messages) >= count, timeout)

    def by_stamp(self, stamp):
        """Return the messages whose header stamp equals `stamp`."""
        return [m for m in self.messages if m.header.stamp == stamp]


class ProbeNode:
    """An rclpy node spinning in a background thread, for publishing and collecting."""

    def __init__(self, name='segtrack_test'):
        self.node = rclpy.create_node(name)
        self._executor = SingleThreadedExecutor()
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._executor.spin, daemon=True)
        self._thread.start()
        self._stamp_ns = time.time_ns()

    def collect(self, message_type, topic, qos=RELIABLE):
        """Subscribe to `topic`; return the Collector that fills up."""
        collector = Collector()
        self.node.create_subscription(message_type, topic, collector, qos)
        return collector

    def publisher(self, message_type, topic, qos=RELIABLE):
        """Return a publisher on `topic`."""
        return self.node.create_publisher(message_type, topic, qos)

    def header(self, frame_id='camera', step_ms=33):
        """Return a header with a fresh stamp, later than the previous one."""
        self._stamp_ns = max(self._stamp_ns + step_ms * 1_000_000, time.time_ns())
        header = Header(frame_id=frame_id)
        header.stamp.sec, header.stamp.nanosec = divmod(self._stamp_ns, 1_000_000_000)
        return header

    def wait_for_graph(self, predicate, timeout=30.0):
        """Wait until `predicate(node)` holds for the ROS graph; True if it did."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.node):
                return True
            time.sleep(0.1)
        return False

    def destroy(self):
        """Stop spinning and destroy the node."""
        self._executor.shutdown()
        self.node.destroy_node()


@contextmanager
def running_probe(name):
    """
    Start rclpy and a `ProbeNode` called `name`; stop both afterwards.

    The probe publishes with the large-data profile, as video_publisher and cameras do.
    """
    apply_large_data_profile()
    rclpy.init()
    node = ProbeNode(name)
    try:
        yield node
    finally:
        node.destroy()
        rclpy.try_shutdown()


def make_frame(index, width=768, height=576):
    """Return a frame of bright shapes on a textured background, different for each index."""
    import cv2

    rng = np.random.default_rng(index)
    frame = rng.integers(40, 90, (height, width, 3), dtype=np.uint8)
    for shape in range(3):
        center = (int(width * (0.2 + 0.3 * shape)) + 4 * index, height // 2)
        cv2.circle(frame, center, height // 8, (40 + 80 * shape, 200, 255 - 60 * shape), -1)
    return frame
