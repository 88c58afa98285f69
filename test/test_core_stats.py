"""Tests of `PipelineStats`: the figures of the last seconds, and a size that stays bounded."""

import tracemalloc

import pytest
from segtrack_ros.core.stats import PipelineStats, WINDOW_SECONDS

FPS = 30


class Clock:
    """A monotonic clock that the test moves."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def feed(stats, clock, frames, problem_every=100):
    """Receive and process `frames` frames at FPS, with a bad input now and then."""
    for index in range(frames):
        clock.now += 1 / FPS
        stats.received()
        stats.processed(inference_ms=40.0, latency_ms=60.0 + index % 10)
        if index % problem_every == 0:
            stats.count('bad_inputs')


def test_figures_cover_the_last_window():
    clock = Clock()
    stats = PipelineStats(clock=clock)
    feed(stats, clock, 10 * FPS)
    figures = stats.snapshot()
    assert figures['received'] == figures['processed'] == 10 * FPS
    assert figures['bad_inputs'] == 3
    assert figures['input_hz'] == pytest.approx(FPS, abs=0.5)
    assert figures['processed_hz'] == pytest.approx(FPS, abs=0.5)
    assert figures['inference_ms'] == pytest.approx(40.0)
    assert figures['latency_p50_ms'] == pytest.approx(64.5, abs=0.5)
    assert figures['recent_problems'] == 1  # at 0, 3.3 and 6.7 s of 10: one in the last 5
    clock.now += WINDOW_SECONDS + 1  # the source stopped: totals stay, rates fall to 0
    figures = stats.snapshot()
    assert figures['processed'] == 10 * FPS
    assert figures['processed_hz'] == figures['input_hz'] == figures['recent_problems'] == 0


def test_size_is_bounded_without_snapshots():
    """An hour of a 30 fps source that nobody reads the figures of (the CLIs): one window held."""
    clock = Clock()
    stats = PipelineStats(clock=clock)
    feed(stats, clock, 60 * FPS)  # the window is full before measuring
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        feed(stats, clock, 3600 * FPS)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 200_000, f'{grown / 1e6:.1f} MB more after an hour'
    assert stats.snapshot()['processed_hz'] == pytest.approx(FPS, abs=0.5)
