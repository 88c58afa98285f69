"""
segtrack_node with `depth:=true` over real DDS, against the synthetic scenes' 3D truth.

A node process with the bundled model; the test publishes a generated scene as a camera would:
colour at 30 Hz, depth (smaller, with the sensor model) at 15 Hz stamped 10 ms after or before
every other colour frame, and the depth camera's CameraInfo. The model's own masks locate the
instances, so this is the whole chain end to end. Beside the node's 3D, the test makes the
box-based estimate of simpler packages (`synthetic_depth.box_centroids`: the median depth inside
the node's own 2D box) from the same depth images, scored against the same truth.
"""

import signal
import time

from diagnostic_msgs.msg import DiagnosticArray
import numpy as np
import pytest
from ros_harness import NodeProcess, RELIABLE, running_probe, wait_until
from segtrack_ros.core.geometry import DepthMapping
from segtrack_ros.core.segmenter import BUNDLED_MODEL
from segtrack_ros.eval.synthetic import build_scene, render_frame, SceneConfig
from segtrack_ros.eval.synthetic_depth import (
    box_centroids, build_depth_scene, depth_image, DepthConfig, relative_errors, SensorModel,
    truth_3d)
from segtrack_ros.io import depth_msg, image_codec
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray, Detection3DArray
from visualization_msgs.msg import MarkerArray

NAMESPACE = '/cam_d'
TIMEOUT = 90.0
FPS = 30.0
TOLERANCE = 0.02
FRAMES = 60
PLAY_SECONDS = 150.0
OUTPUTS = {'detections': Detection2DArray, 'detections_3d': Detection3DArray,
           'markers': MarkerArray, 'points': PointCloud2}


def stamp_of(seconds):
    """Return a header stamped `seconds`, in frame 'camera_colour'."""
    header = Header(frame_id='camera_colour')
    nanoseconds = int(round(seconds * 1e9))
    header.stamp.sec, header.stamp.nanosec = divmod(nanoseconds, 1_000_000_000)
    return header


def depth_message(depth, header):
    """Return a 16UC1 (millimetre) Image of a float32 depth image in metres (NaN: no reading)."""
    millimetres = np.nan_to_num(depth * 1000, nan=0.0).round().clip(0, 65535).astype(np.uint16)
    message = image_codec.to_image_msg(millimetres, 'mono16', header)
    message.encoding = '16UC1'
    return message


def camera_info(camera, header):
    """Return the CameraInfo of a `geometry.Camera`."""
    return CameraInfo(header=header, width=camera.width, height=camera.height, k=[
        camera.fx, 0.0, camera.cx, 0.0, camera.fy, camera.cy, 0.0, 0.0, 1.0])


@pytest.fixture(scope='module')
def probe():
    """Make the test's own node (large-data profile, as cameras publish)."""
    with running_probe('segtrack_depth_test') as node:
        yield node


@pytest.fixture(scope='module')
def segtrack(probe):
    """Start segtrack_node with depth; ready when it subscribes to all three inputs."""
    process = NodeProcess('segtrack_node', {
        'model': str(BUNDLED_MODEL), 'device': 'cpu', 'imgsz': 320, 'mode': 'predict',
        'depth': True, 'depth_tolerance': TOLERANCE}, NAMESPACE)
    ready = probe.wait_for_graph(
        lambda node: all(node.count_subscribers(f'{NAMESPACE}/{topic}') > 0
                         for topic in ('image', 'depth/image', 'depth/camera_info')), TIMEOUT)
    assert ready, process.output
    yield process
    code, _ = process.stop(signal.SIGINT)
    assert code == 0 and 'Traceback' not in process.output, process.output


class Camera:
    """An RGB-D camera replaying a generated scene at its rates, in real time, with new stamps."""

    def __init__(self, probe, seed):
        # six objects: every class, so each scene has a triangle and a ring (thin, non-convex:
        # where the box-based estimate takes the wall behind for the object)
        self.scene = build_scene(SceneConfig(width=640, height=480, frames=FRAMES, seed=seed,
                                             objects=6))
        self.depth_scene = build_depth_scene(self.scene, DepthConfig(
            width=320, height=240, sensor=SensorModel(), every=2))
        self.colour = probe.publisher(Image, f'{NAMESPACE}/image')
        self.depth = probe.publisher(Image, f'{NAMESPACE}/depth/image')
        self.info = probe.publisher(CameraInfo, f'{NAMESPACE}/depth/camera_info')
        self.truths = {}  # (sec, nanosec) of a colour stamp -> (frame, truth)
        self.depths = {}  # colour frame -> the depth image (metres) sent as its partner
        self.replay = self._messages()

    def _messages(self):
        """Return (seconds after the start, frame, messages) of the replay, in stamp order."""
        out = []
        for t in range(FRAMES):
            image, truth = render_frame(self.scene, t)
            out.append((t / FPS, (t, truth), [
                (self.colour, image_codec.to_image_msg(image, 'bgr8', stamp_of(0)))]))
            if t % 2 == 0:  # 15 Hz, 10 ms after or before its colour frame
                offset = 0.010 if t % 4 == 0 else -0.010
                message = depth_message(depth_image(self.depth_scene, t / FPS + offset),
                                        stamp_of(0))
                self.depths[t] = depth_msg.decode_depth(message, message.width * message.height)
                out.append((t / FPS + offset, None, [
                    (self.info, camera_info(self.depth_scene.depth, stamp_of(0))),
                    (self.depth, message)]))
        return sorted(out, key=lambda item: item[0])

    def play(self):
        """Publish the scene once, stamped from now on, at its stamps' pace."""
        start = time.time()
        for seconds, frame, messages in self.replay:
            header = stamp_of(start + seconds)
            if frame is not None:
                self.truths[header.stamp.sec, header.stamp.nanosec] = frame
            else:
                header.frame_id = 'camera_depth_optical'
            delay = start + seconds - time.time()
            if delay > 0:
                time.sleep(delay)
            for publisher, message in messages:
                message.header = header
                publisher.publish(message)
        time.sleep(0.2)  # a gap: the next replay's first depth image is no partner of this one's


def matched_errors(camera, arrays_3d, arrays_2d):
    """
    Return the errors of the 3D detections matched to the truth by their 2D box.

    Per matched instance: the centroid error, the extent error, and the centroid error of the
    box-based estimate made from the node's 2D box and the depth image the node was sent.
    """
    centroid, extent, box_based = [], [], []
    colour_size = (camera.scene.config.width, camera.scene.config.height)
    mapping = DepthMapping.between(camera.depth_scene.depth, colour_size)
    for array in arrays_3d:
        key = (array.header.stamp.sec, array.header.stamp.nanosec)
        t, truth = camera.truths[key]
        boxes_2d = {d.id: d.bbox for d in arrays_2d[key].detections}
        centroids, sizes = truth_3d(camera.depth_scene, truth, t)
        for detection in array.detections:
            box = boxes_2d[detection.id]
            x1, y1 = box.center.position.x - box.size_x / 2, box.center.position.y - box.size_y / 2
            x2, y2 = x1 + box.size_x, y1 + box.size_y
            truth_boxes = truth.boxes
            inter = (np.clip(np.minimum(x2, truth_boxes[:, 2]) - np.maximum(x1, truth_boxes[:, 0]),
                             0, None)
                     * np.clip(np.minimum(y2, truth_boxes[:, 3])
                               - np.maximum(y1, truth_boxes[:, 1]), 0, None))
            union = ((x2 - x1) * (y2 - y1) + (truth_boxes[:, 2] - truth_boxes[:, 0])
                     * (truth_boxes[:, 3] - truth_boxes[:, 1]) - inter)
            iou = inter / union
            if iou.max() < 0.5:
                continue
            index = int(iou.argmax())
            true_centroid = centroids[index:index + 1]
            position = detection.results[0].pose.pose.position
            centroid.append(relative_errors(np.array([[position.x, position.y, position.z]]),
                                            true_centroid)[0])
            size = detection.bbox.size
            extent.append(np.abs(np.array([size.x, size.y, size.z]) - sizes[index]).max()
                          / sizes[index].max())
            estimate = box_centroids([(x1, y1, x2, y2)], camera.depths[t],
                                     camera.depth_scene.depth, mapping)
            box_based.append(relative_errors(estimate, true_centroid)[0])
    return np.array(centroid), np.array(extent), np.array(box_based)


def test_depth_outputs_match_the_truth_end_to_end(probe, segtrack):
    collectors = {topic: probe.collect(kind, f'{NAMESPACE}/{topic}')
                  for topic, kind in OUTPUTS.items()}
    diagnostics = probe.collect(DiagnosticArray, '/diagnostics')
    assert probe.wait_for_graph(lambda node: all(
        node.count_subscribers(f'{NAMESPACE}/{topic}') > 0 for topic in OUTPUTS), TIMEOUT)
    cameras = [Camera(probe, seed) for seed in (1, 2, 3)]
    deadline = time.monotonic() + PLAY_SECONDS
    while time.monotonic() < deadline:  # a loaded machine processes few frames a second
        for camera in cameras:
            camera.play()
        if len(collectors['detections_3d'].messages) >= 12:
            break
    played = time.monotonic()
    wait_until(lambda: False, 3.0)  # the last frames' outputs
    arrays_2d = {(m.header.stamp.sec, m.header.stamp.nanosec): m
                 for m in collectors['detections'].messages}
    arrays_3d = collectors['detections_3d'].messages
    assert len(arrays_3d) >= 6, segtrack.output
    centroid, extent, box_based = [], [], []
    for camera in cameras:
        mine = [a for a in arrays_3d if (a.header.stamp.sec, a.header.stamp.nanosec)
                in camera.truths]
        # every 3D output is of a colour frame with a depth image within the tolerance: the
        # even frames (10 ms away); the odd ones are 23 ms from the nearest depth image
        frames = [camera.truths[a.header.stamp.sec, a.header.stamp.nanosec][0] for a in mine]
        assert all(t % 2 == 0 for t in frames), frames
        assert all(a.header.frame_id == 'camera_depth_optical' for a in mine)
        errors = matched_errors(camera, mine, arrays_2d)
        centroid.append(errors[0])
        extent.append(errors[1])
        box_based.append(errors[2])
        # 2D outputs keep coming for the frames without a depth partner
        odd = [camera.truths[key][0] % 2 for key in arrays_2d if key in camera.truths]
        assert sum(odd) > 0
    centroid, extent, box_based = (np.concatenate(errors) for errors in (
        centroid, extent, box_based))
    assert len(centroid) >= 20
    assert np.median(centroid) <= 0.03 and np.percentile(centroid, 95) <= 0.10, centroid
    assert np.median(extent) <= 0.20, extent
    # the box's median depth is the wall behind a ring or a triangle: the mask's tail is shorter
    box_p95 = np.nanpercentile(box_based, 95)
    assert np.percentile(centroid, 95) <= 0.5 * box_p95, (centroid, box_based)
    # points and markers came with the 3D detections, in the same frame
    assert collectors['points'].messages and collectors['markers'].messages
    points = collectors['points'].messages[-1]
    assert [field.name for field in points.fields] == ['x', 'y', 'z', 'id', 'class_id']
    assert points.header.frame_id == 'camera_depth_optical'
    print(f'end to end over {len(centroid)} instances: centroid error median '
          f'{100 * np.median(centroid):.2f} %, p95 {100 * np.percentile(centroid, 95):.2f} %; '
          f'extent error median {100 * np.median(extent):.1f} %; box-based centroid error '
          f'median {100 * np.nanmedian(box_based):.2f} %, p95 {100 * box_p95:.2f} %')
    while_playing = [array for array, arrival in zip(diagnostics.messages, diagnostics.arrivals)
                     if arrival <= played]
    status = [s for array in while_playing for s in array.status
              if s.name.startswith(f'{NAMESPACE}/segtrack_node')][-1]
    values = {v.key: v.value for v in status.values}
    assert int(values['depth_paired']) > 0
    assert values['depth_problem'] == 'none'


def test_a_bad_depth_image_is_one_line_and_leaves_2d_alone(probe, segtrack):
    detections = probe.collect(Detection2DArray, f'{NAMESPACE}/detections')
    depth = probe.publisher(Image, f'{NAMESPACE}/depth/image', RELIABLE)
    colour = probe.publisher(Image, f'{NAMESPACE}/image', RELIABLE)
    image, _ = render_frame(build_scene(SceneConfig(width=640, height=480, frames=2)), 0)
    for index in range(10):
        seconds = time.time()
        bad = image_codec.to_image_msg(np.zeros((240, 320, 3), np.uint8), 'bgr8',
                                       stamp_of(seconds))
        depth.publish(bad)  # bgr8 is no depth encoding
        colour.publish(image_codec.to_image_msg(image, 'bgr8', stamp_of(seconds)))
        time.sleep(0.2)
    assert wait_until(lambda: len(detections.messages) >= 3, TIMEOUT)
    assert wait_until(lambda: 'not a depth encoding' in segtrack.output, 10.0)
    assert segtrack.output.count("'bgr8' is not a depth encoding") <= 2  # throttled
    assert segtrack.process.poll() is None
