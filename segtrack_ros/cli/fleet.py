"""
`segtrack-fleet`: `segtrack-bag` over many bags at once, one Ray task per bag.

Each bag goes whole to one worker (tracking needs a camera's frames in order), which runs the
same code as `segtrack-bag` in its own process; a worker is a Ray actor that loads the model
once and keeps it for every bag it is given. Without `--address` a local Ray is started on
127.0.0.1 only and stopped at the end; with one, the job joins that cluster. A bag whose output
exists is skipped (outputs appear only complete), a failed one is retried, then reported in
one line while the others go on; `DIR/summary.csv` tells what became of each bag.
"""

import argparse
from collections import deque
import csv
import logging
import os
from pathlib import Path
import re
import shutil
import signal
import sys
import time

from segtrack_ros.cli.bag import add_bag_arguments, process_bag
from segtrack_ros.cli.common import check_args, run_main, segmenter_config, UsageError
from segtrack_ros.core.runtime import apply_process_defaults, usable_cores
from segtrack_ros.core.segmenter import Segmenter, SegmenterError
from segtrack_ros.io.bag_io import BagError, check_namespace

RETRIES = 2  # attempts after the first, for a bag that failed or whose worker died
POLL_SECONDS = 1.0  # how often the frame counts of running bags are asked for
INSTALL = ("segtrack-fleet needs Ray, which is not installed: pip install 'segtrack_ros[fleet]' "
           '(or pip install -r requirements-fleet.txt)')
CSV_FIELDS = ('bag', 'input', 'status', 'frames', 'seconds', 'fps', 'instances', 'tracks',
              'skipped_frames', 'attempts', 'reason')
LOOPBACK = ('127.0.0.1', '::1')
SKIPPED = 'skipped (done before)'
ANSI_ESCAPE = re.compile(r'\x1b\[[0-9;]*m')
# Only the small summaries travel through Ray's object store; its default takes 30 % of RAM.
OBJECT_STORE_BYTES = 100 * 2**20


class ListFileParser(argparse.ArgumentParser):
    """An argument parser whose `@file` lists hold one argument a line; blanks and #s skipped."""

    def convert_arg_line_to_args(self, arg_line):
        """Return the argument of one line of an `@file` (none for blank and comment lines)."""
        line = arg_line.strip()
        return [] if not line or line.startswith('#') else [line]


def build_parser():
    """Build the command line of `segtrack-fleet`: its own flags and those of `segtrack-bag`."""
    parser = ListFileParser(
        prog='segtrack-fleet', fromfile_prefix_chars='@',
        description='Run segtrack-bag over many bags, one Ray task per bag: a local Ray on '
                    '127.0.0.1, or a cluster with --address.')
    parser.add_argument('inputs', nargs='+', metavar='INPUT',
                        help='rosbag2 folder or .mcap file; @list.txt reads one a line')
    parser.add_argument('--output', dest='output_dir', required=True, metavar='DIR',
                        help='folder of the outputs: DIR/<input name>/ and DIR/summary.csv')
    parser.add_argument('--address',
                        help='Ray cluster to join (auto, ray://host:10001, host:6379); '
                             'default: a local Ray on this machine, 127.0.0.1 only')
    parser.add_argument('--cpus-per-task', type=float, default=1.0,
                        help='CPUs a worker holds, and its torch threads (default 1)')
    parser.add_argument('--gpus-per-task', type=float,
                        help='GPUs a worker holds (default: 1 when the cluster has GPUs)')
    add_bag_arguments(parser)
    return parser


def output_name(path):
    """Name the output of input bag `path`: a folder's name, a `.mcap` file's stem."""
    path = Path(path)
    return path.stem if path.suffix == '.mcap' else path.name


def plan(inputs, output_dir):
    """Return [(input, output name)]; UsageError for two inputs of one output name."""
    names = {}
    for path in inputs:
        name = output_name(path)
        if not name or name.startswith('.') or name == 'summary':
            raise UsageError(f"input '{path}' gives no usable output name")
        if name in names:
            raise UsageError(f"inputs '{names[name]}' and '{path}' would both write "
                             f"'{Path(output_dir) / name}': run them in separate jobs")
        names[name] = path
    return [(path, name) for name, path in names.items()]


def is_done(output_dir, name):
    """Tell whether bag `name` has its output already (outputs appear only once complete)."""
    return (Path(output_dir) / name / 'metadata.yaml').is_file()


class CountingSegmenter(Segmenter):
    """A `Segmenter` that counts the frames it segments: a worker's progress over frames."""

    def __init__(self, config):
        self.frames = 0
        super().__init__(config)

    def process_batch(self, frames, streams):
        """Segment `frames` as `Segmenter.process_batch` does, and count them."""
        results = super().process_batch(frames, streams)
        self.frames += len(results)
        return results


class BagWorker:
    """
    One Ray worker: the model loaded once, then `segtrack-bag`'s code on each bag it is given.

    Ray runs it with two threads (max_concurrency=2), so that `frames` answers while a bag runs.
    """

    def __init__(self, args, threads):
        apply_process_defaults()
        import torch

        # Pinned, not left to the environment of each worker: a run's results must not depend
        # on which machine of a cluster (or which OMP_NUM_THREADS) ran it.
        torch.set_num_threads(threads)
        # A model that cannot load is told by `ready`: raised here, Ray would print the
        # traceback and turn the reason into a dead actor's.
        self.segmenter = self.error = None
        try:
            self.segmenter = CountingSegmenter(segmenter_config(args))
        except SegmenterError as error:
            self.error = error

    def ready(self):
        """Return once the model is loaded; raise the SegmenterError of one that cannot."""
        if self.error is not None:
            raise self.error
        return True

    def process(self, args, source, target):
        """Run `segtrack-bag` on bag `source` into `target`; return its `BagSummary`."""
        self.segmenter.frames = 0
        return process_bag(args, self.segmenter, source, target)

    def frames(self):
        """Return the frames segmented so far of the bag in hand."""
        return self.segmenter.frames


def import_ray(local):
    """
    Import Ray for a local run (`local`) or to join a cluster; UsageError naming the install.

    Usage statistics are off unless the user chose. A local Ray keeps to loopback through
    Ray's local-only mode (its default on macOS and Windows), which is read when Ray is imported:
    every server then binds to 127.0.0.1 instead of all interfaces.
    """
    os.environ.setdefault('RAY_USAGE_STATS_ENABLED', '0')
    if local:
        os.environ['RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER'] = '0'
    try:
        import ray
    except ImportError:
        raise UsageError(INSTALL) from None
    return ray


def start_local_ray(ray, cpus=None):
    """
    Start a local Ray on 127.0.0.1 without dashboard; `cpus` default: every usable core.

    Ray must come from `import_ray(local=True)`: imported earlier, it would serve the network
    (UsageError then).
    """
    if ray.util.get_node_ip_address() not in LOOPBACK:
        raise UsageError('Ray was imported before segtrack-fleet could keep it on 127.0.0.1: '
                         'import it through segtrack_ros.cli.fleet.import_ray(local=True)')
    # Errors only: Ray's warnings at start name its defaults (token authentication is on).
    ray.init(address='local', num_cpus=cpus or usable_cores(), include_dashboard=False,
             object_store_memory=OBJECT_STORE_BYTES, logging_level=logging.ERROR)


class Fleet:
    """The driver: the pool of workers, the bags to give them, their retries and results."""

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

    def slots(self, cpus, gpus):
        """Return how many workers the cluster can hold at once (0: none fits)."""
        resources = self.ray.cluster_resources()
        slots = int(resources.get('CPU', 0) // cpus)
        if gpus:
            slots = min(slots, int(resources.get('GPU', 0) // gpus))
        return min(slots, len(self.queue))

    def run(self):
        """Process every queued bag; return {name: row of summary.csv}."""
        args = self.args
        gpus = args.gpus_per_task
        if gpus is None:
            gpus = 1.0 if self.ray.cluster_resources().get('GPU', 0) else 0.0
        count = self.slots(args.cpus_per_task, gpus)
        if count < 1:
            raise UsageError(
                f'no worker fits the cluster ({self.ray.cluster_resources().get("CPU", 0):g} '
                f'CPUs, {self.ray.cluster_resources().get("GPU", 0):g} GPUs) with '
                f'--cpus-per-task {args.cpus_per_task:g} --gpus-per-task {gpus:g}')
        worker_class = self.ray.remote(BagWorker).options(
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
            self.ray.get([worker.ready.remote() for worker in workers])
        except self.ray.exceptions.RayError as error:
            raise SegmenterError(_reason(error)) from None

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
                    if self._collect(task, path, name, attempt):
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
            self.ray.get(probe)
            idle.append(worker)
        except self.ray.exceptions.RayError:
            self.ray.kill(worker, no_restart=True)
            workers.remove(worker)

    def _collect(self, task, path, name, attempt):
        """
        Record one attempt's outcome (a failure with attempts left goes back in the queue).

        Return whether the worker's process died.
        """
        try:
            summary = self.ray.get(task)
        except self.ray.exceptions.RayError as error:
            _remove_partial(self.args.output_dir, name)  # left by a worker that died
            if attempt <= RETRIES:
                self.queue.append((path, name, attempt + 1))
            else:
                self._fail(path, name, attempt, _reason(error))
            return isinstance(error, self.ray.exceptions.RayActorError)
        self.frames_done += summary.frames
        self.results[name] = {
            'bag': name, 'input': path, 'status': 'done', 'frames': summary.frames,
            'seconds': f'{summary.seconds:.2f}', 'fps': f'{summary.fps:.1f}',
            'instances': summary.instances, 'tracks': summary.tracks,
            'skipped_frames': len(summary.skipped), 'attempts': attempt}
        return False

    def _fail(self, path, name, attempts, reason):
        """Report bag `name` as failed: one line on stderr, its row of the summary."""
        self.bar.clear()  # the line of its own, not after the bar
        print(f'segtrack-fleet: {path}: failed after {attempts} attempt(s): {reason}',
              file=sys.stderr)
        self.bar.refresh()
        self.results[name] = {'bag': name, 'input': path, 'status': 'failed',
                              'attempts': attempts, 'reason': reason}

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
    if isinstance(cause, (BagError, SegmenterError, UsageError)):
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


def read_summary(path):
    """Return the rows of an earlier summary.csv by bag name ({} when there is none)."""
    try:
        with open(path, newline='') as file:
            return {row['bag']: row for row in csv.DictReader(file)}
    except (OSError, KeyError, csv.Error):
        return {}


def write_summary(path, rows):
    """Write summary.csv whole (a temporary file renamed), so it is never half-written."""
    temporary = Path(path).with_name(f'.{Path(path).name}.partial')
    with open(temporary, 'w', newline='') as file:
        writer = csv.DictWriter(file, CSV_FIELDS, extrasaction='ignore')
        writer.writeheader()
        writer.writerows(rows)
    temporary.replace(path)


def table(rows):
    """Return the summary as lines of a table: bag, frames, fps, instances, status."""
    columns = ('bag', 'frames', 'fps', 'instances', 'status')
    cells = [columns] + [tuple(str(row.get(column, '')) for column in columns) for row in rows]
    widths = [max(len(line[index]) for line in cells) for index in range(len(columns))]
    return ['  '.join(cell.ljust(width) if index in (0, 4) else cell.rjust(width)
                      for index, (cell, width) in enumerate(zip(line, widths))).rstrip()
            for line in cells]


def run(args, ray, progress=True):
    """Run the job of parsed `args` on the Ray this process is connected to; return the rows."""
    output_dir = Path(args.output_dir)
    jobs = plan(args.inputs, output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    summary_path = output_dir / 'summary.csv'
    earlier = read_summary(summary_path)
    rows = {}
    todo = []
    for path, name in jobs:
        if is_done(output_dir, name):
            row = dict(earlier.get(name, {'bag': name, 'input': path}))
            row['status'] = SKIPPED
            rows[name] = row
        else:
            todo.append((path, name))
    if todo:
        rows.update(Fleet(ray, args, todo, progress).run())
    ordered = [rows[name] for _, name in jobs]
    write_summary(summary_path, ordered)
    return ordered


def check_fleet_args(args):
    """Refuse out-of-range flags of `segtrack-fleet` and `segtrack-bag` before Ray starts."""
    if args.cpus_per_task <= 0:
        raise UsageError(f'--cpus-per-task must be positive, got {args.cpus_per_task:g}')
    if args.gpus_per_task is not None and args.gpus_per_task < 0:
        raise UsageError(f'--gpus-per-task cannot be negative, got {args.gpus_per_task:g}')
    check_args(args)
    check_namespace(args.namespace)


def work(args, progress=True):
    """Run the job of parsed `args` on the local Ray, or the cluster of `--address`; the rows."""
    check_fleet_args(args)
    ray = import_ray(local=args.address is None)
    if ray.is_initialized():  # a caller connected already (a Python program) keeps its Ray
        return run(args, ray, progress)
    if args.address is None:
        start_local_ray(ray)
    else:
        ray.init(address=args.address, logging_level=logging.WARNING)
    # Ray's driver aborts on SIGTERM; as Ctrl-C instead, it stops the workers and Ray cleanly.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return run(args, ray, progress)
    finally:
        ray.shutdown()


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None):
    """Entry point of `segtrack-fleet`: the table, then exit 1 when a bag failed."""
    args, rows = run_main(
        build_parser(), argv, work, errors=(BagError,),
        interrupted=lambda args: f"interrupted; finished bags are in '{args.output_dir}'")
    for line in table(rows):
        print(line)
    counts = {status: sum(row['status'] == status for row in rows)
              for status in ('done', SKIPPED, 'failed')}
    print(f"segtrack-fleet: {counts['done']} bag(s) done, {counts[SKIPPED]} {SKIPPED}, "
          f"{counts['failed']} failed; summary in {Path(args.output_dir) / 'summary.csv'}")
    if counts['failed']:
        sys.exit(1)


if __name__ == '__main__':
    main()
