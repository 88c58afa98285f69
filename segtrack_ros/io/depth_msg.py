"""
Depth images and camera infos in; 3D detections, markers and point clouds out. No rclpy.

In: a `sensor_msgs/Image` depth image (REP 118: `16UC1`/`mono16` in millimetres, `32FC1` in
metres; 0, NaN and ±inf mean no reading) becomes float32 metres, and its `sensor_msgs/CameraInfo`
a `geometry.Camera`; anything that cannot be used raises `DepthInputError`, whose message names
the problem and the fix. Out: a `geometry.Located` becomes a `vision_msgs/Detection3DArray`, a
`visualization_msgs/MarkerArray` (a box and a label per instance) and a `sensor_msgs/PointCloud2`
(x, y, z float32, and the instance's id and class id at each point).
"""

import array
import struct

from geometry_msgs.msg import Point, Pose, PoseWithCovariance, Vector3
import numpy as np
from rclpy.serialization import deserialize_message
from segtrack_ros.core.geometry import Camera
from segtrack_ros.core.labels import mask_values
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import ColorRGBA
from vision_msgs.msg import (BoundingBox3D, Detection3D, Detection3DArray, ObjectHypothesis,
                             ObjectHypothesisWithPose)
from visualization_msgs.msg import Marker, MarkerArray

# Depth encodings: element type and the factor to metres.
DEPTH_ENCODINGS = {'16UC1': ('u2', 0.001), 'mono16': ('u2', 0.001), '32FC1': ('f4', 1.0)}
MARKER_NAMESPACE = 'segtrack'
MARKER_ALPHA = 0.35  # boxes are see-through, so the points and the scene stay visible
# Fields of the point cloud: x, y, z in metres, the instance's id (its value in instance_mask
# and its `id` in detections) and its class id.
POINT_FIELDS = (('x', PointField.FLOAT32), ('y', PointField.FLOAT32), ('z', PointField.FLOAT32),
                ('id', PointField.UINT32), ('class_id', PointField.UINT32))
_POINT_DTYPE = np.dtype([('x', '<f4'), ('y', '<f4'), ('z', '<f4'), ('id', '<u4'),
                         ('class_id', '<u4')])


class DepthInputError(ValueError):
    """A depth image or camera info that cannot be used; the message names the fix."""


def decode_depth(msg, max_pixels):
    """Return the depth image of `msg` as float32 metres (no reading: 0, NaN or ±inf)."""
    if msg.encoding not in DEPTH_ENCODINGS:
        raise DepthInputError(
            f'depth image encoding {msg.encoding!r} is not a depth encoding: publish 16UC1 or '
            'mono16 (millimetres) or 32FC1 (metres), e.g. the aligned depth of the camera '
            'driver')
    kind, to_metres = DEPTH_ENCODINGS[msg.encoding]
    dtype = np.dtype(kind).newbyteorder('>' if msg.is_bigendian else '<')
    width, height, step = msg.width, msg.height, msg.step
    if width <= 0 or height <= 0 or width * height > max_pixels:
        raise DepthInputError(
            f'depth image of {width}x{height} pixels: give a non-empty image of at most '
            f'{max_pixels} pixels (max_input_pixels)')
    if step < width * dtype.itemsize:
        raise DepthInputError(
            f'depth image step {step} is shorter than a row of {width} {msg.encoding} pixels '
            f'({width * dtype.itemsize} bytes): fix the publisher')
    if len(msg.data) < height * step:
        raise DepthInputError(
            f'depth image data has {len(msg.data)} bytes, less than height x step = '
            f'{height} x {step}: fix the publisher')
    rows = np.frombuffer(msg.data, np.uint8, height * step).reshape(height, step)
    pixels = rows[:, :width * dtype.itemsize].copy().view(dtype)
    if kind == 'f4':
        return pixels.astype(np.float32, copy=False)
    return pixels.astype(np.float32) * np.float32(to_metres)


def from_cdr(data, kind):
    """
    Return the depth `Image` or `CameraInfo` (`kind`: 'image' or 'info') of CDR bytes.

    Raises `DepthInputError` for bytes that are no such message (truncated, another type).
    """
    try:
        return deserialize_message(bytes(data), Image if kind == 'image' else CameraInfo)
    except Exception as error:  # the deserializer's errors have no common type
        raise DepthInputError(f'malformed depth {kind} message skipped: {error}') from error


def cdr_stamp(data):
    """
    Return the header stamp (seconds) of the CDR bytes of a message that starts with a header.

    Read where the header lies (after the 4-byte encapsulation: sec, nanosec), without
    deserializing the rest: a frame's pixels are deserialized once, later. Raises
    `DepthInputError` for bytes too short to hold a header.
    """
    order = '<' if bytes(data[1:2]) == b'\x01' else '>'
    try:
        sec, nanosec = struct.unpack_from(order + 'iI', bytes(data[4:12]))
    except struct.error as error:
        raise DepthInputError(f'message of {len(data)} bytes has no header: {error}') from error
    return sec + nanosec * 1e-9


def camera_of(info, width, height):
    """
    Return the `Camera` of a CameraInfo for a depth image of `width` × `height`.

    Its K must be finite with positive focal lengths, and it must describe an image of that size.
    """
    k = np.asarray(info.k, np.float64)
    if k.size != 9 or not np.isfinite(k).all() or k[0] <= 0 or k[4] <= 0:
        raise DepthInputError(
            f'depth camera_info K {k.tolist()} is not a camera matrix (zero or non-finite focal '
            'length): publish the calibrated camera_info of the depth image')
    if (info.width, info.height) != (width, height):
        raise DepthInputError(
            f'depth camera_info is for {info.width}x{info.height} images but the depth image is '
            f'{width}x{height}: publish the camera_info that comes with the depth image')
    return Camera(float(k[0]), float(k[4]), float(k[2]), float(k[5]), int(width), int(height))


def to_detection3d_array(located, detections, header):
    """
    Build the Detection3DArray of `located` (indices into `detections`) under `header`.

    Each Detection3D has the `id` and class of the instance's Detection2D, its score, the
    centroid as `results[0].pose` and the box as `bbox` (axis-aligned: identity orientation).
    """
    ids = mask_values(detections.ids).tolist()
    names, scores = detections.class_names, np.asarray(detections.scores, np.float64).tolist()
    new_detection, new_result = _Copies(Detection3D(header=header)), _Copies(
        ObjectHypothesisWithPose())
    new_pose_with_covariance, new_box = _Copies(PoseWithCovariance()), _Copies(BoundingBox3D())
    new_pose = _Copies(Pose())
    out = []
    for index, centroid, centre, size in zip(located.indices.tolist(), located.centroids.tolist(),
                                             located.box_centres.tolist(),
                                             located.box_sizes.tolist()):
        result = new_result()
        result.hypothesis = ObjectHypothesis(class_id=names[index], score=scores[index])
        result.pose = new_pose_with_covariance()
        result.pose.pose = _pose(centroid, new_pose)
        box = new_box()
        box.center = _pose(centre, new_pose)
        box.size = Vector3(x=size[0], y=size[1], z=size[2])
        detection = new_detection()
        detection.id, detection.results, detection.bbox = str(ids[index]), [result], box
        out.append(detection)
    return Detection3DArray(header=header, detections=out)


def delete_markers(header):
    """Build the MarkerArray that deletes every marker of the previous frame, and adds none."""
    return MarkerArray(markers=[Marker(header=header, ns=MARKER_NAMESPACE,
                                       action=Marker.DELETEALL)])


def to_marker_array(located, colours, labels, header):
    """
    Build the MarkerArray of `located` for rviz: per instance a box and a text label.

    `colours` (BGR, 0..255) and `labels` are per instance of the detections, as drawn in 2D.
    The first marker deletes every marker of the previous frame.
    """
    new_marker = _Copies(Marker(header=header, ns=MARKER_NAMESPACE, action=Marker.ADD))
    new_pose = _Copies(Pose())
    colour_messages = {}  # BGR -> (box colour, text colour): instances of a class share them
    markers = delete_markers(header).markers
    sizes = np.maximum(located.box_sizes, 1e-3)  # rviz hides a box of zero thickness
    text_sizes = np.clip(0.075 * located.box_centres[:, 2], 0.03, 0.5)  # readable at its depth
    for number, (index, centre, size, text_size) in enumerate(zip(
            located.indices.tolist(), located.box_centres.tolist(), sizes.tolist(),
            text_sizes.tolist())):
        bgr = tuple(colours[index])
        if bgr not in colour_messages:
            colour_messages[bgr] = _marker_colours(bgr)
        box_colour, text_colour = colour_messages[bgr]
        box, text = new_marker(), new_marker()
        box.id, box.type, box.color = 2 * number, Marker.CUBE, box_colour
        box.pose = _pose(centre, new_pose)
        box.scale = Vector3(x=size[0], y=size[1], z=size[2])
        text.id, text.type, text.text = 2 * number + 1, Marker.TEXT_VIEW_FACING, labels[index]
        text.pose = _pose((centre[0], centre[1] - size[1] / 2, centre[2]), new_pose)
        text.scale = Vector3(z=text_size)
        text.color = text_colour
        markers += [box, text]
    return MarkerArray(markers=markers)


def _marker_colours(bgr):
    """Return the ColorRGBA of a box (see-through) and of a label in colour `bgr` (0..255)."""
    blue, green, red = (channel / 255.0 for channel in bgr)
    return (ColorRGBA(r=red, g=green, b=blue, a=MARKER_ALPHA),
            ColorRGBA(r=red, g=green, b=blue, a=1.0))


def to_point_cloud(located, detections, header):
    """Build the PointCloud2 of `located`'s points: x y z float32, id and class_id uint32."""
    indices = located.point_indices
    points = np.empty(len(located.points), _POINT_DTYPE)
    points['x'], points['y'], points['z'] = located.points.T
    points['id'] = mask_values(detections.ids)[indices]
    points['class_id'] = np.asarray(detections.class_ids)[indices]
    message = PointCloud2(header=header, height=1, width=len(points), is_bigendian=False,
                          point_step=_POINT_DTYPE.itemsize,
                          row_step=_POINT_DTYPE.itemsize * len(points), is_dense=True)
    message.fields = [PointField(name=name, offset=_POINT_DTYPE.fields[name][1],
                                 datatype=datatype, count=1)
                      for name, datatype in POINT_FIELDS]
    data = array.array('B')
    data.frombytes(points.tobytes())
    message.data = data
    return message


def _pose(values, new_pose):
    """Return a Pose at (x, y, z) from `new_pose` (a `_Copies` of an identity Pose)."""
    pose = new_pose()
    pose.position = Point(x=float(values[0]), y=float(values[1]), z=float(values[2]))
    return pose


class _Copies:
    """
    Shallow copies of a template message, as `copy.copy` makes them, a few times faster.

    The messages of hundreds of instances are built one by one: a message's constructor builds
    every nested default (a Marker its header, pose, scale, colour, lifetime, ...) and
    `copy.copy` goes through the generic reduce protocol, and either cost more than locating
    the instances. A generated message keeps its fields in `__slots__`; a copy shares the
    template's values (its header, an identity orientation, a zero covariance): replace a
    field of a copy, never mutate one.
    """

    def __init__(self, template):
        self._kind = type(template)
        self._fields = [(slot, getattr(template, slot)) for slot in self._kind.__slots__]

    def __call__(self):
        """Return a new copy of the template."""
        message = self._kind.__new__(self._kind)
        for slot, value in self._fields:
            setattr(message, slot, value)
        return message
