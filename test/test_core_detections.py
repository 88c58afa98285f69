"""
Tests of segtrack_ros.core.detections: masks at the model's resolution, against ultralytics' own.

The crops are the masks ultralytics' segment predictor makes (`ops.process_mask`,
`ops.process_mask_native`), made box by box; the full-size mask of an instance is ultralytics'
`ops.scale_masks` upscaling of it, pixel for pixel (but for float rounding at exact ties), at any
ratio (4K at imgsz 640 included); the outlines follow it within a pixel of the mask resolution.
"""

import cv2
from hypothesis import given, settings, strategies as st
import numpy as np
import pytest
from segtrack_ros.core import labels
from segtrack_ros.core.crop_predictor import CropPredictor
from segtrack_ros.core.crop_predictor import mask_crops
from segtrack_ros.core.detections import (crops_of_masks, Detections, detections_from_result,
                                          MaskCrops, MaskFrame)
from segtrack_ros.core.segmenter import BUNDLED_MODEL, Segmenter, SegmenterConfig
from segtrack_ros.eval.synthetic import SceneConfig, write_video
from segtrack_ros.io.video_io import read_frames
import torch
from ultralytics import YOLO
from ultralytics.utils import ops

AMBIGUOUS = 1e-4  # logits this close to 0 may take either side in float32


def random_instances(generator, count, proto_shape, box_space, channels=8):
    """Random prototypes (C×h×w), coefficients (N×C) and boxes (N×4) inside `box_space`."""
    protos = generator.normal(size=(channels, *proto_shape)).astype(np.float32)
    coefficients = generator.normal(size=(count, channels)).astype(np.float32)
    height, width = box_space
    corners = generator.uniform(-0.1, 1.1, size=(count, 2, 2)) * (width, height)
    boxes = np.concatenate([corners.min(1), corners.max(1)], axis=1).astype(np.float32)
    return protos, coefficients, boxes


def placed(masks, index, shape):
    """Return crop `index` of `masks` (MaskCrops) placed in a zero image of `shape`."""
    image = np.zeros(shape, bool)
    crop, (x, y) = masks.crops[index], masks.origins[index]
    image[y:y + crop.shape[0], x:x + crop.shape[1]] = crop
    return image


def assert_same_masks(masks, expected, logits):
    """Each crop equals the expected mask, except where the float64 logit is about 0."""
    assert len(masks) == len(expected)
    for index, mask in enumerate(expected):
        differ = placed(masks, index, mask.shape) != mask
        assert not (differ & (np.abs(logits[index]) > AMBIGUOUS)).any(), index


@settings(max_examples=60, deadline=None)
@given(proto_shape=st.tuples(st.integers(2, 40), st.integers(2, 40)),
       count=st.integers(1, 6), seed=st.integers(0, 2**32 - 1))
def test_crops_are_ultralytics_process_mask(proto_shape, count, seed):
    generator = np.random.default_rng(seed)
    shape = (4 * proto_shape[0], 4 * proto_shape[1])  # the inference size, 4 times the protos
    protos, coefficients, boxes = random_instances(generator, count, proto_shape, shape)
    expected = ops.process_mask(torch.from_numpy(protos), torch.from_numpy(coefficients),
                                torch.from_numpy(boxes), shape, upsample=True).numpy()
    logits = torch.nn.functional.interpolate(
        torch.einsum('nc,chw->nhw', torch.from_numpy(coefficients).double(),
                     torch.from_numpy(protos).double())[None], shape, mode='bilinear')[0]
    masks = mask_crops(protos, coefficients, boxes, shape)
    assert masks.shape == shape
    assert_same_masks(masks, expected.astype(bool), logits.numpy())


@settings(max_examples=40, deadline=None)
@given(proto_shape=st.tuples(st.integers(2, 24), st.integers(2, 24)),
       image_shape=st.tuples(st.integers(8, 300), st.integers(8, 300)),
       count=st.integers(1, 4), seed=st.integers(0, 2**32 - 1))
def test_retina_crops_are_ultralytics_process_mask_native(proto_shape, image_shape, count, seed):
    generator = np.random.default_rng(seed)
    protos, coefficients, boxes = random_instances(generator, count, proto_shape, image_shape)
    expected = ops.process_mask_native(torch.from_numpy(protos), torch.from_numpy(coefficients),
                                       torch.from_numpy(boxes), image_shape).numpy()
    double = torch.from_numpy(protos).double()
    logits = torch.einsum('nc,chw->nhw', torch.from_numpy(coefficients).double(), double)
    masks = mask_crops(protos, coefficients, boxes, image_shape, image_shape)
    assert masks.shape == image_shape
    # the float64 reference: ultralytics' own steps on float64 logits
    (height, width), (proto_height, proto_width) = image_shape, proto_shape
    gain = min(4 * proto_height / height, 4 * proto_width / width)
    pad = ((4 * proto_height - max(round(height * gain), 1))
           | (4 * proto_width - max(round(width * gain), 1)))
    factor = 4 // np.gcd(4, pad | pad // 2)
    upsampled = (torch.nn.functional.interpolate(logits[None], scale_factor=int(factor),
                                                 mode='bilinear') if factor > 1 else logits[None])
    reference = ops.scale_masks(upsampled, image_shape)[0].numpy()
    assert_same_masks(masks, expected.astype(bool), reference)


@settings(max_examples=200, deadline=None)
@given(mask_shape=st.tuples(st.integers(1, 80), st.integers(1, 80)),
       image_shape=st.tuples(st.integers(1, 700), st.integers(1, 700)),
       count=st.integers(0, 3), seed=st.integers(0, 2**32 - 1))
def test_mask_equals_ultralytics_scale_masks(mask_shape, image_shape, count, seed):
    generator = np.random.default_rng(seed)
    masks = np.zeros((count, *mask_shape), np.uint8)
    for mask in masks:  # a block, a few stray pixels, or nothing
        y, x = generator.integers(0, mask_shape[0]), generator.integers(0, mask_shape[1])
        mask[y:y + generator.integers(0, 30), x:x + generator.integers(0, 30)] = 1
        mask[generator.random(mask_shape) < 0.01] = 1
    expected = (ops.scale_masks(torch.from_numpy(masks)[None], image_shape)[0] > 0.5).numpy()
    # where an output weighs two source pixels alike, float rounding decides between 0.5 and not
    values = ops.scale_masks(torch.from_numpy(masks).double()[None], image_shape)[0].numpy()
    detections = detections_of(masks, image_shape)
    for index in range(count):
        mask = detections.mask(index)
        differ = mask != expected[index]
        assert not (differ & (np.abs(values[index] - 0.5) > AMBIGUOUS)).any()
        rows, cols = detections.reach(index)
        assert mask[rows, cols].sum() == mask.sum(), 'a pixel outside the reach'


def detections_of(masks, image_shape):
    """Make detections of N×h×w binary masks at the mask resolution, in a `image_shape` frame."""
    crops, origins = crops_of_masks(masks.astype(bool))
    count = len(masks)
    return Detections(
        ids=np.arange(1, count + 1), class_ids=np.zeros(count, np.int64),
        class_names=('thing',) * count, scores=np.linspace(0.9, 0.5, count, dtype=np.float32),
        boxes=np.zeros((count, 4), np.float32), crops=crops, origins=origins,
        mask_shape=masks.shape[1:], image_shape=tuple(image_shape))


@pytest.mark.parametrize('image_shape', [(2160, 3840), (1080, 1920), (576, 768)])
def test_mask_of_a_letterboxed_disc_at_large_upscales(image_shape):
    """A disc at imgsz 640: every pixel of ultralytics' upscaled mask, none lost (4K: 6 times)."""
    height, width = image_shape
    gain = 640 / max(height, width)
    mask_shape = (int(np.ceil(height * gain / 32) * 32), 640)
    masks = np.zeros((1, *mask_shape), np.uint8)
    cv2.circle(masks[0], (320, mask_shape[0] // 2), 150, 1, -1)
    expected = (ops.scale_masks(torch.from_numpy(masks)[None], image_shape)[0] > 0.5).numpy()[0]
    detections = detections_of(masks, image_shape)
    np.testing.assert_array_equal(detections.mask(0), expected)
    # The label image is a nearest resize: it differs from the bilinear one at corners only.
    instance = labels.instance_mask(detections) == 1
    assert np.count_nonzero(instance != expected) < 0.002 * np.count_nonzero(expected)


def test_contours_follow_the_full_size_mask():
    """Contours at the mask resolution, scaled sub-pixel: within one source pixel of the edge."""
    masks = np.zeros((1, 96, 160), np.uint8)
    cv2.ellipse(masks[0], (80, 48), (50, 30), 20, 0, 360, 1, -1)
    detections = detections_of(masks, (250, 416))  # 2.6 times
    (polygon,) = detections.polygons()
    assert polygon.dtype == np.float32 and len(polygon) > 20
    assert np.any(polygon != np.round(polygon)), 'sub-pixel coordinates'
    full = detections.mask(0).astype(np.uint8)
    edge = cv2.morphologyEx(full, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
    distance = cv2.distanceTransform(1 - edge, cv2.DIST_L2, 5)
    x, y = np.round(polygon).astype(int).T
    assert distance[y, x].max() <= 3, 'a contour point farther than one source pixel'
    area = cv2.contourArea(polygon)
    assert abs(area - full.sum()) < 0.05 * full.sum()


def test_contours_in_the_padding_are_clipped_to_the_image():
    masks = np.zeros((1, 64, 64), np.uint8)
    masks[0, 0:40, 10:20] = 1  # rows 0..15 are the letterbox padding of a 64x64 -> 32x64 frame
    detections = detections_of(masks, (32, 64))
    (polygon,) = detections.polygons()
    assert polygon[:, 1].min() == 0 and polygon[:, 1].max() <= 31
    assert detections.mask(0)[:12].all(axis=0)[11:19].all()


def test_mask_crops_index_like_ultralytics_tensors():
    crops = tuple(np.ones((i + 1, i + 2), bool) for i in range(4))
    masks = MaskCrops(crops, np.arange(8).reshape(4, 2), (50, 60))
    assert len(masks[:0]) == 0 and masks[:0].shape == (50, 60)
    chosen = masks[np.array([3, 1])]
    assert [c.shape for c in chosen.crops] == [(4, 5), (2, 3)]
    np.testing.assert_array_equal(chosen.origins, [[6, 7], [2, 3]])
    assert len(masks[np.array([True, False, True, False])]) == 2
    assert len(masks[torch.tensor([0, 2])]) == 2
    assert masks[2].crops[0].shape == (3, 4) and masks.cpu() is masks


def test_to_image_size_is_a_nearest_resize_of_the_content():
    frame = MaskFrame((64, 64), (32, 64))  # content: rows 16..47
    assert frame.content == (16, 0, 48, 64) and not frame.identity
    image = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    np.testing.assert_array_equal(frame.to_image_size(image), image[16:48])
    wide = MaskFrame((8, 8), (24, 24))
    np.testing.assert_array_equal(wide.to_image_size(image[:8, :8]),
                                  np.repeat(np.repeat(image[:8, :8], 3, 0), 3, 1))


def test_from_masks_and_empty():
    masks = np.zeros((2, 20, 30), bool)
    masks[0, 2:5, 3:9] = True
    detections = Detections.from_masks(masks, ids=[4, 5], class_ids=[0, 1],
                                       class_names=('a', 'b'), scores=[0.9, 0.8],
                                       boxes=[[3, 2, 9, 5], [0, 0, 1, 1]])
    assert detections.frame.identity and detections.image_shape == (20, 30)
    assert detections.crops[0].shape == (3, 6) and detections.crops[1].shape == (0, 0)
    np.testing.assert_array_equal(detections.mask(0), masks[0])
    assert not detections.mask(1).any() and detections.contours(1) == []
    empty = Detections.empty((20, 30))
    assert len(empty) == 0 and empty.image_shape == (20, 30) and empty.polygons() == []
    assert labels.owner_image(empty).image(np.arange(1)).shape == (20, 30)


@pytest.fixture(scope='module')
def shapes_frames(tmp_path_factory):
    """Return two frames of a generated video of shapes (768x576)."""
    video = tmp_path_factory.mktemp('shapes') / 'shapes.avi'
    write_video(video, SceneConfig(frames=2, seed=5))
    capture = cv2.VideoCapture(str(video))
    frames = list(read_frames(capture))
    capture.release()
    return frames


def ultralytics_owner(masks, shape):
    """Return the owner image of full-size masks in score order: 0 background, i + 1."""
    owner = np.zeros(shape, np.int64)
    for index in reversed(range(len(masks))):
        owner[masks[index]] = index + 1
    return owner


@pytest.mark.parametrize('size, imgsz, retina', [((3840, 2160), 640, False),
                                                 ((1920, 1080), 320, False),
                                                 ((768, 576), 320, True)])
def test_bundled_model_masks_match_ultralytics(shapes_frames, size, imgsz, retina):
    """4K at imgsz 640 and 1080p at 320: ultralytics' own masks, none lost, and label images."""
    frame = cv2.resize(shapes_frames[1], size)
    segmenter = Segmenter(SegmenterConfig(model=str(BUNDLED_MODEL), device='cpu', mode='predict',
                                          imgsz=imgsz, retina_masks=retina))
    detections = segmenter.process(frame)
    result = YOLO(str(BUNDLED_MODEL)).predict(frame, imgsz=imgsz, retina_masks=retina,
                                              device='cpu', verbose=False)[0]
    order = result.boxes.conf.argsort(descending=True).numpy()
    assert len(detections) == len(order) > 3
    # torch's thread count differs between the two (float noise of the convolutions)
    np.testing.assert_allclose(detections.boxes, result.boxes.xyxy.numpy()[order], atol=1e-3)
    np.testing.assert_allclose(detections.scores, result.boxes.conf.numpy()[order], rtol=1e-5)
    np.testing.assert_array_equal(detections.class_ids, result.boxes.cls.numpy()[order])
    expected = (ops.scale_masks(result.masks.data[None].float(), result.orig_shape)[0]
                > 0.5).numpy()[order]
    for index, mask in enumerate(expected):
        np.testing.assert_array_equal(detections.mask(index), mask)
    # The label image: each instance alone is its own upscaled mask, pixel for pixel; where
    # instances overlap, the owner of a few pixels along the occluding edge may differ.
    owner = ultralytics_owner(expected, frame.shape[:2])
    instance = labels.instance_mask(detections)  # ids are 1..N in predict mode
    covered = expected.sum(axis=0)
    ious = []
    for index, mask in enumerate(expected):
        mine, theirs = instance == index + 1, owner == index + 1
        ious.append(np.count_nonzero(mine & theirs) / np.count_nonzero(mine | theirs))
        rows, cols = detections.reach(index)
        if covered[rows, cols].max() == 1 and not (owner[rows, cols] - (index + 1) * mask[
                rows, cols]).any():
            np.testing.assert_array_equal(mine, mask)
    assert np.mean(ious) >= 0.98, ious
    assert np.count_nonzero(instance != owner) < 0.002 * np.count_nonzero(owner)
    # The crops stay at the model's resolution: their size does not follow the frame's.
    assert detections.mask_shape == (frame.shape[:2] if retina else result.masks.data.shape[1:])


def test_plain_results_give_the_same_detections(shapes_frames):
    """Detections of ultralytics' own Results equal those of CropPredictor's."""
    frame = shapes_frames[0]
    plain = YOLO(str(BUNDLED_MODEL)).predict(frame, imgsz=320, verbose=False)[0]
    crops = YOLO(str(BUNDLED_MODEL)).predict(frame, imgsz=320, verbose=False,
                                             predictor=CropPredictor)[0]
    assert isinstance(crops.masks, MaskCrops)
    mine, theirs = detections_from_result(crops, False), detections_from_result(plain, False)
    assert len(mine) == len(theirs) > 2
    np.testing.assert_array_equal(mine.boxes, theirs.boxes)
    assert mine.mask_shape == theirs.mask_shape
    for a, b, origin_a, origin_b in zip(mine.crops, theirs.crops, mine.origins, theirs.origins):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(origin_a, origin_b)
