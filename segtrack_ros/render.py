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
from segtrack_ros.detections import box_window, mask_contours
from segtrack_ros.labels import owner_image
from ultralytics.utils.plotting import colors

COLOR_MODES = ('class', 'track')


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


def _area(window):
    rows, cols = window
    return (rows.stop - rows.start) * (cols.stop - cols.start)


def _lookup(indices, table):
    """`table[indices]` for a small colour table, through cv2.LUT when it has at most 256 rows."""
    if len(table) > 256:
        return table[indices]
    index = indices.astype(np.uint8)
    lut = np.zeros((256, 1, 3), np.uint8)
    lut[:len(table), 0] = table
    return cv2.LUT(cv2.merge((index, index, index)), lut)


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

    def reset(self):
        """Forget the trails (e.g. when the tracker was reset)."""
        self._trails.clear()

    def instance_color(self, detections, index):
        """BGR colour of instance `index`: by class id, or by track id."""
        by_track = self.config.color_by == 'track'
        key = detections.ids[index] if by_track else detections.class_ids[index]
        return colors(int(key), True)

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

        `owner` is the index image of `labels.owner_image`, when the caller has it already.
        """
        config = self.config
        width = config.line_width or auto_line_width(frame.shape)
        palette = [self.instance_color(detections, i) for i in range(len(detections))]
        image = frame.copy()
        if config.mask_alpha > 0 and len(detections):
            owner = owner_image(detections) if owner is None else owner
            self._fill(image, owner, palette, detections.boxes)
        self._update_trails(detections)
        for index, color in enumerate(palette):
            contours = mask_contours(detections.masks[index], detections.boxes[index])
            if not contours:
                continue
            cv2.polylines(image, contours, True, color, width, cv2.LINE_AA)
            if config.trail_length and detections.tracked:
                self._draw_trail(image, detections.ids[index], color, width)
            if config.show_labels:
                top = min(contours, key=lambda c: c[:, 1].min())
                anchor = top[top[:, 1].argmin()]
                self._draw_label(image, self.label(detections, index), anchor, color, width)
        return image

    def _fill(self, image, owner, palette, boxes):
        """
        Blend each instance's colour into the pixels it owns, only inside the instances' boxes.

        Instance by instance in its box window when the windows are small, else once over the
        window that holds them all; a full-size colour image would cost more than the masks.
        """
        alpha = self.config.mask_alpha
        windows = [box_window(box, owner.shape) for box in boxes]
        rows = slice(min(w[0].start for w in windows), max(w[0].stop for w in windows))
        cols = slice(min(w[1].start for w in windows), max(w[1].stop for w in windows))
        if sum(_area(window) for window in windows) > _area((rows, cols)):
            region, owned = image[rows, cols], owner[rows, cols]
            paint = _lookup(owned, np.array([(0, 0, 0), *palette], np.uint8))
            parts = [(region, owned > 0, paint)]
        else:
            parts = []
            for index, (window, color) in enumerate(zip(windows, palette), start=1):
                region = image[window]
                paint = np.empty_like(region)
                paint[:] = color
                parts.append((region, owner[window] == index, paint))
        for region, mine, paint in parts:
            blended = cv2.addWeighted(region, 1 - alpha, paint, alpha, 0)
            region[mine] = blended[mine]

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
        cv2.polylines(image, [points], False, color, width, cv2.LINE_AA)

    def _draw_label(self, image, text, anchor, color, width):
        """Draw a filled label box centred on the mask's top point, as `seg_bbox` placed it."""
        scale, thickness = width / 3, max(width - 1, 1)
        (text_w, text_h), baseline = cv2.getTextSize(
            text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        pad = max(width, 3)
        x = int(np.clip(anchor[0] - text_w // 2, pad, max(image.shape[1] - text_w - pad, pad)))
        y = int(np.clip(anchor[1] - pad, text_h + pad, image.shape[0] - baseline - pad))
        cv2.rectangle(image, (x - pad, y - text_h - pad), (x + text_w + pad, y + baseline + pad),
                      color, -1)
        cv2.putText(image, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, text_color(color),
                    thickness, cv2.LINE_AA)
