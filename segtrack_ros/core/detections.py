"""
The per-frame result of the package: `Detections`; the one place that reads ultralytics `Results`.

Each instance's mask stays at the model's resolution (the letterboxed inference size, or the input
size with `retina_masks`), cropped to where it is set: a few kilobytes an instance, whatever the
input size. What must be full size is made from these crops on demand: one instance's mask
(`Detections.mask`), the outlines (`Detections.contours`, sub-pixel, like ultralytics' `masks.xy`),
and, in `labels`, the label images by one resize of a small one. The crops are made box by box
in `crop_predictor`; the bilinear arithmetic all three share is in `resize`.

Everything downstream (rendering, label images, ROS messages, evaluation) works on `Detections`, so
a change in ultralytics' result layout touches this file only.
"""

from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np
from segtrack_ros.core.resize import content_box, upsample_axis


@dataclass(frozen=True)
class Detections:
    """
    Instances found in one frame, sorted by descending score.

    `ids` are track ids when `tracked` (track mode) and 1..N otherwise (predict mode). Instance i's
    mask is `crops[i]`, a bool array whose top-left pixel is `origins[i]` (x, y) in the mask frame
    of size `mask_shape`; that frame covers the input frame (`image_shape`) as ultralytics'
    letterbox does, or equals it (`retina_masks`, handmade masks).

    >>> dets = segmenter.process(frame)
    >>> for name, score, box in zip(dets.class_names, dets.scores, dets.boxes): ...
    >>> person = dets.mask(0)   # H×W bool, made on demand
    """

    ids: np.ndarray          # (N,) int64
    class_ids: np.ndarray    # (N,) int64
    class_names: tuple       # (N,) str
    scores: np.ndarray       # (N,) float32
    boxes: np.ndarray        # (N, 4) float32, x1 y1 x2 y2 in input pixels
    crops: tuple             # (N,) bool arrays at the mask resolution
    origins: np.ndarray      # (N, 2) int64, x y of each crop in the mask frame
    mask_shape: tuple        # (h, w) of the mask frame
    image_shape: tuple       # (H, W) of the input frame
    tracked: bool = False

    def __len__(self):
        return len(self.ids)

    @classmethod
    def empty(cls, image_shape, tracked=False):
        """No instances in a frame of `image_shape` (height, width)."""
        shape = tuple(image_shape[:2])
        return cls(
            ids=np.zeros(0, np.int64), class_ids=np.zeros(0, np.int64), class_names=(),
            scores=np.zeros(0, np.float32), boxes=np.zeros((0, 4), np.float32), crops=(),
            origins=np.zeros((0, 2), np.int64), mask_shape=shape, image_shape=shape,
            tracked=tracked)

    @classmethod
    def from_masks(cls, masks, ids, class_ids, class_names, scores, boxes, tracked=False):
        """Make detections of full-size bool masks (N×H×W, by descending score), e.g. handmade."""
        masks = np.asarray(masks, bool)
        crops, origins = crops_of_masks(masks)
        return cls(
            ids=np.asarray(ids, np.int64), class_ids=np.asarray(class_ids, np.int64),
            class_names=tuple(class_names), scores=np.asarray(scores, np.float32),
            boxes=np.asarray(boxes, np.float32).reshape(-1, 4), crops=crops, origins=origins,
            mask_shape=masks.shape[1:], image_shape=masks.shape[1:], tracked=tracked)

    @cached_property
    def frame(self):
        """Return the `MaskFrame`: where the mask frame lies in the input frame."""
        return MaskFrame(tuple(self.mask_shape), tuple(self.image_shape))

    def mask(self, index):
        """
        Return the full-size bool mask of instance `index`, H×W.

        Equal to ultralytics' `ops.scale_masks(masks.data[None], orig_shape)[0] > 0.5` for this
        instance (same content crop, bilinear taps and float32 weights), computed only where the
        crop reaches.
        """
        result = np.zeros(self.image_shape, bool)
        crop, (x, y) = self.crops[index], self.origins[index]
        frame = self.frame
        if frame.identity:
            result[y:y + crop.shape[0], x:x + crop.shape[1]] = crop
            return result
        if not crop.size:
            return result
        top, left = frame.content[:2]
        rows = upsample_axis(y - top, crop.shape[0], frame.content_shape[0], self.image_shape[0])
        cols = upsample_axis(x - left, crop.shape[1], frame.content_shape[1],
                             self.image_shape[1])
        (row0, row1, upper_row, lower_row, row_weight) = rows
        (col0, col1, left_col, right_col, col_weight) = cols
        source = np.pad(crop, 1).astype(np.float32)
        upper, lower = source[upper_row], source[lower_row]
        upper = upper[:, left_col] * (1 - col_weight) + upper[:, right_col] * col_weight
        lower = lower[:, left_col] * (1 - col_weight) + lower[:, right_col] * col_weight
        result[row0:row1, col0:col1] = (upper * (1 - row_weight)[:, None]
                                        + lower * row_weight[:, None]) > 0.5
        return result

    def contours(self, index):
        """
        Outer contours of instance `index`'s mask, as (K, 2) float32 arrays in input pixels.

        Traced on the crop at the mask resolution and scaled, sub-pixel, to the input frame (as
        ultralytics' `masks.xy`, but through pixel centres).
        """
        return self.outlines([index])[0]

    def outlines(self, indices=None):
        """Return the `contours` of every instance (or of `indices`), one list per instance."""
        indices = range(len(self)) if indices is None else indices
        points, lengths, owners = self.outline_points(indices)
        contours = np.split(points, np.cumsum(lengths)[:-1]) if len(lengths) else []
        starts = np.searchsorted(owners, indices, 'left')
        stops = np.searchsorted(owners, indices, 'right')
        return [contours[start:stop] for start, stop in zip(starts, stops)]

    def outline_points(self, indices=None):
        """
        Return the `contours` of instances `indices` (default all, ascending) in one piece.

        (points, lengths, owners): all contours' (P, 2) float32 points in input pixels, one
        after the other, the number of points of each contour, and the instance of each.
        """
        indices = range(len(self)) if indices is None else indices
        traced, owners = [], []
        for index in indices:
            crop = self.crops[index]
            if crop.size:  # crops are trimmed to their set pixels: only an empty one is empty
                found = cv2.findContours(crop.view(np.uint8), cv2.RETR_EXTERNAL,
                                         cv2.CHAIN_APPROX_SIMPLE)[0]
                traced.extend(found)
                owners.extend([index] * len(found))
        lengths = np.array([len(contour) for contour in traced], np.intp)
        owners = np.array(owners, np.intp)
        if not len(traced):
            return np.zeros((0, 2), np.float32), lengths, owners
        points = np.concatenate(traced).reshape(-1, 2)
        points = self.frame.to_image(points + np.repeat(self.origins[owners], lengths, axis=0))
        return points, lengths, owners

    def polygons(self):
        """
        Outline of each instance mask as a list of (K, 2) float32 arrays of input pixels.

        The largest outer contour of each mask (see `contours`); an empty (0, 2) array for an
        empty mask. Computed on demand.
        """
        return [max(contours, key=cv2.contourArea) if contours else np.zeros((0, 2), np.float32)
                for contours in self.outlines()]

    def reach(self, index):
        """Rows and columns (slices) of the input frame that instance `index`'s mask can touch."""
        crop, (x, y) = self.crops[index], self.origins[index]
        frame = self.frame
        if frame.identity or not crop.size:
            return slice(y, y + crop.shape[0]), slice(x, x + crop.shape[1])
        top, left = frame.content[:2]
        rows = upsample_axis(y - top, crop.shape[0], frame.content_shape[0], self.image_shape[0])
        cols = upsample_axis(x - left, crop.shape[1], frame.content_shape[1],
                             self.image_shape[1])
        return slice(*rows[:2]), slice(*cols[:2])


@dataclass(frozen=True)
class MaskFrame:
    """
    The frame masks are computed in (`shape`) and how it covers the input frame (`image_shape`).

    Ultralytics letterboxes the input into the inference size: the image content is the centred
    `content` box (top, left, bottom, right) of the mask frame, scaled by the same gain both ways
    up to rounding; the padding around it belongs to no input pixel.
    """

    shape: tuple
    image_shape: tuple

    @property
    def identity(self):
        """Tell whether masks are at the input size already (retina masks, handmade masks)."""
        return self.shape == self.image_shape

    @cached_property
    def content(self):
        """Top, left, bottom, right of the image inside the mask frame, as ultralytics crops it."""
        return content_box(self.shape, self.image_shape)

    @property
    def content_shape(self):
        """Height and width of the image content in the mask frame."""
        top, left, bottom, right = self.content
        return bottom - top, right - left

    def to_image(self, points):
        """Map (K, 2) mask-frame pixel coordinates (x, y) to float32 input pixels, clipped."""
        points = np.asarray(points, np.float32)
        if self.identity:
            return points.copy()
        scale, offset, limit = self._to_image
        points = points * scale
        points += offset
        np.maximum(points, 0, out=points)
        return np.minimum(points, limit, out=points)

    @cached_property
    def _to_image(self):
        """Scale, offset and upper limit (x, y) of `to_image`: pixel centres to pixel centres."""
        top, left = self.content[:2]
        (height, width), (image_height, image_width) = self.content_shape, self.image_shape
        scale = np.array([image_width / width, image_height / height], np.float32)
        offset = (0.5 - np.array([left, top], np.float32)) * scale - 0.5
        return scale, offset, np.array([image_width - 1, image_height - 1], np.float32)

    def to_image_size(self, image, out=None):
        """
        Bring an image of the mask frame to the input size: crop the content, resize nearest.

        `out`, an array of the result's size and type, may be written to and returned.
        """
        if self.identity:
            return image
        top, left, bottom, right = self.content
        height, width = self.image_shape
        return cv2.resize(image[top:bottom, left:right], (width, height), dst=out,
                          interpolation=cv2.INTER_NEAREST_EXACT)


def crops_of_masks(masks):
    """Crop each of N binary masks (N×h×w) to where it is set: (crops, origins)."""
    crops, origins = [], np.zeros((len(masks), 2), np.int64)
    for index, mask in enumerate(masks):
        crop, origins[index] = trim_mask(mask, 0, 0)
        crops.append(crop)
    return tuple(crops), origins


def trim_mask(mask, x, y):
    """Crop a bool `mask` whose top-left is at (x, y) to its set pixels: (crop, (x, y))."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return np.zeros((0, 0), bool), (x, y)
    crop = mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].astype(bool)
    return crop, (x + cols[0], y + rows[0])


class MaskCrops:
    """
    The masks of one ultralytics `Results`, as crops at the mask resolution.

    `CropPredictor` stores them as `Results.masks`; they can be indexed like ultralytics' own
    masks, so they follow the boxes through the tracker's selection.
    """

    def __init__(self, crops, origins, shape):
        self.crops, self.origins, self.shape = tuple(crops), origins, tuple(shape)

    def __len__(self):
        return len(self.crops)

    def __getitem__(self, index):
        if not isinstance(index, slice):
            index = np.asarray(index)
        chosen = np.atleast_1d(np.arange(len(self.crops))[index])
        return MaskCrops([self.crops[i] for i in chosen], self.origins[chosen], self.shape)

    def cpu(self):
        """Return these crops, numpy arrays already: for Results' own move to the CPU."""
        return self

    numpy = cpu


def detections_from_result(result, tracked):
    """
    Convert one ultralytics segmentation `Results` into `Detections` of the original image.

    The masks are `MaskCrops` (from `CropPredictor`) or ultralytics' own `Masks`, cropped here.
    In track mode (`tracked`) only instances with a confirmed track id are kept; an empty result,
    `masks is None` or `boxes.id is None` give empty detections.
    """
    shape = result.orig_shape
    boxes = result.boxes
    if result.masks is None or boxes is None or len(boxes) == 0 or (tracked and boxes.id is None):
        return Detections.empty(shape, tracked)

    order = boxes.conf.argsort(descending=True).cpu().numpy()
    masks = result.masks
    if not isinstance(masks, MaskCrops):
        data = masks.data.cpu().numpy()
        masks = MaskCrops(*crops_of_masks(data), data.shape[1:])
    masks = masks[order]
    class_ids = boxes.cls.cpu().numpy()[order].astype(np.int64)
    ids = (boxes.id.cpu().numpy()[order].astype(np.int64) if tracked
           else np.arange(1, len(order) + 1, dtype=np.int64))
    return Detections(
        ids=ids,
        class_ids=class_ids,
        class_names=tuple(result.names[int(c)] for c in class_ids),
        scores=boxes.conf.cpu().numpy()[order].astype(np.float32),
        boxes=boxes.xyxy.cpu().numpy()[order].astype(np.float32),
        crops=masks.crops, origins=masks.origins, mask_shape=masks.shape,
        image_shape=tuple(shape), tracked=tracked,
    )
