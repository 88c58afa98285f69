"""
Ultralytics' segmentation predictor, with each mask made only inside its box.

Ultralytics resizes the prototypes of every instance to the whole inference size (or input size)
and then crops them to their box: with 300 instances at 640 that is 300 full-size float masks,
most of a frame's time and memory. `CropPredictor` makes the same binary masks, box by box
(`detections.mask_crops`), and hands them on as `MaskCrops`. Imports ultralytics: the segmenter
loads it when it makes its model.
"""

import numpy as np
from segtrack_ros.core.detections import mask_crops
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
