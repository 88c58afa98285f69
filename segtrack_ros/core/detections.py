"""
The per-frame result of the package: `Detections`; the one place that reads ultralytics `Results`.

Each instance's mask stays at the model's resolution (the letterboxed inference size, or the input
size with `retina_masks`), cropped to where it is set: a few kilobytes an instance, whatever the
input size. What must be full size is made from these crops on demand: one instance's mask
(`Detections.mask`), the outlines (`Detections.contours`, sub-pixel, like ultralytics' `masks.xy`),
and, in `labels`, the label images by one resize of a small one.

Everything downstream (rendering, label images, ROS messages, evaluation) works on `Detections`, so
a change in ultralytics' result layout touches this file only.
"""

from dataclasses import dataclass
from functools import cached_property, lru_cache
import math

import cv2
import numpy as np


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
        rows = _upsample_axis(y - top, crop.shape[0], frame.content_shape[0], self.image_shape[0])
        cols = _upsample_axis(x - left, crop.shape[1], frame.content_shape[1],
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
        rows = _upsample_axis(y - top, crop.shape[0], frame.content_shape[0], self.image_shape[0])
        cols = _upsample_axis(x - left, crop.shape[1], frame.content_shape[1],
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
        return _content_box(self.shape, self.image_shape)

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


def corner_owners(detections, owner):
    """
    Where the nearest resize of `owner` (an index image of the mask frame) is not exact.

    Upscaled bilinearly (as `scale_masks` does) and thresholded at 0.5, a mask differs from its
    nearest resize only in cells of 2×2 source pixels whose labels do not split along a row or a
    column (corners and diagonal steps), or at outputs that weigh both sides of an edge alike
    (a tie: 0.5 is not more than 0.5). There, each output pixel goes to the first instance
    (by score) whose own upscaled mask holds it, the instances hidden under others at the four
    source pixels included. Returns the rows, columns and owner indices (0 for the background) of
    those output pixels: with them, the owner image equals the instances' `mask`s painted in
    score order, pixel for pixel.
    """
    frame = detections.frame
    if frame.identity:
        return np.zeros(0, np.intp), np.zeros(0, np.intp), owner[:0, 0]
    top, left, bottom, right = frame.content
    height, width = bottom - top, right - left
    # Cell (r, c) holds the outputs whose first taps are source pixel (r, c); the taps past the
    # last row and column repeat it, as torch clamps them.
    owner = np.pad(owner[top:bottom, left:right], ((0, 1), (0, 1)), mode='edge')
    across = owner[:, :-1] == owner[:, 1:]  # a pixel and its right neighbour alike
    down = owner[:-1] == owner[1:]  # a pixel and the one below alike
    rows_alike = across[:-1] & across[1:]  # the cell's top pair alike, and its bottom pair
    uniform = rows_alike & down[:, :-1]
    straight = np.logical_or(rows_alike, down[:, :-1] & down[:, 1:], out=rows_alike)
    # a straight edge is a nearest copy too, but for outputs weighing both sides about equally
    ties = (_tie_cells(height, frame.image_shape[0])[:, None]
            | _tie_cells(width, frame.image_shape[1])[None, :])
    ties &= ~uniform
    cell_rows, cell_cols = np.divmod(np.flatnonzero(ties | ~straight), width)
    rows, row_weight, row_valid = _cell_outputs(cell_rows, height, frame.image_shape[0])
    cols, col_weight, col_valid = _cell_outputs(cell_cols, width, frame.image_shape[1])
    weights = row_weight[:, :, None], col_weight[:, None, :]
    # Each output takes the tap label whose weight exceeds 0.5. When none does (three labels,
    # or two across a diagonal), an instance hidden at the taps may still reach 0.5.
    taps = [owner[cell_rows + dy, cell_cols + dx] for dy in (0, 1) for dx in (0, 1)]
    result = np.zeros((len(cell_rows), rows.shape[1], cols.shape[1]), owner.dtype)
    decided = np.zeros(result.shape, bool)
    for label in taps:
        above = _bilinear_value([tap == label for tap in taps], *weights) > 0.5
        np.maximum(result, np.where(above, label[:, None, None], 0), out=result)
        decided |= above
    valid = row_valid[:, :, None] & col_valid[:, None, :]
    contested = np.flatnonzero((~decided & valid).any(axis=(1, 2)))
    if len(contested):
        tap_rows = np.minimum(cell_rows[contested, None] + (0, 1), height - 1) + top
        tap_cols = np.minimum(cell_cols[contested, None] + (0, 1), width - 1) + left
        result[contested] = _exact_owners(detections, tap_rows, tap_cols,
                                          *(weight[contested] for weight in weights))
    shape = result.shape
    return (np.broadcast_to(rows[:, :, None], shape)[valid],
            np.broadcast_to(cols[:, None, :], shape)[valid], result[valid])


def _bilinear_value(taps, row_weight, col_weight):
    """Bilinear value, as torch weighs them, of 0/1 taps (four K-vectors) at K×S×S outputs."""
    upper_left, upper_right, lower_left, lower_right = (
        tap.astype(np.float32)[:, None, None] for tap in taps)
    return ((1 - row_weight) * (upper_left * (1 - col_weight) + upper_right * col_weight)
            + row_weight * (lower_left * (1 - col_weight) + lower_right * col_weight))


def _exact_owners(detections, tap_rows, tap_cols, row_weight, col_weight):
    """Owner (index + 1, or 0) of the outputs of cells with taps at mask-frame rows, columns."""
    sizes = np.array([crop.shape for crop in detections.crops]).reshape(-1, 2)
    x0, y0 = detections.origins[:, 0], detections.origins[:, 1]
    x1, y1 = x0 + sizes[:, 1], y0 + sizes[:, 0]
    near = ((tap_rows[:, 1:] >= y0) & (tap_rows[:, :1] < y1)
            & (tap_cols[:, 1:] >= x0) & (tap_cols[:, :1] < x1))
    cells, instances = np.nonzero(near)
    flat = np.concatenate([crop.ravel() for crop in detections.crops] + [np.zeros(1, bool)])
    starts = np.concatenate(([0], np.cumsum(sizes[:, 0] * sizes[:, 1])))[instances]
    height, width = sizes[instances, 0], sizes[instances, 1]
    taps = []
    for dy in (0, 1):
        for dx in (0, 1):
            y = tap_rows[cells, dy] - y0[instances]
            x = tap_cols[cells, dx] - x0[instances]
            inside = (y >= 0) & (y < height) & (x >= 0) & (x < width)
            taps.append(flat[np.where(inside, starts + y * width + x, -1)])
    held = _bilinear_value(taps, row_weight[cells], col_weight[cells]) > 0.5
    # Pairs come by cell, then by instance, and every cell has one (an instance owns a tap):
    # the first instance holding an output is the minimum over the cell's pairs.
    groups = np.flatnonzero(np.concatenate(([True], cells[1:] != cells[:-1])))
    first = np.minimum.reduceat(np.where(held, instances[:, None, None], len(detections)),
                                groups, axis=0)
    return np.where(first < len(detections), first + 1, 0)


@lru_cache(maxsize=16)
def _tie_cells(source_size, size):
    """Cells (by first source pixel) holding an output whose second weight is about 0.5."""
    first, _, weight = _bilinear_taps(source_size, size)
    ties = np.zeros(source_size, bool)
    ties[first[np.abs(weight - 0.5) < 1e-3]] = True
    ties.flags.writeable = False
    return ties


def _cell_outputs(cells, source_size, size):
    """Return the outputs whose first tap is each of `cells`: indices, weights, valid (K×S)."""
    first, _, weight = _bilinear_taps(source_size, size)
    starts = np.searchsorted(first, np.arange(source_size + 1))
    counts = starts[cells + 1] - starts[cells]
    steps = np.arange(max(int(counts.max(initial=0)), 1))
    outputs = np.minimum(starts[cells][:, None] + steps, size - 1)
    return outputs, weight[outputs], steps < counts[:, None]


def _content_box(mask_shape, image_shape):
    """Top, left, bottom, right of the image inside the letterboxed mask, as ultralytics crops."""
    (height, width), (image_height, image_width) = mask_shape, image_shape
    gain = min(height / image_height, width / image_width)
    content_height = max(round(image_height * gain), 1)
    content_width = max(round(image_width * gain), 1)
    top = round((height - content_height) / 2 - 0.1)
    left = round((width - content_width) / 2 - 0.1)
    return top, left, top + content_height, left + content_width


@lru_cache(maxsize=32)
def _bilinear_taps(source_size, size, scale=None):
    """
    Source indices and weights of every output of a 1-D bilinear resize, as torch computes them.

    `align_corners=False`; `scale` (source per output) is `source_size / size` unless given, as
    `F.interpolate` takes it from `scale_factor`. Returns read-only (first, second, weight).
    """
    scale = np.float32(source_size / size if scale is None else scale)
    position = np.arange(size, dtype=np.float32)
    position = np.maximum(scale * (position + np.float32(0.5)) - np.float32(0.5), np.float32(0))
    first = np.minimum(np.floor(position).astype(np.intp), source_size - 1)
    weight = np.clip(position - first, 0, 1).astype(np.float32)
    taps = first, np.minimum(first + 1, source_size - 1), weight
    for array in taps:
        array.flags.writeable = False
    return taps


def _upsample_axis(start, length, source_size, size):
    """
    Along one axis: outputs reached by source pixels start..start+length-1, and their taps.

    Returns (stop, start) of the outputs, then the two tap indices into the source span padded
    by one zero on each side, and the weight of the second tap.
    """
    first, second, weight = _bilinear_taps(source_size, size)
    begin = int(np.searchsorted(second, start, 'left'))
    end = int(np.searchsorted(first, start + length - 1, 'right'))
    low, high = first[begin:end] - start + 1, second[begin:end] - start + 1
    return (begin, end, np.clip(low, 0, length + 1), np.clip(high, 0, length + 1),
            weight[begin:end])


def crops_of_masks(masks):
    """Crop each of N binary masks (N×h×w) to where it is set: (crops, origins)."""
    crops, origins = [], np.zeros((len(masks), 2), np.int64)
    for index, mask in enumerate(masks):
        crop, origins[index] = _trim(mask, 0, 0)
        crops.append(crop)
    return tuple(crops), origins


def _trim(mask, x, y):
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


def mask_crops(protos, coefficients, boxes, shape, image_shape=None):
    """
    Each instance's binary mask at `shape`, cropped to its box and then to its set pixels.

    The masks ultralytics' segment predictor makes, computed only inside each box: with
    `image_shape` None, `ops.process_mask(..., upsample=True)` (prototypes resized to the
    letterboxed inference size `shape`, boxes at that size); else `ops.process_mask_native`
    (retina masks: resized through the letterbox to the input size `shape == image_shape`, boxes
    in input pixels). `protos` (C×h×w), `coefficients` (N×C) and `boxes` (N×4) are float arrays.
    Returns `MaskCrops`; an instance whose mask is empty has a 0×0 crop.
    """
    protos = np.asarray(protos, np.float32)
    shape, image_shape = tuple(shape), image_shape and tuple(image_shape)
    channels = protos.shape[0]
    rows = _interpolation_matrix(protos.shape[1], protos.shape[2], shape, image_shape, 0)
    cols = _interpolation_matrix(protos.shape[1], protos.shape[2], shape, image_shape, 1)
    crops, origins = [], np.zeros((len(boxes), 2), np.int64)
    for index, (coefficient, box) in enumerate(zip(np.asarray(coefficients, np.float32),
                                                   np.asarray(boxes, np.float32))):
        # ultralytics' crop_mask keeps columns c with x1 <= c < x2, rows likewise
        x0, y0 = (min(max(math.ceil(v), 0), size) for v, size in zip(box[:2], shape[::-1]))
        x1, y1 = (min(max(math.ceil(v), 0), size) for v, size in zip(box[2:], shape[::-1]))
        if x1 <= x0 or y1 <= y0:
            crops.append(np.zeros((0, 0), bool))
            continue
        (weights_y, p0, p1), (weights_x, q0, q1) = rows.window(y0, y1), cols.window(x0, x1)
        window = protos[:, p0:p1, q0:q1]
        logits = (coefficient @ window.reshape(channels, -1)).reshape(window.shape[1:])
        crop, origins[index] = _trim(weights_y @ logits @ weights_x.T > 0, x0, y0)
        crops.append(crop)
    return MaskCrops(crops, origins, shape)


class _Interpolation:
    """A 1-D resize as a matrix (outputs × sources) and each output's band of sources."""

    def __init__(self, matrix):
        self.matrix = matrix
        nonzero = matrix != 0
        self.low = nonzero.argmax(axis=1)
        self.high = matrix.shape[1] - nonzero[:, ::-1].argmax(axis=1)

    def window(self, start, stop):
        """Weights of outputs start..stop-1 over the sources they need, and those sources."""
        low, high = int(self.low[start:stop].min()), int(self.high[start:stop].max())
        return self.matrix[start:stop, low:high], low, high


@lru_cache(maxsize=16)
def _interpolation_matrix(proto_height, proto_width, shape, image_shape, axis):
    """Return the resize of ultralytics' prototypes to `shape` along `axis` (0: rows, 1: cols)."""
    source = (proto_height, proto_width)[axis]
    if image_shape is None:  # process_mask: one bilinear resize to the inference size
        return _Interpolation(_matrix(source, shape[axis]))
    # process_mask_native: an exact 1, 2 or 4 times upsampling, then scale_masks to the image
    height, width = image_shape
    gain = min(4 * proto_height / height, 4 * proto_width / width)
    pad = ((4 * proto_height - max(round(height * gain), 1))
           | (4 * proto_width - max(round(width * gain), 1)))
    factor = 4 // math.gcd(4, pad | pad // 2)
    upsampled = (factor * proto_height, factor * proto_width)
    first = (_matrix(source, factor * source, scale=1 / factor) if factor > 1
             else np.eye(source, dtype=np.float32))
    top, left, bottom, right = _content_box(upsampled, image_shape)
    start, stop = ((top, bottom), (left, right))[axis]
    second = _matrix(stop - start, image_shape[axis])
    return _Interpolation((second.astype(np.float64)
                           @ first[start:stop].astype(np.float64)).astype(np.float32))


def _matrix(source_size, size, scale=None):
    """Return the bilinear resize of `_bilinear_taps` as a (size × source_size) float32 matrix."""
    first, second, weight = _bilinear_taps(source_size, size, scale)
    matrix = np.zeros((size, source_size), np.float32)
    outputs = np.arange(size)
    np.add.at(matrix, (outputs, first), 1 - weight)
    np.add.at(matrix, (outputs, second), weight)
    return matrix


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
