"""
Tests of segtrack_ros.core.tracking: every tracker ultralytics ships, per camera, as ultralytics.

The reference is ultralytics itself: `model.track(frame, persist=True)` on each camera's frames
alone, one model per camera. The segmenter infers the cameras' frames as one batch and must give
each camera the same ids, boxes and masks, for every tracker type, with and without ReID.
"""

import time

import numpy as np
import pytest
from segtrack_ros.core.segmenter import (
    BUNDLED_MODEL, check_tracker, Segmenter, SegmenterConfig, SegmenterError)
from segtrack_ros.core.tracking import BUNDLED_TRACKERS, DEFAULT_TRACKER
from segtrack_ros.eval.synthetic import generate_scene, SceneConfig
from segtrack_ros.params import PARAMETERS
import torch
from ultralytics import YOLO
from ultralytics.utils import ops, YAML
from ultralytics.utils.checks import check_yaml

IMGSZ = 320
CONF = 0.1  # model.track's default: trackers take low-score detections too
FRAMES = 8  # TrackTrack confirms a track after 3 frames
MIN_IOU = 0.98  # of each instance's mask with ultralytics' upscaled mask
SHIPPED = ('bytetrack', 'botsort', 'ocsort', 'deepocsort', 'fasttrack', 'tracktrack')


@pytest.fixture(scope='module')
def cameras():
    """Return three cameras' frames: three generated scenes of the same size."""
    return [[frame for frame, _ in generate_scene(
        SceneConfig(width=384, height=288, frames=FRAMES, objects=7, seed=seed))]
        for seed in (11, 12, 13)]


def tracker_file(directory, kind, **changes):
    """Write the shipped config of `kind` with `changes` as a user file; return its path."""
    settings = {**YAML.load(check_yaml(f'{kind}.yaml')), **changes}
    path = directory / f"{kind}{'-reid' if changes.get('with_reid') else ''}.yaml"
    YAML.save(path, settings)
    return str(path)


@pytest.fixture(scope='module')
def configs(tmp_path_factory):
    """Return every tracker config to test: the shipped files, and ReID variants as user files."""
    directory = tmp_path_factory.mktemp('trackers')
    return {**{kind: f'{kind}.yaml' for kind in SHIPPED},
            **{f'{kind}-reid': tracker_file(directory, kind, with_reid=True)
               for kind in ('botsort', 'deepocsort', 'tracktrack')},
            'default': check_tracker(DEFAULT_TRACKER)}


def canonical(scores, boxes, *columns):
    """Return `columns` ordered by descending score, ties broken by the box."""
    boxes = np.asarray(boxes, np.float64)
    order = np.lexsort((*boxes.T[::-1], -np.asarray(scores)))
    return [np.asarray(column)[order] for column in columns]


def ultralytics_frames(frames, tracker):
    """
    Track one camera's frames alone with ultralytics.

    Return (ids, boxes, masks) per frame, and ultralytics' tracker.
    """
    model = YOLO(str(BUNDLED_MODEL))
    states = []
    for frame in frames:
        result = model.track(frame, persist=True, tracker=tracker, conf=CONF, imgsz=IMGSZ,
                             device='cpu', verbose=False)[0]
        if result.boxes.id is None:
            states.append((np.zeros(0, np.int64), np.zeros((0, 4)),
                           np.zeros((0,) + frame.shape[:2])))
            continue
        masks = (ops.scale_masks(result.masks.data[None], result.orig_shape)[0] > 0.5).numpy()
        states.append(canonical(result.boxes.conf.numpy(), result.boxes.xyxy.numpy(),
                                result.boxes.id.numpy().astype(np.int64),
                                result.boxes.xyxy.numpy(), masks))
    return states, model.predictor.trackers[0]


def segmenter_frames(segmenter, cameras):
    """Track the cameras' frames batched together; return (ids, boxes, masks) per camera, frame."""
    streams = [f'camera{index}' for index in range(len(cameras))]
    states = [[] for _ in cameras]
    for frames in zip(*cameras):
        for index, detections in enumerate(segmenter.process_batch(frames, streams)):
            masks = np.array([detections.mask(i) for i in range(len(detections))]).reshape(
                (-1,) + detections.image_shape)
            states[index].append(canonical(detections.scores, detections.boxes, detections.ids,
                                           detections.boxes, masks))
    return states


def assert_same_tracks(got, expected):
    """Assert that per-frame (ids, boxes, masks) agree: ids exactly, boxes and masks closely."""
    for frame, ((ids, boxes, masks), (ids_ref, boxes_ref, masks_ref)) in enumerate(
            zip(got, expected)):
        np.testing.assert_array_equal(ids, ids_ref, err_msg=f'frame {frame}')
        np.testing.assert_allclose(boxes, boxes_ref, atol=1e-2, err_msg=f'frame {frame}')
        for mask, mask_ref in zip(masks, masks_ref):
            union = np.count_nonzero(mask | mask_ref)
            assert not union or np.count_nonzero(mask & mask_ref) / union >= MIN_IOU


def make_segmenter(tracker):
    """Make a CPU segmenter of the bundled model, tracking with `tracker`."""
    return Segmenter(SegmenterConfig(model=str(BUNDLED_MODEL), device='cpu', mode='track',
                                     tracker=tracker, conf=CONF, imgsz=IMGSZ))


def appearance(tracker):
    """Map track id -> last appearance feature of the tracks a tracker holds."""
    return {track.track_id: track.curr_feat
            for track in tracker.tracked_stracks + tracker.lost_stracks}


def assert_same_appearance(segmenter, references):
    """Assert each camera's tracker holds the features of ultralytics' tracker, track by track."""
    for index, reference in enumerate(references):
        got, want = (appearance(segmenter._tracking._trackers[f'camera{index}']),
                     appearance(reference))
        assert got.keys() == want.keys() and len(got) > 1
        for track_id, feature in want.items():
            assert feature is not None
            np.testing.assert_allclose(got[track_id], feature, atol=1e-4)


@pytest.mark.parametrize('kind', [*SHIPPED, 'botsort-reid', 'deepocsort-reid', 'tracktrack-reid',
                                  'default'])
def test_each_camera_tracked_as_ultralytics_alone(configs, cameras, kind):
    tracker = configs[kind]
    expected, references = zip(*(ultralytics_frames(frames, tracker) for frames in cameras))
    assert sum(len(ids) for ids, _, _ in expected[0]) > FRAMES, 'the scene should have tracks'
    segmenter = make_segmenter(tracker)
    (alone,) = segmenter_frames(segmenter, cameras[:1])
    assert_same_tracks(alone, expected[0])
    segmenter.reset()
    for got, want in zip(segmenter_frames(segmenter, cameras), expected):
        assert_same_tracks(got, want)
    if kind.endswith('-reid') or kind == 'default':  # each camera's tracker got its features
        assert_same_appearance(segmenter, references)


def test_one_default_tracker_bundled_with_the_package():
    assert check_tracker(DEFAULT_TRACKER) == str(BUNDLED_TRACKERS / DEFAULT_TRACKER)
    assert SegmenterConfig().tracker == DEFAULT_TRACKER
    assert next(spec.default for spec in PARAMETERS if spec.name == 'tracker') == DEFAULT_TRACKER
    settings = YAML.load(check_tracker(DEFAULT_TRACKER))
    assert settings['tracker_type'] == 'tracktrack' and settings['with_reid'] is True


@pytest.fixture(scope='module')
def reid_file(tmp_path_factory):
    """Return the path of an untrained classification model, a ReID model for the trackers."""
    path = tmp_path_factory.mktemp('reid') / 'untrained-cls.pt'
    torch.manual_seed(0)
    YOLO('yolov8n-cls.yaml').save(str(path))
    return str(path)


def test_reid_model_loaded_once_and_shared(tmp_path, cameras, reid_file):
    # two cameras, few frames: the ReID model runs on every detection's crop, at 224x224
    cameras = [frames[:4] for frames in cameras[:2]]
    tracker = tracker_file(tmp_path, 'botsort', with_reid=True, model=reid_file)
    expected, references = zip(*(ultralytics_frames(frames, tracker) for frames in cameras))
    segmenter = make_segmenter(tracker)
    for got, want in zip(segmenter_frames(segmenter, cameras), expected):
        assert_same_tracks(got, want)
    assert_same_appearance(segmenter, references)
    trackers = segmenter._tracking._trackers.values()
    assert len(trackers) == 2
    assert all(tracker.encoder is segmenter._tracking.encoder for tracker in trackers)


@pytest.mark.parametrize('model, message', [
    ('missing/reid.pt', 'not found'), ('yolov8s-cls.pt', 'cannot be downloaded offline')])
def test_missing_reid_weights_fail_at_start_offline(no_network, tmp_path, monkeypatch, model,
                                                    message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr('ultralytics.utils.ONLINE', False)
    tracker = tracker_file(tmp_path, 'tracktrack', with_reid=True, model=model)
    start = time.perf_counter()
    with pytest.raises(SegmenterError, match=message) as error:
        check_tracker(tracker)
    assert model in str(error.value) and '\n' not in str(error.value)
    with pytest.raises(SegmenterError, match=message):
        make_segmenter(tracker)
    assert time.perf_counter() - start < 10
    assert no_network == []
    assert sorted(path.name for path in tmp_path.iterdir()) == ['tracktrack-reid.yaml']


def test_tracker_change_at_run_time_resets_tracks(configs, cameras):
    frames = cameras[0]
    fresh = [ids for ids, _, _ in ultralytics_frames(frames[:4], configs['tracktrack-reid'])[0]]
    segmenter = make_segmenter('bytetrack.yaml')
    predictor = segmenter._model.predictor
    before = [segmenter.process(frame).ids for frame in frames[4:]]
    assert max(map(max, before)) > 1
    segmenter.update(tracker=configs['tracktrack-reid'])
    assert '_hook' in vars(predictor)
    after = [np.sort(segmenter.process(frame).ids) for frame in frames[:4]]
    assert [a.tolist() for a in after] == [np.sort(ids).tolist() for ids in fresh]
    with pytest.raises(SegmenterError, match='missing.yaml'):
        segmenter.update(tracker='missing.yaml')
    assert segmenter.process(frames[4]).ids.size, 'a refused change keeps the tracks'
    segmenter.update(mode='predict')
    assert '_hook' not in vars(predictor) and predictor._feats is None
    segmenter.update(mode='track', tracker='bytetrack.yaml')
    again = [segmenter.process(frame).ids for frame in frames[4:]]
    assert [a.tolist() for a in again] == [b.tolist() for b in before], 'fresh tracks again'


def test_reid_auto_on_an_exported_model_offline_tracks_by_motion(tmp_path, cameras, monkeypatch):
    # An export has no torch head to take features from: ultralytics would download its own
    # ReID model instead, which it cannot offline. The default tracker still runs, by motion.
    monkeypatch.setattr('ultralytics.utils.ONLINE', False)
    monkeypatch.setattr('ultralytics.utils.SETTINGS', {'weights_dir': tmp_path})
    segmenter = Segmenter(SegmenterConfig(
        model=str(BUNDLED_MODEL), device='cpu', mode='track', conf=CONF, imgsz=IMGSZ,
        export_format='onnx', export_dir=str(tmp_path)))
    tracking = segmenter._tracking
    assert segmenter.config.tracker == DEFAULT_TRACKER
    assert not tracking.native_features and tracking.encoder is None
    assert tracking.settings.model == 'auto' and '_hook' not in vars(tracking.predictor)
    assert any(len(segmenter.process(frame)) for frame in cameras[0])
