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
from segtrack_ros.io.bag_io import (BagError, check_namespace, check_output, copy_definition,
                                    DEFAULT_NAMESPACE, deserialize_image, InputBag, output_topics,
                                    OUTPUT_TYPES, output_typestore, OutputBag, STORAGES)
from segtrack_ros.pipeline import FramePipeline, OUTPUTS

LISTED_SKIPS = 10  # malformed frames named one by one in the summary; the rest are counted


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

    def run(self, segmenter, progress):
        """Write the output bag with `segmenter`, its tracks reset first; return the summary."""
        segmenter.reset()  # a segmenter may come from the previous bag
        summary = BagSummary(topics=len(self.topics))
        pipeline = FramePipeline(segmenter, render_config(self.args), streams=tuple(self.topics),
                                 deserialize=self._deserialize)
        start = time.perf_counter()
        with OutputBag(self.target, self.args.storage) as output:
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
        return deserialize_image(data, self.types[topic])

    def _process(self, pipeline, output, copied, results, summary, progress):
        with ordered_results(pipeline, self._frames(output, copied, summary), OUTPUTS,
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
