#!/usr/bin/env python3
"""
`make demo`: the ROS pipeline end to end on a generated video, in three processes.

video_publisher plays the sample video at 30 Hz into segtrack_node (the bundled shapes model,
track mode, colours by track id); this process subscribes to every output, records the annotated
frames to a video file and prints processed fps, drops and latency percentiles. Where OpenVINO is
installed (requirements-dev.txt) the node runs the model as an OpenVINO export it makes itself
(`export_format`, made once and cached): the fastest way on a CPU (bench/exports.md).

    .venv/bin/python tools/demo.py [--frames 300] [--model PATH] [--device auto]
                                   [--export-format openvino|onnx|engine|'']
"""

import argparse
import importlib.util
from pathlib import Path
import sys
import threading
import time

import benchlib
from benchlib import OutputRecorder, start, stop, wait_for
import numpy as np
import rclpy
from segtrack_ros.eval.synthetic import SceneConfig, write_video
from segtrack_ros.ros.transport import apply_large_data_profile

NAMESPACE = '/demo'


def percentiles(values):
    """p50 / p95 / p99 of `values` as text."""
    if not values:
        return 'n/a'
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return f'p50 {p50:.0f} ms, p95 {p95:.0f} ms, p99 {p99:.0f} ms'


def main():
    """Generate the sample, run the three processes, print the summary."""
    parser = argparse.ArgumentParser(description='segtrack_ros ROS demo')
    parser.add_argument('--frames', type=int, default=300, help='length of the sample video')
    parser.add_argument('--model', default=str(benchlib.TRAINED))
    parser.add_argument('--device', default='auto')
    parser.add_argument('--imgsz', type=int, default=320,
                        help='inference size; the bundled model was trained at 320')
    parser.add_argument('--output', default=str(benchlib.REPO / 'output'))
    parser.add_argument('--export-format',
                        default='openvino' if importlib.util.find_spec('openvino') else '',
                        help="the node's export_format ('' runs the .pt); default openvino "
                             'where it is installed')
    args = parser.parse_args()
    benchlib.keep_local()
    if not Path(args.model).exists():
        sys.exit(f'demo: model {args.model} not found: run `make model` to train it')
    output = Path(args.output)
    output.mkdir(exist_ok=True)
    sample = output / f'sample-{args.frames}.avi'
    if not sample.exists():
        print(f'demo: generating {sample} ({args.frames} frames, 768x576)')
        write_video(sample, SceneConfig(frames=args.frames, seed=7))
    recorded = output / 'demo-annotated.avi'

    apply_large_data_profile()
    rclpy.init()
    probe = rclpy.create_node('segtrack_demo')
    recorder = OutputRecorder(probe, NAMESPACE, recorded)
    spinner = threading.Thread(target=rclpy.spin, args=(probe,), daemon=True)
    spinner.start()
    print(f'demo: segtrack_node runs {args.model} as '
          + (f'an {args.export_format} export (made once, cached)' if args.export_format
             else 'it is'))
    segtrack = start('segtrack_node', NAMESPACE, model=args.model, device=args.device,
                     imgsz=args.imgsz, mode='track', color_mode='track', trail_length=20,
                     export_format=f"'{args.export_format}'")
    publisher = None
    try:
        if not wait_for(lambda: probe.count_subscribers(f'{NAMESPACE}/image') > 0, 180):
            sys.exit('demo: segtrack_node did not start')
        time.sleep(1.0)  # let the outputs' subscriptions match
        start_time = time.monotonic()
        publisher = start('video_publisher', NAMESPACE, source=sample, rate=30.0)
        publisher.wait()
        time.sleep(1.0)  # the last frames' outputs
        seconds = time.monotonic() - start_time
    finally:
        stop(publisher, segtrack)
        recorder.close()
        probe.destroy_node()
        rclpy.try_shutdown()

    processed = len(recorder.latencies_ms['detections'])
    print(f'\ndemo: {args.frames} frames published at 30 Hz, {processed} processed '
          f'({processed / seconds:.1f} fps), {args.frames - processed} dropped')
    for topic, values in recorder.latencies_ms.items():
        print(f'  {topic:28s} {len(values):4d} msgs  latency {percentiles(values)}')
    print(f'  {len(recorder.track_ids)} track ids seen')
    print(f'demo: annotated video: {recorded}')


if __name__ == '__main__':
    main()
