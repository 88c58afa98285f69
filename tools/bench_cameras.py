#!/usr/bin/env python3
"""
Several cameras: one multi-camera `segtrack_node` against one node per camera.

For 1, 2 and 4 cameras at 30 Hz each (a `video_publisher` per camera, all playing the benchmark
video, `benchlib.prepare_video`), first one node with `cameras:=[cam0, ...]`, then as many
single-camera nodes, each in the camera's namespace, so that both read and publish the same
topics. A subscriber in this process takes each camera's `detections` and `instance_mask`. After
the first outputs of every camera and a settling time, a window of `--seconds` is measured: the
nodes' total RSS (and PSS, which counts shared library pages once) and CPU time, the frames
each camera got through, latency from the input stamp to the receipt of `instance_mask`, the
drops and the share of frames inferred in a batch with another camera's (`/diagnostics`). Then, in
this process, batch against sequential inference on the same frames: `Segmenter.process_batch`
against `Segmenter.process` in a loop. Writes bench/cameras.md (and prints it); logs go to
output/bench/cameras/. The script is over the usual length because both measurements (the
nodes over DDS, batch against sequential) and the page they write with its targets belong together.

    .venv/bin/python tools/bench_cameras.py [--cameras 1 2 4] [--seconds 10] [--device cpu]
        [--model M] [--imgsz N] [--threads N] [--rounds N] [--output FILE]

`--device cuda` runs the same on a GPU.
"""

import argparse
import os
from pathlib import Path
import re
import threading
import time

import benchlib
from benchlib import cpu_seconds, diagnostic_values, start, stop, wait_for
import numpy as np

WORK = benchlib.REPO / 'output' / 'bench' / 'cameras'
RATE = 30.0
SETTLE_SECONDS = 3.0
BATCH_REPEATS = 10


def camera_names(count):
    """Return the names of `count` cameras."""
    return [f'cam{index}' for index in range(count)]


def memory_mib(pid):
    """Return the RSS, PSS and peak RSS of a process, in MiB."""
    status = Path(f'/proc/{pid}/status').read_text()
    rollup = Path(f'/proc/{pid}/smaps_rollup').read_text()

    def field(text, name):
        return int(re.search(rf'^{name}:\s+(\d+) kB', text, re.M).group(1)) / 1024
    return field(status, 'VmRSS'), field(rollup, 'Pss'), field(status, 'VmHWM')


class Outputs:
    """Every camera's outputs as they arrive, and the nodes' /diagnostics, in this process."""

    def __init__(self, node, namespace, cameras):
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import Image
        from vision_msgs.msg import Detection2DArray

        self.detections = {camera: [] for camera in cameras}
        self.masks = {camera: [] for camera in cameras}  # (arrival, latency ms)
        self.statuses = {}
        self._node = node
        self._subscriptions = [node.create_subscription(
            DiagnosticArray, '/diagnostics', self._on_diagnostics, 10)]
        for camera in cameras:
            self._subscriptions += [
                node.create_subscription(Detection2DArray, f'{namespace}/{camera}/detections',
                                         self.detections[camera].append, 10),
                node.create_subscription(Image, f'{namespace}/{camera}/instance_mask',
                                         lambda message, c=camera: self._on_mask(c, message),
                                         10)]
        self._clock = node.get_clock()
        self._cameras = cameras
        self._namespace = namespace

    def _on_mask(self, camera, message):
        now = self._clock.now().nanoseconds * 1e-9
        stamp = message.header.stamp.sec + message.header.stamp.nanosec * 1e-9
        self.masks[camera].append((time.monotonic(), (now - stamp) * 1000))

    def _on_diagnostics(self, message):
        for status in message.status:
            if not status.name.startswith(self._namespace + '/'):
                continue
            for camera in self._cameras:  # '<ns>/segtrack_node: cam0' or '<ns>/cam0/...'
                if (status.name.endswith(f': {camera}')
                        or status.name.startswith(f'{self._namespace}/{camera}/')):
                    self.statuses[camera] = diagnostic_values(status)

    def close(self):
        """Unsubscribe."""
        for subscription in self._subscriptions:
            self._node.destroy_subscription(subscription)

    def counters(self):
        """Return each camera's newest diagnostics counters."""
        return {camera: dict(values) for camera, values in self.statuses.items()}


def run_row(probe, video, count, multi, args, index):
    """Run `count` cameras through one node (`multi`) or one node each; return the figures."""
    cameras = camera_names(count)
    namespace = f'/cams{index}'
    outputs = Outputs(probe, namespace, cameras)
    settings = {'model': args.model, 'imgsz': args.imgsz, 'device': args.device,
                'mode': 'track'}
    label = f'{"one node" if multi else f"{count} nodes"}, {count} camera(s)'
    WORK.mkdir(parents=True, exist_ok=True)
    logs = []

    def log(name):
        logs.append(open(WORK / f'{index}-{name}.log', 'w'))
        return logs[-1]

    if multi:
        nodes = [start('segtrack_node', namespace, log('node'),
                       cameras='[' + ','.join(cameras) + ']', **settings)]
    else:
        nodes = [start('segtrack_node', f'{namespace}/{camera}', log(f'node-{camera}'),
                       **settings) for camera in cameras]
    publishers = []
    try:
        ready = wait_for(lambda: all(
            probe.count_subscribers(f'{namespace}/{camera}/image') > 0
            and probe.count_publishers(f'{namespace}/{camera}/instance_mask') > 0
            for camera in cameras), 180)
        if not ready:
            raise RuntimeError(f'{label}: the node(s) did not start, see {WORK}')
        publishers = [start('video_publisher', f'{namespace}/{camera}', log(f'camera-{camera}'),
                            source=video, rate=RATE, loop='true', frame_id=camera)
                      for camera in cameras]
        if not wait_for(lambda: all(outputs.masks[camera] for camera in cameras), 300):
            raise RuntimeError(f'{label}: no outputs on some camera, see {WORK}')
        time.sleep(SETTLE_SECONDS)
        import psutil

        processes = [psutil.Process(node.pid) for node in nodes]
        cpu, counters, begin = [cpu_seconds(p) for p in processes], outputs.counters(), \
            time.monotonic()
        time.sleep(args.seconds)
        end = time.monotonic()
        cpu = sum(cpu_seconds(p) for p in processes) - sum(cpu)
        memory = np.sum([memory_mib(node.pid) for node in nodes], axis=0)
        time.sleep(1.5)  # diagnostics of the window's end (published once a second)
        later = outputs.counters()
    finally:
        stop(*publishers)
        stop(*nodes)
        outputs.close()
        for file in logs:
            file.close()
    frames = {camera: [latency for arrival, latency in outputs.masks[camera]
                       if begin <= arrival < end] for camera in cameras}
    processed = sum(len(values) for values in frames.values())
    delta = {key: sum(later.get(c, {}).get(key, 0) - counters.get(c, {}).get(key, 0)
                      for c in cameras) for key in ('received', 'processed', 'dropped',
                                                    'batched_frames')}
    return {
        'label': label, 'cameras': count, 'multi': multi,
        'rss': memory[0], 'pss': memory[1], 'peak': memory[2],
        'fps': [len(frames[camera]) / (end - begin) for camera in cameras],
        'latency': benchlib.percentiles([v for values in frames.values() for v in values]),
        'cpu_ms': cpu / processed * 1000 if processed else float('nan'),
        'processed': processed, 'seconds': end - begin,
        'drops': delta['dropped'] / delta['received'] if delta['received'] else float('nan'),
        'batched': (delta['batched_frames'] / delta['processed'] if delta['processed']
                    else float('nan')),
    }


def batch_against_sequential(video, args):
    """Time process_batch against process in a loop on the same frames; return the rows."""
    import cv2
    from segtrack_ros.core.segmenter import Segmenter, SegmenterConfig

    capture = cv2.VideoCapture(str(video))
    frames = [capture.read()[1] for _ in range(max(args.cameras))]
    capture.release()
    segmenter = Segmenter(SegmenterConfig(model=args.model, device=args.device,
                                          imgsz=args.imgsz, mode='track'))
    rows = []
    try:
        for count in args.cameras:
            batch, streams = frames[:count], camera_names(count)
            timings = {'batch': [], 'sequential': []}
            for repeat in range(BATCH_REPEATS + 2):  # the first two warm up
                for kind in timings:  # interleaved, against the machine's changing load
                    started = time.perf_counter()
                    if kind == 'batch':
                        segmenter.process_batch(batch, streams)
                    else:
                        for frame, stream in zip(batch, streams):
                            segmenter.process(frame, stream)
                    if repeat >= 2:
                        timings[kind].append((time.perf_counter() - started) * 1000)
            rows.append((count, float(np.median(timings['sequential'])),
                         float(np.median(timings['batch']))))
            print(f'bench: {count} frame(s): sequential {rows[-1][1]:.1f} ms, batch '
                  f'{rows[-1][2]:.1f} ms', flush=True)
    finally:
        segmenter.release()
    return rows


def node_table(rows):
    """Return the markdown table of the node rows."""
    lines = ['| cameras | nodes | total RSS MiB | total PSS MiB | frames/s per camera | '
             'total frames/s (each round) | latency p50 / p95 ms | CPU ms per frame | dropped | '
             'batched |', '|---:|---|---:|---:|---|---:|---:|---:|---:|---:|']
    for row in rows:
        latency = ' / '.join(f'{v:.0f}' for v in row['latency'][:2]) if row['latency'] else '?'
        lines.append(
            f"| {row['cameras']} | {'one' if row['multi'] else row['cameras']} | "
            f"{row['rss']:.0f} | {row['pss']:.0f} | "
            f"{', '.join(f'{fps:.1f}' for fps in row['fps'])} | {sum(row['fps']):.1f} "
            f"({', '.join(f'{fps:.1f}' for fps in row['rounds'])}) | "
            f"{latency} | {row['cpu_ms']:.0f} | {row['drops']:.0%} | "
            f"{row['batched']:.0%} |")
    return '\n'.join(lines)


def batch_table(rows):
    """Return the markdown table of batch against sequential inference."""
    lines = ['| frames (cameras) | sequential ms | batch ms | batch ms per frame | '
             'sequential / batch |', '|---:|---:|---:|---:|---:|']
    for count, sequential, batch in rows:
        lines.append(f'| {count} | {sequential:.1f} | {batch:.1f} | {batch / count:.1f} | '
                     f'{sequential / batch:.2f} |')
    return '\n'.join(lines)


def targets(rows):
    """Return the issue's targets as pass/fail lines."""
    by = {(row['cameras'], row['multi']): row for row in rows}
    lines = []
    one, most = by.get((1, True)), max(row['cameras'] for row in rows)
    if one and (most, True) in by and most > 1:
        ratio = by[(most, True)]['rss'] / one['rss']
        lines.append(f'- RSS of one {most}-camera node ≤ 1.3 × one single-camera node: '
                     f"{by[(most, True)]['rss']:.0f} / {one['rss']:.0f} MiB = {ratio:.2f} → "
                     f'{"PASS" if ratio <= 1.3 else "FAIL"}')
    for count in sorted({row['cameras'] for row in rows}):
        if count > 1 and (count, True) in by and (count, False) in by:
            multi, separate = by[(count, True)]['processed'], by[(count, False)]['processed']
            lines.append(f'- {count} cameras: total processed frames, one node ≥ {count} nodes: '
                         f'{multi} ≥ {separate} → {"PASS" if multi >= separate else "FAIL"}')
    return '\n'.join(lines)


def main():
    """Run every row, print the report and write it to bench/cameras.md."""
    parser = argparse.ArgumentParser(description='segtrack_node with several cameras')
    parser.add_argument('--cameras', type=int, nargs='+', default=[1, 2, 4])
    parser.add_argument('--seconds', type=float, default=10.0, help='measured window per row')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--model', default=str(benchlib.TRAINED))
    parser.add_argument('--imgsz', type=int, default=320)
    parser.add_argument('--rounds', type=int, default=1,
                        help='measure each row this many times; the best round counts')
    parser.add_argument('--threads', type=int,
                        help='torch threads of every node and of the batch rows (sets '
                             "OMP_NUM_THREADS for all processes); default: the package's own")
    parser.add_argument('--output', type=Path, default=benchlib.REPO / 'bench' / 'cameras.md')
    args = parser.parse_args()
    benchlib.keep_local()
    if args.threads:
        os.environ['OMP_NUM_THREADS'] = str(args.threads)

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from segtrack_ros.ros.transport import apply_large_data_profile

    started, date = time.monotonic(), time.strftime('%Y-%m-%d %H:%M')
    loads = [benchlib.load_average()]
    video = benchlib.prepare_video(300)
    threads = benchlib.package_threads()
    print('bench: batch against sequential inference', flush=True)
    batches = batch_against_sequential(video, args)
    apply_large_data_profile()
    rclpy.init()
    probe = rclpy.create_node('segtrack_bench_cameras')
    executor = SingleThreadedExecutor()
    executor.add_node(probe)
    threading.Thread(target=executor.spin, daemon=True).start()
    rows, index = [], 0
    try:
        for count in args.cameras:
            # Rounds in the order one, many, many, one, ...: a load that rises or falls during
            # the run favours neither; the round that processed most frames counts.
            runs = {True: [], False: []}
            for round_ in range(args.rounds):
                for multi in (True, False) if round_ % 2 == 0 else (False, True):
                    row = run_row(probe, video, count, multi, args, index)
                    index += 1
                    runs[multi].append(row)
                    loads.append(benchlib.load_average())
                    print(f"bench: {row['label']}: RSS {row['rss']:.0f} MiB, "
                          f"{sum(row['fps']):.1f} frames/s in all, CPU {row['cpu_ms']:.0f} ms "
                          'a frame', flush=True)
            for multi in (True, False):
                best = max(runs[multi], key=lambda row: row['processed'])
                best['rounds'] = [sum(row['fps']) for row in runs[multi]]
                rows.append(best)
    finally:
        executor.shutdown()
        probe.destroy_node()
        rclpy.try_shutdown()
    report = render_report(rows, batches, {
        'date': date, 'minutes': (time.monotonic() - started) / 60,
        'machine': benchlib.machine(),
        'loads': loads, 'threads': threads, 'args': args})
    print('\n' + report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    print(f'bench: wrote {args.output}')


def render_report(rows, batches, run):
    """Render the results page as markdown."""
    args = run['args']
    return f"""# segtrack_node with several cameras

`tools/bench_cameras.py` ({run['date']}, {run['minutes']:.1f} min) on:
{run['machine']}.

Load average (1/5/15 min) before the run and after each row: {'; '.join(run['loads'])}. The
machine is shared, so absolute numbers are noisy; compare rows of one run.

Model `{Path(args.model).name}` at imgsz {args.imgsz}, device `{args.device}`, track mode, torch
{run['threads']} thread(s) per node. Each camera is a `video_publisher` playing the same
generated 768×576 video at {RATE:g} Hz; a subscriber takes each camera's `detections` and
`instance_mask` (the node makes only the outputs that have subscribers). Measured over
{args.seconds:g} s per row, after every camera's first outputs and {SETTLE_SECONDS:g} s more, in
{args.rounds} round(s) per row (in the order one node, several, several, one, ...; the round
that processed most frames is shown):

{node_table(rows)}

Total RSS and PSS: of the node processes at the end of the window (PSS shares the pages of
shared libraries among the processes that map them; RSS counts them in each). Frames/s: each
camera's `instance_mask` outputs received in the window, per second. Latency: input stamp to the
receipt of `instance_mask`, over all cameras. CPU: the nodes' CPU time in the window per frame
processed. Dropped: frames replaced in a camera's mailbox before inference, of those received
(`/diagnostics`). Batched: frames inferred in one batch with another camera's frame (frames of
the same size only: the batch's letterbox then is the one of a single frame, so results do not
change).

Batch against sequential inference, in one process, on the same frames (the first frames of the
video, one per camera; median of {BATCH_REPEATS} runs each, interleaved):

{batch_table(batches)}

Targets:

{targets(rows)}
"""


if __name__ == '__main__':
    main()
