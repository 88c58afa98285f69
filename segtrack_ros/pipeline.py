"""
The frame pipeline under `segtrack_node`, `segtrack-video` and `segtrack-bag`.

decode -> segment -> label images and drawing -> encoded outputs, for one or more streams
(cameras) over one `Segmenter`. The pipeline owns each stream's state: its renderer and trails,
its last stamp and its statistics. Configuration changes and resets are events applied between
frames: the inference thread applies the segmenter's part, and the frame carries the renderer's
part to the thread that draws it, so that thread alone touches a renderer. Every per-frame error
is contained (counted, reported, the next frame processed). Imports no rclpy: the node, the video
CLI and the bag tool are sources and sinks around it; `segtrack_ros.runners` runs the stages
on threads (newest frames live, or every frame in order).

>>> pipeline = FramePipeline(segmenter, RenderConfig(color_by='track'), streams=('front',))
>>> result = pipeline.finish(pipeline.segment([pipeline.decode('front', image_msg)])[0])
>>> result.messages['detections']
"""

from dataclasses import dataclass, field
import threading
import time

import numpy as np

from segtrack_ros.core import labels
from segtrack_ros.core.errors import SegmenterError
from segtrack_ros.core.render import Renderer
from segtrack_ros.core.stats import PipelineStats
from segtrack_ros.io import image_codec

OUTPUTS = ('detections', 'instance_mask', 'class_mask', 'annotated_image',
           'annotated_image/compressed')
# with depth (`depth_stage`, imported only then: it needs the 3D message packages)
DEPTH_OUTPUTS = ('detections_3d', 'markers', 'points')
# A stamp this much older than the previous one is a new recording (a looping bag, a restarted
# camera) and resets the stream's tracks; anything less is jitter between publishers.
STAMP_JUMP_SECONDS = 1.0


@dataclass
class FrameResult:
    """
    One frame on its way through the pipeline, and what came out of it.

    `problem` says why the frame was skipped (a bad input, or an error while segmenting,
    drawing or encoding); `images` holds the arrays and `messages` the encoded outputs that
    were wanted, each message with the input `header`.
    """

    stream: str
    tag: object = None
    header: object = None
    frame: np.ndarray = None
    detections: object = None
    images: dict = field(default_factory=dict)
    messages: dict = field(default_factory=dict)
    problem: str = None
    inference_ms: float = 0.0
    received: float = field(default_factory=time.monotonic)
    _drawing: tuple = None  # (render config, reset count) the frame is drawn with


class _Stream:
    """The state of one stream; `renderer` belongs to the thread that draws."""

    def __init__(self, name, render_config, depth=None):
        self.name = name
        self.depth = depth  # a DepthInput, with depth
        self.renderer = Renderer(render_config)
        self.render_config = render_config
        self.resets = 0
        self.drawn_resets = 0
        self.last_stamp = None
        self.stats = PipelineStats()


def _stamp_seconds(header):
    return header.stamp.sec + header.stamp.nanosec * 1e-9


class FramePipeline:
    """
    Decode, segment, draw and encode frames of named streams over one segmenter.

    `report(kind, stream, text)` hears of every skipped frame (`kind` is `bad_input` or
    `error`), of a frame's 3D outputs lost to its depth (`bad_depth`, or `error`) and of track
    resets (`info`); the caller throttles it. `deserialize(stream, data)`
    turns serialized messages into messages (the node's subscriptions take bytes). `now()` is the
    clock that latencies are measured against (the node's ROS clock), in seconds.
    """

    def __init__(self, segmenter, render_config, streams=('default',),
                 max_input_pixels=image_codec.DEFAULT_MAX_PIXELS, report=None,
                 deserialize=None, now=time.time, depth_tolerance=None):
        self.segmenter = segmenter
        # with a depth_tolerance, each stream takes depth images (`streams[name].depth`)
        if depth_tolerance is not None:
            from segtrack_ros.depth_stage import DepthInput
        self.streams = {name: _Stream(name, render_config, None if depth_tolerance is None
                                      else DepthInput(depth_tolerance, max_input_pixels))
                        for name in streams}
        self.max_input_pixels = max_input_pixels
        self._report = report or (lambda kind, stream, text: None)
        self._deserialize = deserialize
        self._now = now
        self._events = threading.Lock()
        self._segmenter_changes = {}
        self._resets = set()

    # -- events, from any thread --------------------------------------------------------------

    def configure(self, render_config=None, **segmenter_changes):
        """Change the drawing and the segmenter's settings from the next frame on."""
        with self._events:
            self._segmenter_changes.update(segmenter_changes)
            if render_config is not None:
                for stream in self.streams.values():
                    stream.render_config = render_config

    def reset(self, stream=None):
        """Forget the tracks and trails of `stream`, or of every stream, before the next frame."""
        with self._events:
            self._resets.update(self.streams if stream is None else (stream,))

    # -- the stages ---------------------------------------------------------------------------

    def decode(self, stream, message, tag=None):
        """Return a `FrameResult` holding the BGR frame of `message` (or why it has none)."""
        result = FrameResult(stream, tag)
        if isinstance(message, np.ndarray):
            result.frame = message
            return result
        try:
            if isinstance(message, (bytes, bytearray, memoryview)):
                message = self._deserialize(stream, message)
            result.header = message.header
            if hasattr(message, 'format'):
                result.frame = image_codec.decode_compressed(message, self.max_input_pixels)
            else:
                result.frame = image_codec.decode_image(message, self.max_input_pixels)
        except image_codec.ImageDecodeError as error:
            self._skip(result, 'bad_input', f'bad input image skipped: {error}')
        except Exception as error:  # a converter or deserializer fault: this frame only
            self._skip(result, 'error', f'decoding failed on a frame: {error!r}')
        return result

    def segment(self, results):
        """
        Segment the decoded frames of `results` (at most one per stream), batched by frame size.

        Pending configuration changes and resets are applied first.
        """
        self._apply_events()
        ready = [result for result in results if result.problem is None]
        for result in ready:
            self._reset_on_stamp_jump(result)
        by_shape = {}
        for result in ready:
            by_shape.setdefault(result.frame.shape, []).append(result)
        for batch in by_shape.values():
            start = time.perf_counter()
            try:
                found = self.segmenter.process_batch([r.frame for r in batch],
                                                     [r.stream for r in batch])
            except Exception as error:  # one bad batch must not stop the pipeline
                for result in batch:
                    self._skip(result, 'error', f'inference failed on a frame: {error!r}')
                continue
            inference_ms = (time.perf_counter() - start) * 1000 / len(batch)
            for result, detections in zip(batch, found):
                state = self.streams[result.stream]
                result.detections, result.inference_ms = detections, inference_ms
                result._drawing = (state.render_config, state.resets)
                if len(batch) > 1:
                    state.stats.count('batched_frames')
        return results

    def finish(self, result, wanted=OUTPUTS):
        """
        Make the `wanted` outputs of a segmented frame: arrays, and messages for message inputs.

        Cheapest first: the detections need no full-size image, so they are built before the
        label images and the drawing.
        """
        if result.problem is not None:
            return result
        try:
            self._finish(result, set(wanted))
        except Exception as error:  # e.g. an image too large to encode: this frame only
            self._skip(result, 'error', f'drawing or encoding failed on a frame: {error!r}')
        return result

    def processed(self, result):
        """Count a frame whose outputs were delivered, with its latency when it has a stamp."""
        latency_ms = ((self._now() - _stamp_seconds(result.header)) * 1000
                      if result.header is not None
                      else (time.monotonic() - result.received) * 1000)
        self.streams[result.stream].stats.processed(result.inference_ms, latency_ms)

    def failed(self, result, error, doing='publishing'):
        """Count and report an error that stopped `result` while `doing` something with it."""
        self._skip(result, 'error', f'{doing} failed on a frame: {error!r}')

    # -- inside --------------------------------------------------------------------------------

    def _apply_events(self):
        with self._events:
            changes, self._segmenter_changes = self._segmenter_changes, {}
            resets, self._resets = self._resets, set()
        if changes:
            resets |= self._update_segmenter(changes)
        for name in resets:
            self.segmenter.reset(name)
            self.streams[name].resets += 1

    def _update_segmenter(self, changes):
        """Apply settings to the segmenter; return the streams whose tracks a change reset."""
        old = self.segmenter.config
        try:
            self.segmenter.update(**changes)
        except SegmenterError as error:  # e.g. a ReID model file that exists but cannot load
            self._report('error', None, f'{error}: tracking goes on with {old.tracker}')
            self.segmenter.update(**{key: value for key, value in changes.items()
                                     if key not in ('mode', 'tracker')})
        new = self.segmenter.config
        if (new.mode, new.tracker) == (old.mode, old.tracker):
            return set()
        if new.mode == 'track':
            self._report('tracks_reset', None,
                         f"tracker '{new.tracker}': tracks reset on every camera")
        return set(self.streams)  # new tracks: the old ones' trails go too

    def _reset_on_stamp_jump(self, result):
        if result.header is None:
            return
        state = self.streams[result.stream]
        stamp = _stamp_seconds(result.header)
        if state.last_stamp is not None and stamp < state.last_stamp - STAMP_JUMP_SECONDS:
            self._report('info', result.stream,
                         f'input stamps jumped backwards ({state.last_stamp:.1f} s -> '
                         f'{stamp:.1f} s: a looping bag or a restarted camera?): tracks reset')
            self.segmenter.reset(result.stream)
            state.resets += 1
            if state.depth is not None:  # the old recording's depth pairs with nothing now
                state.depth.clear(after=stamp + STAMP_JUMP_SECONDS)
        state.last_stamp = stamp

    def _finish(self, result, wanted):
        detections, header = result.detections, result.header
        images, messages = result.images, result.messages
        if 'detections' in wanted and header is not None:
            from segtrack_ros.io.detection_msg import to_detection_array

            messages['detections'] = to_detection_array(detections, header)
        owner = None
        for name, label_image in (('instance_mask', labels.instance_mask),
                                  ('class_mask', labels.class_mask)):
            if name in wanted:
                if owner is None:
                    owner = labels.owner_image(detections)
                images[name] = label_image(detections, owner)
                if header is not None:
                    messages[name] = image_codec.to_image_msg(images[name], 'mono16', header)
        depth = self.streams[result.stream].depth
        if depth is not None and header is not None:
            if wanted & set(DEPTH_OUTPUTS) and owner is None:
                owner = labels.owner_image(detections)
            self._depth_outputs(result, depth, owner, wanted)
        if wanted & {'annotated_image', 'annotated_image/compressed'}:
            images['annotated'] = self._draw(result, owner)
            if header is not None and 'annotated_image' in wanted:
                messages['annotated_image'] = image_codec.to_image_msg(
                    images['annotated'], 'bgr8', header)
            if header is not None and 'annotated_image/compressed' in wanted:
                messages['annotated_image/compressed'] = image_codec.to_compressed_msg(
                    images['annotated'], header)
        result.frame = None  # the input frame is not needed any more: free it early

    def _depth_outputs(self, result, depth, owner, wanted):
        """Add a frame's 3D messages; a bad depth input or a fault is reported, 2D stands."""
        from segtrack_ros.depth_stage import BAD_DEPTH_ERRORS

        wanted = wanted & set(DEPTH_OUTPUTS)  # the depth stage is given 3D outputs only
        detections = result.detections
        colours = names = None
        if 'markers' in wanted:  # the 2D look: colours and labels as this frame is drawn
            look = Renderer(result._drawing[0])
            colours = look.instance_colors(detections)
            names = [look.label(detections, index) for index in range(len(detections))]
        depth.max_pixels = self.max_input_pixels
        try:
            result.messages.update(depth.outputs(detections, result.header, wanted, owner,
                                                 colours, names))
        except BAD_DEPTH_ERRORS as error:
            self.streams[result.stream].stats.count('bad_inputs')
            self._report('bad_depth', result.stream,
                         f'bad depth input, no 3D outputs for this frame: {error}')
        except Exception as error:  # a fault in the 3D stage must not cost the 2D outputs
            self.streams[result.stream].stats.count('errors')
            self._report('error', result.stream,
                         f'3D outputs failed on a frame (2D outputs kept): {error!r}')

    def _draw(self, result, owner):
        state = self.streams[result.stream]
        config, resets = result._drawing
        renderer = state.renderer
        if resets != state.drawn_resets or config.trail_length != renderer.config.trail_length:
            renderer.reset()
            state.drawn_resets = resets
        renderer.config = config
        return renderer.draw(result.frame, result.detections, owner)

    def _skip(self, result, kind, text):
        result.problem = text
        result.frame = None
        self.streams[result.stream].stats.count('bad_inputs' if kind == 'bad_input' else 'errors')
        self._report(kind, result.stream, text)
