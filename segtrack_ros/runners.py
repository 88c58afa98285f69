"""
The two ways to run a `FramePipeline`: newest frames live, or every frame in order.

`LiveRunner` serves the node (cameras: a one-frame mailbox per stream, batched inference, the
newest frame wins); `OrderedRunner` serves `segtrack-video` and `segtrack-bag` (files: every
frame, in input order). Their threads hand work over through `_Channel`s, which end on an end
marker or when closed, so no thread polls and none can be left waiting on a full queue.

Closing either runner waits for no inference and no drawing: `close()` returns once the
caller's own code in progress (a `deliver`, a read of the source) has returned, and the
runner's threads end by themselves right after their step in hand, handing nothing on.
"""

from collections import deque
import threading

from segtrack_ros.pipeline import FrameResult, OUTPUTS

_END = object()


class _Channel:
    """A bounded hand-over between threads; `close()` wakes every thread that waits on it."""

    def __init__(self, size):
        self._items = deque()
        self._size = size
        self._changed = threading.Condition()
        self._closed = False

    def put(self, item):
        """Wait for room and add `item`; return False (and drop it) once the channel is closed."""
        with self._changed:
            self._changed.wait_for(lambda: len(self._items) < self._size or self._closed)
            if self._closed:
                return False
            self._items.append(item)
            self._changed.notify_all()
            return True

    def get(self):
        """Wait for the next item and return it; return `_END` once the channel is closed."""
        with self._changed:
            self._changed.wait_for(lambda: self._items or self._closed)
            if self._closed:
                return _END
            item = self._items.popleft()
            self._changed.notify_all()
            return item

    def __iter__(self):
        """Yield the items up to the end marker, or until the channel is closed."""
        return iter(self.get, _END)

    def close(self):
        """Drop what waits and make every `put` and `get`, waiting or to come, return at once."""
        with self._changed:
            self._closed = True
            self._items.clear()
            self._changed.notify_all()


class LiveRunner:
    """
    Newest-frame processing of live streams (cameras) through a `FramePipeline`.

    Each stream has a one-frame mailbox: a frame that arrives while the model is busy replaces
    the waiting one and counts as dropped, so no queue builds up whatever the camera rates. One
    inference thread takes every waiting frame at once (one per stream, so no camera starves
    another and a stopped one stalls nobody) and segments them as one batch. The outputs are
    made and handed to `deliver(result)` on the same thread between inferences, or, when
    `overlap`, on a second thread while the next batch is inferred. `wanted(stream)` names the
    outputs to make for a frame of that stream. Nothing that goes wrong on one frame stops the
    threads.

    >>> runner = LiveRunner(pipeline, deliver=publish, wanted=lambda stream: OUTPUTS)
    >>> runner.put('front', serialized_message)   # from the subscription callback
    >>> runner.close()                            # then nothing is delivered any more
    """

    def __init__(self, pipeline, deliver, wanted, overlap=False):
        self.pipeline = pipeline
        self._deliver, self._wanted = deliver, wanted
        self._mailbox = threading.Condition()
        self._waiting = {}
        self._closed = False
        self._delivering = threading.Lock()
        self._drawing = _Channel(1) if overlap else None  # one batch waits while one is drawn
        self._threads = [threading.Thread(target=self._infer_loop, name='infer', daemon=True)]
        if overlap:
            self._threads.append(threading.Thread(target=self._draw_loop, name='publish',
                                                  daemon=True))
        for thread in self._threads:
            thread.start()

    def put(self, stream, payload):
        """Hand over the newest message (or its serialized bytes) of `stream`."""
        stats = self.pipeline.streams[stream].stats
        stats.received()
        with self._mailbox:
            if self._closed:
                return
            if stream in self._waiting:
                stats.count('dropped')
            self._waiting[stream] = payload
            self._mailbox.notify()

    def clear(self):
        """Forget the frames that wait (e.g. when the node is deactivated)."""
        with self._mailbox:
            self._waiting.clear()

    def close(self):
        """
        Stop: once this returns, `deliver` is never called again and none is in progress.

        Waits only for a `deliver` in progress, never for the inference or the drawing in
        progress: the threads end by themselves right after them and deliver nothing. The
        caller may then free what `deliver` uses (the node's publishers). A caller that frees
        the segmenter next (`Segmenter.release`) waits there for the inference in progress, so
        the node stops one batch inference after the signal at worst, not in a fixed time.
        """
        with self._mailbox:
            self._closed = True
            self._waiting.clear()
            self._mailbox.notify_all()
        if self._drawing is not None:
            self._drawing.close()
        with self._delivering:  # `_closed` is seen by every delivery that has not begun
            pass

    def _take(self):
        with self._mailbox:
            self._mailbox.wait_for(lambda: self._waiting or self._closed)
            if self._closed:
                return None
            waiting, self._waiting = self._waiting, {}
            return waiting

    def _infer_loop(self):
        while (waiting := self._take()) is not None:
            try:
                decoded = [self.pipeline.decode(stream, payload)
                           for stream, payload in waiting.items()]
                if self._closed:
                    return
                results = self.pipeline.segment(decoded)
            except Exception as error:  # a fault of the pipeline itself: skip these frames
                if not self._closed:
                    for stream in waiting:
                        self.pipeline.failed(FrameResult(stream), error, 'processing')
                continue
            results = [result for result in results if result.problem is None]
            if self._drawing is None:
                for result in results:
                    self._finish(result)
            elif not self._drawing.put(results):
                return

    def _draw_loop(self):
        for results in self._drawing:
            for result in results:
                self._finish(result)

    def _finish(self, result):
        if self._closed:
            return
        try:
            self.pipeline.finish(result, self._wanted(result.stream))
            with self._delivering:
                if self._closed or result.problem is not None:
                    return
                self._deliver(result)
            self.pipeline.processed(result)
        except Exception as error:  # e.g. a DDS publish error: this frame only
            if not self._closed:  # after close, the caller's objects may be gone: not a fault
                self.pipeline.failed(result, error)


class OrderedRunner:
    """
    Every frame of a source through a `FramePipeline`, in order: iterate it for the results.

    Takes `(stream, message or frame, tag)` items and yields a `FrameResult` for each, in input
    order, none dropped (a frame that fails carries its `problem`). Reading plus decoding,
    inference, and drawing plus encoding (the `wanted` outputs) run on three threads joined
    by small channels, so the model does not wait for reading or writing. An error raised by
    `items` itself (e.g. an unreadable file) is raised by the iteration after the frames read
    before it. Close it when the consumer stops early (`close()` after the end is harmless).

    >>> results = OrderedRunner(pipeline, (('front', image_msg, None),), wanted=OUTPUTS)
    >>> try:
    ...     for result in results:
    ...         result.messages['detections']
    ... finally:
    ...     results.close()
    """

    def __init__(self, pipeline, items, wanted=OUTPUTS):
        self.pipeline = pipeline
        self._closed = self._ended = False
        self._reading = threading.Lock()
        self._errors = []
        decoded, segmented, self._finished = _Channel(4), _Channel(4), _Channel(4)
        self._channels = (decoded, segmented, self._finished)
        self._threads = [
            threading.Thread(target=self._stage, name='decode', daemon=True, args=(
                self._read(items), decoded, lambda item: pipeline.decode(*item))),
            threading.Thread(target=self._stage, name='segment', daemon=True, args=(
                decoded, segmented, lambda result: pipeline.segment([result])[0])),
            threading.Thread(target=self._stage, name='draw', daemon=True, args=(
                segmented, self._finished, lambda result: pipeline.finish(result, wanted))),
        ]
        for thread in self._threads:
            thread.start()

    def __iter__(self):
        """Return the runner: it is its own iterator."""
        return self

    def __next__(self):
        """Return the next result in input order; at the end, raise the source's error."""
        result = _END if self._ended else self._finished.get()
        if result is not _END:
            if result.problem is None:
                self.pipeline.processed(result)
            return result
        if not self._ended and not self._closed:
            self._ended = True
            self.close()  # after a stage's error, a stage before it may wait to hand over
            for thread in self._threads:
                thread.join()
            if self._errors:
                raise self._errors[0]
        raise StopIteration

    def close(self):
        """
        Stop: the source is read no more, and no result comes out any more.

        Waits only for a read of the source in progress (the caller's code: it may then close
        the file), never for the decoding, inference or drawing in progress: the threads end
        by themselves right after them.
        """
        self._closed = True
        for channel in self._channels:
            channel.close()
        with self._reading:  # `_closed` is seen by every read that has not begun
            pass

    def _read(self, items):
        """Yield the items of the source, each read under the lock that `close()` waits on."""
        items = iter(items)
        while True:
            with self._reading:
                if self._closed:
                    return
                item = next(items, _END)
            if item is _END:
                return
            yield item

    def _stage(self, source, target, work):
        try:
            for item in source:
                if not target.put(work(item)):
                    return
        except Exception as error:  # handed to the consumer, which raises it at the end
            self._errors.append(error)
        target.put(_END)
