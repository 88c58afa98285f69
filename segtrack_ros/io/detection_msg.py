"""
`Detections` as a `vision_msgs/Detection2DArray`, and the class map as a `vision_msgs/LabelInfo`.

Each Detection2D carries the instance's label-image value as `id`, the class name as
`results[0].hypothesis.class_id`, the score, and the box centre and size in input pixels.
"""

from collections.abc import Mapping

from segtrack_ros.core.labels import mask_values
from vision_msgs.msg import (
    Detection2D, Detection2DArray, LabelInfo, ObjectHypothesisWithPose, VisionClass)

# The name LabelInfo gives to value 0 of `class_mask`.
BACKGROUND_NAME = 'background'


def to_detection_array(detections, header):
    """Build the message for `detections`, with `header` copied unchanged (also when empty)."""
    message = Detection2DArray(header=header)
    for value, name, score, box in zip(mask_values(detections.ids), detections.class_names,
                                       detections.scores, detections.boxes):
        detection = Detection2D(header=header, id=str(int(value)))
        hypothesis = ObjectHypothesisWithPose()
        hypothesis.hypothesis.class_id = name
        hypothesis.hypothesis.score = float(score)
        detection.results.append(hypothesis)
        x1, y1, x2, y2 = (float(v) for v in box)
        detection.bbox.center.position.x = (x1 + x2) / 2
        detection.bbox.center.position.y = (y1 + y2) / 2
        detection.bbox.size_x = x2 - x1
        detection.bbox.size_y = y2 - y1
        message.detections.append(detection)
    return message


def to_label_info(class_names, threshold, header):
    """
    Build the LabelInfo that decodes `class_mask`: value -> class name, and the threshold.

    `class_names` maps class id -> name (a model's `names` dict) or lists names by class id;
    value = class id + 1. Background is listed, as class_id 0 named 'background': our label
    images use 0 for background where upstream reserves 65535 for "unlabeled", so a consumer that
    looks every pixel value up in the map (a legend, a colouring, a per-class pixel count) must
    find 0 there, as in the label maps of semantic segmentation datasets. Every class of the model
    is listed, also those a `classes` filter keeps out of the images. `threshold` is the
    confidence threshold (`conf`); the header is used as given.
    """
    names = class_names if isinstance(class_names, Mapping) else dict(enumerate(class_names))
    message = LabelInfo(header=header, threshold=float(threshold))
    message.class_map = [VisionClass(class_id=0, class_name=BACKGROUND_NAME)] + [
        VisionClass(class_id=int(class_id) + 1, class_name=str(name))
        for class_id, name in sorted(names.items())]
    return message
