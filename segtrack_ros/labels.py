"""
Label images of a frame's detections: which instance, and which class, owns each pixel.

Where masks overlap, the pixel belongs to the instance with the higher score.
"""

import numpy as np

from segtrack_ros.detections import box_window

MAX_LABEL = np.iinfo(np.uint16).max


def mask_values(ids):
    """
    Map instance ids onto the 1..65535 range of a mono16 label image.

    Track ids beyond 65535 (after days of tracking) wrap around, skipping 0 (background).
    """
    return (np.asarray(ids, np.int64) - 1) % MAX_LABEL + 1


def owner_image(detections):
    """Index image: 0 for background, i + 1 where instance i (in score order) owns the pixel."""
    owner = np.zeros(detections.image_shape, np.intp)
    for index in reversed(range(len(detections))):  # the highest score is painted last, on top
        window = box_window(detections.boxes[index], owner.shape)
        owner[window][detections.masks[index][window]] = index + 1
    return owner


def instance_mask(detections, owner=None):
    """uint16 image: 0 = background, else the instance's id (see `mask_values`)."""
    owner = owner_image(detections) if owner is None else owner
    lookup = np.concatenate(([0], mask_values(detections.ids))).astype(np.uint16)
    return lookup[owner]


def class_mask(detections, owner=None):
    """uint16 image: 0 = background, else the instance's class id + 1."""
    owner = owner_image(detections) if owner is None else owner
    lookup = np.concatenate(([0], detections.class_ids + 1)).astype(np.uint16)
    return lookup[owner]
