"""
Ultralytics' segmentation predictor, with each mask made only inside its box.

Ultralytics resizes the prototypes of every instance to the whole inference size (or input size)
and then crops them to their box: with 300 instances at 640 that is 300 full-size float masks,
most of a frame's time and memory. `CropPredictor` makes the same binary masks, box by box
(`mask_crops`), and hands them on as `MaskCrops`. Imports ultralytics: the segmenter
loads it when it makes its model.
"""

from functools import lru_cache
import math

import numpy as np
from segtrack_ros.core.detections import MaskCrops, trim_mask
from segtrack_ros.core.resize import bilinear_matrix, content_box
import torch
from ultralytics.engine.results import Results
from ultralytics.models.yolo.segment import SegmentationPredictor
from ultralytics.utils import ops


class CropPredictor(SegmentationPredictor):
    """
    `SegmentationPredictor` whose `Results.masks` are `MaskCrops` at the masks' resolution.

    Boxes, scores, classes and the instances kept (those whose mask is not empty) are the stock
    predictor's; the tracker callbacks work unchanged.

    >>> model.predict(frame, predictor=CropPredictor)
    """

    def construct_result(self, pred, img, orig_img, img_path, proto):
        """Build one image's `Results`, its masks as crops (see the module docstring)."""
        if pred.shape[0] == 0:
            return Results(orig_img, path=img_path, names=self.model.names, boxes=pred[:, :6])
        image_shape = orig_img.shape[:2]
        protos, coefficients = proto.float().cpu().numpy(), pred[:, 6:].float().cpu().numpy()
        if self.args.retina_masks:
            pred[:, :4] = ops.scale_boxes(img.shape[2:], pred[:, :4], orig_img.shape)
            masks = mask_crops(protos, coefficients, pred[:, :4].float().cpu().numpy(),
                               image_shape, image_shape)
        else:
            masks = mask_crops(protos, coefficients, pred[:, :4].float().cpu().numpy(),
                               img.shape[2:])
            pred[:, :4] = ops.scale_boxes(img.shape[2:], pred[:, :4], orig_img.shape)
        keep = np.array([crop.size > 0 for crop in masks.crops])
        # as the stock predictor: no filtering when native re-id features ride along
        if getattr(self, '_feats', None) is None and not keep.all():
            pred, masks = pred[torch.from_numpy(keep).to(pred.device)], masks[keep]
        result = Results(orig_img, path=img_path, names=self.model.names, boxes=pred[:, :6])
        result.masks = masks
        return result


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
        crop, origins[index] = trim_mask(weights_y @ logits @ weights_x.T > 0, x0, y0)
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
        return _Interpolation(bilinear_matrix(source, shape[axis]))
    # process_mask_native: an exact 1, 2 or 4 times upsampling, then scale_masks to the image
    height, width = image_shape
    gain = min(4 * proto_height / height, 4 * proto_width / width)
    pad = ((4 * proto_height - max(round(height * gain), 1))
           | (4 * proto_width - max(round(width * gain), 1)))
    factor = 4 // math.gcd(4, pad | pad // 2)
    upsampled = (factor * proto_height, factor * proto_width)
    first = (bilinear_matrix(source, factor * source, scale=1 / factor) if factor > 1
             else np.eye(source, dtype=np.float32))
    top, left, bottom, right = content_box(upsampled, image_shape)
    start, stop = ((top, bottom), (left, right))[axis]
    second = bilinear_matrix(stop - start, image_shape[axis])
    return _Interpolation((second.astype(np.float64)
                           @ first[start:stop].astype(np.float64)).astype(np.float32))
