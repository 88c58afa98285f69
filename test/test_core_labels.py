"""
Tests of segtrack_ros.core.labels on handcrafted detections.

At the input size (handmade masks) the label images are the masks painted in score order; masks
at a lower resolution give, at any upscale and letterbox, exactly the instances' own upscaled
masks (`Detections.mask`, ultralytics' `scale_masks`) painted in score order.
"""

import cv2
from hypothesis import given, settings, strategies as st
import numpy as np
import pytest
from segtrack_ros.core.detections import crops_of_masks, Detections
from segtrack_ros.core.labels import class_mask, instance_mask, mask_values, owner_image

HEIGHT, WIDTH = 60, 80


def square(x1, y1, x2, y2):
    """Return a bool mask, True on columns x1..x2-1 and rows y1..y2-1."""
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[y1:y2, x1:x2] = True
    return mask


def detections(masks, ids, class_ids, scores, boxes=None):
    """Make detections of `masks` (by descending score), boxed by each mask's extent."""
    if boxes is None:
        boxes = []
        for mask in masks:
            rows, cols = np.nonzero(mask)
            boxes.append((cols.min(), rows.min(), cols.max() + 1, rows.max() + 1))
    return Detections.from_masks(
        np.stack(masks), ids=ids, class_ids=class_ids,
        class_names=tuple(f'class{c}' for c in class_ids), scores=scores, boxes=boxes,
        tracked=True)


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
    dets = detections([np.zeros((HEIGHT, WIDTH), bool)], ids=[4], class_ids=[1], scores=[0.5],
                      boxes=[(0, 0, 10, 10)])
    assert not instance_mask(dets).any()
    assert not class_mask(dets).any()


def test_masks_are_labelled_whole_whatever_their_boxes():
    """A mask reaching past its box (as upscaled masks do) is labelled whole, pixel for pixel."""
    masks = [square(10, 10, 40, 40), square(45, 5, 75, 55)]
    for boxes in ([(20, 20, 30, 30), (50, 10, 60, 20)], [(0, 0, 0, 0), (0, 0, 0, 0)]):
        image = instance_mask(detections(masks, ids=[1, 2], class_ids=[0, 0],
                                         scores=[0.9, 0.8], boxes=boxes))
        for value, mask in enumerate(masks, start=1):
            np.testing.assert_array_equal(image == value, mask)


def letterboxed_detections(masks, image_shape, scores):
    """Make detections of N×h×w masks at the mask resolution, in a frame of `image_shape`."""
    crops, origins = crops_of_masks(masks.astype(bool))
    count = len(masks)
    return Detections(
        ids=np.arange(1, count + 1), class_ids=np.arange(count) % 3,
        class_names=tuple(f'class{c}' for c in np.arange(count) % 3),
        scores=np.asarray(scores, np.float32), boxes=np.zeros((count, 4), np.float32),
        crops=crops, origins=origins, mask_shape=masks.shape[1:], image_shape=image_shape)


def painted(detections):
    """Return each instance's full-size mask painted in score order: the exact owner image."""
    owner = np.zeros(detections.image_shape, np.int64)
    for index in reversed(range(len(detections))):
        owner[detections.mask(index)] = index + 1
    return owner


@settings(max_examples=60, deadline=None)
@given(mask_shape=st.tuples(st.integers(8, 48), st.integers(8, 48)),
       scale=st.floats(0.4, 7.0), aspect=st.floats(0.5, 2.0), count=st.integers(1, 8),
       seed=st.integers(0, 2**32 - 1))
def test_upscaled_label_images_are_the_upscaled_masks(mask_shape, scale, aspect, count, seed):
    """Overlapping blobs at any scale and letterbox: the masks of `Detections.mask`, exactly."""
    generator = np.random.default_rng(seed)
    height, width = mask_shape
    image_shape = (max(round(height * scale), 1), max(round(height * scale * aspect), 1))
    masks = np.zeros((count, height, width), np.uint8)
    for mask in masks:  # ellipses, triangles and specks: corners, diagonals, overlaps
        centre = tuple(int(v) for v in generator.integers(0, (width, height)))
        axes = tuple(int(v) for v in generator.integers(1, 12, 2))
        cv2.ellipse(mask, centre, axes, float(generator.uniform(0, 180)), 0, 360, 1, -1)
        corners = generator.integers(0, (width, height), (3, 2)).astype(np.int32)
        cv2.fillPoly(mask, [corners], 1)
        mask[generator.random(mask_shape) < 0.02] = 1
    dets = letterboxed_detections(masks, image_shape, np.linspace(0.9, 0.1, count))
    owner = owner_image(dets)
    expected = painted(dets)
    np.testing.assert_array_equal(instance_mask(dets, owner), expected)
    classes = np.concatenate(([0], dets.class_ids + 1))[expected]
    np.testing.assert_array_equal(class_mask(dets, owner), classes)


@pytest.mark.parametrize('image_shape', [(2160, 3840), (1080, 1920), (250, 416)])
def test_crowd_of_overlapping_squares_at_large_upscales(image_shape):
    """Forty overlapping squares at imgsz 640 (4K: 6 times): every pixel of every mask."""
    gain = 640 / max(image_shape)
    mask_shape = (int(np.ceil(image_shape[0] * gain / 32) * 32), 640)
    generator = np.random.default_rng(1)
    masks = np.zeros((40, *mask_shape), np.uint8)
    for mask in masks:
        x, y = generator.integers(0, (600, mask_shape[0] - 20))
        size = generator.integers(8, 60)
        mask[y:y + size, x:x + size] = 1
    dets = letterboxed_detections(masks, image_shape, np.linspace(0.9, 0.1, 40))
    np.testing.assert_array_equal(instance_mask(dets), painted(dets))
