"""
Video files and cameras in, video files out (OpenCV), with errors that name the fix.

Shared by the video CLI, the video publisher and the demo's recorder.
"""

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2

FOURCC = {'.avi': 'MJPG', '.mp4': 'mp4v'}
DEFAULT_FPS = 30.0


class VideoError(Exception):
    """A source that cannot be read or an output that cannot be written."""


@dataclass(frozen=True)
class VideoInfo:
    """What is known of a source before reading it; `frame_count` is 0 for cameras."""

    width: int
    height: int
    fps: float
    frame_count: int


def parse_source(source):
    """Return a camera index (`'0'` -> 0) or a file path; a missing file raises `VideoError`."""
    source = str(source)
    if source.isdigit():
        return int(source)
    if not Path(source).is_file():
        raise VideoError(f"video '{source}' not found: give a video file or a camera index")
    return source


def open_source(source):
    """
    Open a video file or camera index for reading.

    Returns the `cv2.VideoCapture` and its `VideoInfo`; `fps` falls back to 30 when the source
    does not tell it.
    """
    capture = cv2.VideoCapture(parse_source(source))
    if not capture.isOpened():
        raise VideoError(f"video '{source}' cannot be opened (not a video OpenCV can read?)")
    fps = capture.get(cv2.CAP_PROP_FPS)
    info = VideoInfo(
        width=int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
        height=int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        fps=fps if 0 < fps < 1000 else DEFAULT_FPS,
        frame_count=max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0))
    return capture, info


def read_frames(capture, max_frames=0):
    """Yield the frames of an open capture, at most `max_frames` of them (0 = all)."""
    count = 0
    while not max_frames or count < max_frames:
        ok, frame = capture.read()
        if not ok:
            return
        count += 1
        yield frame


def open_writer(path, fps, width, height):
    """Open a video writer: MJPG for `.avi`, mp4v for `.mp4`; raises `VideoError` if it can't."""
    path = Path(path)
    fourcc = FOURCC.get(path.suffix.lower())
    if fourcc is None:
        raise VideoError(f"output '{path}': use a .avi (MJPG) or .mp4 file name")
    if not path.parent.is_dir():
        raise VideoError(f"output '{path}': folder '{path.parent}' does not exist")
    with _quiet_opencv():  # a failed open logs OpenCV warnings to stderr before our own error
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    if not writer.isOpened():
        raise VideoError(f"output '{path}' cannot be written (permissions?)")
    return writer


@contextmanager
def _quiet_opencv():
    """Hold back OpenCV's own warnings (errors still show) for the duration of the block."""
    logging = getattr(getattr(cv2, 'utils', None), 'logging', None)
    if logging is None:
        yield
        return
    level = logging.getLogLevel()
    logging.setLogLevel(min(level, logging.LOG_LEVEL_ERROR))
    try:
        yield
    finally:
        logging.setLogLevel(level)
