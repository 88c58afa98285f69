"""
`segtrack-video`: a video file or camera in, an annotated video out, no ROS needed.

The frames go through the package's frame pipeline (`segtrack_ros.pipeline`): reading and
decoding, inference, and drawing run in three threads joined by small queues, so the model is
never idle waiting for I/O (torch, OpenCV and numpy release the GIL); this thread writes.
"""

import argparse
from contextlib import ExitStack
import os
from pathlib import Path
import sys
import time

from segtrack_ros.cli.common import (add_segmenter_arguments, check_args, make_segmenter,
                                     ordered_results, render_config, run_main, Summary)
from segtrack_ros.core.segmenter import SegmenterError
from segtrack_ros.io.video_io import open_source, open_writer, read_frames, VideoError
from segtrack_ros.pipeline import FramePipeline


def has_display():
    """Tell whether a window can be opened (an X or Wayland display on Linux)."""
    return sys.platform != 'linux' or bool(os.environ.get('DISPLAY') or
                                           os.environ.get('WAYLAND_DISPLAY'))


def build_parser():
    """Build the command line of `segtrack-video`: its own flags and the segmenter's."""
    parser = argparse.ArgumentParser(
        prog='segtrack-video',
        description='Segment (predict) or segment and track (track) a video; write it annotated.')
    parser.add_argument('source', help='video file or camera index')
    parser.add_argument('--output', help='output video (.avi MJPG or .mp4); '
                                         'default <stem>-<mode>.avi in the current folder')
    add_segmenter_arguments(parser)
    parser.add_argument('--show', action=argparse.BooleanOptionalAction, default=None,
                        help='show the annotated video in a window (q quits); '
                             'default: when there is a display')
    return parser


def default_output(source, mode):
    """`<stem>-<mode>.avi` in the current folder (`camera<N>` for a camera)."""
    stem = f'camera{source}' if str(source).isdigit() else Path(source).stem
    return Path(f'{stem}-{mode}.avi')


def run(args, progress=True):
    """Run the pipeline for parsed `args`; returns the `Summary` and the output path."""
    check_args(args)
    output = Path(args.output) if args.output else default_output(args.source, args.mode)
    show = has_display() if args.show is None else args.show
    with ExitStack() as cleanup:  # the cheap checks (input, output) come before the model
        capture, info = open_source(args.source)
        cleanup.callback(capture.release)
        writer = open_writer(output, info.fps, info.width, info.height)
        cleanup.callback(writer.release)
        try:
            segmenter = make_segmenter(args)
        except SegmenterError:
            writer.release()
            output.unlink(missing_ok=True)  # no empty video left behind
            raise
        total = min(filter(None, (info.frame_count, args.max_frames)), default=None)
        summary = _run_pipeline(capture, writer, FramePipeline(segmenter, render_config(args)),
                                args.max_frames, show, total, progress)
    return summary, output


def _run_pipeline(capture, writer, pipeline, max_frames, show, total, progress):
    frames = (('default', frame, None) for frame in read_frames(capture, max_frames))
    summary = Summary()
    start = time.perf_counter()
    with ordered_results(pipeline, frames, ('annotated_image',), total, progress,
                         'segtrack') as (results, bar):
        for result in results:
            if result.problem is not None:
                raise VideoError(f'frame {summary.frames}: {result.problem}')
            writer.write(result.images['annotated'])
            summary.add(result)
            bar.update(1)
            if show and _show(result.images['annotated']):
                break
    summary.seconds = time.perf_counter() - start
    return summary


def _show(annotated):
    """Show an annotated frame; True when the user pressed q."""
    import cv2

    cv2.imshow('segtrack', annotated)
    return cv2.waitKey(1) & 0xFF == ord('q')


def main(argv=None):
    """Entry point of `segtrack-video`; errors are one line on stderr and a non-zero exit."""
    _, (summary, output) = run_main(build_parser(), argv, run, errors=(VideoError,))
    print(f'segtrack-video: {summary}; wrote {output}')


if __name__ == '__main__':
    main()
