"""
Shared test set-up: DDS stays on this machine, ultralytics stays offline, small real inputs.

The environment is set before anything imports rclpy or ultralytics, unless the caller chose.
"""

import os
import random
import socket

os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
os.environ.setdefault('ROS_DOMAIN_ID', str(random.randint(1, 100)))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from segtrack_ros.core.runtime import apply_process_defaults  # noqa: E402

apply_process_defaults()

# An untrained model: real ultralytics code, real cost, random detections (forced by a low conf).
UNTRAINED_MODEL = 'yolov8n-seg.yaml'
UNTRAINED_CONF = 1e-4


def write_test_video(path, frames=12, width=320, height=240, fps=15.0):
    """Write a small MJPG video of a moving disc and square; return its path."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), fps, (width, height))
    for index in range(frames):
        frame = np.full((height, width, 3), 90, np.uint8)
        cv2.circle(frame, (40 + 8 * index, height // 2), 30, (0, 0, 230), -1)
        cv2.rectangle(frame, (width - 80, 20 + 5 * index), (width - 30, 70 + 5 * index),
                      (30, 200, 30), -1)
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture(scope='session')
def test_video(tmp_path_factory):
    """Return a 12-frame 320×240 15 fps MJPG video."""
    return write_test_video(tmp_path_factory.mktemp('video') / 'moving.avi')


@pytest.fixture(scope='session')
def permissive_tracker(tmp_path_factory):
    """
    Return a ByteTrack config that tracks the untrained model's low-score detections.

    Its thresholds take scores of ~1.6e-4; `fuse_score` is off, as it would multiply the IoUs
    by such scores and nothing would ever match; boxes match from frame to frame at IoU > 0.7.
    """
    path = tmp_path_factory.mktemp('tracker') / 'permissive_bytetrack.yaml'
    path.write_text('tracker_type: bytetrack\ntrack_high_thresh: 0.00005\n'
                    'track_low_thresh: 0.00001\nnew_track_thresh: 0.00005\ntrack_buffer: 30\n'
                    'match_thresh: 0.3\nfuse_score: false\n')
    return str(path)


@pytest.fixture(scope='session')
def untrained_weights(tmp_path_factory, test_video):
    """
    Save an untrained yolov8n-seg once, so that every process loads the same weights.

    About one random initialisation in seven finds nothing at all, even at UNTRAINED_CONF: the
    seeds are tried in turn until one finds instances at the image sizes the tests use.
    """
    import torch
    from ultralytics import YOLO

    path = tmp_path_factory.mktemp('weights') / 'untrained-seg.pt'
    capture = cv2.VideoCapture(str(test_video))
    frame = capture.read()[1]
    capture.release()
    for seed in range(10):
        torch.manual_seed(seed)
        YOLO(UNTRAINED_MODEL).save(str(path))
        model = YOLO(str(path))
        if all(len(model.predict(frame, conf=UNTRAINED_CONF, imgsz=size, verbose=False)[0].boxes)
               > 1 for size in (160, 320)):
            return str(path)
    raise AssertionError('no untrained model found instances')


@pytest.fixture
def no_network(monkeypatch):
    """Record (and refuse) every attempt to resolve a host name or open a connection."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError('network use in a test')

    monkeypatch.setattr(socket, 'getaddrinfo', refuse)
    monkeypatch.setattr(socket, 'create_connection', refuse)
    monkeypatch.setattr(socket.socket, 'connect', refuse)
    return attempts
