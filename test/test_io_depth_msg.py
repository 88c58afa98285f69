"""Tests of segtrack_ros.io.depth_msg: depth images and camera infos in, 3D messages out."""

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from segtrack_ros.core.detections import Detections
from segtrack_ros.core.geometry import DepthMapping, locate
from segtrack_ros.io.depth_msg import (
    camera_of, cdr_stamp, decode_depth, DepthInputError, from_cdr, to_detection3d_array,
    to_marker_array, to_point_cloud)
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import Header
from vision_msgs.msg import Detection3DArray
from visualization_msgs.msg import Marker, MarkerArray

MAX_PIXELS = 1 << 24


def depth_msg(values, encoding, pad=0, bigendian=False):
    """Return an Image of a 2D array in `encoding`, each row padded by `pad` bytes."""
    dtype = np.dtype('u2' if encoding in ('16UC1', 'mono16') else 'f4')
    dtype = dtype.newbyteorder('>' if bigendian else '<')
    array = np.asarray(values).astype(dtype)
    rows = np.zeros((array.shape[0], array.shape[1] * dtype.itemsize + pad), np.uint8)
    rows[:, :array.shape[1] * dtype.itemsize] = array.view(np.uint8).reshape(array.shape[0], -1)
    return Image(height=array.shape[0], width=array.shape[1], encoding=encoding,
                 is_bigendian=bigendian, step=rows.shape[1], data=rows.tobytes())


@pytest.mark.parametrize('encoding', ['16UC1', 'mono16'])
def test_millimetres_become_metres(encoding):
    depth = decode_depth(depth_msg([[0, 1000, 2500], [65535, 1, 999]], encoding, pad=2),
                         MAX_PIXELS)
    assert depth.dtype == np.float32
    assert np.allclose(depth, [[0.0, 1.0, 2.5], [65.535, 0.001, 0.999]])


def test_metres_stay_metres_and_no_readings_stay_no_readings():
    values = [[1.25, np.nan, np.inf], [-np.inf, 0.0, 3.5]]
    depth = decode_depth(depth_msg(values, '32FC1', pad=4), MAX_PIXELS)
    assert np.array_equal(depth, np.array(values, np.float32), equal_nan=True)
    usable = (depth > 0) & (depth < np.inf)
    assert usable.tolist() == [[True, False, False], [False, False, True]]


def test_big_endian_depth_is_read():
    depth = decode_depth(depth_msg([[1000, 2000]], '16UC1', bigendian=True), MAX_PIXELS)
    assert np.allclose(depth, [[1.0, 2.0]])


@pytest.mark.parametrize('change, match', [
    ({'encoding': 'bgr8'}, 'not a depth encoding'),
    ({'encoding': '8UC1'}, 'not a depth encoding'),
    ({'step': 3}, 'shorter than a row'),
    ({'data': bytes(10)}, r'less than height x step'),
    ({'width': 0}, 'non-empty'),
])
def test_bad_depth_images_are_refused_with_the_fix(change, match):
    msg = depth_msg(np.ones((4, 3)), '16UC1')
    for name, value in change.items():
        setattr(msg, name, value)
    with pytest.raises(DepthInputError, match=match):
        decode_depth(msg, MAX_PIXELS)


def test_too_large_a_depth_image_is_refused_before_decoding():
    with pytest.raises(DepthInputError, match='max_input_pixels'):
        decode_depth(depth_msg(np.ones((4, 3)), '16UC1'), 11)


def info(k, width=640, height=480):
    """Return a CameraInfo with matrix `k`."""
    return CameraInfo(width=width, height=height, k=[float(v) for v in k])


def test_camera_info_gives_the_intrinsics():
    camera = camera_of(info([600, 0, 319.5, 0, 610, 239.5, 0, 0, 1]), 640, 480)
    assert (camera.fx, camera.fy, camera.cx, camera.cy) == (600, 610, 319.5, 239.5)
    assert (camera.width, camera.height) == (640, 480)


@pytest.mark.parametrize('k, match', [
    ([0] * 9, 'not a camera matrix'),
    ([600, 0, 319.5, 0, np.nan, 239.5, 0, 0, 1], 'not a camera matrix'),
    ([600, 0, np.inf, 0, 600, 239.5, 0, 0, 1], 'not a camera matrix'),
])
def test_a_camera_info_without_a_usable_k_is_refused(k, match):
    with pytest.raises(DepthInputError, match=match):
        camera_of(info(k), 640, 480)


def test_a_camera_info_of_another_size_is_refused():
    with pytest.raises(DepthInputError, match='1280x720 images but the depth image is 640x480'):
        camera_of(info([600, 0, 319.5, 0, 600, 239.5, 0, 0, 1], 1280, 720), 640, 480)


@pytest.fixture(scope='module')
def scene():
    """Return two instances at 2 m and 3 m over a wall, their detections and their 3D."""
    owner = np.zeros((60, 80), np.uint16)
    owner[10:30, 10:30], owner[35:55, 40:70] = 1, 2
    depth = np.full(owner.shape, 5.0, np.float32)
    depth[owner == 1], depth[owner == 2] = 2.0, 3.0
    masks = np.stack([owner == 1, owner == 2])
    detections = Detections.from_masks(
        masks, ids=[7, 70000], class_ids=[1, 3], class_names=['square', 'ring'],
        scores=[0.9, 0.6], boxes=[[10, 10, 30, 30], [40, 35, 70, 55]], tracked=True)
    camera = camera_of(info([100, 0, 39.5, 0, 100, 29.5, 0, 0, 1], 80, 60), 80, 60)
    located = locate(owner, 2, depth, camera, DepthMapping.between(camera, (80, 60)),
                     with_points=True)
    header = Header(frame_id='depth_optical')
    header.stamp.sec, header.stamp.nanosec = 12, 345
    return detections, located, header


def test_detection3d_array_carries_the_2d_ids_classes_and_the_3d(scene):
    detections, located, header = scene
    message = deserialize_message(
        serialize_message(to_detection3d_array(located, detections, header)), Detection3DArray)
    assert message.header == header
    assert [d.id for d in message.detections] == ['7', str((70000 - 1) % 65535 + 1)]
    assert [d.results[0].hypothesis.class_id for d in message.detections] == ['square', 'ring']
    assert message.detections[1].results[0].hypothesis.score == pytest.approx(0.6)
    first = message.detections[0]
    position = first.results[0].pose.pose.position
    assert (position.x, position.y, position.z) == pytest.approx(tuple(located.centroids[0]))
    assert position.z == pytest.approx(2.0)
    assert first.bbox.size.x == pytest.approx(located.box_sizes[0][0])
    assert first.bbox.center.orientation.w == 1.0
    assert first.header == header


def test_markers_delete_the_old_ones_then_draw_a_box_and_a_label_each(scene):
    detections, located, header = scene
    message = to_marker_array(located, [(255, 0, 0), (0, 0, 255)], ['square 7', 'ring 5'],
                              header)
    message = deserialize_message(serialize_message(message), MarkerArray)
    kinds = [(m.action, m.type) for m in message.markers]
    assert kinds[0][0] == Marker.DELETEALL
    assert kinds[1:] == [(Marker.ADD, Marker.CUBE), (Marker.ADD, Marker.TEXT_VIEW_FACING)] * 2
    box, text = message.markers[3], message.markers[4]
    assert (box.color.r, box.color.g, box.color.b) == (1.0, 0.0, 0.0)  # BGR (0, 0, 255)
    assert box.scale.z >= 1e-3  # a flat box stays visible
    assert text.text == 'ring 5'
    assert len({m.id for m in message.markers[1:]}) == 4
    assert all(m.header == header for m in message.markers)


def test_instances_of_one_colour_each_get_it_boxes_see_through_labels_opaque(scene):
    detections, located, header = scene
    message = to_marker_array(located, [(0, 255, 0), (0, 255, 0)], ['a', 'b'], header)
    message = deserialize_message(serialize_message(message), MarkerArray)
    colours = [(m.color.r, m.color.g, m.color.b, m.color.a) for m in message.markers[1:]]
    assert colours == [(0.0, 1.0, 0.0, pytest.approx(0.35)), (0.0, 1.0, 0.0, 1.0)] * 2
    assert [m.pose.position.z for m in message.markers[1::2]] == pytest.approx(
        located.box_centres[:, 2].tolist())


def test_point_cloud_has_xyz_and_the_instance_and_class_of_each_point(scene):
    detections, located, header = scene
    message = deserialize_message(
        serialize_message(to_point_cloud(located, detections, header)), PointCloud2)
    assert [(f.name, f.datatype, f.offset) for f in message.fields] == [
        ('x', PointField.FLOAT32, 0), ('y', PointField.FLOAT32, 4),
        ('z', PointField.FLOAT32, 8), ('id', PointField.UINT32, 12),
        ('class_id', PointField.UINT32, 16)]
    assert message.width == len(located.points) and message.height == 1
    assert message.row_step == len(message.data) == 20 * message.width
    points = np.frombuffer(bytes(message.data), np.dtype(
        [('x', '<f4'), ('y', '<f4'), ('z', '<f4'), ('id', '<u4'), ('class_id', '<u4')]))
    near = points['id'] == 7
    assert near.sum() == (located.point_indices == 0).sum() > 0
    assert np.all(points['z'][near] == 2.0) and np.all(points['class_id'][near] == 1)
    far = points['id'] == (70000 - 1) % 65535 + 1
    assert np.all(points['z'][far] == 3.0) and np.all(points['class_id'][far] == 3)
    assert near.sum() + far.sum() == len(points)


def test_cdr_bytes_give_the_stamp_and_the_message():
    header = Header(frame_id='depth')
    header.stamp.sec, header.stamp.nanosec = 1700000001, 250000000
    image = depth_msg([[1000, 2000]], '16UC1')
    image.header = header
    data = serialize_message(image)
    assert cdr_stamp(data) == pytest.approx(1700000001.25)
    assert from_cdr(data, 'image') == image
    info = CameraInfo(header=header, width=2, height=1)
    assert from_cdr(serialize_message(info), 'info') == info
