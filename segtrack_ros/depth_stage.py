"""
The pipeline's 3D stage: one stream's depth input, paired with its colour frames, and 3D outputs.

Depth images and camera infos arrive on their own (a subscription thread, a bag reader) and are
kept, not queued: the last few depth images (`geometry.StampPairer`) and the newest camera info.
When a colour frame's outputs are made, the depth image closest to its stamp within the
tolerance is decoded and the instances located (`geometry.locate`); a frame without such a
partner gets no 3D outputs (its 2D outputs are unaffected), so no 3D output uses a stale depth.
The 3D messages carry the colour image's stamp and the depth image's frame_id.
"""

from collections import deque
import threading
import time

import numpy as np

from segtrack_ros.core.geometry import DepthMapping, GeometryError, locate, StampPairer
from segtrack_ros.io import depth_msg

KEEP = 64  # depth images kept for pairing while 3D outputs are wanted
DEPTH_PROBLEMS = ('none', 'no_camera_info', 'no_pairs', 'bad_depth')
WINDOW_SECONDS = 5.0  # what the health of the pairing looks back on
BAD_DEPTH_ERRORS = (depth_msg.DepthInputError, GeometryError)


def stamp_seconds(header):
    """Return a header's stamp in seconds."""
    return header.stamp.sec + header.stamp.nanosec * 1e-9


class DepthInput:
    """
    One stream's depth input and the 3D outputs of its frames.

    `put_image` and `put_info` take the messages as they come; `outputs` makes the wanted 3D
    messages of a segmented frame, or raises one of `BAD_DEPTH_ERRORS` (a bad input, named with
    its fix). `problem()` says what keeps 3D outputs from coming.
    """

    def __init__(self, tolerance, max_pixels, clock=time.monotonic):
        self._pairer = StampPairer(tolerance, keep=KEEP)
        self.max_pixels = max_pixels
        self._clock = clock
        self._info = None
        self._lock = threading.Lock()
        self._pairings = deque()  # (time, offset or None, paired)
        self._bad = deque()  # (time, text)
        self.counts = {'depth_received': 0, 'depth_paired': 0, 'depth_unpaired': 0,
                       'depth_bad_inputs': 0, 'instances_without_3d': 0}

    @property
    def tolerance(self):
        """Return the largest stamp difference of a pair, in seconds."""
        return self._pairer.tolerance

    @tolerance.setter
    def tolerance(self, seconds):
        self._pairer.tolerance = seconds

    def put_image(self, message):
        """Keep a depth image (sensor_msgs/Image) for the colour frames to come."""
        self._pairer.put(stamp_seconds(message.header), message)
        with self._lock:
            self.counts['depth_received'] += 1

    def put_info(self, message):
        """Keep the newest camera info (sensor_msgs/CameraInfo) of the depth image."""
        self._info = message

    def clear(self, after=None):
        """Forget the kept depth images (e.g. on deactivation), or those stamped after `after`."""
        self._pairer.clear(after)

    def outputs(self, detections, header, wanted, owner, colours=None, labels=None):
        """
        Return the `wanted` 3D messages of a colour frame (`header`).

        `wanted` names 3D outputs only (of `pipeline.DEPTH_OUTPUTS`); `owner` is the frame's
        `labels.OwnerImage`; `colours` (BGR) and `labels` per instance are needed for `markers`.
        Without a depth partner, only `markers`: one that deletes the previous frame's. While no
        3D output is wanted, only the newest depth image is kept.
        """
        self._pairer.limit(KEEP if wanted else 1)
        if not wanted:
            return {}
        image, offset = self._pairer.pair(stamp_seconds(header))
        self._note_pairing(offset, image is not None)
        if image is None:
            return ({'markers': depth_msg.delete_markers(header)} if 'markers' in wanted
                    else {})
        try:
            located = self._locate(image, detections, owner, 'points' in wanted)
        except BAD_DEPTH_ERRORS as error:
            with self._lock:
                self.counts['depth_bad_inputs'] += 1
                self._bad.append((self._clock(), str(error)))
            raise
        with self._lock:
            self.counts['instances_without_3d'] += located.too_few
        out_header = type(header)(stamp=header.stamp, frame_id=image.header.frame_id)
        messages = {}
        if 'detections_3d' in wanted:
            messages['detections_3d'] = depth_msg.to_detection3d_array(
                located, detections, out_header)
        if 'markers' in wanted:
            messages['markers'] = depth_msg.to_marker_array(located, colours, labels, out_header)
        if 'points' in wanted:
            messages['points'] = depth_msg.to_point_cloud(located, detections, out_header)
        return messages

    def _locate(self, image, detections, owner, with_points):
        depth = depth_msg.decode_depth(image, self.max_pixels)
        info = self._info
        if info is None:
            raise depth_msg.DepthInputError(
                'no depth camera_info received yet: publish the CameraInfo of the depth image '
                '(remap depth/camera_info)')
        camera = depth_msg.camera_of(info, image.width, image.height)
        height, width = detections.image_shape
        mapping = DepthMapping.between(camera, (width, height))
        index_image = owner.image(np.arange(len(detections) + 1, dtype=np.uint16))
        return locate(index_image, len(detections), depth, camera, mapping,
                      with_points=with_points)

    def _note_pairing(self, offset, paired):
        with self._lock:
            self.counts['depth_paired' if paired else 'depth_unpaired'] += 1
            self._pairings.append((self._clock(), offset, paired))
            self._forget_old()

    def _forget_old(self):
        now = self._clock()
        for records in (self._pairings, self._bad):
            while records and now - records[0][0] > WINDOW_SECONDS:
                records.popleft()

    def problem(self):
        """
        Return `(problem, explanation)`: one of `DEPTH_PROBLEMS`, over the last few seconds.

        `bad_depth`: depth images were refused; `no_camera_info`: depth images come but no
        camera info; `no_pairs`: colour frames came and none had a depth image within the
        tolerance. A missing or silent depth topic is the depth image's input health.
        """
        with self._lock:
            self._forget_old()
            pairings, bad = list(self._pairings), list(self._bad)
        if bad:
            return 'bad_depth', f'{len(bad)} depth images refused: {bad[-1][1]}'
        offsets = [offset for _, offset, _ in pairings if offset is not None]
        if offsets and self._info is None:
            return 'no_camera_info', ('depth images arrive but no camera_info: publish the depth '
                                      "image's CameraInfo on depth/camera_info (or remap it)")
        if offsets and not any(paired for _, _, paired in pairings):
            nearest = min(offsets, key=abs)
            return 'no_pairs', (
                f'no depth image within {self.tolerance * 1000:.0f} ms of a colour frame (the '
                f'nearest was {nearest * 1000:+.0f} ms): are both stamped by the same clock? '
                'raise depth_tolerance, or publish depth closer in time to colour')
        return 'none', ''

    def figures(self):
        """Return the counters and the recent median stamp offset (ms) for diagnostics."""
        with self._lock:
            self._forget_old()
            figures = dict(self.counts)
            offsets = [offset for _, offset, paired in self._pairings if paired]
        figures['depth_offset_ms'] = float(np.median(offsets) * 1000) if offsets else 0.0
        return figures
