#!/usr/bin/env python3
"""
`make soak`: the node under a long load (10 minutes at 30 Hz by default): memory, rate, latency.

`video_publisher` loops the benchmark video into `segtrack_node` (track mode, colours by track
id, trails on, so that every drawing path runs) while this process subscribes to all outputs
(`benchlib.OutputRecorder`) and to /diagnostics, and samples the node's RSS every few
seconds. The first minute is warm-up (allocator pools, tracker, first outputs); drift = RSS at
the end against RSS at the end of the warm-up. Latency is from the input stamp to the receipt of
each output, bounded by 2 x the node's inference time + 10 ms of transport. Prints the figures
and writes them to bench/soak.md (bench/soak-<rate>hz.md for other rates).

    .venv/bin/python tools/soak.py [--minutes 10] [--rate 30] [--model PATH] [--imgsz 320]
"""

import argparse
from pathlib import Path
import threading
import time

import benchlib
from benchlib import diagnostic_values, OutputRecorder, start, stop, wait_for
from diagnostic_msgs.msg import DiagnosticArray
import numpy as np
import psutil
import rclpy
from rclpy.executors import SingleThreadedExecutor
from segtrack_ros.ros.transport import apply_large_data_profile

NAMESPACE = '/soak'
WARM_UP_SECONDS = 60.0
TRANSPORT_MS = 10.0  # allowance for two DDS hops of a 768x576 image, as in the bench target


def soak(args, model, log_dir):
    """Run the node for `args.minutes`; return the (seconds, RSS MB, outputs so far) samples."""
    apply_large_data_profile()
    rclpy.init()
    probe = rclpy.create_node('segtrack_soak')
    recorder = OutputRecorder(probe, NAMESPACE)
    diagnostics = []
    probe.create_subscription(DiagnosticArray, '/diagnostics', lambda message: diagnostics.extend(
        status for status in message.status if status.name.startswith(NAMESPACE)), 10)
    executor = SingleThreadedExecutor()
    executor.add_node(probe)
    threading.Thread(target=executor.spin, daemon=True).start()
    node_log = open(log_dir / 'soak-node.log', 'w')
    publisher_log = open(log_dir / 'soak-publisher.log', 'w')
    node = start('segtrack_node', NAMESPACE, node_log, model=model, imgsz=args.imgsz, device='cpu',
                 mode='track', color_mode='track', trail_length=20)
    publisher = None
    samples = []
    try:
        if not wait_for(lambda: probe.count_subscribers(f'{NAMESPACE}/image') > 0
                        and probe.count_publishers(f'{NAMESPACE}/detections') > 0, 120):
            raise RuntimeError(f'segtrack_node did not start, see {node_log.name}')
        time.sleep(1.0)
        publisher = start('video_publisher', NAMESPACE, publisher_log, source=args.video,
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
        stop(publisher, node)
        node_log.close()
        publisher_log.close()
        executor.shutdown()
        probe.destroy_node()
        rclpy.try_shutdown()
    return samples, recorder.latencies_ms, [diagnostic_values(status) for status in diagnostics]


def report(args, model, samples, latencies, diagnostics, loads, description):
    """Render the figures as markdown."""
    seconds = np.array([s[0] for s in samples])
    rss = np.array([s[1] for s in samples])
    warm = seconds >= min(WARM_UP_SECONDS, seconds[-1] / 2)
    start_mb, end_mb = rss[warm][0], rss[-1]
    drift = (end_mb - start_mb) / start_mb * 100
    slope = np.polyfit(seconds[warm] / 60, rss[warm], 1)[0] if warm.sum() > 2 else 0.0
    processed = samples[-1][2]
    verdict = 'PASS' if abs(drift) <= 5 else 'FAIL'
    last = diagnostics[-1]
    inference = float(np.median([d['inference_ms'] for d in diagnostics if d['inference_ms']]))
    bound = 2 * inference + TRANSPORT_MS
    every_minute = samples[::max(1, round(60 / args.interval))]
    minute_rows = '\n'.join(f'| {s / 60:.1f} | {r:.0f} | {n} |' for s, r, n in every_minute)

    def latency_row(topic):
        p50, p95, p99 = np.percentile(latencies[topic], [50, 95, 99])
        return (f'| `{topic}` | {p50:.0f} / {p95:.0f} / {p99:.0f} ms | {bound:.0f} ms | '
                f'{"PASS" if p99 <= bound else "FAIL"} |')

    return f"""# segtrack_ros soak: the node over {args.minutes:g} minutes at {args.rate:g} Hz

Command: `make soak` (`tools/soak.py --minutes {args.minutes:g} --rate {args.rate:g}`).
Machine: {description}. Load average before / after: {' / '.join(loads)}.

`video_publisher` loops a 768×576 video at {args.rate:g} Hz into `segtrack_node` (model
`{Path(model).name}` at imgsz {args.imgsz}, track mode, colours by track id, trails of 20
frames); one subscriber takes all five outputs. RSS of the node sampled every {args.interval:g} s;
the first {WARM_UP_SECONDS:.0f} s are warm-up.

| RSS after warm-up | RSS at the end | peak | drift | trend after warm-up |
|---:|---:|---:|---:|---:|
| {start_mb:.0f} MB | {end_mb:.0f} MB | {rss.max():.0f} MB | \
{drift:+.1f} % ({verdict}, target ±5 %) | {slope:+.2f} MB/min |

From the node's /diagnostics at the end: {last['received']:.0f} frames received \
({last['received'] / seconds[-1]:.0f} Hz), {last['dropped']:.0f} dropped as the model was busy \
({last['dropped'] / last['received']:.0%}), {last['bad_inputs']:.0f} bad inputs, \
{last['errors']:.0f} errors; inference {inference:.1f} ms a frame (median of the 5 s means). \
Outputs received here: {processed} ({processed / seconds[-1]:.1f} fps).

| output | latency p50 / p95 / p99 | bound: 2 × inference + {TRANSPORT_MS:.0f} ms | p99 within |
|---|---:|---:|---|
{latency_row('detections')}
{latency_row('annotated_image/compressed')}

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
    benchlib.keep_local()
    trained = benchlib.TRAINED
    model = args.model or (str(trained) if trained.exists() else 'yolov8n-seg.yaml')
    output = args.output or benchlib.REPO / 'bench' / (
        'soak.md' if args.rate == 30 else f'soak-{args.rate:g}hz.md')
    loads, description = [benchlib.load_average()], benchlib.machine()
    args.video = benchlib.prepare_video(300)
    log_dir = args.video.parent / 'logs'
    log_dir.mkdir(parents=True, exist_ok=True)
    print(f'soak: {args.minutes:g} min of segtrack_node ({Path(model).name} @{args.imgsz}) at '
          f'{args.rate:g} Hz', flush=True)
    samples, latencies, diagnostics = soak(args, model, log_dir)
    loads.append(benchlib.load_average())
    text = report(args, model, samples, latencies, diagnostics, loads, description)
    print('\n' + text)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    print(f'soak: wrote {output}')


if __name__ == '__main__':
    main()
