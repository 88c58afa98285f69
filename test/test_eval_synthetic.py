"""Tests of the synthetic scene generator and its ground truth (segtrack_ros.eval.synthetic)."""

import itertools

import cv2
from hypothesis import given, settings
from hypothesis import strategies as st
import numpy as np
import pytest
from segtrack_ros.eval.synthetic import (
    build_scene, CLASS_NAMES, generate_scene, load_truth, mask_box, mask_polygon,
    path_offsets, SceneConfig, shape_mask, write_video, write_yolo_dataset,
    yolo_label_lines)

SMALL = SceneConfig(width=384, height=288, frames=12, objects=8, seed=11)


@pytest.fixture(scope='module')
def scene():
    """Return the small test scene."""
    return build_scene(SMALL)


@pytest.fixture(scope='module')
def frames():
    """Return the frames and ground truth of the small test scene."""
    return list(generate_scene(SMALL))


def iou(a, b):
    """Return the intersection over union of two bool masks."""
    return (a & b).sum() / (a | b).sum()


def test_same_seed_same_video(frames):
    again = list(generate_scene(SMALL))
    for (image, truth), (image2, truth2) in zip(frames, again):
        assert np.array_equal(image, image2)
        assert np.array_equal(truth.id_map, truth2.id_map)
        assert np.array_equal(truth.class_ids, truth2.class_ids)
    other = next(generate_scene(SceneConfig(width=384, height=288, frames=1, seed=12)))
    assert not np.array_equal(other[0], frames[0][0])


def test_frames_are_bgr_of_the_configured_size(frames):
    assert len(frames) == SMALL.frames
    for image, truth in frames:
        assert image.shape == (SMALL.height, SMALL.width, 3) and image.dtype == np.uint8
        assert truth.masks.shape == (len(truth.ids), SMALL.height, SMALL.width)


def test_masks_disjoint_non_empty_and_inside_their_boxes(frames):
    for _, truth in frames:
        masks = truth.masks
        assert (masks.sum(axis=0) <= 1).all()
        assert np.array_equal(truth.ids, np.unique(truth.ids))
        for mask, (x1, y1, x2, y2) in zip(masks, truth.boxes.astype(int)):
            assert mask.any()
            assert mask[y1:y2, x1:x2].sum() == mask.sum()
            assert mask_box(mask) == (x1, y1, x2, y2)


def test_ids_persist_with_their_object(scene, frames):
    tracks = {track.track_id: track for track in scene.tracks}
    shape = (SMALL.height, SMALL.width)
    for t, (_, truth) in enumerate(frames):
        for track_id, class_id, mask in zip(truth.ids, truth.class_ids, truth.masks):
            track = tracks[track_id]
            assert class_id == track.class_id
            assert not (mask & ~shape_mask(track, t, shape)).any()


def test_frames_show_several_classes_and_crossings(frames):
    assert {int(c) for _, truth in frames for c in truth.class_ids} == set(range(len(CLASS_NAMES)))
    assert all(3 <= len(truth.ids) <= SMALL.objects for _, truth in frames)


def test_upper_object_owns_and_colours_the_overlap(scene, frames):
    shape = (SMALL.height, SMALL.width)
    overlaps = 0
    for t, (image, truth) in enumerate(frames):
        full = [shape_mask(track, t, shape) for track in scene.tracks]
        for (lower, low_mask), (upper, up_mask) in itertools.combinations(
                zip(scene.tracks, full), 2):
            overlap = low_mask & up_mask
            if not overlap.any():
                continue
            overlaps += 1
            owners = set(np.unique(truth.id_map[overlap]).tolist())
            above = {track.track_id for track in scene.tracks[scene.tracks.index(upper):]}
            assert owners <= above
            mine = overlap & (truth.id_map == upper.track_id)
            if mine.sum() >= 20:
                colour = np.median(image[truth.id_map == upper.track_id], axis=0)
                assert np.abs(image[mine].mean(axis=0) - colour).max() < 10
    assert overlaps > 0


def test_ring_hole_shows_what_lies_beneath(scene, frames):
    rings = [track for track in scene.tracks if CLASS_NAMES[track.class_id] == 'ring']
    assert rings
    for t, (_, truth) in enumerate(frames):
        for ring in rings:
            x, y = np.round(ring.centres[t]).astype(int)
            if 0 <= x < SMALL.width and 0 <= y < SMALL.height:
                assert truth.id_map[y, x] != ring.track_id


@settings(max_examples=25, deadline=None)
@given(st.floats(-8, 8), st.floats(-8, 8), st.floats(-0.05, 0.05), st.integers(-60, 60))
def test_path_offsets_integrate_the_turning_velocity(vx, vy, turn_rate, frames):
    step = frames / 2000
    angles = turn_rate * step * (np.arange(2000) + 0.5)  # midpoint rule
    expected = step * np.array([np.sum(vx * np.cos(angles) - vy * np.sin(angles)),
                                np.sum(vx * np.sin(angles) + vy * np.cos(angles))])
    offset = path_offsets(np.array([vx, vy]), turn_rate, np.array([frames]))[0]
    assert np.allclose(offset, expected, atol=1e-3)


def test_video_and_truth_round_trip(tmp_path):
    config = SceneConfig(width=192, height=144, frames=5, seed=3)
    truths = write_video(tmp_path / 'scene.avi', config)
    capture = cv2.VideoCapture(str(tmp_path / 'scene.avi'))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == config.frames
    ok, image = capture.read()
    assert ok and image.shape == (144, 192, 3)
    loaded = load_truth(tmp_path / 'scene.npz')
    assert len(loaded) == len(truths)
    for truth, again in zip(truths, loaded):
        assert np.array_equal(truth.id_map, again.id_map)
        assert np.array_equal(truth.ids, again.ids)
        assert np.array_equal(truth.class_ids, again.class_ids)


def polygon_mask(line, shape):
    """Return the class and the rasterized mask of a label line, for an image of ``shape``."""
    values = line.split()
    height, width = shape
    points = np.array(values[1:], float).reshape(-1, 2) * (width, height)
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 1)
    return int(values[0]), mask.astype(bool)


def test_label_polygons_rasterize_to_the_visible_masks(frames):
    checked = 0
    for _, truth in frames:
        lines = yolo_label_lines(truth, min_area=50)
        kept = [(c, m) for c, m in zip(truth.class_ids, truth.masks) if m.sum() >= 50]
        assert len(lines) == len(kept)
        for line, (class_id, mask) in zip(lines, kept):
            label_class, label_mask = polygon_mask(line, mask.shape)
            assert label_class == class_id
            # The bridges between the parts of a split object weigh more on small ones.
            assert iou(label_mask, mask) > (0.9 if mask.sum() >= 400 else 0.75)
            checked += 1
    assert checked > 20


def test_mask_polygon_keeps_holes_and_split_parts():
    drawn = np.zeros((60, 90), np.uint8)
    cv2.circle(drawn, (25, 30), 20, 1, -1)
    cv2.circle(drawn, (25, 30), 10, 0, -1)
    drawn[10:50, 60:80] = 1
    mask = drawn.astype(bool)
    filled = np.zeros(mask.shape, np.uint8)
    cv2.fillPoly(filled, [np.round(mask_polygon(mask)).astype(np.int32)], 1)
    assert not filled[30, 25] and filled[30, 70]
    assert iou(filled.astype(bool), mask) > 0.95


def test_yolo_dataset_layout(tmp_path):
    video = SceneConfig(width=384, height=288, frames=3, seed=4)
    data = write_yolo_dataset(tmp_path, n_train=3, n_val=2, imgsz=160, test_video=video)
    text = data.read_text()
    for i, name in enumerate(CLASS_NAMES):
        assert f'{i}: {name}' in text
    counts = {'train': 3, 'val': 2, 'test': 3}
    for split, count in counts.items():
        images = sorted((tmp_path / 'images' / split).glob('*.jpg'))
        labels = sorted((tmp_path / 'labels' / split).glob('*.txt'))
        assert len(images) == len(labels) == count
        assert cv2.imread(str(images[0])).shape[:2] == (120, 160)
    for (_, truth), label in zip(generate_scene(video),
                                 sorted((tmp_path / 'labels' / 'test').glob('*.txt'))):
        for line in label.read_text().splitlines():
            class_id, mask = polygon_mask(line, truth.id_map.shape)
            assert max(iou(mask, m) for m in truth.masks[truth.class_ids == class_id]) > 0.9
