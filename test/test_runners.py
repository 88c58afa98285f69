"""
The runners over a real pipeline: order, newest frames, fairness, faults, and how they close.

The bundled shapes model on synthetic scenes gives real detections and tracks; nothing is
mocked. A slow step is the callers' own code made to stop at a chosen frame (see
`pipeline_harness.Gate`): a deserializer holds the thread that decodes, `wanted` the thread
that draws, `deliver` the delivery. Threads are counted with `threading.enumerate()`.
"""

import threading
import time

from pipeline_harness import (Deliveries, deserialize_image, Gate, message, same_detections,
                              scene_frame, threads_left, TIMEOUT, tracking_segmenter,
                              Unreadable, wait_until)
import pytest
from rclpy.serialization import serialize_message
from segtrack_ros.core.render import RenderConfig
from segtrack_ros.pipeline import FramePipeline, OUTPUTS
from segtrack_ros.runners import LiveRunner, OrderedRunner

TRACKING = RenderConfig(color_by='track')
PROMPT = 0.5  # seconds: a close that waits for nothing returns far sooner, even under load


@pytest.fixture(scope='module')
def segmenter():
    """Return a CPU segmenter of the bundled model in track mode, shared by the tests."""
    segmenter = tracking_segmenter()
    yield segmenter
    segmenter.release()


def timed_close(runner):
    """Close `runner`; return the seconds the call took."""
    start = time.monotonic()
    runner.close()
    return time.monotonic() - start


# -- the live runner: closing ------------------------------------------------------------------

def test_live_close_with_three_cameras_returns_at_once_and_leaves_no_thread(segmenter):
    """
    Closing while three cameras' frames are being inferred: no wait, and no thread is left.

    The old runner handed results one by one to a two-slot queue; its closing end marker let
    the drawing thread stop first, so the third result of a batch blocked the inference thread
    forever (holding the batch and the pipeline), after `close()` had waited its full timeout.
    """
    streams = ('first', 'a', 'b', 'c')
    gate = Gate({'first', 'c'}, deserialize_image)
    pipeline = FramePipeline(segmenter, TRACKING, streams=streams, deserialize=gate)
    deliveries = Deliveries()
    before = set(threading.enumerate())
    runner = LiveRunner(pipeline, deliveries, lambda stream: {'detections'}, overlap=True)
    payload = serialize_message(message(scene_frame(12, 0)))
    try:
        runner.put('first', payload)
        assert gate.reached('first')  # the inference thread is busy: the next three wait
        for stream in streams[1:]:
            runner.put(stream, payload)
        gate.release('first')
        assert gate.reached('c')  # a, b and c taken as one batch, the model next
        assert wait_until(lambda: deliveries.of('first'))
        closing = timed_close(runner)
    finally:
        gate.release('first')
        gate.release('c')
        runner.close()
    assert closing < PROMPT, closing
    assert not threads_left(before)
    assert [result.stream for result in deliveries.results] == ['first']


def test_live_close_waits_for_no_inference_and_no_drawing(segmenter):
    """
    `close()` returns at once while a frame is drawn and the next one is inferred.

    The node's stop time is then that of the segmenter's release (the inference in progress),
    not two joins with timeouts on top of it. Both threads end right after their step.
    """
    decoding = Gate({'b'}, deserialize_image)
    drawing = Gate({'a'}, lambda stream: {'detections'})
    pipeline = FramePipeline(segmenter, TRACKING, streams=('a', 'b'), deserialize=decoding)
    deliveries = Deliveries()
    before = set(threading.enumerate())
    runner = LiveRunner(pipeline, deliveries, drawing, overlap=True)
    payload = serialize_message(message(scene_frame(13, 0)))
    try:
        runner.put('a', payload)
        assert drawing.reached('a')
        runner.put('b', payload)
        assert decoding.reached('b')
        closing = timed_close(runner)
    finally:
        decoding.release('b')
        drawing.release('a')
        runner.close()
    assert closing < PROMPT, closing
    assert not threads_left(before)
    assert not deliveries.results


@pytest.mark.parametrize('overlap', [False, True], ids=['inline', 'overlapped'])
def test_live_nothing_is_delivered_after_close_even_when_drawing_outlives_it(segmenter,
                                                                             overlap):
    """
    A frame still being drawn when `close()` returns is never delivered.

    The node destroys its publishers right after `close()`: the old runner published such a
    frame on them once the drawing outlasted close's timeout (`InvalidHandle` errors).
    """
    drawing = Gate({'a'}, lambda stream: {'detections', 'annotated_image'})
    pipeline = FramePipeline(segmenter, TRACKING, streams=('a',))
    deliveries = Deliveries()
    before = set(threading.enumerate())
    runner = LiveRunner(pipeline, deliveries, drawing, overlap=overlap)
    try:
        runner.put('a', scene_frame(14, 0))
        assert drawing.reached('a')
        closer = threading.Thread(target=runner.close)
        closer.start()
        closer.join(3.0)  # the old runner gave up waiting for the drawing after 2 s
        assert not closer.is_alive()
    finally:
        drawing.release('a')
        runner.close()
    assert not threads_left(before)
    assert not deliveries.results
    assert pipeline.streams['a'].stats.counts['errors'] == 0


def test_live_close_waits_for_the_delivery_in_progress(segmenter):
    """When `close()` returns, a delivery that had begun has returned; none begins later."""
    deliveries = Deliveries()
    pipeline = FramePipeline(segmenter, TRACKING, streams=('a',))
    before = set(threading.enumerate())
    runner = LiveRunner(pipeline, deliveries, lambda stream: {'detections'}, overlap=True)
    try:
        deliveries.hold('a')
        runner.put('a', scene_frame(15, 0))
        assert wait_until(lambda: deliveries.of('a'))
        closed = []
        closer = threading.Thread(target=lambda: (runner.close(),
                                                  closed.append(time.monotonic())))
        closer.start()
        time.sleep(0.3)
        assert closer.is_alive()  # the delivery holds it
        runner.put('a', scene_frame(15, 1))  # after close began: never delivered
        deliveries.released.set()
        closer.join(TIMEOUT)
        assert deliveries.returned and closed and deliveries.returned[0] <= closed[0]
    finally:
        deliveries.released.set()
        runner.close()
    assert not threads_left(before)
    assert len(deliveries.results) == 1


# -- the live runner: newest frames, batches, fairness, faults ----------------------------------

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
                             deserialize=deserialize_image)
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


# -- the ordered runner --------------------------------------------------------------------------

def test_ordered_returns_every_frame_in_order_bad_ones_with_a_problem(segmenter):
    """Every item comes out once, in order: bad inputs and faults with a `problem`."""
    good = [message(scene_frame(3, index)) for index in range(4)]
    bad_encoding = message(scene_frame(3, 4))
    bad_encoding.encoding = 'bgr9'
    truncated = serialize_message(good[0])[:100]
    items = [('cam', good[0], 0), ('cam', bad_encoding, 1), ('cam', good[1], 2),
             ('cam', truncated, 3), ('cam', serialize_message(good[2]), 4),
             ('cam', Unreadable(), 5), ('cam', good[3], 6)]
    pipeline = FramePipeline(segmenter, TRACKING, streams=('cam',),
                             deserialize=deserialize_image)
    before = set(threading.enumerate())
    results = list(OrderedRunner(pipeline, items))
    assert not set(threading.enumerate()) - before  # the end marker ended every thread
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


def test_closing_the_ordered_runner_early_stops_its_threads(segmenter):
    """A consumer that stops after two frames stops the reading too; no thread is left."""
    taken = []

    def endless():
        while True:
            taken.append(len(taken))
            yield 'cam', scene_frame(3, len(taken) % 40), len(taken)

    pipeline = FramePipeline(segmenter, TRACKING, streams=('cam',))
    before = set(threading.enumerate())
    results = OrderedRunner(pipeline, endless(), wanted=('instance_mask',))
    assert [next(results).tag for _ in range(2)] == [1, 2]
    results.close()
    read = len(taken)
    assert not threads_left(before)
    assert len(taken) == read <= 20  # the queues hold a few frames, nothing more is read
    assert list(results) == []


def test_closing_the_ordered_runner_waits_for_no_stage(segmenter):
    """
    `close()` returns at once while a frame is being decoded; the source is read no more.

    The old runner joined its three threads, so it waited for the frame in each stage.
    """
    gate = Gate({'held'}, deserialize_image)
    taken = []
    payload = serialize_message(message(scene_frame(16, 0)))

    def frames():
        for stream in ('cam', 'cam', 'held', 'cam', 'cam'):
            taken.append(stream)
            yield stream, payload, len(taken)

    pipeline = FramePipeline(segmenter, TRACKING, streams=('cam', 'held'),
                             deserialize=gate)
    before = set(threading.enumerate())
    results = OrderedRunner(pipeline, frames(), wanted=('detections',))
    releaser = threading.Timer(3.0, gate.release, ('held',))  # the old close waited for it
    try:
        assert [next(results).tag for _ in range(2)] == [1, 2]
        assert gate.reached('held')
        releaser.start()
        closing = timed_close(results)
        read = len(taken)
    finally:
        gate.release('held')
        releaser.join()
        results.close()
    assert closing < PROMPT, closing
    assert not threads_left(before)
    assert len(taken) == read


def test_the_ordered_runner_raises_the_error_of_its_source(segmenter):
    """An unreadable source is the caller's error: raised after the frames read before it."""
    def failing():
        yield 'cam', scene_frame(3, 0), 0
        raise OSError('video file truncated')

    pipeline = FramePipeline(segmenter, TRACKING, streams=('cam',))
    results = OrderedRunner(pipeline, failing(), wanted=())
    assert next(results).tag == 0
    with pytest.raises(OSError, match='truncated'):
        next(results)
    assert list(results) == []
