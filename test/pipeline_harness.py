"""
What the pipeline and runner tests share: real frames, messages, and the callers' callbacks.

The bundled shapes model on synthetic scenes gives real detections, tracks and classes. The
callbacks here are the callers' code (a deserializer, `wanted`, `deliver`) that can be made to
stop at a chosen frame, which is how a test holds a runner's thread at a known step.
"""

from functools import lru_cache
import threading
import time

import numpy as np
from rclpy.serialization import deserialize_message
from segtrack_ros.core.segmenter import BUNDLED_MODEL, Segmenter, SegmenterConfig
from segtrack_ros.eval.synthetic import build_scene, render_frame, SceneConfig
from segtrack_ros.io import image_codec
from sensor_msgs.msg import Image
from std_msgs.msg import Header

TIMEOUT = 60.0


def tracking_segmenter():
    """Return a CPU segmenter of the bundled model in track mode (release it after use)."""
    # ByteTrack shows tracks from a stream's first frames on (the default TrackTrack confirms
    # them on their third): the tests count every good frame's detections
    return Segmenter(SegmenterConfig(model=str(BUNDLED_MODEL), device='cpu', imgsz=320,
                                     mode='track', tracker='bytetrack.yaml'))


@lru_cache(maxsize=None)
def scene_frame(seed, index, width=320, height=240):
    """Return frame `index` of synthetic scene `seed` (BGR), a few moving shapes."""
    scene = build_scene(SceneConfig(width=width, height=height, frames=40, seed=seed))
    frame, _ = render_frame(scene, index)
    frame.flags.writeable = False  # shared between tests
    return frame


def header_at(seconds):
    """Return a header stamped `seconds` (since the epoch)."""
    header = Header(frame_id='camera')
    header.stamp.sec, nanoseconds = divmod(round(seconds * 1e9), 1_000_000_000)
    header.stamp.nanosec = nanoseconds
    return header


def message(frame, seconds=None):
    """Return a bgr8 Image message of `frame`, stamped `seconds` (now by default)."""
    return image_codec.to_image_msg(np.array(frame), 'bgr8',
                                    header_at(time.time() if seconds is None else seconds))


def deserialize_image(stream, data):
    """Turn serialized bytes into an Image, as the node's subscriptions do."""
    return deserialize_message(data, Image)


class Unreadable:
    """A camera message whose fields cannot be read (a driver's buffer that went away)."""

    @property
    def header(self):
        raise OSError('camera buffer unmapped')


def wait_until(predicate, timeout=TIMEOUT):
    """Poll `predicate` until it is true or `timeout` passes; return its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def same_detections(found, expected):
    """Tell whether two Detections hold the same ids, classes and boxes (within 0.01 px)."""
    return (found.ids.tolist() == expected.ids.tolist()
            and found.class_ids.tolist() == expected.class_ids.tolist()
            and np.allclose(found.boxes, expected.boxes, atol=0.01))


class Deliveries:
    """What a LiveRunner delivered, by stream; `hold(stream)` makes that delivery wait."""

    def __init__(self):
        self.results = []
        self.released = threading.Event()
        self.returned = []  # monotonic times at which deliveries returned
        self._held = None
        self._lock = threading.Lock()

    def hold(self, stream):
        """Block the delivering thread at the next result of `stream` until `release`."""
        self._held = stream

    def __call__(self, result):
        with self._lock:
            self.results.append(result)
        if result.stream == self._held:
            self.released.wait(TIMEOUT)
        self.returned.append(time.monotonic())

    def of(self, stream):
        """Return the results delivered for `stream`."""
        with self._lock:
            return [result for result in self.results if result.stream == stream]


class Gate:
    """
    A caller's callback that stops at the first call for each chosen stream until released.

    Wraps `then(stream, ...)`: as a deserializer it holds the thread that decodes (standing for
    a slow model or camera driver), as `wanted` the thread that draws (a slow drawing).
    """

    def __init__(self, streams, then):
        self._reached = {stream: threading.Event() for stream in streams}
        self._released = {stream: threading.Event() for stream in streams}
        self._then = then

    def __call__(self, stream, *args):
        reached = self._reached.get(stream)
        if reached is not None and not reached.is_set():
            reached.set()
            self._released[stream].wait(TIMEOUT)
        return self._then(stream, *args)

    def reached(self, stream, timeout=TIMEOUT):
        """Wait until a thread stops at `stream`; return whether one did."""
        return self._reached[stream].wait(timeout)

    def release(self, stream):
        """Let the thread stopped at `stream` go on."""
        self._released[stream].set()


def threads_left(before, timeout=20.0):
    """Wait until every thread started since `before` (a set) has ended; return the rest."""
    def started():
        return [thread for thread in threading.enumerate() if thread not in before]

    wait_until(lambda: not started(), timeout)
    return started()
