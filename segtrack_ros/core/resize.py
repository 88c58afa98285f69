"""
Torch's bilinear resize and ultralytics' letterbox, as index and weight arithmetic on numpy.

Masks are upscaled by `F.interpolate(mode='bilinear', align_corners=False)` in ultralytics; the
core makes the same pixels without full-size float images by computing, per output row or
column, which two source pixels it reads and with what weight (`bilinear_taps`). The mask of one
instance (`detections`), the exact label images (`labels`) and the box-by-box masks
(`crop_predictor`) all rest on these few functions, so they agree pixel for pixel.
"""

from functools import lru_cache

import numpy as np


def content_box(mask_shape, image_shape):
    """Top, left, bottom, right of the image inside the letterboxed mask, as ultralytics crops."""
    (height, width), (image_height, image_width) = mask_shape, image_shape
    gain = min(height / image_height, width / image_width)
    content_height = max(round(image_height * gain), 1)
    content_width = max(round(image_width * gain), 1)
    top = round((height - content_height) / 2 - 0.1)
    left = round((width - content_width) / 2 - 0.1)
    return top, left, top + content_height, left + content_width


@lru_cache(maxsize=32)
def bilinear_taps(source_size, size, scale=None):
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


def upsample_axis(start, length, source_size, size):
    """
    Along one axis: outputs reached by source pixels start..start+length-1, and their taps.

    Returns (stop, start) of the outputs, then the two tap indices into the source span padded
    by one zero on each side, and the weight of the second tap.
    """
    first, second, weight = bilinear_taps(source_size, size)
    begin = int(np.searchsorted(second, start, 'left'))
    end = int(np.searchsorted(first, start + length - 1, 'right'))
    low, high = first[begin:end] - start + 1, second[begin:end] - start + 1
    return (begin, end, np.clip(low, 0, length + 1), np.clip(high, 0, length + 1),
            weight[begin:end])


def bilinear_matrix(source_size, size, scale=None):
    """Return the bilinear resize of `bilinear_taps` as a (size × source_size) float32 matrix."""
    first, second, weight = bilinear_taps(source_size, size, scale)
    matrix = np.zeros((size, source_size), np.float32)
    outputs = np.arange(size)
    np.add.at(matrix, (outputs, first), 1 - weight)
    np.add.at(matrix, (outputs, second), weight)
    return matrix
