"""Tests of segtrack_ros.io.detection_msg: the LabelInfo class map against real label images."""

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from segtrack_ros.core.labels import class_mask
from segtrack_ros.core.segmenter import BUNDLED_MODEL, Segmenter, SegmenterConfig
from segtrack_ros.eval.synthetic import CLASS_NAMES, generate_scene, SceneConfig
from segtrack_ros.io.detection_msg import to_label_info
from std_msgs.msg import Header
from vision_msgs.msg import LabelInfo


def decode(image, label_info):
    """Return the class name of every pixel of a class_mask image, looked up in label_info."""
    names = {entry.class_id: entry.class_name for entry in label_info.class_map}
    return np.vectorize(names.__getitem__, otypes=[object])(image)


@pytest.fixture(scope='module')
def scene_detections():
    """Return a synthetic frame with its ground truth and the bundled model's detections."""
    frame, truth = next(iter(generate_scene(SceneConfig(width=320, height=240, seed=3))))
    segmenter = Segmenter(SegmenterConfig(
        model=str(BUNDLED_MODEL), device='cpu', mode='predict', imgsz=320))
    try:
        return frame, truth, segmenter.class_names, segmenter.process(frame)
    finally:
        segmenter.release()


def test_class_map_lists_background_then_each_class_plus_one():
    header = Header(frame_id='camera')
    header.stamp.sec = 42
    info = to_label_info({0: 'person', 1: 'bicycle', 5: 'bus'}, 0.25, header)
    assert isinstance(info, LabelInfo)
    assert [(c.class_id, c.class_name) for c in info.class_map] == [
        (0, 'background'), (1, 'person'), (2, 'bicycle'), (6, 'bus')]
    assert info.threshold == 0.25
    assert info.header == header


def test_names_listed_by_class_id_give_the_same_map():
    by_id = to_label_info({1: 'square', 0: 'disc'}, 0.5, Header())
    assert to_label_info(['disc', 'square'], 0.5, Header()) == by_id


def test_threshold_survives_serialization_as_float32():
    info = to_label_info(CLASS_NAMES, 0.3, Header())
    back = deserialize_message(serialize_message(info), LabelInfo)
    assert back.threshold == pytest.approx(0.3, abs=1e-7)
    assert back.class_map == info.class_map


def test_map_decodes_a_real_class_mask(scene_detections):
    frame, truth, names, detections = scene_detections
    assert len(detections) >= 2, 'the bundled model should find the shapes'
    decoded = decode(class_mask(detections), to_label_info(names, 0.25, Header()))
    assert decoded.shape == frame.shape[:2]
    assert (decoded == 'background').mean() > 0.5
    # Each instance's own pixels (where a higher score does not cover it) decode to its class.
    covered = np.zeros(frame.shape[:2], bool)
    for index, name in enumerate(detections.class_names):
        mask = detections.mask(index)
        own = mask & ~covered
        assert set(decoded[own]) == {name}
        covered |= mask
    assert set(decoded[~covered]) == {'background'}
    # And the names are the true ones: most pixels of each visible object decode to its class.
    for mask, class_id in zip(truth.masks, truth.class_ids):
        assert (decoded[mask] == CLASS_NAMES[class_id]).mean() > 0.8
