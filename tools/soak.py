#!/usr/bin/env python3
"""
`make soak`: the node's memory over a long run (10 minutes at 30 Hz by default).

`video_publisher` loops the benchmark video into `segtrack_node` (track mode, colours by track
id, trails on, so that every drawing path runs) while this process subscribes to all outputs
(tools/demo.py's `OutputRecorder`) and samples the node's RSS every few seconds. The first
minute is warm-up (allocator pools, tracker, first outputs); drift = RSS at the end against
RSS at the end of the warm-up. Prints the figures and writes them to bench/soak.md
(bench/soak-<rate>hz.md for other rates).

    .venv/bin/python tools/soak.py [--minutes 10] [--rate 30] [--model PATH] [--imgsz 320]
"""

import argparse
import os
from pathlib import Path
import random
import signal
import sys
import threading
import time

os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
os.environ.setdefault('ROS_DOMAIN_ID', str(random.randint(1, 100)))
os.environ.setdefault('YOLO_OFFLINE', '1')

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import rclpy  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import load_average, machine, prepare_video, REPO, TRAINED  # noqa: E402, I100
from demo import OutputRecorder  # noqa: E402
from segtrack_ros.transport import apply_large_data_profile  # noqa: E402

BIN = Path(sys.executable).parent
NAMESPACE = '/soak'
WARM_UP_SECONDS = 60.0


def start(executable, log, **parameters):
    """Start one of the package's executables in the soak namespace, its output to `log`."""
    import subprocess

    command = [str(BIN / executable), '--ros-args', '-r', f'__ns:={NAMESPACE}']
    for name, value in parameters.items():
        command += ['-p', f'{name}:={value}']
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def wait_for(predicate, timeout):
    """Poll until `predicate()` holds; False on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def soak(args, model, log_dir):
    """Run the node for `args.minutes`; return the (seconds, RSS MB, outputs so far) samples."""
    apply_large_data_profile()
    rclpy.init()
    probe = rclpy.create_node('segtrack_soak')
    recorder = OutputRecorder(probe, NAMESPACE)
    executor = SingleThreadedExecutor()
    executor.add_node(probe)
    threading.Thread(target=executor.spin, daemon=True).start()
    node_log = open(log_dir / 'soak-node.log', 'w')
    publisher_log = open(log_dir / 'soak-publisher.log', 'w')
    node = start('segtrack_node', node_log, model=model, imgsz=args.imgsz, device='cpu',
                 mode='track', color_mode='track', trail_length=20)
    publisher = None
    samples = []
    try:
        if not wait_for(lambda: probe.count_subscribers(f'{NAMESPACE}/image') > 0
                        and probe.count_publishers(f'{NAMESPACE}/detections') > 0, 120):
            raise RuntimeError(f'segtrack_node did not start, see {node_log.name}')
        time.sleep(1.0)
        publisher = start('video_publisher', publisher_log, source=args.video,
                          rate=float(args.rate), loop='true')
        process = psutil.Process(node.pid)
        begin = time.monotonic()
        end = begin + args.minutes * 60
        while time.monotonic() < end:
            if node.poll() is not None or publisher.poll() is not None:
                raise RuntimeError(f'a process ended early, see the logs in {log_dir}')
            elapsed = time.monotonic() - begin
            outputs = len(recorder.latencies_ms['detections'])
            samples.append((elapsed, process.memory_info().rss / 2 ** 20, outputs))
            if len(samples) % 12 == 1:
                print(f'soak: {elapsed / 60:4.1f} min  RSS {samples[-1][1]:.0f} MB  '
                      f'{outputs} frames processed', flush=True)
            time.sleep(args.interval)
    finally:
        for process in (publisher, node):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGINT)
                process.wait(timeout=15)
        node_log.close()
        publisher_log.close()
        executor.shutdown()
        probe.destroy_node()
        rclpy.try_shutdown()
    latency = recorder.latencies_ms['detections']
    return samples, latency


def report(args, model, samples, latency, loads, description):
    """Render the figures as markdown."""
    seconds = np.array([s[0] for s in samples])
    rss = np.array([s[1] for s in samples])
    warm = seconds >= min(WARM_UP_SECONDS, seconds[-1] / 2)
    start_mb, end_mb = rss[warm][0], rss[-1]
    drift = (end_mb - start_mb) / start_mb * 100
    slope = np.polyfit(seconds[warm] / 60, rss[warm], 1)[0] if warm.sum() > 2 else 0.0
    processed = samples[-1][2]
    p50, p95, p99 = np.percentile(latency, [50, 95, 99]) if latency else (0, 0, 0)
    verdict = 'PASS' if abs(drift) <= 5 else 'FAIL'
    every_minute = samples[::max(1, round(60 / args.interval))]
    minute_rows = '\n'.join(f'| {s / 60:.1f} | {r:.0f} | {n} |' for s, r, n in every_minute)
    return f"""# segtrack_ros soak: node RSS over {args.minutes:g} minutes at {args.rate:g} Hz

Command: `make soak` (`tools/soak.py --minutes {args.minutes:g} --rate {args.rate:g}`).
Machine: {description}. Load average before / after: {' / '.join(loads)}.

`video_publisher` loops a 768×576 video at {args.rate:g} Hz into `segtrack_node` (model
`{Path(model).name}` at imgsz {args.imgsz}, track mode, colours by track id, trails of 20
frames); one subscriber takes all five outputs. RSS of the node sampled every {args.interval:g} s;
the first {WARM_UP_SECONDS:.0f} s are warm-up.

| RSS after warm-up | RSS at the end | peak | drift | trend after warm-up | \
frames processed | latency p50/p95/p99 (detections) |
|---:|---:|---:|---:|---:|---:|---:|
| {start_mb:.0f} MB | {end_mb:.0f} MB | {rss.max():.0f} MB | \
{drift:+.1f} % ({verdict}, target ±5 %) | {slope:+.2f} MB/min | \
{processed} ({processed / seconds[-1]:.1f} fps) | {p50:.0f}/{p95:.0f}/{p99:.0f} ms |

RSS each minute:

| minute | RSS MB | frames processed |
|---:|---:|---:|
{minute_rows}
"""


def main():
    """Run the soak, print and write its figures."""
    parser = argparse.ArgumentParser(description='segtrack_node memory soak test')
    parser.add_argument('--minutes', type=float, default=10.0)
    parser.add_argument('--rate', type=float, default=30.0, help='input rate, Hz')
    parser.add_argument('--interval', type=float, default=5.0, help='seconds between samples')
    parser.add_argument('--model', help='default: the bundled shapes model, else '
                                        'yolov8n-seg.yaml (untrained)')
    parser.add_argument('--imgsz', type=int, default=320)
    parser.add_argument('--output', type=Path)
    args = parser.parse_args()
    model = args.model or (str(TRAINED) if TRAINED.exists() else 'yolov8n-seg.yaml')
    output = args.output or REPO / 'bench' / (
        'soak.md' if args.rate == 30 else f'soak-{args.rate:g}hz.md')
    loads, description = [load_average()], machine()
    args.video = prepare_video(300)
    log_dir = args.video.parent / 'logs'
    log_dir.mkdir(parents=True, exist_ok=True)
    print(f'soak: {args.minutes:g} min of segtrack_node ({Path(model).name} @{args.imgsz}) at '
          f'{args.rate:g} Hz', flush=True)
    samples, latency = soak(args, model, log_dir)
    loads.append(load_average())
    text = report(args, model, samples, latency, loads, description)
    print('\n' + text)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    print(f'soak: wrote {output}')


if __name__ == '__main__':
    main()
