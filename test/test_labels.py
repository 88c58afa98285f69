"""Tests of segtrack_ros.labels on handcrafted detections."""

import numpy as np
import pytest
from segtrack_ros.detections import Detections
from segtrack_ros.labels import class_mask, instance_mask, mask_values, owner_image

HEIGHT, WIDTH = 60, 80


def square(x1, y1, x2, y2):
    """Return a bool mask, True on columns x1..x2-1 and rows y1..y2-1."""
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[y1:y2, x1:x2] = True
    return mask


def detections(masks, ids, class_ids, scores):
    """Make detections of `masks` (by descending score), each boxed by its mask's extent."""
    boxes = []
    for mask in masks:
        rows, cols = np.nonzero(mask)
        boxes.append((cols.min(), rows.min(), cols.max() + 1, rows.max() + 1))
    return Detections(
        ids=np.array(ids, np.int64), class_ids=np.array(class_ids, np.int64),
        class_names=tuple(f'class{c}' for c in class_ids),
        scores=np.array(scores, np.float32), boxes=np.array(boxes, np.float32),
        masks=np.stack(masks), tracked=True)


@pytest.fixture
def overlapping():
    """Three instances: a high-score square over a low-score one, and one apart."""
    return detections(
        [square(10, 10, 40, 40), square(25, 20, 60, 50), square(65, 0, 80, 10)],
        ids=[7, 3, 12], class_ids=[2, 0, 2], scores=[0.9, 0.6, 0.3])


def test_instance_mask_values_and_overlap(overlapping):
    image = instance_mask(overlapping)
    assert image.dtype == np.uint16 and image.shape == (HEIGHT, WIDTH)
    expected = np.zeros((HEIGHT, WIDTH), np.uint16)
    expected[20:50, 25:60] = 3
    expected[10:40, 10:40] = 7  # the higher score owns the overlap
    expected[0:10, 65:80] = 12
    np.testing.assert_array_equal(image, expected)


def test_class_mask_values_and_overlap(overlapping):
    image = class_mask(overlapping)
    assert image.dtype == np.uint16 and image.shape == (HEIGHT, WIDTH)
    expected = np.zeros((HEIGHT, WIDTH), np.uint16)
    expected[20:50, 25:60] = 1  # class 0 is 1, not background
    expected[10:40, 10:40] = 3
    expected[0:10, 65:80] = 3
    np.testing.assert_array_equal(image, expected)


def test_overlap_goes_to_the_higher_score_whatever_the_size():
    # The low-score instance covers the high-score one entirely.
    dets = detections([square(30, 20, 40, 30), square(0, 0, 80, 60)],
                      ids=[1, 2], class_ids=[5, 6], scores=[0.8, 0.7])
    image = instance_mask(dets)
    assert np.all(image[20:30, 30:40] == 1)
    assert np.count_nonzero(image == 1) == 100
    assert np.count_nonzero(image == 2) == HEIGHT * WIDTH - 100
    assert np.all(class_mask(dets)[20:30, 30:40] == 6)


def test_owner_image_shared_by_both_masks(overlapping):
    owner = owner_image(overlapping)
    np.testing.assert_array_equal(instance_mask(overlapping, owner), instance_mask(overlapping))
    np.testing.assert_array_equal(class_mask(overlapping, owner), class_mask(overlapping))


def test_mask_values_wrap_and_skip_background():
    values = mask_values([1, 2, 65534, 65535, 65536, 65537, 131070, 131071])
    np.testing.assert_array_equal(values, [1, 2, 65534, 65535, 1, 2, 65535, 1])
    assert values.min() >= 1


def test_instance_mask_wraps_large_track_ids():
    dets = detections([square(0, 0, 10, 10), square(20, 20, 30, 30), square(40, 40, 50, 50)],
                      ids=[65536, 65535, 200000], class_ids=[0, 0, 0], scores=[0.9, 0.8, 0.7])
    image = instance_mask(dets)
    assert image[5, 5] == 1
    assert image[25, 25] == 65535
    assert image[45, 45] == (200000 - 1) % 65535 + 1
    assert image[55, 5] == 0


def test_empty_detections_give_zeros():
    empty = Detections.empty((HEIGHT, WIDTH), tracked=True)
    for function in (instance_mask, class_mask):
        image = function(empty)
        assert image.dtype == np.uint16 and image.shape == (HEIGHT, WIDTH)
        assert not image.any()


def test_empty_mask_instance_leaves_background():
    dets = detections([square(0, 0, 10, 10)], ids=[4], class_ids=[1], scores=[0.5])
    dets = Detections(ids=dets.ids, class_ids=dets.class_ids, class_names=dets.class_names,
                      scores=dets.scores, boxes=dets.boxes, masks=np.zeros_like(dets.masks))
    assert not instance_mask(dets).any()
    assert not class_mask(dets).any()
