"""
Running figures of the node's pipeline for `/diagnostics`: rates, drops, bad inputs, timings.

Thread-safe; ROS-free, so benchmarks and tests can use it too. Holds only the records of the
last few seconds, whether or not anybody reads them: a program without diagnostics (a video or a
bag run for hours) keeps a bounded size.
"""

from collections import deque
import threading
import time

import numpy as np

WINDOW_SECONDS = 5.0


class PipelineStats:
    """
    Counters and recent timings of frames received, processed, dropped and refused.

    Rates and timings cover the last `window_seconds` of `clock` (seconds, monotonic).

    >>> stats = PipelineStats()
    >>> stats.received(); stats.processed(inference_ms=42.0, latency_ms=55.0)
    >>> stats.snapshot()['processed_hz']
    """

    def __init__(self, window_seconds=WINDOW_SECONDS, clock=time.monotonic):
        self._window = window_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._received = deque()
        self._processed = deque()   # (time, inference ms, latency ms)
        self._problems = deque()    # times of bad inputs and errors
        self.counts = {'received': 0, 'processed': 0, 'dropped': 0, 'bad_inputs': 0,
                       'errors': 0, 'batched_frames': 0}

    def received(self):
        """One input message arrived."""
        with self._lock:
            self.counts['received'] += 1
            self._received.append(self._clock())
            self._forget_old()

    def count(self, name):
        """
        One more of `dropped`, `bad_inputs`, `errors` or `batched_frames`.

        `batched_frames` counts frames inferred in one batch with other streams' frames.
        """
        with self._lock:
            self.counts[name] += 1
            if name in ('bad_inputs', 'errors'):
                self._problems.append(self._clock())
                self._forget_old()

    def processed(self, inference_ms, latency_ms):
        """One frame went through, with its inference time and its stamp-to-output latency."""
        with self._lock:
            self.counts['processed'] += 1
            self._processed.append((self._clock(), inference_ms, latency_ms))
            self._forget_old()

    def snapshot(self):
        """
        Totals, plus rates, timing percentiles and problems over the last few seconds.

        `recent_problems` counts the bad inputs and errors of the window: a node that had one
        an hour ago is healthy now; the totals stay as values.
        """
        with self._lock:
            self._forget_old()
            recent = np.array(self._processed, float).reshape(-1, 3)
            figures = dict(self.counts)
            figures['recent_problems'] = len(self._problems)
            figures['input_hz'] = len(self._received) / self._window
            figures['processed_hz'] = len(recent) / self._window
        has_recent = len(recent) > 0
        figures['inference_ms'] = float(np.mean(recent[:, 1])) if has_recent else 0.0
        for q in (50, 95):
            figures[f'latency_p{q}_ms'] = (float(np.percentile(recent[:, 2], q)) if has_recent
                                           else 0.0)
        return figures

    def _forget_old(self):
        """Drop the records older than the window; the caller holds the lock."""
        now = self._clock()
        while self._received and now - self._received[0] > self._window:
            self._received.popleft()
        while self._processed and now - self._processed[0][0] > self._window:
            self._processed.popleft()
        while self._problems and now - self._problems[0] > self._window:
            self._problems.popleft()
