"""
`Detections` as a `vision_msgs/Detection2DArray`.

Each Detection2D carries the instance's label-image value as `id`, the class name as
`results[0].hypothesis.class_id`, the score, and the box centre and size in input pixels.
"""

from segtrack_ros.labels import mask_values
from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose


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
