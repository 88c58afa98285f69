"""
What the evaluations compare: a tracker's result of one frame, and when it matches the truth.

Shared by `evaluate` (segtrack-eval's table) and `identity` (the trackers' comparison), which
count an instance as found at the same mask IoU and ignore the same tiny instances.
"""

from dataclasses import dataclass

import numpy as np

MIN_IOU = 0.5
# Ground-truth instances with fewer visible pixels are "don't care" (MOTS-style ignore regions):
# about the 4×4 px at 320 below which the training labels skip objects too.
MIN_AREA = 100


@dataclass(frozen=True)
class FrameResult:
    """What a tracker says of one frame: ids, classes, scores, and N×H×W bool masks."""

    ids: np.ndarray
    class_ids: np.ndarray
    scores: np.ndarray
    masks: np.ndarray
