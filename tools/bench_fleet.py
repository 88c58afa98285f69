#!/usr/bin/env python3
"""
`segtrack-fleet` on this machine: bags per hour with 1 and 2 workers, and Ray's overhead.

The bags (MCAP, `/camera/image_raw` bgr8) hold consecutive slices of the generated 768x576
benchmark video. Three ways to process them all, alternating, `--repeat` times (the best run
of each counts, against load from other processes on the machine):

- loop: one process (started for the purpose, so that imports and the model load count as they
  do for a worker) loads the model once and runs `segtrack-bag`'s code over every bag in turn,
  with as many torch threads as the machine has cores;
- fleet, 1 worker: `--cpus-per-task` = every core (one worker, as many torch threads);
- fleet, 2 workers: `--cpus-per-task` = half the cores (one torch thread each on 2 cores).

A fleet run is timed from the job's start (workers started, models loaded) to its last result;
the local Ray's start and stop, paid once per job, are measured apart. Wall times on this shared
machine vary with the other processes' load, so CPU time is measured too: of every process of
the run (the loop's own; or the driver, Ray's servers and agents, and the workers). Outputs are
removed after each run. Writes bench/fleet.md (and prints it); the bags go to output/bench_fleet/.

    .venv/bin/python tools/bench_fleet.py [--bags 12] [--frames 40] [--repeat 2]
                                          [--output bench/fleet.md]
"""

import argparse
import os
from pathlib import Path
import resource
import shutil
import subprocess
import sys
import threading
import time

import benchlib

WORK = benchlib.REPO / 'output' / 'bench_fleet'
TOPIC = '/camera/image_raw'
MODEL, IMGSZ = str(benchlib.TRAINED), 320


def prepare_bags(count, frames):
    """Write `count` bags of `frames` consecutive video frames each (once); return their paths."""
    from rclpy.serialization import serialize_message
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import get_typestore, Stores
    from segtrack_ros.io import image_codec
    from std_msgs.msg import Header

    folder = WORK / f'bags-{count}x{frames}'
    bags = [folder / f'drive{index:02d}' for index in range(count)]
    if all(bag.is_dir() for bag in bags):
        return bags
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    video = benchlib.prepare_video(count * frames, WORK)
    store = get_typestore(Stores.LATEST)
    source = benchlib.read_frames(video, count * frames)
    for bag in bags:
        with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
            connection = writer.add_connection(TOPIC, 'sensor_msgs/msg/Image', typestore=store)
            for index, frame in zip(range(frames), source):
                time_ns = 1_700_000_000 * 10**9 + index * 66_666_667
                header = Header(frame_id='camera')
                header.stamp.sec, header.stamp.nanosec = divmod(time_ns, 1_000_000_000)
                writer.write(connection, time_ns, serialize_message(
                    image_codec.to_image_msg(frame, 'bgr8', header)))
    return bags


def fleet_argv(bags, output, cpus):
    """Return the command line of one job: every bag, the bundled model at 320, CPU."""
    return [*map(str, bags), '--output', str(output), '--topic', TOPIC, '--model', MODEL,
            '--imgsz', str(IMGSZ), '--device', 'cpu', '--cpus-per-task', str(cpus)]


def loop_worker(argv):
    """Be the loop: load the model once, run every bag in turn; print the seconds taken."""
    from segtrack_ros.core.runtime import apply_process_defaults, usable_cores

    apply_process_defaults()
    import torch

    from segtrack_ros.cli import fleet
    from segtrack_ros.cli.bag import process_bag
    from segtrack_ros.cli.common import make_segmenter

    torch.set_num_threads(usable_cores())
    args = fleet.build_parser().parse_args(argv)
    segmenter = make_segmenter(args)
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    for path, name in fleet.plan(args.inputs, args.output_dir):
        process_bag(args, segmenter, path, str(Path(args.output_dir) / name))
    print(time.perf_counter())


class CpuMeter:
    """
    CPU seconds of this process and every process below it over a block: Ray's servers too.

    Sampled every 0.2 s, so that workers killed at the job's end count up to their last sample;
    a process born during the block counts from zero.
    """

    def __init__(self):
        import psutil

        self.psutil = psutil
        self.start = self._read()
        self.last = dict(self.start)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _read(self):
        me = self.psutil.Process()
        times = {}
        for process in [me, *me.children(recursive=True)]:
            try:
                cpu = process.cpu_times()
            except self.psutil.Error:
                continue
            times[process.pid] = cpu.user + cpu.system
        return times

    def _sample(self):
        while not self.stop.wait(0.2):
            self.last.update(self._read())

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc_info):
        self.stop.set()
        self.thread.join()
        self.last.update(self._read())
        self.seconds = sum(cpu - self.start.get(pid, 0.0) for pid, cpu in self.last.items())


def run_loop(bags, output):
    """Run the loop in its own process; return its wall time to the last bag, CPU seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, '--loop-worker',
                           *fleet_argv(bags, output, os.cpu_count())],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f'loop failed: {done.stderr.strip()[-2000:]}')
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return float(done.stdout.split()[-1]) - start, cpu  # perf_counter: system-wide on Linux


def run_fleet(ray, bags, output, cpus):
    """Run one job on the running local Ray; return its wall time and CPU seconds (all Ray's)."""
    from segtrack_ros.cli import fleet

    args = fleet.build_parser().parse_args(fleet_argv(bags, output, cpus))
    with CpuMeter() as meter:
        start = time.perf_counter()
        rows = fleet.run(args, ray, progress=False)
        seconds = time.perf_counter() - start
    failed = [row for row in rows if row['status'] != 'done']
    if failed:
        raise RuntimeError(f'fleet run failed: {failed}')
    return seconds, meter.seconds


def report(args, runs, ray_seconds, loads):
    """Return the Markdown report."""
    cores = os.cpu_count()
    wall = {kind: min(seconds for seconds, _ in times) for kind, times in runs.items()}
    cpu = {kind: min(used for _, used in times) for kind, times in runs.items()}
    lines = [
        '# segtrack-fleet: bags per hour on one machine (`tools/bench_fleet.py`)', '',
        f'{time.strftime("%Y-%m-%d %H:%M")}, {benchlib.machine()}. {args.bags} MCAP bags of '
        f'{args.frames} generated 768x576 bgr8 frames each, the bundled shapes-seg.pt at imgsz '
        f'{IMGSZ}, track mode, CPU, every output written and the input copied; best of '
        f'{args.repeat} alternating runs. Load average (1, 5, 15 min) before / after: '
        f'{loads[0]} / {loads[1]}.', '',
        '| how | workers × torch threads | wall s (model loads included) | bags per hour | '
        'CPU s (all processes) | CPU against the loop | all runs, wall s / CPU s |',
        '|---|---|---|---|---|---|---|']
    rows = (('loop: segtrack-bag code over the bags in one process', 'loop', f'1 × {cores}'),
            ('segtrack-fleet, 1 worker', 'fleet-1', f'1 × {cores}'),
            ('segtrack-fleet, 2 workers', 'fleet-2', f'2 × {max(1, cores // 2)}'))
    for label, kind, shape in rows:
        against = '—' if kind == 'loop' else f'{(cpu[kind] / cpu["loop"] - 1) * 100:+.1f} %'
        every = ', '.join(f'{seconds:.1f} / {used:.1f}' for seconds, used in runs[kind])
        lines.append(f'| {label} | {shape} | {wall[kind]:.1f} | '
                     f'{args.bags / wall[kind] * 3600:.0f} | {cpu[kind]:.1f} | {against} | '
                     f'{every} |')
    lines += [
        '',
        f'2 workers against 1: {wall["fleet-1"] / wall["fleet-2"]:.2f} x the bags per hour. '
        f"Ray's overhead on one worker: {(cpu['fleet-1'] / cpu['loop'] - 1) * 100:+.1f} % CPU "
        f"time, {(wall['fleet-1'] / wall['loop'] - 1) * 100:+.1f} % wall time (target <= 10 "
        f'%). The local Ray starts in {ray_seconds[0]:.1f} s and stops in '
        f'{ray_seconds[1]:.1f} s, once per job (not in the rows). CPU time counts every process '
        "of the run: the loop's, or the driver, Ray's servers and agents and the workers.", '']
    return '\n'.join(lines)


def main():
    """Measure the loop and the fleet with 1 and 2 workers; print and write the report."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--bags', type=int, default=12)
    parser.add_argument('--frames', type=int, default=40, help='frames per bag')
    parser.add_argument('--repeat', type=int, default=2)
    parser.add_argument('--output', type=Path, default=benchlib.REPO / 'bench' / 'fleet.md')
    if sys.argv[1:2] == ['--loop-worker']:
        return loop_worker(sys.argv[2:])
    args = parser.parse_args()
    benchlib.keep_local()
    from segtrack_ros.core.runtime import apply_process_defaults

    apply_process_defaults()
    from segtrack_ros.cli import fleet

    bags = prepare_bags(args.bags, args.frames)
    loads = [benchlib.load_average()]
    ray = fleet.import_ray(local=True)
    start = time.perf_counter()
    fleet.start_local_ray(ray)
    ray_seconds = [time.perf_counter() - start]
    runs = {'loop': [], 'fleet-1': [], 'fleet-2': []}
    output = WORK / 'out'
    try:
        for _ in range(args.repeat):
            for kind in runs:
                shutil.rmtree(output, ignore_errors=True)
                if kind == 'loop':
                    measured = run_loop(bags, output)
                else:
                    cores = os.cpu_count()
                    measured = run_fleet(ray, bags, output,
                                         cores if kind == 'fleet-1' else max(1, cores // 2))
                runs[kind].append(measured)
                print(f'bench_fleet: {kind} {measured[0]:.1f} s, CPU {measured[1]:.1f} s',
                      flush=True)
    finally:
        start = time.perf_counter()
        ray.shutdown()
        ray_seconds.append(time.perf_counter() - start)
        shutil.rmtree(output, ignore_errors=True)
    loads.append(benchlib.load_average())
    text = report(args, runs, ray_seconds, loads)
    args.output.write_text(text)
    print(text, end='')


if __name__ == '__main__':
    main()
