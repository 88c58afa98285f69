"""Tests of segtrack_ros.depth_stage: depth paired with colour frames, 3D outputs, health."""

import numpy as np
import pytest
from segtrack_ros.core import labels
from segtrack_ros.core.detections import Detections
from segtrack_ros.depth_stage import DepthInput
from segtrack_ros.io.depth_msg import DepthInputError
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header
from visualization_msgs.msg import Marker

WANTED = {'detections_3d', 'markers', 'points', 'detections'}


def header(seconds, frame_id='colour'):
    """Return a header stamped `seconds`."""
    result = Header(frame_id=frame_id)
    result.stamp.sec, result.stamp.nanosec = int(seconds), int(round(seconds % 1 * 1e9))
    return result


def depth_image(seconds, millimetres, width=40, height=30):
    """Return a 16UC1 depth image of one value, stamped `seconds`, in frame 'depth'."""
    pixels = np.full((height, width), millimetres, '<u2')
    return Image(header=header(seconds, 'depth'), height=height, width=width, encoding='16UC1',
                 step=2 * width, data=pixels.tobytes())


def camera_info(width=40, height=30):
    """Return the CameraInfo of the depth images."""
    return CameraInfo(width=width, height=height,
                      k=[50.0, 0.0, (width - 1) / 2, 0.0, 50.0, (height - 1) / 2, 0.0, 0.0, 1.0])


@pytest.fixture
def frame():
    """Return detections of one square in an 80×60 colour frame, and its owner image."""
    mask = np.zeros((1, 60, 80), bool)
    mask[0, 10:40, 20:60] = True
    detections = Detections.from_masks(mask, ids=[3], class_ids=[1], class_names=['square'],
                                       scores=[0.8], boxes=[[20, 10, 60, 40]])
    return detections, labels.owner_image(detections)


def test_a_colour_frame_takes_the_depth_image_within_the_tolerance(frame):
    detections, owner = frame
    depth = DepthInput(tolerance=0.02, max_pixels=10**6)
    depth.put_info(camera_info())
    depth.put_image(depth_image(10.0, 1500))
    depth.put_image(depth_image(10.066, 2500))
    messages = depth.outputs(detections, header(10.01), WANTED, owner, [(0, 0, 255)],
                             ['square 3'])
    assert set(messages) == {'detections_3d', 'markers', 'points'}
    array = messages['detections_3d']
    assert array.header.frame_id == 'depth' and array.header.stamp == header(10.01).stamp
    assert array.detections[0].id == '3'
    assert array.detections[0].results[0].pose.pose.position.z == pytest.approx(1.5)
    later = depth.outputs(detections, header(10.06), WANTED, owner, [(0, 0, 255)], ['x'])
    assert later['detections_3d'].detections[0].bbox.center.position.z == pytest.approx(2.5)
    unpaired = depth.outputs(detections, header(10.033), WANTED, owner)  # 33 ms from both
    assert set(unpaired) == {'markers'}  # which delete the previous frame's, and add none
    assert [marker.action for marker in unpaired['markers'].markers] == [Marker.DELETEALL]
    figures = depth.figures()
    assert (figures['depth_paired'], figures['depth_unpaired']) == (2, 1)
    assert figures['depth_offset_ms'] == pytest.approx((-10 + 6) / 2, abs=0.1)  # depth - colour
    assert depth.problem() == ('none', '')


def test_only_the_wanted_3d_outputs_are_made(frame):
    detections, owner = frame
    depth = DepthInput(tolerance=0.02, max_pixels=10**6)
    depth.put_info(camera_info())
    depth.put_image(depth_image(5.0, 1000))
    assert set(depth.outputs(detections, header(5.0), {'points'}, owner)) == {'points'}
    assert depth.outputs(detections, header(5.0), set(), owner) == {}


def test_no_pairs_within_the_tolerance_is_a_problem_with_the_offset(frame):
    detections, owner = frame
    depth = DepthInput(tolerance=0.02, max_pixels=10**6)
    depth.put_info(camera_info())
    depth.put_image(depth_image(20.5, 1000))
    for seconds in (20.0, 20.033, 20.066):
        assert depth.outputs(detections, header(seconds), {'detections_3d'}, owner) == {}
    problem, text = depth.problem()
    assert problem == 'no_pairs' and '+434 ms' in text and 'depth_tolerance' in text


def test_depth_without_camera_info_is_a_bad_input(frame):
    detections, owner = frame
    depth = DepthInput(tolerance=0.02, max_pixels=10**6)
    depth.put_image(depth_image(1.0, 1000))
    with pytest.raises(DepthInputError, match='no depth camera_info'):
        depth.outputs(detections, header(1.0), WANTED, owner)
    assert depth.problem()[0] == 'bad_depth'
    assert depth.figures()['depth_bad_inputs'] == 1


def test_a_depth_image_of_another_aspect_ratio_is_a_bad_input(frame):
    detections, owner = frame
    depth = DepthInput(tolerance=0.02, max_pixels=10**6)
    depth.put_info(camera_info(40, 40))
    depth.put_image(depth_image(1.0, 1000, 40, 40))
    with pytest.raises(ValueError, match='aspect ratio'):
        depth.outputs(detections, header(1.0), WANTED, owner)


def test_only_the_newest_depth_image_is_kept_while_no_3d_output_is_wanted(frame):
    detections, owner = frame
    depth = DepthInput(tolerance=0.02, max_pixels=10**6)
    depth.put_info(camera_info())
    for seconds in (30.0, 30.066, 30.133):
        depth.put_image(depth_image(seconds, 1000))
    assert depth.outputs(detections, header(30.0), set(), owner) == {}
    assert depth.outputs(detections, header(30.066), {'detections_3d'}, owner) == {}  # dropped
    assert set(depth.outputs(detections, header(30.133), {'detections_3d'}, owner)) == {
        'detections_3d'}
