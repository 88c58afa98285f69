"""
The Ray side of `segtrack-fleet`: the workers, and the driver that hands them bags.

A worker (`BagWorker`) is a Ray actor: it loads the model once, then runs `segtrack-bag`'s code
(`cli.bag.process_bag`) on each bag it is given. `Fleet` keeps a pool of them busy, retries a
bag that may pass next time, replaces a worker whose process died, and collects one summary row
per bag.
"""

import argparse
from collections import deque
import os
from pathlib import Path
import re
import shutil
import socket
import sys
import time

from segtrack_ros.cli.bag import process_bag
from segtrack_ros.cli.common import make_segmenter, UsageError
from segtrack_ros.core.runtime import apply_process_defaults
from segtrack_ros.core.segmenter import SegmenterError
from segtrack_ros.io.bag_io import BagError

RETRIES = 2  # attempts after the first, for a bag whose worker died or hit an unexpected error
# Errors a bag's own content or options cause: the next attempt would fail the same way.
DETERMINISTIC = (BagError, SegmenterError, UsageError)
POLL_SECONDS = 1.0  # how often the frame counts of running bags are asked for
ANSI_ESCAPE = re.compile(r'\x1b\[[0-9;]*m')


class CountingSegmenter:
    """A segmenter made as `segtrack-bag` makes it, counting the frames it segments (progress)."""

    def __init__(self, segmenter):
        self.segmenter = segmenter
        self.frames = 0

    def process_batch(self, frames, streams):
        """Segment `frames` with the segmenter, and count them."""
        results = self.segmenter.process_batch(frames, streams)
        self.frames += len(results)
        return results

    def __getattr__(self, name):
        return getattr(self.segmenter, name)


class BagWorker:
    """
    One Ray worker: the model loaded once, then `segtrack-bag`'s code on each bag it is given.

    Ray runs it with two threads (max_concurrency=2), so that `frames` answers while a bag runs.
    """

    def __init__(self, args, threads):
        apply_process_defaults()
        import torch

        # torch's float sums, hence scores and boxes, depend on the thread count: pinned to
        # --cpus-per-task, not left to the environment of whichever machine runs the worker.
        torch.set_num_threads(threads)
        # A model that cannot load is told by `ready`: raised here, Ray would print the
        # traceback and turn the reason into a dead actor's.
        self.segmenter = self.error = None
        try:
            self.segmenter = CountingSegmenter(make_segmenter(args))
        except SegmenterError as error:
            self.error = error

    def ready(self):
        """Return this worker's name (host:pid) once the model is loaded, or raise its error."""
        if self.error is not None:
            raise self.error
        return f'{socket.gethostname()}:{os.getpid()}'

    def process(self, args, source, target):
        """Run `segtrack-bag` on bag `source` into `target`; return its `BagSummary`."""
        self.segmenter.frames = 0
        return process_bag(args, self.segmenter, source, target)

    def frames(self):
        """Return the frames segmented so far of the bag in hand."""
        return self.segmenter.frames


def worker_plan(resources, cpus_per_task, gpus_per_task, bags):
    """
    Return (workers, GPUs per worker) for a cluster of `resources` (Ray's {'CPU': n, 'GPU': n}).

    GPUs per worker default (`gpus_per_task` None) to 1 when the cluster has GPUs, else 0; as
    many workers as its CPUs and GPUs hold, at most one per bag. UsageError when none fits.
    """
    cpus, gpus_total = resources.get('CPU', 0), resources.get('GPU', 0)
    gpus = (1.0 if gpus_total else 0.0) if gpus_per_task is None else gpus_per_task
    workers = min(int(cpus // cpus_per_task), bags)
    if gpus:
        workers = min(workers, int(gpus_total // gpus))
    if workers < 1:
        raise UsageError(f'no worker fits the cluster ({cpus:g} CPUs, {gpus_total:g} GPUs) with '
                         f'--cpus-per-task {cpus_per_task:g} --gpus-per-task {gpus:g}')
    return workers, gpus


class Fleet:
    """The driver: the pool of workers, the bags to give them, their retries and results."""

    worker = BagWorker  # the class of its workers (a test gives one whose bags always fail)

    def __init__(self, ray, args, jobs, progress=True):
        self.ray = ray
        self.args = args
        # What each task is sent: the options of a bag run, not the (maybe long) input list.
        self.bag_args = argparse.Namespace(
            **{key: value for key, value in vars(args).items() if key != 'inputs'})
        self.queue = deque((path, name, 1) for path, name in jobs)
        self.results = {}
        self.progress = progress
        self.frames_done = 0
        self.bar = None
        self.new_worker = None  # starts one worker (an actor) of the job's resources
        self.names = {}  # worker -> its name (host:pid), for the summary

    def run(self):
        """Process every queued bag; return {name: row of summary.csv}."""
        args = self.args
        count, gpus = worker_plan(self.ray.cluster_resources(), args.cpus_per_task,
                                  args.gpus_per_task, len(self.queue))
        worker_class = self.ray.remote(self.worker).options(
            num_cpus=args.cpus_per_task, num_gpus=gpus, max_concurrency=2)
        threads = max(1, int(args.cpus_per_task))
        self.new_worker = lambda: worker_class.remote(self.bag_args, threads)
        workers = [self.new_worker() for _ in range(count)]
        try:
            self._check_workers(workers)
            self._dispatch(workers)
        finally:
            for worker in workers:
                self.ray.kill(worker)
        return self.results

    def _check_workers(self, workers):
        """Wait for the models to load; a model that cannot load stops the job (one line)."""
        try:
            names = self.ray.get([worker.ready.remote() for worker in workers])
        except self.ray.exceptions.RayError as error:
            raise SegmenterError(_reason(error)) from None
        self.names.update(zip(workers, names))

    def _dispatch(self, workers):
        from ultralytics.utils.tqdm import TQDM

        self.bar = bar = TQDM(total=len(self.queue), desc='segtrack-fleet', unit='bag',
                              disable=not self.progress, file=sys.stderr)
        idle = list(workers)
        running = {}  # task -> (worker, input, name, attempt)
        starting = {}  # readiness probe -> a worker started for one whose process died
        start = time.perf_counter()
        try:
            while self.queue or running:
                while self.queue and idle:
                    path, name, attempt = self.queue.popleft()
                    worker = idle.pop()
                    task = worker.process.remote(
                        self.bag_args, str(path), str(Path(self.args.output_dir) / name))
                    running[task] = (worker, path, name, attempt)
                if not (idle or running or starting):
                    self._fail_queued('no worker left: the last ones died and new ones '
                                      'could not start')
                    break
                ready, _ = self.ray.wait([*running, *starting], num_returns=1,
                                         timeout=POLL_SECONDS)
                for task in ready:
                    if task in starting:
                        self._started(task, starting.pop(task), idle, workers)
                        continue
                    worker, path, name, attempt = running.pop(task)
                    if self._collect(task, path, name, attempt, self.names[worker]):
                        # Its process died: a new worker (a new process, the model loaded
                        # again) takes its place once it is ready.
                        self.ray.kill(worker, no_restart=True)
                        workers.remove(worker)
                        replacement = self.new_worker()
                        workers.append(replacement)
                        starting[replacement.ready.remote()] = replacement
                    else:
                        idle.append(worker)
                    bar.update(len(self.results) - bar.n)
                elapsed = time.perf_counter() - start
                frames = self.frames_done + self._frames_in_hand(running)
                bar.set_postfix(frames=frames, fps=f'{frames / elapsed:.1f}' if elapsed else 0)
        finally:
            bar.close()
            for worker, _, name, _ in running.values():
                self.ray.kill(worker, no_restart=True)
                _remove_partial(self.args.output_dir, name)

    def _started(self, probe, worker, idle, workers):
        """Put a new worker to work, or drop it when it did not start."""
        try:
            self.names[worker] = self.ray.get(probe)
            idle.append(worker)
        except self.ray.exceptions.RayError:
            self.ray.kill(worker, no_restart=True)
            workers.remove(worker)

    def _collect(self, task, path, name, attempt, worker):
        """
        Record one attempt's outcome (on `worker`, a name); one that may pass next time is queued.

        A worker that died or an unexpected exception is retried, while attempts are left; an
        error of the bag itself (`DETERMINISTIC`: unreadable, bad options) is reported at once.

        Return whether the worker's process died.
        """
        try:
            summary = self.ray.get(task)
        except self.ray.exceptions.RayError as error:
            _remove_partial(self.args.output_dir, name)  # left by a worker that died
            if attempt <= RETRIES and not isinstance(getattr(error, 'cause', None),
                                                     DETERMINISTIC):
                self.queue.append((path, name, attempt + 1))
            else:
                self._fail(path, name, attempt, _reason(error), worker)
            return isinstance(error, self.ray.exceptions.RayActorError)
        self.frames_done += summary.frames
        self.results[name] = {
            'bag': name, 'input': path, 'status': 'done', 'frames': summary.frames,
            'seconds': f'{summary.seconds:.2f}', 'fps': f'{summary.fps:.1f}',
            'instances': summary.instances, 'tracks': summary.tracks,
            'skipped_frames': len(summary.skipped), 'attempts': attempt, 'worker': worker}
        return False

    def _fail(self, path, name, attempts, reason, worker=''):
        """Report bag `name` as failed: one line on stderr, its row of the summary."""
        self.bar.clear()  # the line of its own, not after the bar
        print(f'segtrack-fleet: {path}: failed after {attempts} attempt(s): {reason}',
              file=sys.stderr)
        self.bar.refresh()
        self.results[name] = {'bag': name, 'input': path, 'status': 'failed',
                              'attempts': attempts, 'worker': worker, 'reason': reason}

    def _fail_queued(self, reason):
        while self.queue:
            path, name, attempt = self.queue.popleft()
            self._fail(path, name, attempt - 1, reason)

    def _frames_in_hand(self, running):
        tasks = [worker.frames.remote() for worker, *_ in running.values()]
        try:
            return sum(self.ray.get(tasks, timeout=POLL_SECONDS))
        except self.ray.exceptions.RayError:
            return 0  # a worker that died is reported with its bag


def _reason(error):
    """Return the one-line reason of a Ray error: the bag's own error, else Ray's first line."""
    cause = getattr(error, 'cause', None)
    if isinstance(cause, DETERMINISTIC):
        text = str(cause)
    elif isinstance(cause, Exception):
        text = f'{cause.__class__.__name__}: {cause}'
    else:  # Ray's own (a worker that died): its first line, without terminal colours
        text = ANSI_ESCAPE.sub('', str(error)).strip().split('\n')[0] or repr(error)
    return ' '.join(line.strip() for line in text.splitlines() if line.strip())


def _remove_partial(output_dir, name):
    """Remove the hidden partial output of bag `name` left by a worker that was killed."""
    for partial in Path(output_dir).glob(f'.{name}.*.partial'):
        shutil.rmtree(partial, ignore_errors=True)
