#!/usr/bin/env python3
"""
`make demo`: the ROS pipeline end to end on a generated video, in three processes.

video_publisher plays the sample video at 30 Hz into segtrack_node (the bundled shapes model,
track mode, colours by track id); this process subscribes to every output, records the annotated
frames to a video file and prints processed fps, drops and latency percentiles.

    .venv/bin/python tools/demo.py [--frames 300] [--model PATH] [--device auto]
"""

import argparse
import os
from pathlib import Path
import random
import sys
import threading
import time

os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
os.environ.setdefault('ROS_DOMAIN_ID', str(random.randint(1, 100)))

import numpy as np  # noqa: E402
import rclpy  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from segtrack_ros.core.segmenter import BUNDLED_MODEL  # noqa: E402
from segtrack_ros.eval.synthetic import SceneConfig, write_video  # noqa: E402
from segtrack_ros.io import image_codec  # noqa: E402
from segtrack_ros.io.video_io import open_writer  # noqa: E402
from segtrack_ros.ros.transport import apply_large_data_profile  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from vision_msgs.msg import Detection2DArray  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from processes import start, stop, wait_for  # noqa: E402, I100

REPO = Path(__file__).resolve().parent.parent
NAMESPACE = '/demo'
OUTPUT_TOPICS = {'annotated_image': Image, 'annotated_image/compressed': CompressedImage,
                 'instance_mask': Image, 'class_mask': Image, 'detections': Detection2DArray}


class OutputRecorder:
    """Subscribes to every output of a segtrack_node; records latencies and annotated frames."""

    def __init__(self, node, namespace, video_path=None, fps=30.0):
        self.latencies_ms = {topic: [] for topic in OUTPUT_TOPICS}
        self.track_ids = set()
        self._video_path, self._fps, self._writer = video_path, fps, None
        self._lock = threading.Lock()
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        for topic, kind in OUTPUT_TOPICS.items():
            node.create_subscription(kind, f'{namespace}/{topic}',
                                     lambda message, t=topic: self._on_output(t, message), qos)
        self._clock = node.get_clock()

    def _on_output(self, topic, message):
        stamp = message.header.stamp.sec + message.header.stamp.nanosec * 1e-9
        latency = (self._clock.now().nanoseconds * 1e-9 - stamp) * 1000
        with self._lock:
            self.latencies_ms[topic].append(latency)
            if topic == 'detections':
                self.track_ids.update(d.id for d in message.detections)
            if topic == 'annotated_image' and self._video_path:
                self._record(image_codec.decode_image(message))

    def _record(self, frame):
        if self._writer is None:
            height, width = frame.shape[:2]
            self._writer = open_writer(self._video_path, self._fps, width, height)
        self._writer.write(frame)

    def close(self):
        """Finish the recorded video."""
        with self._lock:
            if self._writer is not None:
                self._writer.release()


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
    parser.add_argument('--model', default=str(BUNDLED_MODEL))
    parser.add_argument('--device', default='auto')
    parser.add_argument('--imgsz', type=int, default=320,
                        help='inference size; the bundled model was trained at 320')
    parser.add_argument('--output', default=str(REPO / 'output'))
    args = parser.parse_args()
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
    segtrack = start('segtrack_node', NAMESPACE, model=args.model, device=args.device,
                     imgsz=args.imgsz, mode='track', color_mode='track', trail_length=20)
    publisher = None
    try:
        if not wait_for(lambda: probe.count_subscribers(f'{NAMESPACE}/image') > 0, 60):
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
