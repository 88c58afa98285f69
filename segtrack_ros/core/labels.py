"""
Label images of a frame's detections: which instance, and which class, owns each pixel.

Where masks overlap, the pixel belongs to the instance with the higher score. The owner image is
painted at the masks' resolution from the instances' crops; a full-size image is a nearest resize
of a small one, corrected at the few pixels (mask corners) where that differs from upscaling each
mask bilinearly (`detections.corner_owners`). Its cost follows the frame size and the length of the
masks' outlines, not the instance count times the frame size.
"""

from dataclasses import dataclass

import numpy as np
from segtrack_ros.core.detections import corner_owners

MAX_LABEL = np.iinfo(np.uint16).max


def mask_values(ids):
    """
    Map instance ids onto the 1..65535 range of a mono16 label image.

    Track ids beyond 65535 (after days of tracking) wrap around, skipping 0 (background).
    """
    return (np.asarray(ids, np.int64) - 1) % MAX_LABEL + 1


@dataclass(frozen=True)
class OwnerImage:
    """
    Which instance owns each pixel, kept at the masks' resolution: see `owner_image`.

    `small` is the index image of the mask frame (0 background, i + 1 for instance i);
    `fixes` are the rows, columns and indices of the full-size pixels that are not its nearest
    resize.
    """

    small: np.ndarray
    frame: object  # detections.MaskFrame
    fixes: tuple

    def image(self, values, out=None):
        """Full-size image of `values[index]` per pixel (`values[0]` for the background)."""
        values = np.asarray(values)
        image = self.frame.to_image_size(values[self.small], out)
        rows, cols, owners = self.fixes
        if len(rows):
            image[rows, cols] = values[owners]
        return image


def owner_image(detections):
    """
    Return the `OwnerImage` of `detections`: made once a frame, shared by the label images.

    Pass it to `instance_mask`, `class_mask` and `Renderer.draw` of the same detections.
    """
    small = np.zeros(detections.mask_shape,
                     np.uint16 if len(detections) < MAX_LABEL else np.int64)
    crops, origins = detections.crops, detections.origins.tolist()
    for index in reversed(range(len(detections))):  # the highest score is painted last, on top
        crop, (x, y) = crops[index], origins[index]
        np.copyto(small[y:y + crop.shape[0], x:x + crop.shape[1]], index + 1, where=crop)
    return OwnerImage(small, detections.frame, corner_owners(detections, small))


def instance_mask(detections, owner=None):
    """uint16 image of the input size: 0 = background, else the instance's id (`mask_values`)."""
    return _label_image(detections, mask_values(detections.ids), owner)


def class_mask(detections, owner=None):
    """uint16 image of the input size: 0 = background, else the instance's class id + 1."""
    return _label_image(detections, detections.class_ids + 1, owner)


def _label_image(detections, values, owner):
    owner = owner_image(detections) if owner is None else owner
    return owner.image(np.concatenate(([0], values)).astype(np.uint16))
