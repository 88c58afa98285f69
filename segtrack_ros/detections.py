"""
The per-frame result of the package: `Detections`; the one place that reads ultralytics `Results`.

Everything downstream (rendering, label images, ROS messages, evaluation) works on `Detections`, so
a change in ultralytics' result layout touches this file only.
"""

from dataclasses import dataclass
import threading

import cv2
import numpy as np


class _DeferredMasks:
    """Full-size masks computed once, on first read, by whichever thread reads them first."""

    def __init__(self, compute, shape):
        self.shape = shape
        self._compute = compute
        self._value = None
        self._lock = threading.Lock()

    def value(self):
        with self._lock:
            if self._value is None:
                self._value, self._compute = self._compute(), None
            return self._value


class _MasksField:
    """
    The `masks` field of `Detections`: an array, or `_DeferredMasks` that become one when read.

    Rescaling the masks to the input size is the costliest step after the model itself; deferred,
    it runs on the thread that draws or builds label images, not on the inference thread.
    """

    def __set_name__(self, owner, name):
        self._key = name  # the instance's __dict__ keeps the field's own name, as dataclasses do

    def __get__(self, detections, owner=None):
        if detections is None:
            raise AttributeError('masks')  # a dataclass field without default
        masks = detections.__dict__[self._key]
        return masks.value() if isinstance(masks, _DeferredMasks) else masks

    def __set__(self, detections, masks):
        detections.__dict__[self._key] = masks


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
    masks: np.ndarray = _MasksField()  # (N, H, W) bool
    tracked: bool = False

    def __len__(self):
        return len(self.ids)

    @property
    def image_shape(self):
        """Height and width of the frame the detections belong to."""
        return self.__dict__['masks'].shape[1:]  # also before deferred masks are computed

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


def detections_from_result(result, tracked):
    """
    Convert one ultralytics segmentation `Results` into `Detections` at the original image size.

    In track mode (`tracked`) only instances with a confirmed track id are kept; an empty result,
    `masks is None` or `boxes.id is None` give empty detections. Masks are rescaled from the
    letterboxed inference size in one call for all instances, when they are first read.
    """
    from ultralytics.utils import ops

    shape = result.orig_shape
    boxes = result.boxes
    if result.masks is None or boxes is None or len(boxes) == 0 or (tracked and boxes.id is None):
        return Detections.empty(shape, tracked)

    order = boxes.conf.argsort(descending=True)
    data = result.masks.data

    def full_size_masks():
        return (ops.scale_masks(data[None], shape)[0] > 0.5)[order].cpu().numpy()

    class_ids = boxes.cls[order].int().cpu().numpy().astype(np.int64)
    ids = (boxes.id[order].int().cpu().numpy().astype(np.int64) if tracked
           else np.arange(1, len(order) + 1, dtype=np.int64))
    return Detections(
        ids=ids,
        class_ids=class_ids,
        class_names=tuple(result.names[int(c)] for c in class_ids),
        scores=boxes.conf[order].cpu().numpy().astype(np.float32),
        boxes=boxes.xyxy[order].cpu().numpy().astype(np.float32),
        masks=_DeferredMasks(full_size_masks, (len(order), *shape[:2])),
        tracked=tracked,
    )
