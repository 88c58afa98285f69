"""
`segtrack-video`: a video file or camera in, an annotated video out, no ROS needed.

The frames go through the package's frame pipeline (`segtrack_ros.pipeline`): reading and
decoding, inference, and drawing run in three threads joined by small queues, so the model is
never idle waiting for I/O (torch, OpenCV and numpy release the GIL); this thread writes.
"""

import argparse
from contextlib import ExitStack
from dataclasses import dataclass
import os
from pathlib import Path
import sys
import time

from segtrack_ros.core.render import COLOR_MODES, RenderConfig
from segtrack_ros.core.runtime import apply_process_defaults
from segtrack_ros.core.segmenter import MODES, Segmenter, SegmenterConfig, SegmenterError
from segtrack_ros.io.video_io import open_source, open_writer, read_frames, VideoError
from segtrack_ros.pipeline import FramePipeline
from segtrack_ros.runners import OrderedRunner


class UsageError(Exception):
    """Flags that contradict each other."""


@dataclass
class Summary:
    """What a run did: frames written, wall time, instances drawn, distinct track ids."""

    frames: int = 0
    seconds: float = 0.0
    instances: int = 0
    tracks: int = 0

    @property
    def fps(self):
        """Frames per second over the whole run."""
        return self.frames / self.seconds if self.seconds else 0.0

    def __str__(self):
        return (f'{self.frames} frames in {self.seconds:.1f} s ({self.fps:.1f} fps), '
                f'{self.instances} instances, {self.tracks} tracks')


def has_display():
    """Tell whether a window can be opened (an X or Wayland display on Linux)."""
    return sys.platform != 'linux' or bool(os.environ.get('DISPLAY') or
                                           os.environ.get('WAYLAND_DISPLAY'))


def build_parser():
    """Build the command line of `segtrack-video`."""
    parser = argparse.ArgumentParser(
        prog='segtrack-video',
        description='Segment (predict) or segment and track (track) a video; write it annotated.')
    parser.add_argument('source', help='video file or camera index')
    parser.add_argument('--model', default='yolov8n-seg.pt',
                        help='.pt/.onnx/.engine file, OpenVINO folder or official name')
    parser.add_argument('--mode', choices=MODES, default='track')
    parser.add_argument('--color-by', choices=COLOR_MODES,
                        help='default: class in predict mode, track in track mode')
    parser.add_argument('--output', help='output video (.avi MJPG or .mp4); '
                                         'default <stem>-<mode>.avi in the current folder')
    parser.add_argument('--device', default='auto', help='auto, cpu, cuda, cuda:N, N or mps')
    parser.add_argument('--imgsz', type=int, default=640, help='inference size in pixels')
    parser.add_argument('--conf', type=float, default=0.25, help='confidence threshold')
    parser.add_argument('--iou', type=float, default=0.7, help='NMS IoU threshold')
    parser.add_argument('--max-det', type=int, default=300, help='most instances per frame')
    parser.add_argument('--classes', type=int, nargs='+', default=[], help='class ids to keep')
    parser.add_argument('--tracker', default='bytetrack.yaml',
                        help='tracker config: bytetrack.yaml, botsort.yaml, ... or a path')
    parser.add_argument('--max-frames', type=int, default=0, help='stop after N frames (0 = all)')
    parser.add_argument('--show', action=argparse.BooleanOptionalAction, default=None,
                        help='show the annotated video in a window (q quits); '
                             'default: when there is a display')
    parser.add_argument('--mask-alpha', type=float, default=0.3,
                        help='opacity of the mask fill, 0 = outlines only')
    parser.add_argument('--trail-length', type=int, default=0,
                        help='track trails of N frames (track mode), 0 = none')
    return parser


def default_output(source, mode):
    """`<stem>-<mode>.avi` in the current folder (`camera<N>` for a camera)."""
    stem = f'camera{source}' if str(source).isdigit() else Path(source).stem
    return Path(f'{stem}-{mode}.avi')


def check_args(args):
    """Refuse contradictory or out-of-range flags, naming the fix."""
    if args.color_by == 'track' and args.mode != 'track':
        raise UsageError('--color-by track needs --mode track (predict mode has no track ids)')
    for name, value, low, high in (('--conf', args.conf, 0.0, 1.0), ('--iou', args.iou, 0.0, 1.0),
                                   ('--mask-alpha', args.mask_alpha, 0.0, 1.0)):
        if not low <= value <= high:
            raise UsageError(f'{name} {value} is outside [{low}, {high}]')
    for name, value in (('--imgsz', args.imgsz), ('--max-det', args.max_det)):
        if value < 1:
            raise UsageError(f'{name} must be at least 1, got {value}')
    if args.imgsz % 32:
        raise UsageError(f'--imgsz must be a multiple of 32 (the stride of the model), '
                         f'got {args.imgsz}')
    if args.max_frames < 0 or args.trail_length < 0:
        raise UsageError('--max-frames and --trail-length cannot be negative')


def run(args, progress=True):
    """Run the pipeline for parsed `args`; returns the `Summary` and the output path."""
    check_args(args)
    color_by = args.color_by or ('track' if args.mode == 'track' else 'class')
    output = Path(args.output) if args.output else default_output(args.source, args.mode)
    render_config = RenderConfig(color_by=color_by, mask_alpha=args.mask_alpha,
                                 trail_length=args.trail_length)
    show = has_display() if args.show is None else args.show
    with ExitStack() as cleanup:  # the cheap checks (input, output) come before the model
        capture, info = open_source(args.source)
        cleanup.callback(capture.release)
        writer = open_writer(output, info.fps, info.width, info.height)
        cleanup.callback(writer.release)
        try:
            segmenter = Segmenter(SegmenterConfig(
                model=args.model, device=args.device, mode=args.mode, tracker=args.tracker,
                conf=args.conf, iou=args.iou, imgsz=args.imgsz, max_det=args.max_det,
                classes=tuple(args.classes)))
        except SegmenterError:
            writer.release()
            output.unlink(missing_ok=True)  # no empty video left behind
            raise
        total = min(filter(None, (info.frame_count, args.max_frames)), default=None)
        summary = _run_pipeline(capture, writer, segmenter, render_config, args.max_frames,
                                show, total if progress else False)
    return summary, output


def _run_pipeline(capture, writer, segmenter, render_config, max_frames, show, total):
    from ultralytics.utils.tqdm import TQDM

    pipeline = FramePipeline(segmenter, render_config)
    frames = (('default', frame, None) for frame in read_frames(capture, max_frames))
    summary, track_ids = Summary(), set()
    bar = TQDM(total=total, desc='segtrack', unit='frame', disable=total is False,
               file=sys.stderr)
    start = time.perf_counter()
    results = OrderedRunner(pipeline, frames, wanted=('annotated_image',))
    try:
        for result in results:
            if result.problem is not None:
                raise VideoError(f'frame {summary.frames}: {result.problem}')
            writer.write(result.images['annotated'])
            summary.frames += 1
            summary.instances += len(result.detections)
            if result.detections.tracked:
                track_ids.update(result.detections.ids.tolist())
            bar.update(1)
            if show and _show(result.images['annotated']):
                break
    finally:
        results.close()
        bar.close()
    summary.seconds = time.perf_counter() - start
    summary.tracks = len(track_ids)
    return summary


def _show(annotated):
    """Show an annotated frame; True when the user pressed q."""
    import cv2

    cv2.imshow('segtrack', annotated)
    return cv2.waitKey(1) & 0xFF == ord('q')


def main(argv=None):
    """Entry point of `segtrack-video`; errors are one line on stderr and a non-zero exit."""
    apply_process_defaults()
    parser = build_parser()
    parser.error = lambda message: _fail(message, 2)
    args = parser.parse_args(argv)
    try:
        summary, output = run(args)
    except (UsageError, VideoError, SegmenterError) as error:
        _fail(str(error), 1)
    except KeyboardInterrupt:
        _fail('interrupted', 130)
    print(f'segtrack-video: {summary}; wrote {output}')


def _fail(message, code):
    # One line, even for ultralytics' multi-line messages (e.g. a corrupt checkpoint).
    message = ' '.join(line.strip() for line in str(message).splitlines() if line.strip())
    print(f'segtrack-video: error: {message}', file=sys.stderr)
    sys.exit(code)
