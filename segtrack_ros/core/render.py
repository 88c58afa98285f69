"""
Annotated frames in the look of the old Ultralytics guide's `Annotator.seg_bbox`.

`seg_bbox` (mask outline plus a label box at the mask) is gone from ultralytics 8.4 and its
`Annotator` draws boxes, not this look, so it is written here: outline, optional translucent fill,
a label box with a readable text colour, colours by class or by track id, optional track trails.
"""

from collections import deque
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
from segtrack_ros.core.labels import owner_image

COLOR_MODES = ('class', 'track')
# Outlines and label text are drawn as the guide's seg_bbox drew them: cv2's default 8-connected
# lines (anti-aliased ones cost several times as much with many instances: bench/README.md).
LINE_TYPE = cv2.LINE_8
SHIFT = 4  # outlines are drawn at 1/16 pixel precision (sub-pixel contours)


@dataclass(frozen=True)
class RenderConfig:
    """
    How frames are drawn; `line_width` 0 picks one from the image size.

    >>> Renderer(RenderConfig(color_by='track', trail_length=30)).draw(frame, detections)
    """

    color_by: str = 'class'
    line_width: int = 0
    show_labels: bool = True
    show_conf: bool = False
    mask_alpha: float = 0.3
    trail_length: int = 0


def text_color(background):
    """Black or white, whichever reads better on the BGR `background` colour."""
    blue, green, red = background
    luminance = 0.299 * red + 0.587 * green + 0.114 * blue
    return (0, 0, 0) if luminance > 150 else (255, 255, 255)


def palette_color(key):
    """Ultralytics' BGR palette colour of integer `key` (imported on first use: it loads torch)."""
    from ultralytics.utils.plotting import colors

    return colors(key, True)


def auto_line_width(image_shape):
    """Line width that suits the image size, as ultralytics' Annotator chooses it."""
    return max(round(sum(image_shape[:2]) / 2 * 0.003), 2)


class Renderer:
    """
    Draw detections on frames of one stream; keeps that stream's track trails.

    >>> renderer = Renderer(RenderConfig(color_by='class'))
    >>> annotated = renderer.draw(frame, detections)   # a new image; `frame` is not changed
    """

    def __init__(self, config=RenderConfig()):
        self.config = config
        self._trails = {}
        self._paint = self._color = self._owned = None  # the fill's buffers

    def reset(self):
        """Forget the trails (e.g. when the tracker was reset)."""
        self._trails.clear()

    def instance_colors(self, detections):
        """BGR colour of every instance: by class id, or by track id (looked up once per id)."""
        keys = detections.ids if self.config.color_by == 'track' else detections.class_ids
        unique_keys, slots = np.unique(keys, return_inverse=True)
        colors = [palette_color(int(key)) for key in unique_keys]
        return [colors[slot] for slot in slots.ravel().tolist()]

    def label(self, detections, index):
        """Label text: class name or track id, with the score when `show_conf`."""
        if self.config.color_by == 'track':
            text = str(detections.ids[index])
        else:
            text = detections.class_names[index]
        if self.config.show_conf:
            text += f' {detections.scores[index]:.2f}'
        return text

    def draw(self, frame, detections, owner=None):
        """
        Return an annotated copy of `frame` (H×W×3 uint8 BGR).

        `owner` is the `labels.owner_image` of `detections`, when the caller has it already.
        """
        config = self.config
        width = config.line_width or auto_line_width(frame.shape)
        palette = self.instance_colors(detections)
        if config.mask_alpha > 0 and len(detections):
            owner = owner_image(detections) if owner is None else owner
            image = self._filled(frame, owner, palette)
        else:
            image = frame.copy()
        self._update_trails(detections)
        points, lengths, owners = detections.outline_points()
        if not len(lengths):
            return image
        # All outlines first, one call per colour, then the labels on top of them.
        points_fixed = (points * (1 << SHIFT)).astype(np.int32)
        stops = np.cumsum(lengths).tolist()
        by_color = {}
        for start, stop, index in zip([0] + stops[:-1], stops, owners.tolist()):
            by_color.setdefault(palette[index], []).append(points_fixed[start:stop])
        for color, group in by_color.items():
            cv2.polylines(image, group, True, color, width, LINE_TYPE, SHIFT)
        drawn = np.unique(owners)
        if config.trail_length and detections.tracked:
            for index in drawn:
                self._draw_trail(image, detections.ids[index], palette[index], width)
        if config.show_labels:
            # each instance's top point: the first of its points by row
            point_owners = np.repeat(owners, lengths)
            order = np.lexsort((points[:, 1], point_owners))
            tops = points[order[np.searchsorted(point_owners[order], drawn)]]
            keys = [(self.label(detections, index), palette[index]) for index in drawn.tolist()]
            _paste_labels(image, [_label_box(*key, width) for key in keys], tops)
        return image

    def _filled(self, frame, owner, palette):
        """
        Return `frame` with each instance's colour blended into the pixels it owns.

        Each instance's BGRA colour (alpha 255: owned) is painted at the masks' resolution and
        brought to full size like the label images (`owner`, a `labels.OwnerImage`): the cost
        follows the frame size, not the instance count. Four-byte pixels take cv2's fast path
        of the nearest resize, which three-byte ones miss (bench/README.md).
        """
        if self._paint is None or self._paint.shape != frame.shape[:2]:
            # kept from frame to frame: fresh full-size buffers cost more (page faults)
            self._paint = np.empty(frame.shape[:2], np.int32)
            self._color = np.empty_like(frame)
            self._owned = np.empty(frame.shape[:2], np.uint8)
        bgra = np.zeros((len(palette) + 1, 4), np.uint8)
        bgra[1:, :3], bgra[1:, 3] = palette, 255
        paint = owner.image(bgra.view(np.int32).ravel(), out=self._paint)
        paint = paint.view(np.uint8).reshape(*paint.shape, 4)
        color = cv2.cvtColor(paint, cv2.COLOR_BGRA2BGR, dst=self._color)
        alpha = self.config.mask_alpha
        image = cv2.addWeighted(frame, 1 - alpha, color, alpha, 0)
        background = cv2.compare(cv2.extractChannel(paint, 3, dst=self._owned), 0, cv2.CMP_EQ,
                                 dst=self._owned)
        return cv2.copyTo(frame, background, image)

    def _update_trails(self, detections):
        if not (self.config.trail_length and detections.tracked):
            self._trails.clear()
            return
        for track_id, box in zip(detections.ids, detections.boxes):
            trail = self._trails.setdefault(int(track_id), deque(maxlen=self.config.trail_length))
            trail.append(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2))
        for gone in self._trails.keys() - set(detections.ids.tolist()):
            del self._trails[gone]

    def _draw_trail(self, image, track_id, color, width):
        points = np.round(np.array(self._trails[int(track_id)])).astype(np.int32)
        cv2.polylines(image, [points], False, color, width, LINE_TYPE)


@lru_cache(maxsize=1024)
def _label_box(text, color, width):
    """
    Draw the label box of `text` in `color` on its own: (image, text width, text height, pad).

    Pasted at each instance that has it; kept from frame to frame, as track ids are (drawing
    the texts of a crowd is a large part of a frame: bench/README.md). The image is read-only.
    """
    scale, thickness = width / 3, max(width - 1, 1)
    (text_width, text_height), baseline = cv2.getTextSize(
        text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    pad = max(width, 3)
    box = np.empty((text_height + baseline + 2 * pad + 1, text_width + 2 * pad + 1, 3), np.uint8)
    box[:] = color
    cv2.putText(box, text, (pad, pad + text_height), cv2.FONT_HERSHEY_SIMPLEX, scale,
                text_color(color), thickness, LINE_TYPE)
    box.flags.writeable = False
    return box, text_width, text_height, pad


def _paste_labels(image, labels, anchors):
    """
    Paste each `_label_box` centred on its mask's top point (K, 2), as `seg_bbox` placed it.

    The text stays inside the image; the box's padding may be cut at the image border.
    """
    height, width = image.shape[:2]
    sizes = np.array([(box.shape[0], box.shape[1], text_width, text_height, pad)
                      for box, text_width, text_height, pad in labels]).reshape(-1, 5)
    box_height, box_width, text_width, text_height, pad = sizes.T
    baseline = box_height - text_height - 2 * pad - 1
    x = np.minimum(np.maximum(anchors[:, 0].astype(int) - text_width // 2, pad),
                   np.maximum(width - text_width - pad, pad))
    y = np.minimum(np.maximum(anchors[:, 1].astype(int) - pad, text_height + pad),
                   height - baseline - pad)
    left, top = x - pad, y - text_height - pad
    row0, col0 = np.maximum(top, 0), np.maximum(left, 0)
    row1, col1 = np.minimum(top + box_height, height), np.minimum(left + box_width, width)
    for (box, *_), r0, r1, c0, c1, dy, dx in zip(
            labels, row0.tolist(), row1.tolist(), col0.tolist(), col1.tolist(),
            (row0 - top).tolist(), (col0 - left).tolist()):
        image[r0:r1, c0:c1] = box[dy:dy + r1 - r0, dx:dx + c1 - c0]
