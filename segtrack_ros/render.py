"""
Annotated frames in the look of the old Ultralytics guide's `Annotator.seg_bbox`.

`seg_bbox` (mask outline plus a label box at the mask) is gone from ultralytics 8.4 and its
`Annotator` draws boxes, not this look, so it is written here: outline, optional translucent fill,
a label box with a readable text colour, colours by class or by track id, optional track trails.
"""

from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np
from segtrack_ros.labels import owner_image

COLOR_MODES = ('class', 'track')
# Outlines and label text are drawn as the guide's seg_bbox drew them: cv2's default 8-connected
# lines (anti-aliased ones cost 2.5 times as much: 18 vs 8 ms for 300 instances at 1080p).
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
        self._index = self._background = self._paint = None  # the fill's buffers

    def reset(self):
        """Forget the trails (e.g. when the tracker was reset)."""
        self._trails.clear()

    def instance_color(self, detections, index):
        """BGR colour of instance `index`: by class id, or by track id."""
        by_track = self.config.color_by == 'track'
        key = detections.ids[index] if by_track else detections.class_ids[index]
        return palette_color(int(key))

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
        palette = [self.instance_color(detections, i) for i in range(len(detections))]
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
        contours = np.split((points * (1 << SHIFT)).astype(np.int32), np.cumsum(lengths)[:-1])
        by_color = {}
        for contour, owner in zip(contours, owners):
            by_color.setdefault(palette[owner], []).append(contour)
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
            tops = points[order[np.searchsorted(point_owners[order], drawn)]].astype(int)
            boxes = {}  # label boxes drawn so far, by text and colour
            for index, top in zip(drawn, tops):
                key = self.label(detections, index), palette[index]
                if key not in boxes:
                    boxes[key] = _label_box(*key, width)
                _paste_label(image, boxes[key], top)
        return image

    def _filled(self, frame, owner, palette):
        """
        Return `frame` with each instance's colour blended into the pixels it owns.

        A full-size image of palette slots (`owner`, a `labels.OwnerImage`, made like the label
        images) is coloured through a look-up table: the cost follows the frame size, not the
        instance count.
        """
        if self._index is None or self._index.shape != frame.shape[:2]:
            # kept from frame to frame: fresh full-size buffers cost more than filling them
            # (page faults: 11.2 against 4.5 ms for this fill at 1080p)
            self._index = np.empty(frame.shape[:2], np.uint8)
            self._background = np.empty_like(self._index)
            self._paint = np.empty_like(frame)
        colors, slots = np.unique(np.array(palette, np.uint8), axis=0, return_inverse=True)
        index = owner.image(np.concatenate(([0], slots.ravel() + 1)).astype(np.uint8),
                            out=self._index)
        table = np.zeros((256, 1, 3), np.uint8)
        table[1:len(colors) + 1, 0] = colors
        alpha = self.config.mask_alpha
        paint = cv2.applyColorMap(index, table, dst=self._paint)
        image = cv2.addWeighted(frame, 1 - alpha, paint, alpha, 0)
        background = cv2.compare(index, 0, cv2.CMP_EQ, dst=self._background)
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


def _label_box(text, color, width):
    """
    Draw the label box of `text` in `color` on its own: (image, text height, baseline, pad).

    Drawn once a frame per text and colour, and pasted at each instance that has it.
    """
    scale, thickness = width / 3, max(width - 1, 1)
    (text_width, text_height), baseline = cv2.getTextSize(
        text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    pad = max(width, 3)
    box = np.empty((text_height + baseline + 2 * pad + 1, text_width + 2 * pad + 1, 3), np.uint8)
    box[:] = color
    cv2.putText(box, text, (pad, pad + text_height), cv2.FONT_HERSHEY_SIMPLEX, scale,
                text_color(color), thickness, LINE_TYPE)
    return box, text_height, baseline, pad


def _paste_label(image, label, anchor):
    """Paste a `_label_box` centred on the mask's top point `anchor`, as `seg_bbox` placed it."""
    box, text_height, baseline, pad = label
    height, width = image.shape[:2]
    text_width = box.shape[1] - 2 * pad - 1
    x = min(max(int(anchor[0]) - text_width // 2, pad), max(width - text_width - pad, pad))
    y = min(max(int(anchor[1]) - pad, text_height + pad), height - baseline - pad)
    left, top = x - pad, y - text_height - pad
    rows = slice(max(top, 0), min(top + box.shape[0], height))
    cols = slice(max(left, 0), min(left + box.shape[1], width))
    image[rows, cols] = box[rows.start - top:rows.stop - top, cols.start - left:cols.stop - left]
