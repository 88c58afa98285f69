"""
`segtrack-bag`: a recorded rosbag2 bag in; the same bag plus the node's outputs out.

Every frame of the chosen image topics goes through the frame pipeline the node runs (one
tracker per topic), in bag order, none dropped. Its outputs are written at the frame's bag time,
with its header; every other message is copied unchanged (`--no-copy`: outputs only). Reading
and deserializing, inference, and drawing plus encoding overlap in the pipeline's threads; this
thread serializes and writes the results.
"""

import argparse
from dataclasses import dataclass, field
import signal
import sys
import time

from rclpy.serialization import deserialize_message, serialize_message
from segtrack_ros.core.render import COLOR_MODES, RenderConfig
from segtrack_ros.core.runtime import apply_process_defaults
from segtrack_ros.core.segmenter import MODES, Segmenter, SegmenterConfig, SegmenterError
from segtrack_ros.io.bag_io import (BagError, check_namespace, check_output, copy_definition,
                                    DEFAULT_NAMESPACE, InputBag, output_topics, OUTPUT_TYPES,
                                    output_typestore, OutputBag, STORAGES)
from segtrack_ros.params import BY_NAME
from segtrack_ros.pipeline import FramePipeline, OUTPUTS
from segtrack_ros.runners import OrderedRunner
from sensor_msgs.msg import CompressedImage, Image

MESSAGE_CLASSES = {'sensor_msgs/msg/Image': Image,
                   'sensor_msgs/msg/CompressedImage': CompressedImage}
LISTED_SKIPS = 10  # malformed frames named one by one in the summary; the rest are counted


class UsageError(Exception):
    """Flags that contradict each other or are out of range."""


@dataclass(frozen=True)
class Skipped:
    """A frame without outputs: its topic, bag time (ns) and why."""

    topic: str
    bag_time: int
    reason: str

    def __str__(self):
        seconds, nanoseconds = divmod(self.bag_time, 1_000_000_000)
        return f'{self.topic} at bag time {seconds}.{nanoseconds:09d} s: {self.reason}'


@dataclass
class Summary:
    """What a run did: frames with outputs, time, instances, tracks, copies, skipped frames."""

    topics: int = 0
    frames: int = 0
    seconds: float = 0.0
    instances: int = 0
    tracks: int = 0
    copied: int = 0
    skipped: list = field(default_factory=list)

    @property
    def fps(self):
        """Frames per second over the whole run."""
        return self.frames / self.seconds if self.seconds else 0.0

    def lines(self):
        """Return the summary as lines for the terminal: totals, then the skipped frames."""
        text = (f'{self.frames} frames of {self.topics} topic(s) in {self.seconds:.1f} s '
                f'({self.fps:.1f} fps), {self.instances} instances, {self.tracks} tracks, '
                f'{self.copied} messages copied')
        if not self.skipped:
            return [text + ', no frame skipped']
        lines = [text + f', {len(self.skipped)} malformed frame(s) skipped:']
        skipped = sorted(self.skipped, key=lambda skip: skip.bag_time)
        lines += [f'  skipped {skip}' for skip in skipped[:LISTED_SKIPS]]
        if len(skipped) > LISTED_SKIPS:
            lines.append(f'  and {len(skipped) - LISTED_SKIPS} more')
        return lines


def build_parser():
    """Build the command line of `segtrack-bag`."""
    parser = argparse.ArgumentParser(
        prog='segtrack-bag',
        description='Segment (and track) every frame of image topics of a rosbag2 bag; write '
                    "a new bag with the node's outputs added at the frames' bag times.")
    parser.add_argument('input', help='rosbag2 folder (sqlite3 or MCAP) or a .mcap file')
    parser.add_argument('output', help='new rosbag2 folder to write (must not exist)')
    parser.add_argument('--topic', action='append', required=True,
                        help='sensor_msgs/Image or CompressedImage topic; repeat for several')
    parser.add_argument('--model', default=BY_NAME['model'].default,
                        help='.pt/.onnx/.engine file, OpenVINO folder or official name')
    parser.add_argument('--mode', choices=MODES, default=BY_NAME['mode'].default)
    parser.add_argument('--color-by', choices=COLOR_MODES,
                        help='default: class in predict mode, track in track mode')
    parser.add_argument('--device', default=BY_NAME['device'].default,
                        help='auto, cpu, cuda, cuda:N, N or mps')
    for name, kind in (('imgsz', int), ('conf', float), ('iou', float), ('max_det', int)):
        spec = BY_NAME[name]
        parser.add_argument(f'--{name.replace("_", "-")}', type=kind, default=spec.default,
                            help=f'{spec.description} Default {spec.default}.')
    parser.add_argument('--classes', type=int, nargs='+', default=[], help='class ids to keep')
    parser.add_argument('--tracker', default=BY_NAME['tracker'].default,
                        help='tracker config: bytetrack.yaml, botsort.yaml, ... or a path')
    parser.add_argument('--storage', choices=tuple(STORAGES), default='mcap',
                        help='storage of the output bag (default mcap)')
    parser.add_argument('--namespace', default=DEFAULT_NAMESPACE,
                        help='prefix of the output topics (default /segtrack; / for none)')
    parser.add_argument('--no-copy', action='store_true',
                        help="write only the outputs, not the input's messages")
    parser.add_argument('--max-frames', type=int, default=0,
                        help='stop after N frames of the image topics (0 = all)')
    return parser


def check_args(args):
    """Refuse contradictory or out-of-range flags, naming the fix (node parameter ranges)."""
    if args.color_by == 'track' and args.mode != 'track':
        raise UsageError('--color-by track needs --mode track (predict mode has no track ids)')
    for name in ('imgsz', 'conf', 'iou', 'max_det', 'classes'):
        reason = BY_NAME[name].check(getattr(args, name))
        if reason:
            raise UsageError(f'--{name.replace("_", "-")}: {reason}')
    if args.max_frames < 0:
        raise UsageError('--max-frames cannot be negative')


def _interrupt(signum, frame):
    raise KeyboardInterrupt


class BagRun:
    """One run of `segtrack-bag`: the checked inputs, then the pass over the bag."""

    def __init__(self, args, bag):
        self.args = args
        self.bag = bag
        topics = dict.fromkeys('/' + topic.lstrip('/') for topic in args.topic)
        self.images = {topic: bag.image_connections(topic) for topic in topics}
        self.types = {topic: connections[0].msgtype for topic, connections in self.images.items()}
        self.topics = {topic: output_topics(topic, args.namespace) for topic in self.types}
        self._check_output_names()
        self.store = output_typestore()
        self.copies = [] if args.no_copy else self._copyable()
        self.frames_read = 0

    def _check_output_names(self):
        inputs = set() if self.args.no_copy else {c.topic for c in self.bag.connections}
        writers = {}
        for topic, outputs in self.topics.items():
            for output in outputs.values():
                if output in inputs:
                    raise BagError(f"output topic '{output}' of '{topic}' is in the input bag "
                                   'already: use another --namespace, or --no-copy')
                if output in writers:
                    raise BagError(f"'{writers[output]}' and '{topic}' would both write "
                                   f"'{output}': use separate runs with different --namespace")
                writers[output] = topic

    def _copyable(self):
        """Return the connections to copy with their definitions; warn of those without."""
        copies = []
        for connection in self.bag.connections:
            definition = copy_definition(connection, self.store)
            if definition is None:
                print(f"segtrack-bag: warning: '{connection.topic}' not copied: neither the bag "
                      f"nor rosbags' ROS 2 types define {connection.msgtype}", file=sys.stderr)
            else:
                copies.append((connection, definition))
        return copies

    def total_frames(self):
        """Frames the run will take: the image topics' message counts, up to --max-frames."""
        total = sum(c.msgcount for connections in self.images.values() for c in connections)
        return min(total, self.args.max_frames) if self.args.max_frames else total

    def run(self, segmenter, render_config, output, progress):
        """Write the output bag; return the `Summary`."""
        summary = Summary(topics=len(self.topics))
        pipeline = FramePipeline(segmenter, render_config, streams=tuple(self.topics),
                                 deserialize=self._deserialize)
        start = time.perf_counter()
        with output:
            copied = {connection.id: output.add_connection(
                connection.topic, connection.msgtype, *definition,
                connection.ext.offered_qos_profiles) for connection, definition in self.copies}
            results = {topic: {name: output.add_connection(
                full_name, OUTPUT_TYPES[name], *self._definition(OUTPUT_TYPES[name]))
                for name, full_name in names.items()} for topic, names in self.topics.items()}
            self._process(pipeline, output, copied, results, summary, progress)
        summary.seconds = time.perf_counter() - start  # up to the last byte on disk
        return summary

    def _definition(self, msgtype):
        """Return the message definition and RIHS01 hash of output type `msgtype`."""
        return (self.store.generate_msgdef(msgtype, ros_version=2)[0],
                self.store.hash_rihs01(msgtype))

    def _frames(self, output, copied, summary):
        """
        Yield (topic, CDR bytes, (bag time, frame number)) for the pipeline; copy as it reads.

        Runs on the pipeline's decoding thread; the output bag takes writes from any thread.
        Reading stops at the first frame past --max-frames.
        """
        image_ids = {c.id for connections in self.images.values() for c in connections}
        wanted = [c for c in self.bag.connections if c.id in image_ids or c.id in copied]
        for connection, bag_time, data in self.bag.messages(wanted):
            is_frame = connection.id in image_ids
            if is_frame and self.frames_read == self.args.max_frames and self.args.max_frames:
                return
            if connection.id in copied:
                output.write(copied[connection.id], bag_time, data)
                summary.copied += 1
            if is_frame:
                self.frames_read += 1
                yield connection.topic, data, (bag_time, self.frames_read)

    def _deserialize(self, topic, data):
        """Turn the CDR bytes of a frame of `topic` into rclpy's Image or CompressedImage."""
        return deserialize_message(bytes(data), MESSAGE_CLASSES[self.types[topic]])

    def _process(self, pipeline, output, copied, results, summary, progress):
        from ultralytics.utils.tqdm import TQDM

        track_ids = set()
        bar = TQDM(total=self.total_frames(), desc='segtrack-bag', unit='frame',
                   disable=not progress, file=sys.stderr)
        ordered = OrderedRunner(pipeline, self._frames(output, copied, summary), wanted=OUTPUTS)
        try:
            for result in ordered:
                bag_time, frame_number = result.tag
                bar.update(frame_number - bar.n)
                if result.problem is not None:
                    summary.skipped.append(Skipped(result.stream, bag_time, result.problem))
                    continue
                for name, message in result.messages.items():
                    output.write(results[result.stream][name], bag_time,
                                 serialize_message(message))
                summary.frames += 1
                summary.instances += len(result.detections)
                if result.detections.tracked:
                    track_ids.update((result.stream, int(i)) for i in result.detections.ids)
            bar.update(self.frames_read - bar.n)
        finally:
            ordered.close()
            bar.close()
        summary.tracks = len(track_ids)


def run(args, progress=True):
    """Run `segtrack-bag` for parsed `args`; return the `Summary`."""
    check_args(args)
    args.namespace = check_namespace(args.namespace)
    color_by = args.color_by or ('track' if args.mode == 'track' else 'class')
    check_output(args.output)
    with InputBag(args.input) as bag:
        bag_run = BagRun(args, bag)  # the cheap checks (bag, topics, output) before the model
        segmenter = Segmenter(SegmenterConfig(
            model=args.model, device=args.device, mode=args.mode, tracker=args.tracker,
            conf=args.conf, iou=args.iou, imgsz=args.imgsz, max_det=args.max_det,
            classes=tuple(args.classes)))
        return bag_run.run(segmenter, RenderConfig(color_by=color_by),
                           OutputBag(args.output, args.storage), progress)


def main(argv=None):
    """Entry point of `segtrack-bag`; errors are one line on stderr and a non-zero exit."""
    apply_process_defaults()
    parser = build_parser()
    parser.error = lambda message: _fail(message, 2)
    args = parser.parse_args(argv)
    # SIGTERM cleans up as Ctrl-C does: no half-written bag is left behind.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        summary = run(args)
    except (UsageError, BagError, SegmenterError) as error:
        _fail(str(error), 1)
    except KeyboardInterrupt:
        _fail(f"interrupted; '{args.output}' not written", 130)
    finally:
        signal.signal(signal.SIGTERM, previous)
    lines = summary.lines()
    print(f'segtrack-bag: {lines[0]}; wrote {args.output} ({args.storage})')
    for line in lines[1:]:
        print(line)


def _fail(message, code):
    # One line, even for multi-line messages (YAML errors, a corrupt checkpoint).
    message = ' '.join(line.strip() for line in str(message).splitlines() if line.strip())
    print(f'segtrack-bag: error: {message}', file=sys.stderr)
    sys.exit(code)
