"""
The per-frame result of the package: `Detections`; the one place that reads ultralytics `Results`.

Everything downstream (rendering, label images, ROS messages, evaluation) works on `Detections`, so
a change in ultralytics' result layout touches this file only.
"""

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Detections:
    """
    Instances found in one frame, sorted by descending score.

    `ids` are track ids when `tracked` (track mode) and 1..N otherwise (predict mode).
    `masks` is an N×H×W bool stack at the size of the input frame.

    >>> dets = segmenter.process(frame)
    >>> for name, score, box in zip(dets.class_names, dets.scores, dets.boxes): ...
    """

    ids: np.ndarray          # (N,) int64
    class_ids: np.ndarray    # (N,) int64
    class_names: tuple       # (N,) str
    scores: np.ndarray       # (N,) float32
    boxes: np.ndarray        # (N, 4) float32, x1 y1 x2 y2 in input pixels
    masks: np.ndarray        # (N, H, W) bool
    tracked: bool = False

    def __len__(self):
        return len(self.ids)

    @property
    def image_shape(self):
        """Height and width of the frame the detections belong to."""
        return self.masks.shape[1:]

    @classmethod
    def empty(cls, image_shape, tracked=False):
        """No instances in a frame of `image_shape` (height, width)."""
        return cls(
            ids=np.zeros(0, np.int64), class_ids=np.zeros(0, np.int64), class_names=(),
            scores=np.zeros(0, np.float32), boxes=np.zeros((0, 4), np.float32),
            masks=np.zeros((0, *image_shape[:2]), bool), tracked=tracked)

    def polygons(self):
        """
        Outline of each instance mask as a list of (K, 2) int32 arrays of pixel coordinates.

        The largest outer contour of each mask; an empty (0, 2) array for an empty mask.
        Computed on demand, as it costs time.
        """
        polygons = []
        for mask, box in zip(self.masks, self.boxes):
            contours = mask_contours(mask, box)
            polygons.append(max(contours, key=cv2.contourArea) if contours
                            else np.zeros((0, 2), np.int32))
        return polygons


def box_window(box, image_shape):
    """
    Slices of the image region around `box` (x1, y1, x2, y2) that holds its instance's mask.

    Ultralytics crops masks to their box at the inference size; upscaling to the input size can
    spread them by a pixel or two, hence the margin. Work on masks is done inside this window.
    """
    margin = 4
    height, width = image_shape[:2]
    x1, y1 = max(int(box[0]) - margin, 0), max(int(box[1]) - margin, 0)
    x2, y2 = min(int(box[2]) + margin + 1, width), min(int(box[3]) + margin + 1, height)
    return slice(y1, y2), slice(x1, x2)


def mask_contours(mask, box):
    """Outer contours of a bool `mask` as (K, 2) int32 arrays of pixel coordinates."""
    rows, cols = box_window(box, mask.shape)
    contours, _ = cv2.findContours(
        mask[rows, cols].view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    offset = np.array([cols.start, rows.start], np.int32)
    return [contour.reshape(-1, 2) + offset for contour in contours]


def upscale_masks(masks, image_shape):
    """
    Rescale binary masks (N×h×w, letterboxed at the inference size) to bool N×H×W image masks.

    The result equals ultralytics' `ops.scale_masks(...) > 0.5` pixel for pixel (same content
    crop, same bilinear taps and weights in float32), but only the window each mask can reach is
    computed, in numpy on the calling thread: 5 times faster than torch's full-frame interpolation
    of every mask, and no torch call outside the segmenter's thread.
    """
    image_shape = tuple(image_shape[:2])
    result = np.zeros((len(masks), *image_shape), bool)
    if masks.shape[1:] == image_shape:  # retina masks
        return np.greater(masks, 0, out=result)
    top, left, bottom, right = _content_box(masks.shape[1:], image_shape)
    content = masks[:, top:bottom, left:right]
    for mask, target in zip(content, result):
        rows = np.flatnonzero(mask.any(axis=1))
        if not len(rows):
            continue
        y0, y1 = _reach(rows, mask.shape[0], image_shape[0])
        x0, x1 = _reach(np.flatnonzero(mask.any(axis=0)), mask.shape[1], image_shape[1])
        upper_row, lower_row, row_weight = _bilinear_taps(y0, y1, mask.shape[0], image_shape[0])
        left_col, right_col, col_weight = _bilinear_taps(x0, x1, mask.shape[1], image_shape[1])
        source = mask.astype(np.float32)
        upper, lower = source[upper_row], source[lower_row]
        upper = upper[:, left_col] * (1 - col_weight) + upper[:, right_col] * col_weight
        lower = lower[:, left_col] * (1 - col_weight) + lower[:, right_col] * col_weight
        target[y0:y1, x0:x1] = (upper * (1 - row_weight)[:, None]
                                + lower * row_weight[:, None]) > 0.5
    return result


def _content_box(mask_shape, image_shape):
    """Top, left, bottom, right of the image inside the letterboxed mask, as ultralytics crops."""
    (height, width), (image_height, image_width) = mask_shape, image_shape
    gain = min(height / image_height, width / image_width)
    content_height = max(round(image_height * gain), 1)
    content_width = max(round(image_width * gain), 1)
    top = round((height - content_height) / 2 - 0.1)
    left = round((width - content_width) / 2 - 0.1)
    return top, left, top + content_height, left + content_width


def _bilinear_taps(start, stop, source_size, size):
    """Source indices and weights of outputs start..stop-1 (torch, align_corners=False)."""
    scale = np.float32(source_size / size)
    position = np.arange(start, stop, dtype=np.float32)
    position = np.maximum(scale * (position + np.float32(0.5)) - np.float32(0.5), np.float32(0))
    first = np.minimum(np.floor(position).astype(np.intp), source_size - 1)
    weight = np.clip(position - first, 0, 1).astype(np.float32)
    return first, np.minimum(first + 1, source_size - 1), weight


def _reach(nonzero, source_size, size):
    """Output range (start, stop) outside which the source indices `nonzero` weigh nothing."""
    scale = source_size / size
    start = int(np.floor((nonzero[0] - 0.5) / scale - 0.5)) - 1
    stop = int(np.ceil((nonzero[-1] + 1.5) / scale - 0.5)) + 2
    return max(start, 0), min(stop, size)


def detections_from_result(result, tracked):
    """
    Convert one ultralytics segmentation `Results` into `Detections` at the original image size.

    In track mode (`tracked`) only instances with a confirmed track id are kept; an empty result,
    `masks is None` or `boxes.id is None` give empty detections.
    """
    shape = result.orig_shape
    boxes = result.boxes
    if result.masks is None or boxes is None or len(boxes) == 0 or (tracked and boxes.id is None):
        return Detections.empty(shape, tracked)

    order = boxes.conf.argsort(descending=True)
    class_ids = boxes.cls[order].int().cpu().numpy().astype(np.int64)
    ids = (boxes.id[order].int().cpu().numpy().astype(np.int64) if tracked
           else np.arange(1, len(order) + 1, dtype=np.int64))
    return Detections(
        ids=ids,
        class_ids=class_ids,
        class_names=tuple(result.names[int(c)] for c in class_ids),
        scores=boxes.conf[order].cpu().numpy().astype(np.float32),
        boxes=boxes.xyxy[order].cpu().numpy().astype(np.float32),
        masks=upscale_masks(result.masks.data[order].cpu().numpy(), shape),
        tracked=tracked,
    )
