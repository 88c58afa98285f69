"""
`segtrack-bag`: a recorded rosbag2 bag in; the same bag plus the node's outputs out.

Every frame of the chosen image topics goes through the frame pipeline the node runs (one
tracker per topic), in bag order, none dropped. Its outputs are written at the frame's bag time,
with its header; every other message is copied unchanged (`--no-copy`: outputs only). Reading
and deserializing, inference, and drawing plus encoding overlap in the pipeline's threads; this
thread serializes and writes the results.
"""

import argparse
from contextlib import contextmanager
from dataclasses import dataclass, field
import sys
import time

from segtrack_ros.cli.common import (add_segmenter_arguments, check_args, make_segmenter,
                                     ordered_results, render_config, run_main, Summary)
from segtrack_ros.io import depth_msg
from segtrack_ros.io.bag_io import (BagError, check_namespace, check_output, copy_definition,
                                    DEFAULT_NAMESPACE, deserialize_image, InputBag, output_topics,
                                    OUTPUT_TYPES, output_typestore, OutputBag, STORAGES)
from segtrack_ros.params import BY_NAME
from segtrack_ros.pipeline import DEPTH_OUTPUTS, FramePipeline, OUTPUTS

LISTED_SKIPS = 10  # malformed frames named one by one in the summary; the rest are counted
DEPTH_OUTPUT_TYPES = {'detections_3d': 'vision_msgs/msg/Detection3DArray',
                      'markers': 'visualization_msgs/msg/MarkerArray',
                      'points': 'sensor_msgs/msg/PointCloud2'}
CAMERA_INFO = 'sensor_msgs/msg/CameraInfo'
# a frame waits for its depth partner at most this long (bag time) and behind this many frames
RELEASE_AFTER_NS = 2_000_000_000
RELEASE_FRAMES = 64


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
class BagSummary(Summary):
    """A run's `Summary`, plus its image topics, messages copied and frames skipped."""

    topics: int = 0
    copied: int = 0
    skipped: list = field(default_factory=list)

    def _of(self):
        return f' of {self.topics} topic(s)'

    def lines(self):
        """Return the summary as lines for the terminal: totals, then the skipped frames."""
        text = f'{self}, {self.copied} messages copied'
        if not self.skipped:
            return [text + ', no frame skipped']
        lines = [text + f', {len(self.skipped)} malformed frame(s) skipped:']
        skipped = sorted(self.skipped, key=lambda skip: skip.bag_time)
        lines += [f'  skipped {skip}' for skip in skipped[:LISTED_SKIPS]]
        if len(skipped) > LISTED_SKIPS:
            lines.append(f'  and {len(skipped) - LISTED_SKIPS} more')
        return lines


def build_parser():
    """Build the command line of `segtrack-bag`: INPUT, OUTPUT and `add_bag_arguments`."""
    parser = argparse.ArgumentParser(
        prog='segtrack-bag',
        description='Segment (and track) every frame of image topics of a rosbag2 bag; write '
                    "a new bag with the node's outputs added at the frames' bag times.")
    parser.add_argument('input', help='rosbag2 folder (sqlite3 or MCAP) or a .mcap file')
    parser.add_argument('output', help='new rosbag2 folder to write (must not exist)')
    add_bag_arguments(parser)
    return parser


def add_bag_arguments(parser):
    """
    Add the options of a `segtrack-bag` run, all but INPUT and OUTPUT, to `parser`.

    `--topic` (required, repeatable), the segmenter flags of the parameter table, `--max-frames`,
    `--storage`, `--namespace` and `--no-copy`: what `process_bag` reads from parsed arguments.
    """
    parser.add_argument('--topic', action='append', required=True,
                        help='sensor_msgs/Image or CompressedImage topic; repeat for several')
    add_segmenter_arguments(parser)
    parser.add_argument('--storage', choices=tuple(STORAGES), default='mcap',
                        help='storage of the output bag (default mcap)')
    parser.add_argument('--namespace', default=DEFAULT_NAMESPACE,
                        help='prefix of the output topics (default /segtrack; / for none)')
    parser.add_argument('--no-copy', action='store_true',
                        help="write only the outputs, not the input's messages")
    parser.add_argument('--depth-topic', action='append',
                        help='depth image (16UC1/mono16 mm, 32FC1 m) registered to the --topic '
                             'of the same position: adds detections_3d, markers, points')
    parser.add_argument('--camera-info-topic', action='append',
                        help='CameraInfo of the --depth-topic of the same position')
    parser.add_argument('--depth-tolerance', type=float,
                        default=BY_NAME['depth_tolerance'].default,
                        help='largest stamp difference (s) of a colour frame and its depth image '
                             '(default %(default)s)')


class BagRun:
    """One run of `segtrack-bag`: the checked inputs, then the pass over the bag."""

    def __init__(self, args, bag, target):
        self.args = args
        self.bag = bag
        self.target = target
        namespace = check_namespace(args.namespace)
        topics = dict.fromkeys('/' + topic.lstrip('/') for topic in args.topic)
        self.images = {topic: bag.image_connections(topic) for topic in topics}
        self.types = {topic: connections[0].msgtype for topic, connections in self.images.items()}
        self.topics = {topic: output_topics(topic, namespace) for topic in self.types}
        self.depth = self._depth_inputs(list(topics))
        for topic in self.depth:
            base = self.topics[topic]['detections'].rsplit('/', 1)[0]
            self.topics[topic].update({name: f'{base}/{name}' for name in DEPTH_OUTPUT_TYPES})
        self._check_output_names()
        self.store = output_typestore()
        self.copies = [] if args.no_copy else self._copyable()
        self.frames_read = 0

    def _depth_inputs(self, topics):
        """Return {image topic: (depth connections, camera info connections)}; check them."""
        depth_topics = self.args.depth_topic or []
        info_topics = self.args.camera_info_topic or []
        if not depth_topics and not info_topics:
            return {}
        if not len(depth_topics) == len(info_topics) == len(topics):
            raise BagError(f'give one --depth-topic and one --camera-info-topic per --topic, in '
                           f'the same order: got {len(topics)} --topic, {len(depth_topics)} '
                           f'--depth-topic, {len(info_topics)} --camera-info-topic')
        inputs = {}
        for topic, depth, info in zip(topics, depth_topics, info_topics):
            depth, info = '/' + depth.lstrip('/'), '/' + info.lstrip('/')
            depth_connections = self.bag.image_connections(depth)
            if depth_connections[0].msgtype != 'sensor_msgs/msg/Image':
                raise BagError(f"--depth-topic '{depth}' is {depth_connections[0].msgtype}: "
                               'give the raw depth image (sensor_msgs/Image)')
            info_connections = [c for c in self.bag.connections if c.topic == info]
            if not info_connections or any(c.msgtype != CAMERA_INFO for c in info_connections):
                raise BagError(f"--camera-info-topic '{info}' is not a {CAMERA_INFO} topic of "
                               f"bag '{self.bag.path}'")
            inputs[topic] = (depth_connections, info_connections)
        return inputs

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

    def run(self, segmenter, progress):
        """Write the output bag with `segmenter`, its tracks reset first; return the summary."""
        segmenter.reset()  # a segmenter may come from the previous bag
        summary = BagSummary(topics=len(self.topics))
        pipeline = FramePipeline(segmenter, render_config(self.args), streams=tuple(self.topics),
                                 deserialize=self._deserialize,
                                 depth_tolerance=self.args.depth_tolerance)
        for topic, stream in pipeline.streams.items():
            if topic not in self.depth:
                stream.depth = None
        start = time.perf_counter()
        with OutputBag(self.target, self.args.storage) as output:
            copied = {connection.id: output.add_connection(
                connection.topic, connection.msgtype, *definition,
                connection.ext.offered_qos_profiles) for connection, definition in self.copies}
            types = {**OUTPUT_TYPES, **DEPTH_OUTPUT_TYPES}
            results = {topic: {name: output.add_connection(
                full_name, types[name], *self._definition(types[name]))
                for name, full_name in names.items()} for topic, names in self.topics.items()}
            self._process(pipeline, output, copied, results, summary, progress)
        summary.seconds = time.perf_counter() - start  # up to the last byte on disk
        return summary

    def _definition(self, msgtype):
        """Return the message definition and RIHS01 hash of output type `msgtype`."""
        return (self.store.generate_msgdef(msgtype, ros_version=2)[0],
                self.store.hash_rihs01(msgtype))

    def _frames(self, pipeline, output, copied, summary):
        """
        Yield (topic, CDR bytes, (bag time, frame number)) for the pipeline; copy as it reads.

        Runs on the pipeline's decoding thread; the output bag takes writes from any thread.
        Reading stops at the first frame past --max-frames. With depth, a frame is yielded once
        its camera's depth images up to its stamp plus the tolerance have been read, so the 3D
        outputs do not depend on how far the reading got; but no later than
        `RELEASE_AFTER_NS` of bag time or `RELEASE_FRAMES` frames after it (depth that ends
        early, has gaps or never comes must not pile frames up in memory). A malformed depth
        message is skipped and listed in the summary.
        """
        image_ids = {c.id for connections in self.images.values() for c in connections}
        depth_ids = {c.id: (topic, kind) for topic, connections in self.depth.items()
                     for kind, group in zip(('image', 'info'), connections) for c in group}
        wanted = [c for c in self.bag.connections
                  if c.id in image_ids or c.id in copied or c.id in depth_ids]
        tolerance = self.args.depth_tolerance
        read_up_to = {topic: -float('inf') for topic in self.depth}  # newest depth stamp read
        waiting = []
        for connection, bag_time, data in self.bag.messages(wanted):
            is_frame = connection.id in image_ids
            if is_frame and self.frames_read == self.args.max_frames and self.args.max_frames:
                break
            if connection.id in copied:
                output.write(copied[connection.id], bag_time, data)
                summary.copied += 1
            if connection.id in depth_ids:
                topic, kind = depth_ids[connection.id]
                try:
                    self._put_depth(pipeline.streams[topic].depth, kind, data, read_up_to, topic)
                except depth_msg.DepthInputError as error:
                    summary.skipped.append(Skipped(connection.topic, bag_time, str(error)))
            if is_frame:
                self.frames_read += 1
                waiting.append((self._frame_stamp(connection.topic, data),
                                (connection.topic, data, (bag_time, self.frames_read))))
            while waiting and (waiting[0][0] is None
                               or read_up_to[waiting[0][1][0]] > waiting[0][0] + tolerance
                               or bag_time - waiting[0][1][2][0] > RELEASE_AFTER_NS
                               or len(waiting) > RELEASE_FRAMES):
                yield waiting.pop(0)[1]
        for _, item in waiting:
            yield item

    @staticmethod
    def _put_depth(depth, kind, data, read_up_to, topic):
        message = depth_msg.from_cdr(data, kind)
        if kind == 'info':
            depth.put_info(message)
        else:
            depth.put_image(message)
            read_up_to[topic] = max(read_up_to[topic], depth_msg.cdr_stamp(data))

    def _frame_stamp(self, topic, data):
        """Return the stamp of a frame with depth, else (or if it has no header) None."""
        if topic not in self.depth:
            return None
        try:
            return depth_msg.cdr_stamp(data)
        except depth_msg.DepthInputError:  # the pipeline reports the malformed frame
            return None

    def _deserialize(self, topic, data):
        """Turn the CDR bytes of a frame of `topic` into rclpy's Image or CompressedImage."""
        return deserialize_image(data, self.types[topic])

    def _process(self, pipeline, output, copied, results, summary, progress):
        wanted = OUTPUTS + (DEPTH_OUTPUTS if self.depth else ())
        with ordered_results(pipeline, self._frames(pipeline, output, copied, summary), wanted,
                             self.total_frames(), progress, 'segtrack-bag') as (ordered, bar):
            for result in ordered:
                bag_time, frame_number = result.tag
                bar.update(frame_number - bar.n)
                if result.problem is not None:
                    summary.skipped.append(Skipped(result.stream, bag_time, result.problem))
                    continue
                for name, message in result.messages.items():
                    output.write_message(results[result.stream][name], bag_time, message)
                summary.add(result)
            bar.update(self.frames_read - bar.n)


@contextmanager
def _checked(args, source, target):
    """Check the flags, the output path, the input bag and its topics; yield the `BagRun`."""
    check_args(args)
    check_output(target)
    with InputBag(source) as bag:
        yield BagRun(args, bag, target)


def process_bag(args, segmenter, source, target, progress=False):
    """
    Process bag `source` into the new bag `target` with an already-made `segmenter`.

    For programs that run many bags with one model (`segtrack-fleet`): `args` holds the options
    of `add_bag_arguments` (parsed, or an `argparse.Namespace`), `segmenter` is made for them
    (`cli.common.make_segmenter(args)`) and its tracks are reset before the bag. Returns the
    `BagSummary` (frames, seconds, fps, instances, tracks, copied, skipped). Raises
    `cli.common.UsageError`, `BagError` or `SegmenterError`; nothing is left at `target` then.
    """
    with _checked(args, source, target) as bag_run:
        return bag_run.run(segmenter, progress)


def run(args, progress=True):
    """Run `segtrack-bag` for parsed `args` (the cheap checks before the model); the summary."""
    with _checked(args, args.input, args.output) as bag_run:
        return bag_run.run(make_segmenter(args), progress)


def main(argv=None):
    """Entry point of `segtrack-bag`; errors are one line on stderr and a non-zero exit."""
    # SIGTERM cleans up as Ctrl-C does: no half-written bag is left behind.
    args, summary = run_main(build_parser(), argv, run, errors=(BagError,),
                             interrupted=lambda args: f"interrupted; '{args.output}' not written")
    lines = summary.lines()
    print(f'segtrack-bag: {lines[0]}; wrote {args.output} ({args.storage})')
    for line in lines[1:]:
        print(line)


if __name__ == '__main__':
    main()
