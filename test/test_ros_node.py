"""
segtrack_node over real DDS.

A node process, a test process publishing frames and collecting every output, and the core run
in the test on the same frames as the reference. The bundled shapes model on synthetic scenes
gives real tracks and classes, so resets, ids and colours can be told apart.
"""

from functools import lru_cache
import os
import signal
import time

from conftest import UNTRAINED_CONF
import cv2
from diagnostic_msgs.msg import DiagnosticArray
import numpy as np
import pytest
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from ros_harness import BEST_EFFORT, make_frame, NodeProcess, RELIABLE, running_probe, wait_until
from segtrack_ros.core import labels
from segtrack_ros.core.segmenter import BUNDLED_MODEL, Segmenter, SegmenterConfig
from segtrack_ros.core.tracking import DEFAULT_TRACKER
from segtrack_ros.eval.synthetic import build_scene, render_frame, SceneConfig
from segtrack_ros.io import image_codec
from sensor_msgs.msg import CompressedImage, Image
from std_srvs.srv import Trigger
from ultralytics.utils.plotting import colors
from vision_msgs.msg import Detection2DArray

NAMESPACE = '/cam_a'
NODE = f'{NAMESPACE}/segtrack_node'
OUTPUTS = {'annotated_image': Image, 'annotated_image/compressed': CompressedImage,
           'instance_mask': Image, 'class_mask': Image, 'detections': Detection2DArray}
TIMEOUT = 60.0


@pytest.fixture(scope='module')
def probe():
    """Make the test's own node; it publishes with the large-data profile, as video_publisher."""
    with running_probe('segtrack_test') as node:
        yield node


@pytest.fixture(scope='module')
def node_parameters():
    """Return the node's parameters: the bundled model, tracking, outlines only."""
    return {'model': str(BUNDLED_MODEL), 'device': 'cpu', 'imgsz': 320, 'mode': 'track',
            'color_mode': 'track', 'mask_alpha': 0.0, 'line_width': 3}


@pytest.fixture(scope='module')
def core(node_parameters):
    """Return the reference: the core with the node's settings; each test uses its own streams."""
    parameters = {key: node_parameters[key] for key in ('model', 'device', 'imgsz', 'mode')}
    segmenter = Segmenter(SegmenterConfig(**parameters))
    yield segmenter
    segmenter.release()


@lru_cache(maxsize=None)
def scene_frame(seed, index):
    """Return frame `index` of synthetic scene `seed`: about 3 to 8 shapes of 4 classes."""
    frame, _ = render_frame(build_scene(SceneConfig(width=640, height=480, frames=40,
                                                    seed=seed)), index)
    return frame


@pytest.fixture(scope='module')
def segtrack(probe, node_parameters):
    """Start segtrack_node in its own process; ready when it receives and publishes."""
    process = NodeProcess('segtrack_node', node_parameters, NAMESPACE)
    ready = probe.wait_for_graph(
        lambda node: node.count_subscribers(f'{NAMESPACE}/image') > 0
        and node.count_publishers(f'{NAMESPACE}/detections') > 0, TIMEOUT)
    assert ready, process.output
    assert 'between inferences' in process.output  # torch has every core here
    yield process
    code, seconds = process.stop(signal.SIGINT)
    assert code == 0 and seconds < 2.0 and 'Traceback' not in process.output, process.output


@pytest.fixture(scope='module')
def outputs(probe, segtrack):
    """Collect every output (reliable), and the annotated image also with best effort."""
    collectors = {topic: probe.collect(kind, f'{NAMESPACE}/{topic}')
                  for topic, kind in OUTPUTS.items()}
    collectors['best_effort'] = probe.collect(Image, f'{NAMESPACE}/annotated_image', BEST_EFFORT)
    collectors['diagnostics'] = probe.collect(DiagnosticArray, '/diagnostics')
    assert probe.wait_for_graph(
        lambda node: node.count_subscribers(f'{NAMESPACE}/instance_mask') >= 1, TIMEOUT)
    return collectors


@pytest.fixture(scope='module')
def image_publisher(probe):
    """Return a publisher of raw frames into the node."""
    return probe.publisher(Image, f'{NAMESPACE}/image', RELIABLE)


def send_and_wait(probe, publisher, collectors, frame, topics=tuple(OUTPUTS), header=None):
    """Publish one frame and wait for its outputs on `topics`; return its header."""
    header = header or probe.header()
    publisher.publish(image_codec.to_image_msg(frame, 'bgr8', header))
    for topic in topics:
        assert wait_until(lambda: collectors[topic].by_stamp(header.stamp)), f'no {topic} output'
    return header


def warm_up(probe, image_publisher, outputs):
    """Send frames until the node answers, so that discovery is complete."""
    def answered():
        image_publisher.publish(image_codec.to_image_msg(make_frame(0), 'bgr8', probe.header()))
        return all(outputs[topic].wait_for_count(1, 0.5) for topic in OUTPUTS)
    assert wait_until(answered), 'the node never answered'
    settled = outputs['detections']
    count = -1
    while count != len(settled.messages):  # let frames still in flight come out
        count = len(settled.messages)
        time.sleep(1.0)


def latest_diagnostics(collector, key):
    """Return the value of `key` in the node's newest diagnostics status."""
    for array in reversed(collector.messages):
        for status in array.status:
            if status.name.startswith(NODE):
                return float(next(v.value for v in status.values if v.key == key))
    return None


def detection_ids(outputs, header):
    """Return the ids of the detections published for the frame of `header`."""
    return [int(d.id) for d in outputs['detections'].by_stamp(header.stamp)[0].detections]


def reset_tracks(probe):
    """Call the node's ~/reset_tracker and check that it succeeded."""
    call = probe.node.create_client(Trigger, f'{NODE}/reset_tracker')
    assert call.wait_for_service(timeout_sec=TIMEOUT)
    future = call.call_async(Trigger.Request())
    assert wait_until(future.done) and future.result().success
    probe.node.destroy_client(call)


def set_parameters(probe, **values):
    """Set node parameters through the parameter service; return the results."""
    client = AsyncParameterClient(probe.node, NODE)
    assert client.wait_for_services(timeout_sec=TIMEOUT)
    future = client.set_parameters([Parameter(name, value=value)
                                    for name, value in values.items()])
    assert wait_until(future.done)
    return future.result().results


def test_outputs_match_the_core(probe, segtrack, outputs, image_publisher, core):
    """Every output arrives with the input header; content equals the core's output."""
    warm_up(probe, image_publisher, outputs)
    reset_tracks(probe)
    for index in range(1, 4):
        frame = scene_frame(1, index)
        header = send_and_wait(probe, image_publisher, outputs, frame)
        check_frame_outputs(outputs, header, frame, core.process(frame, 'outputs'),
                            core.class_names)
    assert outputs['best_effort'].messages, 'a best-effort subscriber got no annotated image'


def check_frame_outputs(outputs, header, frame, expected, names):
    """Sizes, encodings, headers and content of one frame's outputs."""
    height, width = frame.shape[:2]
    annotated = outputs['annotated_image'].by_stamp(header.stamp)[0]
    assert (annotated.encoding, annotated.width, annotated.height) == ('bgr8', width, height)
    assert annotated.header == header
    compressed = outputs['annotated_image/compressed'].by_stamp(header.stamp)[0]
    assert compressed.format == 'jpeg' and compressed.header == header
    assert image_codec.decode_compressed(compressed).shape == frame.shape
    instance = outputs['instance_mask'].by_stamp(header.stamp)[0]
    classes = outputs['class_mask'].by_stamp(header.stamp)[0]
    for mask in (instance, classes):
        assert (mask.encoding, mask.width, mask.height) == ('mono16', width, height)
        assert mask.header == header
    instance_ids = np.frombuffer(bytes(instance.data), np.uint16).reshape(height, width)
    class_ids = np.frombuffer(bytes(classes.data), np.uint16).reshape(height, width)
    assert np.array_equal(instance_ids, labels.instance_mask(expected))
    assert np.array_equal(class_ids, labels.class_mask(expected))
    detections = outputs['detections'].by_stamp(header.stamp)[0]
    assert detections.header == header
    assert [d.id for d in detections.detections] == [str(i) for i in expected.ids]
    assert len(expected) > 1, 'the reference found little: the test would prove little'
    assert len(np.unique(instance_ids)) == len(expected) + 1  # every instance owns pixels
    name_to_id = {name: class_id for class_id, name in names.items()}
    for detection, score, box in zip(detections.detections, expected.scores, expected.boxes):
        hypothesis = detection.results[0].hypothesis
        assert hypothesis.score == pytest.approx(float(score), abs=1e-6)
        center = detection.bbox.center.position
        assert (center.x, center.y) == pytest.approx(((box[0] + box[2]) / 2,
                                                      (box[1] + box[3]) / 2), abs=1e-3)
        assert (detection.bbox.size_x, detection.bbox.size_y) == pytest.approx(
            (box[2] - box[0], box[3] - box[1]), abs=1e-3)
        pixels = instance_ids == int(detection.id)
        if pixels.any():  # an instance may be fully covered by a higher-scoring one
            ys, xs = np.nonzero(pixels)
            assert box[0] - 5 <= xs.min() and xs.max() <= box[2] + 5
            assert box[1] - 5 <= ys.min() and ys.max() <= box[3] + 5
            assert set(np.unique(class_ids[pixels])) == {name_to_id[hypothesis.class_id] + 1}
    assert set(np.unique(instance_ids)) - {0} <= {int(d.id) for d in detections.detections}


def test_outputs_overlapped_with_inference_match_the_core(probe, node_parameters, core):
    """With a core left free (one torch thread), outputs come from their own thread, unchanged."""
    namespace = '/cam_overlap'
    process = NodeProcess('segtrack_node', node_parameters, namespace,
                          environment={'OMP_NUM_THREADS': '1'})
    try:
        collectors = {topic: probe.collect(kind, f'{namespace}/{topic}')
                      for topic, kind in OUTPUTS.items()}
        publisher = probe.publisher(Image, f'{namespace}/image', RELIABLE)
        assert probe.wait_for_graph(
            lambda node: node.count_subscribers(f'{namespace}/image') > 0
            and node.count_subscribers(f'{namespace}/instance_mask') > 0, TIMEOUT), \
            process.output
        assert 'on their own thread' in process.output
        for index in range(1, 4):
            frame = scene_frame(2, index)
            header = send_and_wait(probe, publisher, collectors, frame)
            check_frame_outputs(collectors, header, frame, core.process(frame, 'overlapped'),
                                core.class_names)
    finally:
        code, _ = process.stop()
    assert code == 0 and 'Traceback' not in process.output, process.output


def drawn_colours(annotated, frame):
    """Return the BGR colours of the annotated image that the input frame does not have."""
    def colours(image):
        return {tuple(int(v) for v in c) for c in np.unique(image.reshape(-1, 3), axis=0)}
    return colours(annotated) - colours(frame)


def test_colour_mode_and_thresholds_change_on_the_next_frame(
        probe, segtrack, outputs, image_publisher, core):
    """
    color_mode switches the colours; a conf of 1 gives an empty, still-stamped detection.

    The palette has 20 colours, so a class id and a track id can share one: only instances
    whose two colours differ tell the modes apart, and the test needs some. After a reset the
    same frame keeps the same ids.
    """
    warm_up(probe, image_publisher, outputs)
    reset_tracks(probe)
    class_ids = {name: class_id for class_id, name in core.class_names.items()}
    frame = scene_frame(3, 5)
    for color_mode, other in (('class', 'track'), ('track', 'class')):
        assert set_parameters(probe, color_mode=color_mode)[0].successful
        header = send_and_wait(probe, image_publisher, outputs, frame)
        annotated = image_codec.decode_image(outputs['annotated_image'].by_stamp(header.stamp)[0])
        detections = outputs['detections'].by_stamp(header.stamp)[0].detections
        keys = {'track': [int(d.id) for d in detections],
                'class': [class_ids[d.results[0].hypothesis.class_id] for d in detections]}
        expected = {colors(key, True) for key in keys[color_mode]}
        wrong = {colors(key, True) for key in keys[other]} - expected
        assert wrong, f'{color_mode}: every colour is in both modes, the check proves nothing'
        drawn = drawn_colours(annotated, frame)
        assert expected <= drawn, color_mode
        assert not wrong & drawn, color_mode

    assert set_parameters(probe, conf=1.0)[0].successful
    header = send_and_wait(probe, image_publisher, outputs, frame)
    empty = outputs['detections'].by_stamp(header.stamp)[0]
    assert empty.detections == [] and empty.header == header
    instance = outputs['instance_mask'].by_stamp(header.stamp)[0]
    assert not np.frombuffer(bytes(instance.data), np.uint16).any()
    assert set_parameters(probe, conf=0.25)[0].successful


def test_classes_set_and_back_to_empty_at_run_time(probe, segtrack, outputs, image_publisher,
                                                   core):
    """
    Classes [1] keeps squares only; [] (an empty list over rclpy) keeps every class again.

    New tracks show once confirmed (the default TrackTrack: on their third frame), except on the
    first frame after a reset: the tracks of the other classes start anew once they are kept.
    """
    warm_up(probe, image_publisher, outputs)
    reset_tracks(probe)
    found = {}
    for classes, frames in (([1], (3,)), ([], (4, 5, 6))):
        result = set_parameters(probe, classes=classes)[0]
        assert result.successful, result.reason
        for index in frames:
            header = send_and_wait(probe, image_publisher, outputs, scene_frame(4, index))
        detections = outputs['detections'].by_stamp(header.stamp)[0].detections
        found[len(classes)] = {d.results[0].hypothesis.class_id for d in detections}
    assert found[1] == {core.class_names[1]}, found
    assert len(found[0]) > 1 and core.class_names[1] in found[0], found


@pytest.mark.parametrize('values, reason', [
    ({'conf': 2.0}, 'conf'),
    ({'mode': 'banana'}, 'mode'),
    ({'model': 'other.pt'}, 'read-only'),
    ({'color_mode': 'track', 'mode': 'predict'}, 'color_mode track needs mode track'),
    ({'mode': 'track', 'tracker': 'no_such_tracker.yaml'}, 'not found'),
    ({'imgsz': 100}, 'imgsz'),
    ({'classes': [1, -2]}, 'classes'),
])
def test_bad_parameters_at_run_time_are_refused(probe, segtrack, values, reason):
    """
    Out-of-range, unknown, read-only and contradictory values are refused with a reason.

    rclpy sets the parameters of one request one by one: the last one is the one refused.
    """
    *_, result = set_parameters(probe, **values)
    assert not result.successful
    assert reason in result.reason


def tracks_reset_logged(process):
    """Return how many times the node logged that its tracks were reset."""
    return process.output.count('tracks reset')


def test_tracker_change_at_run_time_resets_tracks_and_logs_it(probe, segtrack, outputs,
                                                              image_publisher, core):
    """
    Tracker bytetrack.yaml set while tracking: the ids are a fresh ByteTrack's; one line says so.

    Before the change the default tracker follows another scene, whose ids a kept tracker would
    go on past.
    """
    warm_up(probe, image_publisher, outputs)
    reset_tracks(probe)
    before = [scene_frame(14, index) for index in range(3)]
    after = [scene_frame(15, index) for index in range(4)]
    for frame in before:
        send_and_wait(probe, image_publisher, outputs, frame)
    resets = tracks_reset_logged(segtrack)
    fresh = Segmenter(SegmenterConfig(model=str(BUNDLED_MODEL), device='cpu', imgsz=320,
                                      mode='track', tracker='bytetrack.yaml'))
    try:
        result, = set_parameters(probe, tracker='bytetrack.yaml')
        assert result.successful, result.reason
        got, expected = [], []
        for frame in after:
            header = send_and_wait(probe, image_publisher, outputs, frame)
            got.append(detection_ids(outputs, header))
            expected.append(fresh.process(frame).ids.tolist())
        assert got == expected
        assert wait_until(lambda: tracks_reset_logged(segtrack) > resets), segtrack.output
        assert tracks_reset_logged(segtrack) == resets + 1, segtrack.output
    finally:
        fresh.release()
        result, = set_parameters(probe, tracker=DEFAULT_TRACKER)
        assert result.successful, result.reason
    kept = [core.process(frame, 'kept-tracker').ids.tolist() for frame in before + after]
    assert kept[len(before):] != expected, 'a kept tracker would give the same ids'
    assert any(expected), 'the scene should have tracks'


def jumps_logged(process):
    """Return how many times the node logged a backwards jump of the input stamps."""
    return process.output.count('jumped backwards')


def test_reset_service_and_time_jump_restart_ids(probe, segtrack, outputs, image_publisher,
                                                 core):
    """
    After ~/reset_tracker, and after stamps jump back an hour, ids are those of a fresh start.

    Before the reset the node sees a second scene, whose objects get ids past the first
    scene's (from their second frame on): a node that did not reset would go on with those.
    """
    warm_up(probe, image_publisher, outputs)
    reset_tracks(probe)
    before = [send_and_wait(probe, image_publisher, outputs, frame) for frame in (
        scene_frame(5, 0), scene_frame(5, 1), scene_frame(6, 0), scene_frame(6, 1))]
    highest = max(max(detection_ids(outputs, header), default=0) for header in before)
    reset_tracks(probe)
    for index in (2, 3):
        header = send_and_wait(probe, image_publisher, outputs, scene_frame(6, index))
        expected = core.process(scene_frame(6, index), 'after-reset')
        assert detection_ids(outputs, header) == expected.ids.tolist()
        assert max(expected.ids) < highest  # without the reset the ids would go on

    send_and_wait(probe, image_publisher, outputs, scene_frame(5, 2))
    jumps = jumps_logged(segtrack)
    for index in (4, 5):
        past = probe.header()
        past.stamp.sec -= 3600  # a looping bag: an hour back, then on from there
        send_and_wait(probe, image_publisher, outputs, scene_frame(6, index), header=past)
        expected = core.process(scene_frame(6, index), 'after-jump')
        assert detection_ids(outputs, past) == expected.ids.tolist()
    assert max(expected.ids) < highest
    assert wait_until(lambda: jumps_logged(segtrack) == jumps + 1), segtrack.output


def test_stamp_jitter_keeps_the_tracks(probe, segtrack, outputs, image_publisher, core):
    """A stamp 5 ms behind the previous one (two drivers' clocks) is no jump: no reset, no log."""
    warm_up(probe, image_publisher, outputs)
    reset_tracks(probe)
    jumps = jumps_logged(segtrack)
    frames = (scene_frame(7, 0), scene_frame(7, 1), scene_frame(8, 1), scene_frame(8, 2))
    stamps = []
    for index, frame in enumerate(frames):
        header = probe.header()
        if index == 2:  # the new scene comes 5 ms behind the frame before
            header.stamp.sec, header.stamp.nanosec = divmod(stamps[-1] - 5_000_000, 10**9)
        stamps.append(header.stamp.sec * 10**9 + header.stamp.nanosec)
        send_and_wait(probe, image_publisher, outputs, frame, header=header)
        expected = core.process(frame, 'jitter')
        assert detection_ids(outputs, header) == expected.ids.tolist(), index
        if index == 2:  # a reset would show: fresh tracks number the new objects 1, 2, ...
            fresh = core.process(frame, 'fresh-at-jitter')
            assert set(fresh.ids) != set(expected.ids)
    assert jumps_logged(segtrack) == jumps, segtrack.output


def test_predict_then_track_starts_new_tracks(probe, segtrack, outputs, image_publisher, core):
    """
    Mode track -> predict -> track at run time: the ids are those of a fresh tracker.

    Before predict the node tracks a second scene, whose objects get ids past the first
    scene's; a tracker kept through predict mode would take those objects up again with them.
    """
    warm_up(probe, image_publisher, outputs)
    reset_tracks(probe)
    before = [send_and_wait(probe, image_publisher, outputs, scene_frame(scene, index))
              for scene in (11, 12) for index in (0, 1, 2)]  # TrackTrack confirms on frame 3
    highest = max(max(detection_ids(outputs, header), default=0) for header in before)
    assert all(result.successful
               for result in set_parameters(probe, color_mode='class', mode='predict'))
    for index in (2, 3):
        send_and_wait(probe, image_publisher, outputs, scene_frame(12, index))
    assert all(result.successful
               for result in set_parameters(probe, mode='track', color_mode='track'))
    for index in (4, 5):
        header = send_and_wait(probe, image_publisher, outputs, scene_frame(12, index))
        expected = core.process(scene_frame(12, index), 'after-predict')
        assert detection_ids(outputs, header) == expected.ids.tolist(), index
    assert max(expected.ids) < highest  # the kept tracker would go on past the first scene


@pytest.mark.parametrize('content, reason', [
    ('tracker_type: [bytetrack\n', 'is not valid YAML'),
    ('- bytetrack\n', 'YAML mapping'),
])
def test_a_broken_tracker_file_is_refused_and_the_node_goes_on(
        probe, segtrack, outputs, image_publisher, tmp_path, content, reason):
    """A tracker file that is no YAML mapping: the parameter is refused with why; frames go on."""
    warm_up(probe, image_publisher, outputs)
    path = tmp_path / 'broken.yaml'
    path.write_text(content)
    result, = set_parameters(probe, tracker=str(path))
    assert not result.successful and reason in result.reason, result.reason
    send_and_wait(probe, image_publisher, outputs, scene_frame(1, 0))
    assert segtrack.process.poll() is None and 'Traceback' not in segtrack.output


def test_fast_publisher_is_dropped_not_queued(probe, segtrack, outputs, image_publisher):
    """Frames sent faster than the model runs are dropped and counted; no queue builds up."""
    warm_up(probe, image_publisher, outputs)
    frames = [make_frame(40 + index) for index in range(4)]
    burst = []
    for index in range(60):
        header = probe.header(step_ms=5)
        image_publisher.publish(image_codec.to_image_msg(frames[index % 4], 'bgr8', header))
        burst.append(header)
        # 200 frames a second, several times what the model keeps up with; sent all at once,
        # best-effort delivery itself dropped the last ones (one CI run in tens), not the node.
        time.sleep(0.005)
    last = burst[-1].stamp
    assert wait_until(lambda: outputs['detections'].by_stamp(last)), 'the newest frame was lost'
    answered = sum(bool(outputs['detections'].by_stamp(h.stamp)) for h in burst)
    assert answered < len(burst) / 2
    assert wait_until(lambda: (latest_diagnostics(outputs['diagnostics'], 'dropped') or 0) > 0)


def test_bad_input_is_skipped_and_counted(probe, segtrack, outputs, image_publisher):
    """A message with too little data is skipped, logged and counted; the next frame works."""
    warm_up(probe, image_publisher, outputs)
    bad = image_codec.to_image_msg(make_frame(50), 'bgr8', probe.header())
    bad.data = bytes(100)
    image_publisher.publish(bad)  # alone: a frame right behind it could replace it unread
    assert wait_until(lambda: (latest_diagnostics(outputs['diagnostics'], 'bad_inputs') or 0) >= 1)
    send_and_wait(probe, image_publisher, outputs, make_frame(51))
    assert 'bad input image skipped' in segtrack.output


def test_large_images_reach_best_effort_subscribers(probe, segtrack, outputs, image_publisher):
    """1920×1080 outputs cross processes to a best-effort subscriber too."""
    warm_up(probe, image_publisher, outputs)
    frame = make_frame(60, 1920, 1080)
    header = send_and_wait(probe, image_publisher, outputs, frame,
                           topics=('annotated_image', 'best_effort'))
    received = outputs['best_effort'].by_stamp(header.stamp)[0]
    assert (received.width, received.height) == (1920, 1080)


def test_compressed_input(probe, untrained_weights):
    """input_transport compressed: JPEG in on image/compressed, outputs out."""
    namespace = '/cam_c'
    process = NodeProcess('segtrack_node', {
        'model': untrained_weights, 'device': 'cpu', 'conf': UNTRAINED_CONF, 'imgsz': 320,
        'max_det': 4, 'mode': 'predict', 'input_transport': 'compressed'}, namespace)
    try:
        masks = probe.collect(Image, f'{namespace}/instance_mask')
        publisher = probe.publisher(CompressedImage, f'{namespace}/image/compressed')
        assert probe.wait_for_graph(
            lambda node: node.count_subscribers(f'{namespace}/image/compressed') > 0,
            TIMEOUT), process.output
        frame = make_frame(70, 640, 480)

        def answered():
            message = image_codec.to_compressed_msg(frame, probe.header())
            publisher.publish(message)
            return masks.wait_for_count(1, 0.5)
        assert wait_until(answered), process.output
        assert (masks.messages[0].width, masks.messages[0].height) == (640, 480)
    finally:
        code, _ = process.stop()
    assert code == 0, process.output


@pytest.mark.parametrize('values, message', [
    ({'mode': 'banana'}, 'mode must be one of'),
    ({'color_mode': 'track', 'mode': 'predict'}, 'color_mode track needs mode track'),
    ({'conf': 2.0}, 'conf'),
    ({'model': '/no/such/model.pt'}, 'not found'),
    ({'device': 'cuda:0'}, 'CUDA'),
    ({'model': 'yolov8n.yaml'}, 'not a segmentation'),
    ({'tracker': 'missing_tracker.yaml'}, 'not found'),
    ({'imgsz': 100}, 'imgsz'),
])
def test_bad_parameters_at_start_exit_with_one_line(values, message):
    """A bad start is one clear error line and a non-zero exit, no traceback."""
    process = NodeProcess('segtrack_node', {'model': 'yolov8n-seg.yaml', 'device': 'cpu',
                                            **values})
    code = process.wait(timeout=TIMEOUT)
    errors = [line for line in process.lines if line.startswith('segtrack_node: error')]
    assert code == 1, process.output
    assert len(errors) == 1 and message in errors[0], process.output
    assert 'Traceback' not in process.output


@pytest.mark.parametrize('reid_model, message', [
    ('missing/reid.pt', 'not found'), ('yolov8s-cls.pt', 'cannot be downloaded offline')])
def test_missing_reid_model_at_start_is_one_line(tmp_path, reid_model, message):
    """A tracker whose ReID model is neither here nor downloadable offline: one line, no fetch."""
    tracker = tmp_path / 'reid_tracker.yaml'
    tracker.write_text(f'tracker_type: tracktrack\nwith_reid: true\nmodel: {reid_model}\n')
    process = NodeProcess('segtrack_node', {'model': str(BUNDLED_MODEL), 'device': 'cpu',
                                            'tracker': str(tracker)})
    try:
        code = process.wait(timeout=TIMEOUT)
    finally:
        process.stop()  # a node that started anyway
    errors = [line for line in process.lines if line.startswith('segtrack_node: error')]
    assert code == 1, process.output
    assert len(errors) == 1 and message in errors[0], process.output
    assert reid_model in errors[0] and 'reid_tracker.yaml' in errors[0], process.output
    assert 'Traceback' not in process.output and 'Download' not in process.output


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
def test_signals_stop_the_node_cleanly(probe, sig):
    """
    SIGINT and SIGTERM end the node within 2 s with exit code 0, no traceback, nothing left.

    Fast DDS keeps each participant's shared-memory segment in a file in /dev/shm, in RAM, until
    the participant is destroyed: a node that skipped that left 35 MB there at every stop.
    """
    namespace = f'/stop_{sig.name.lower()}'
    process = NodeProcess('segtrack_node', {'model': 'yolov8n-seg.yaml', 'device': 'cpu'},
                          namespace)
    assert probe.wait_for_graph(
        lambda node: node.count_subscribers(f'{namespace}/image') > 0, TIMEOUT), process.output
    segments = shared_memory_segments(process.process.pid)
    assert segments, 'the node owns no Fast DDS segment: this test would see no leak'
    code, seconds = process.stop(sig)
    assert code == 0 and seconds < 2.0, (code, seconds, process.output)
    assert 'Traceback' not in process.output
    assert not [path for path in segments if os.path.exists(path)]


def shared_memory_segments(pid):
    """
    Return the Fast DDS segment files a process owns.

    It maps other participants' segments too, and ports that others share; its own are those
    whose `_el` lock file it holds open.
    """
    descriptors = f'/proc/{pid}/fd'
    locks = set()
    for name in os.listdir(descriptors):
        try:
            locks.add(os.readlink(os.path.join(descriptors, name)))
        except FileNotFoundError:  # a file the process closed in the meantime
            pass
    return sorted(lock.removesuffix('_el') for lock in locks
                  if lock.startswith('/dev/shm/fastdds_') and lock.endswith('_el')
                  and not lock.startswith('/dev/shm/fastdds_port'))


def test_annotated_frame_is_the_frame_when_nothing_is_found(probe, segtrack, outputs,
                                                            image_publisher):
    """With no detections the annotated image is the input, pixel for pixel."""
    warm_up(probe, image_publisher, outputs)
    assert set_parameters(probe, conf=1.0)[0].successful
    frame = make_frame(80)
    header = send_and_wait(probe, image_publisher, outputs, frame)
    annotated = image_codec.decode_image(outputs['annotated_image'].by_stamp(header.stamp)[0])
    assert np.array_equal(annotated, frame)
    assert set_parameters(probe, conf=0.25)[0].successful
    jpeg = image_codec.decode_compressed(
        outputs['annotated_image/compressed'].by_stamp(header.stamp)[0])
    _, reference = cv2.imencode('.jpg', frame, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert cv2.PSNR(jpeg, cv2.imdecode(reference, cv2.IMREAD_COLOR)) > 40
