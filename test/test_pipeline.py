"""
The frame pipeline without ROS communication: order, faults, events, batches and fairness.

The bundled shapes model on synthetic scenes gives real detections, tracks and classes; nothing
is mocked. The faults are faulty inputs: truncated serialized messages, a message that cannot
be read, a source that fails.
"""

from functools import lru_cache
import threading
import time

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from segtrack_ros.core.render import RenderConfig
from segtrack_ros.core.segmenter import BUNDLED_MODEL, Segmenter, SegmenterConfig
from segtrack_ros.eval.synthetic import build_scene, render_frame, SceneConfig
from segtrack_ros.io import image_codec
from segtrack_ros.pipeline import FramePipeline, LiveRunner, OUTPUTS, STAMP_JUMP_SECONDS
from sensor_msgs.msg import Image
from std_msgs.msg import Header

TIMEOUT = 60.0
TRACKING = RenderConfig(color_by='track')


@pytest.fixture(scope='module')
def segmenter():
    """Return a CPU segmenter of the bundled model in track mode, shared by the tests."""
    segmenter = Segmenter(SegmenterConfig(model=str(BUNDLED_MODEL), device='cpu', imgsz=320,
                                          mode='track'))
    yield segmenter
    segmenter.release()


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


class Deliveries:
    """What a LiveRunner delivered, by stream; `hold(stream)` makes that delivery wait."""

    def __init__(self):
        self.results = []
        self.released = threading.Event()
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

    def of(self, stream):
        """Return the results delivered for `stream`."""
        with self._lock:
            return [result for result in self.results if result.stream == stream]


def same_detections(found, expected):
    """Tell whether two Detections hold the same ids, classes and boxes (within 0.01 px)."""
    return (found.ids.tolist() == expected.ids.tolist()
            and found.class_ids.tolist() == expected.class_ids.tolist()
            and np.allclose(found.boxes, expected.boxes, atol=0.01))


def test_run_in_order_returns_every_frame_in_order_bad_ones_with_a_problem(segmenter):
    """Every item comes out once, in order: bad inputs and faults with a `problem`."""
    good = [message(scene_frame(3, index)) for index in range(4)]
    bad_encoding = message(scene_frame(3, 4))
    bad_encoding.encoding = 'bgr9'
    truncated = serialize_message(good[0])[:100]
    items = [('cam', good[0], 0), ('cam', bad_encoding, 1), ('cam', good[1], 2),
             ('cam', truncated, 3), ('cam', serialize_message(good[2]), 4),
             ('cam', Unreadable(), 5), ('cam', good[3], 6)]
    pipeline = FramePipeline(segmenter, TRACKING, streams=('cam',),
                             deserialize=lambda stream, data: deserialize_message(data, Image))
    results = list(pipeline.run_in_order(items))
    assert [result.tag for result in results] == list(range(7))
    problems = {result.tag: result.problem for result in results if result.problem}
    assert problems.keys() == {1, 3, 5}, problems
    assert 'bad input image skipped' in problems[1] and 'bgr9' in problems[1]
    assert 'decoding failed' in problems[3] and 'deserialize' in problems[3]
    assert 'decoding failed' in problems[5] and 'camera buffer unmapped' in problems[5]
    for result, source in zip((results[0], results[2], results[4], results[6]), good):
        assert result.messages.keys() == set(OUTPUTS)
        assert all(output.header == source.header for output in result.messages.values())
        assert len(result.detections) > 0
    counts = pipeline.streams['cam'].stats.counts
    assert (counts['processed'], counts['bad_inputs'], counts['errors']) == (4, 1, 2)


def test_closing_run_in_order_early_stops_its_threads(segmenter):
    """A consumer that stops after two frames stops the reading too; no thread is left."""
    taken = []

    def endless():
        while True:
            taken.append(len(taken))
            yield 'cam', scene_frame(3, len(taken) % 40), len(taken)

    pipeline = FramePipeline(segmenter, TRACKING, streams=('cam',))
    results = pipeline.run_in_order(endless(), wanted=('instance_mask',))
    assert [next(results).tag for _ in range(2)] == [1, 2]
    results.close()
    names = {thread.name for thread in threading.enumerate()}
    assert not names & {'decode', 'segment', 'draw'}, names
    read = len(taken)
    time.sleep(0.5)
    assert len(taken) == read <= 20  # the queues hold a few frames, nothing more is read


def test_run_in_order_raises_the_error_of_its_source(segmenter):
    """An unreadable source is the caller's error: raised after the frames read before it."""
    def failing():
        yield 'cam', scene_frame(3, 0), 0
        raise OSError('video file truncated')

    pipeline = FramePipeline(segmenter, TRACKING, streams=('cam',))
    results = pipeline.run_in_order(failing(), wanted=())
    assert next(results).tag == 0
    with pytest.raises(OSError, match='truncated'):
        next(results)


def test_batch_equals_sequential_per_stream_in_track_mode(segmenter):
    """Two streams inferred as one batch get the ids and boxes each would get alone."""
    pipeline = FramePipeline(segmenter, TRACKING, streams=('batch-a', 'batch-b'))
    ids = {'batch-a': set(), 'batch-b': set()}
    for index in range(6):
        frames = {'batch-a': scene_frame(1, index), 'batch-b': scene_frame(2, index + 1)}
        results = pipeline.segment([pipeline.decode(stream, frame)
                                    for stream, frame in frames.items()])
        assert results[0].inference_ms == results[1].inference_ms  # one batch
        for result in results:
            alone = segmenter.process(frames[result.stream], 'alone-' + result.stream)
            assert same_detections(result.detections, alone), (index, result.stream)
            ids[result.stream].update(result.detections.ids.tolist())
    assert ids['batch-a'] and ids['batch-b'] and ids['batch-a'] != ids['batch-b'], ids


def test_different_size_frames_in_one_live_batch(segmenter):
    """Frames of two sizes waiting together are segmented in one take, each at its own size."""
    deliveries = Deliveries()
    pipeline = FramePipeline(segmenter, TRACKING, streams=('first', 'small', 'large'))
    runner = LiveRunner(pipeline, deliveries, lambda stream: {'instance_mask'})
    try:
        deliveries.hold('first')
        runner.put('first', scene_frame(4, 0))
        assert wait_until(lambda: deliveries.of('first'))  # the inference thread waits there
        frames = {'small': scene_frame(5, 0), 'large': scene_frame(6, 0, 640, 480)}
        for stream, frame in frames.items():
            runner.put(stream, frame)
        deliveries.released.set()
        assert wait_until(lambda: deliveries.of('small') and deliveries.of('large'))
    finally:
        runner.close()
    for stream, frame in frames.items():
        result = deliveries.of(stream)[0]
        assert result.images['instance_mask'].shape == frame.shape[:2]
        assert same_detections(result.detections, segmenter.process(frame, 'alone-' + stream))
    assert sum(pipeline.streams[name].stats.counts['processed'] for name in frames) == 2
    assert all(pipeline.streams[name].stats.counts['errors'] == 0 for name in frames)


def test_a_stopped_stream_does_not_stall_another(segmenter):
    """A camera that sent one frame and stopped leaves the other camera's frames flowing."""
    deliveries = Deliveries()
    pipeline = FramePipeline(segmenter, TRACKING, streams=('stopped', 'live'))
    runner = LiveRunner(pipeline, deliveries, lambda stream: {'detections'})
    try:
        runner.put('stopped', scene_frame(7, 0))
        for index in range(6):
            runner.put('live', scene_frame(8, index))
            assert wait_until(lambda: len(deliveries.of('live')) == index + 1), index
    finally:
        runner.close()
    assert len(deliveries.of('stopped')) == 1


def test_a_fast_stream_does_not_starve_a_slow_one(segmenter):
    """
    A camera at 5 times another's rate gets no more frames processed than the slow one.

    Each take holds the newest frame of every stream, so the slow camera loses frames only when
    two of its own arrive during one inference, and the fast one's excess is dropped.
    """
    deliveries = Deliveries()
    pipeline = FramePipeline(segmenter, TRACKING, streams=('fast', 'slow'))
    runner = LiveRunner(pipeline, deliveries, lambda stream: {'detections'})
    sent = {'fast': 0, 'slow': 0}
    frames = [scene_frame(9, index) for index in range(40)]  # made before: sending is fast
    try:
        deadline = time.monotonic() + TIMEOUT
        while len(deliveries.of('fast')) < 6 and time.monotonic() < deadline:
            for stream in ('fast', 'slow') if sent['fast'] % 5 == 0 else ('fast',):
                runner.put(stream, frames[sent[stream] % 40])
                sent[stream] += 1
            time.sleep(0.001)  # far faster than any inference, so frames must be dropped
    finally:
        runner.close()
    processed = {stream: pipeline.streams[stream].stats.counts['processed'] for stream in sent}
    print(f'sent {sent}, processed {processed}')
    assert processed['fast'] >= 6, processed
    assert processed['fast'] < sent['fast'] / 2  # the model cannot keep up: drops, no queue
    assert processed['slow'] >= 0.8 * min(sent['slow'], processed['fast']), (sent, processed)


def test_resets_and_drawing_changes_while_outputs_are_drawn_on_their_own_thread(segmenter):
    """
    Resets and trail changes in a loop, while the publishing thread draws trails: no error.

    The events only mark the frames; the drawing thread alone resets and reconfigures its
    renderer, so no trail disappears under it (the old node raised KeyErrors here).
    """
    deliveries = Deliveries()
    reports = []
    pipeline = FramePipeline(segmenter, RenderConfig(color_by='track', trail_length=8),
                             streams=('race',), report=lambda *report: reports.append(report))
    runner = LiveRunner(pipeline, deliveries, lambda stream: {'annotated_image'}, overlap=True)
    stop = threading.Event()
    changes = [0]

    def change():
        while not stop.is_set():
            pipeline.reset()
            pipeline.configure(RenderConfig(color_by='track',
                                            trail_length=1 + changes[0] % 10))
            changes[0] += 1
            time.sleep(0.001)

    changer = threading.Thread(target=change)
    changer.start()
    try:
        deadline = time.monotonic() + TIMEOUT
        while len(deliveries.results) < 12 and time.monotonic() < deadline:
            runner.put('race', scene_frame(10, len(deliveries.results) % 40))
            time.sleep(0.01)
    finally:
        stop.set()
        changer.join()
        runner.close()
    print(f'{len(deliveries.results)} frames drawn during {changes[0]} resets and changes')
    assert not reports, reports[:3]
    assert len(deliveries.results) >= 12
    assert pipeline.streams['race'].stats.counts['errors'] == 0
    assert any(len(result.detections) for result in deliveries.results)
    assert changes[0] > 100


def test_decoding_faults_are_errors_and_the_next_frame_is_processed(segmenter):
    """Truncated bytes and an unreadable message: counted errors; the inference thread goes on."""
    deliveries = Deliveries()
    reports = []
    pipeline = FramePipeline(segmenter, TRACKING, streams=('cam',),
                             report=lambda *report: reports.append(report),
                             deserialize=lambda stream, data: deserialize_message(data, Image))
    runner = LiveRunner(pipeline, deliveries, lambda stream: {'detections'})
    stats = pipeline.streams['cam'].stats
    try:
        good = message(scene_frame(11, 0))
        for count, fault in enumerate((serialize_message(good)[:-7], Unreadable()), start=1):
            runner.put('cam', fault)
            assert wait_until(lambda: stats.counts['errors'] == count)
            runner.put('cam', serialize_message(good))
            assert wait_until(lambda: len(deliveries.results) == count), count
    finally:
        runner.close()
    assert [kind for kind, _, _ in reports] == ['error', 'error']
    assert deliveries.results[-1].messages['detections'].header == good.header
    figures = stats.snapshot()
    assert (figures['errors'], figures['bad_inputs'], figures['recent_problems']) == (2, 0, 2)


def test_stamp_jitter_keeps_the_tracks_and_a_jump_back_resets_them(segmenter):
    """
    5 ms backwards between frames is jitter: nothing logged, tracks kept; seconds reset them.

    The frames switch scenes where the stamps go back, so a reset shows: the new scene's
    objects get ids 1, 2, ... after a reset and higher ones without.
    """
    start = time.time()
    frames = [(scene_frame(1, 0), start), (scene_frame(1, 1), start + 0.033),
              (scene_frame(2, 1), start + 0.028),  # 5 ms behind the frame before
              (scene_frame(2, 2), start + 0.066),
              (scene_frame(1, 2), start - STAMP_JUMP_SECONDS - 1.0),  # a looping bag
              (scene_frame(1, 3), start - STAMP_JUMP_SECONDS - 0.967)]
    reports = []
    pipeline = FramePipeline(segmenter, TRACKING, streams=('stamps',),
                             report=lambda *report: reports.append(report))
    results = list(pipeline.run_in_order(
        [('stamps', message(frame, seconds), index)
         for index, (frame, seconds) in enumerate(frames)], wanted=()))
    kept = [segmenter.process(frame, 'kept') for frame, _ in frames]
    fresh_at_jitter = segmenter.process(frames[2][0], 'fresh-at-jitter')
    fresh_at_jump = [segmenter.process(frame, 'fresh-at-jump') for frame, _ in frames[4:]]
    assert set(fresh_at_jitter.ids) != set(kept[2].ids)  # a reset would show at the jitter
    assert set(fresh_at_jump[0].ids) != set(kept[4].ids)  # and at the jump
    for index, result in enumerate(results):
        expected = kept[index] if index < 4 else fresh_at_jump[index - 4]
        assert same_detections(result.detections, expected), index
    assert len(reports) == 1, reports
    kind, stream, text = reports[0]
    assert (kind, stream) == ('info', 'stamps') and 'jumped backwards' in text
