"""
The frame pipeline's stages without threads or ROS communication: batches, events, stamps.

The bundled shapes model on synthetic scenes gives real detections, tracks and classes; nothing
is mocked. The runners that put the stages on threads are tested in test_runners.py.
"""

import subprocess
import sys
import time

import numpy as np
from pipeline_harness import (header_at, message, same_detections, scene_frame,
                              tracking_segmenter)
import pytest
from segtrack_ros.core.render import RenderConfig
from segtrack_ros.pipeline import DEPTH_OUTPUTS, FramePipeline, OUTPUTS, STAMP_JUMP_SECONDS
from sensor_msgs.msg import Image

TRACKING = RenderConfig(color_by='track')


@pytest.fixture(scope='module')
def segmenter():
    """Return a CPU segmenter of the bundled model in track mode, shared by the tests."""
    segmenter = tracking_segmenter()
    yield segmenter
    segmenter.release()


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
    results = [pipeline.segment([pipeline.decode('stamps', message(frame, seconds))])[0]
               for frame, seconds in frames]
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


def test_a_new_tracker_or_mode_resets_tracks_and_trails_and_other_changes_do_not(segmenter):
    """The node passes every setting on each change: only mode and tracker changes reset."""
    reports = []
    pipeline = FramePipeline(segmenter, RenderConfig(color_by='track', trail_length=30),
                             streams=('changes',), report=lambda *report: reports.append(report))
    stream = pipeline.streams['changes']

    def next_frame(index):
        result = pipeline.segment([pipeline.decode('changes', scene_frame(3, index))])[0]
        pipeline.finish(result, ('annotated_image',))

    next_frame(0)
    config = segmenter.config
    pipeline.configure(mode='track', tracker=config.tracker, conf=config.conf + 0.01)
    next_frame(1)
    assert stream.resets == 0
    pipeline.configure(mode='predict', tracker=config.tracker, conf=config.conf)
    next_frame(2)
    assert stream.resets == 1 and stream.drawn_resets == 1
    pipeline.configure(mode='track', tracker=config.tracker, conf=config.conf)
    next_frame(3)
    assert stream.resets == 2 and stream.drawn_resets == 2
    pipeline.configure(mode='track', tracker='botsort.yaml', conf=config.conf)
    next_frame(4)
    assert stream.resets == 3 and stream.drawn_resets == 3
    pipeline.configure(mode='track', tracker=config.tracker, conf=config.conf)
    next_frame(5)
    assert [text for kind, _, text in reports if kind == 'tracks_reset'] == [
        f"tracker '{tracker}': tracks reset on every camera"
        for tracker in (config.tracker, 'botsort.yaml', config.tracker)], reports


def test_a_tracker_that_cannot_load_is_reported_and_the_old_one_goes_on(segmenter, tmp_path):
    """A ReID model file that exists but is no model: one error, old tracks kept, conf applied."""
    broken = tmp_path / 'broken-reid.pt'
    broken.write_bytes(b'not a model')
    tracker = tmp_path / 'botsort-reid.yaml'
    tracker.write_text(f'tracker_type: botsort\nwith_reid: true\nmodel: {broken}\n'
                       'track_high_thresh: 0.25\ntrack_low_thresh: 0.1\n'
                       'new_track_thresh: 0.25\ntrack_buffer: 30\nmatch_thresh: 0.8\n'
                       'fuse_score: true\ngmc_method: none\nproximity_thresh: 0.5\n'
                       'appearance_thresh: 0.8\n')
    reports = []
    pipeline = FramePipeline(segmenter, TRACKING, streams=('broken',),
                             report=lambda *report: reports.append(report))
    config = segmenter.config
    for index in range(3):
        pipeline.segment([pipeline.decode('broken', scene_frame(4, index))])
    pipeline.configure(mode='track', tracker=str(tracker), conf=config.conf + 0.05)
    result = pipeline.segment([pipeline.decode('broken', scene_frame(4, 3))])[0]
    try:
        assert [kind for kind, _, _ in reports] == ['error'], reports
        assert str(broken) in reports[0][2] and config.tracker in reports[0][2]
        assert segmenter.config.tracker == config.tracker
        assert segmenter.config.conf == pytest.approx(config.conf + 0.05)
        assert pipeline.streams['broken'].resets == 0 and result.detections.ids.min() >= 1
    finally:
        segmenter.update(conf=config.conf)


def test_importing_the_pipeline_needs_no_3d_message_packages():
    """segtrack-video runs without vision_msgs and visualization_msgs: depth is imported lazily."""
    code = ('import sys, segtrack_ros.pipeline; '
            'print(sorted(name for name in sys.modules if name.split(".")[0] in '
            '("vision_msgs", "visualization_msgs", "geometry_msgs", "segtrack_ros.depth_stage")'
            ' or name == "segtrack_ros.depth_stage"))')
    loaded = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            check=True).stdout.strip()
    assert loaded == '[]'


def depth_frame(pipeline, seconds):
    """Segment a stamped frame of stream 'rgbd' of `pipeline`; give it a depth image first."""
    image = np.full((30, 40), 1000, '<u2')
    pipeline.streams['rgbd'].depth.put_image(Image(
        header=header_at(seconds), height=30, width=40, encoding='16UC1', step=80,
        data=image.tobytes()))
    return pipeline.segment([pipeline.decode('rgbd', message(scene_frame(4, 0), seconds))])[0]


def test_a_bad_depth_input_or_a_3d_fault_costs_only_the_3d_outputs(segmenter):
    reports = []
    pipeline = FramePipeline(segmenter, TRACKING, streams=('rgbd',), depth_tolerance=0.02,
                             report=lambda kind, stream, text: reports.append((kind, text)))
    # no camera info yet: a bad depth input, reported on its own
    result = pipeline.finish(depth_frame(pipeline, 100.0), OUTPUTS + DEPTH_OUTPUTS)
    assert result.problem is None and 'detections' in result.messages
    assert 'detections_3d' not in result.messages
    assert reports[-1][0] == 'bad_depth' and 'camera_info' in reports[-1][1]
    # a camera info whose K is not a list of numbers: a fault in the 3D stage
    pipeline.streams['rgbd'].depth.put_info(type('Broken', (), {'k': 'not numbers'})())
    result = pipeline.finish(depth_frame(pipeline, 101.0), OUTPUTS + DEPTH_OUTPUTS)
    assert result.problem is None and 'detections' in result.messages
    assert reports[-1][0] == 'error' and '2D outputs kept' in reports[-1][1]
    assert pipeline.streams['rgbd'].stats.counts['bad_inputs'] == 1
