"""
`segtrack-bag` with depth: a recorded RGB-D camera in, 3D outputs against the scene's truth out.

The bag holds a generated scene as a camera records it: colour at 30 Hz, depth (smaller, with
the sensor model) at 15 Hz stamped 10 ms after or before every other colour frame, and the
depth camera's CameraInfo, at bag times equal to their stamps.
"""

from pathlib import Path

import numpy as np
import pytest
from rclpy.serialization import deserialize_message
from segtrack_ros.core.segmenter import BUNDLED_MODEL
from segtrack_ros.eval.synthetic import build_scene, render_frame, SceneConfig
from segtrack_ros.eval.synthetic_depth import (
    build_depth_scene, depth_image, DepthConfig, relative_errors, SensorModel, truth_3d)
from segtrack_ros.io import image_codec
from segtrack_ros.io.bag_io import output_topics
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header
from test_cli_bag import read_bag, run_cli, write_bag
from vision_msgs.msg import Detection2DArray, Detection3DArray

COLOUR, DEPTH, INFO = '/cam/color/image_raw', '/cam/depth/image_raw', '/cam/depth/camera_info'
TYPES = {COLOUR: 'sensor_msgs/msg/Image', DEPTH: 'sensor_msgs/msg/Image',
         INFO: 'sensor_msgs/msg/CameraInfo'}
FRAMES = 16
START = 1_700_000_000.0
FPS = 30.0


def header(seconds, frame_id):
    """Return a header stamped `seconds`."""
    result = Header(frame_id=frame_id)
    result.stamp.sec, result.stamp.nanosec = divmod(int(round(seconds * 1e9)), 1_000_000_000)
    return result


@pytest.fixture(scope='module')
def recording(tmp_path_factory):
    """Return the bag's path, the depth scene and the truth of every colour frame."""
    scene = build_scene(SceneConfig(width=640, height=480, frames=FRAMES, seed=2, objects=6))
    depth_scene = build_depth_scene(scene, DepthConfig(width=320, height=240,
                                                       sensor=SensorModel(), every=2))
    camera = depth_scene.depth
    messages, truths = [], []
    for t in range(FRAMES):
        image, truth = render_frame(scene, t)
        truths.append(truth)
        seconds = START + t / FPS
        messages.append((COLOUR, seconds, image_codec.to_image_msg(
            image, 'bgr8', header(seconds, 'colour'))))
        if t % 2 == 0:
            offset = 0.010 if t % 4 == 0 else -0.010
            depth = depth_image(depth_scene, t / FPS + offset)
            millimetres = np.nan_to_num(depth * 1000).round().astype(np.uint16)
            message = image_codec.to_image_msg(millimetres, 'mono16',
                                               header(seconds + offset, 'depth_optical'))
            message.encoding = '16UC1'
            info = CameraInfo(header=header(seconds + offset, 'depth_optical'),
                              width=camera.width, height=camera.height,
                              k=[camera.fx, 0.0, camera.cx, 0.0, camera.fy, camera.cy, 0.0, 0.0,
                                 1.0])
            messages += [(INFO, seconds + offset, info), (DEPTH, seconds + offset, message)]
    messages.sort(key=lambda item: item[1])
    path = write_bag(tmp_path_factory.mktemp('depth') / 'rgbd', 'mcap',
                     [(topic, int(round(seconds * 1e9)), message)
                      for topic, seconds, message in messages], TYPES)
    return path, depth_scene, truths


def test_bag_gets_3d_outputs_paired_within_the_tolerance(recording, tmp_path):
    path, depth_scene, truths = recording
    output = tmp_path / 'out'
    code, out, err = run_cli([path, output, '--topic', COLOUR, '--depth-topic', DEPTH,
                              '--camera-info-topic', INFO, '--model', BUNDLED_MODEL,
                              '--mode', 'predict', '--imgsz', '320', '--device', 'cpu'])
    assert code == 0, err
    topics = output_topics(COLOUR)
    base = topics['detections'].rsplit('/', 1)[0]
    _, written = read_bag(output)
    arrays_2d = [deserialize_message(data, Detection2DArray)
                 for _, data in written[topics['detections']]]
    arrays_3d = [deserialize_message(data, Detection3DArray)
                 for _, data in written[f'{base}/detections_3d']]
    assert len(arrays_2d) == FRAMES
    # the even frames have a depth image 10 ms away; the odd ones none within 20 ms
    frames = [round((a.header.stamp.sec + a.header.stamp.nanosec * 1e-9 - START) * FPS)
              for a in arrays_3d]
    assert frames == list(range(0, FRAMES, 2))
    assert len(written[f'{base}/points']) == len(frames)
    assert len(written[f'{base}/markers']) == FRAMES  # unpaired: delete the previous markers
    errors = []
    for t, array in zip(frames, arrays_3d):
        assert array.header.frame_id == 'depth_optical'
        centroids, _ = truth_3d(depth_scene, truths[t], t)
        boxes = {d.id: d.bbox for d in arrays_2d[t].detections}
        for detection in array.detections:
            box = boxes[detection.id]
            centre = np.array([box.center.position.x, box.center.position.y])
            # the truth instance under the 2D box's centre (plates are convex but rings)
            inside = [index for index, truth_box in enumerate(truths[t].boxes)
                      if np.all(centre >= truth_box[:2]) and np.all(centre <= truth_box[2:])]
            if len(inside) != 1:
                continue
            position = detection.results[0].pose.pose.position
            errors.append(relative_errors(np.array([[position.x, position.y, position.z]]),
                                          centroids[inside])[0])
    assert len(errors) >= 10
    assert np.median(errors) <= 0.03, errors


@pytest.mark.parametrize('flags, message', [
    (['--depth-topic', DEPTH], 'one --depth-topic and one --camera-info-topic per --topic'),
    (['--depth-topic', COLOUR, '--camera-info-topic', DEPTH], 'is not a sensor_msgs/msg/Camera'),
    (['--depth-topic', '/nope', '--camera-info-topic', INFO], "'/nope' is not in bag"),
])
def test_bad_depth_flags_are_one_line(recording, tmp_path, flags, message):
    path = recording[0]
    code, _, err = run_cli([path, tmp_path / 'out', '--topic', COLOUR, *flags])
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err
    assert not Path(tmp_path / 'out').exists()


def gappy_recording(folder, frames=40, depth_frames=10):
    """Write colour at 10 Hz with depth for the first `depth_frames` only, one of each broken."""
    messages = []
    for t in range(frames):
        seconds = START + t / 10
        image = np.full((48, 64, 3), 40 * (t % 5), np.uint8)
        colour = image_codec.to_image_msg(image, 'bgr8', header(seconds, 'colour'))
        messages.append((COLOUR, seconds, b'\x00\x01\x00\x00\x01' if t == 5 else colour))
        if t < depth_frames:
            depth = image_codec.to_image_msg(np.full((24, 32), 1000, np.uint16), 'mono16',
                                             header(seconds, 'depth_optical'))
            depth.encoding = '16UC1'
            info = CameraInfo(header=header(seconds, 'depth_optical'), width=32, height=24,
                              k=[30.0, 0.0, 16.0, 0.0, 30.0, 12.0, 0.0, 0.0, 1.0])
            messages += [(INFO, seconds, info),
                         (DEPTH, seconds + 0.001, b'\x00\x01\x00\x00' if t == 3 else depth)]
    return write_bag(folder / 'gappy', 'mcap', [(topic, int(round(seconds * 1e9)), message)
                                                for topic, seconds, message in messages], TYPES)


DEPTH_FLAGS = ['--topic', COLOUR, '--depth-topic', DEPTH, '--camera-info-topic', INFO]


def test_frames_wait_for_depth_only_a_while(tmp_path):
    from segtrack_ros.cli import bag as bag_cli
    from segtrack_ros.pipeline import FramePipeline

    args = bag_cli.build_parser().parse_args(
        [str(gappy_recording(tmp_path)), str(tmp_path / 'out'), '--no-copy', *DEPTH_FLAGS])
    with bag_cli._checked(args, args.input, args.output) as run:
        pipeline = FramePipeline(None, bag_cli.render_config(args), streams=(COLOUR,),
                                 depth_tolerance=args.depth_tolerance)
        lags = [run.frames_read - number
                for _, _, (_, number) in run._frames(pipeline, None, {}, bag_cli.BagSummary())]
    assert len(lags) == 40
    assert max(lags) <= 21  # depth ended at 1 s: a frame waits 2 s of bag time, not to the end


def test_depth_that_ends_early_or_is_malformed_leaves_the_2d_outputs(tmp_path):
    code, out, err = run_cli([gappy_recording(tmp_path), tmp_path / 'out', *DEPTH_FLAGS,
                              '--model', BUNDLED_MODEL, '--imgsz', '64', '--device', 'cpu'])
    assert code == 0, err
    topics = output_topics(COLOUR)
    base = topics['detections'].rsplit('/', 1)[0]
    _, written = read_bag(tmp_path / 'out')
    assert len(written[topics['detections']]) == 39  # all but the truncated frame
    arrays_3d = [deserialize_message(data, Detection3DArray)
                 for _, data in written[f'{base}/detections_3d']]
    frames = [round((a.header.stamp.sec + a.header.stamp.nanosec * 1e-9 - START) * 10)
              for a in arrays_3d]
    assert frames == [0, 1, 2, 4, 6, 7, 8, 9]  # 3: its depth is malformed, 5: no frame
    assert '2 malformed frame(s) skipped' in out, out
    assert 'malformed depth image message skipped' in out, out
