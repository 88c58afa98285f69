"""
What the benchmarks, the soak and the demo share: processes, timing, the video, the baselines.

Imported as a module by `tools/bench*.py`, `tools/soak.py` and `tools/demo.py` (tools/ is not a
package: each script's own folder is on `sys.path`). Nothing happens at import; a program calls
`keep_local()` first. Run as a script it is the worker of one baseline row (raw `model.predict`
/ `model.track`, or the old Ultralytics guide's loop) in its own process: `baseline_row()`
starts it, so that each row's peak RSS and CPU time are its own.

Longer than most modules here because the baselines are part of what is shared: every benchmark
compares the package against the same two loops.
"""

import argparse
import json
import os
from pathlib import Path
import platform
import random
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
from segtrack_ros.core.tracking import BUNDLED_TRACKERS, DEFAULT_TRACKER

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TRAINED = REPO / 'segtrack_ros' / 'data' / 'shapes-seg.pt'
VIDEO_SEED = 11
# The package's defaults; the tracker as a path, which ultralytics' own model.track can read.
SETTINGS = {'conf': 0.25, 'iou': 0.7, 'tracker': str(BUNDLED_TRACKERS / DEFAULT_TRACKER)}
PREDICT_SETTINGS = {key: value for key, value in SETTINGS.items() if key != 'tracker'}
OUTPUT_TOPICS = ('annotated_image', 'annotated_image/compressed', 'instance_mask', 'class_mask',
                 'detections')
SUMMARY_FPS = re.compile(r'\(([0-9.]+) fps\)')


# -- environment and processes -----------------------------------------------------------------

def keep_local():
    """Keep DDS on this machine, away from parallel runs, and ultralytics offline (unless set)."""
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    os.environ.setdefault('ROS_DOMAIN_ID', str(random.randint(1, 100)))
    os.environ.setdefault('YOLO_OFFLINE', '1')


def start(executable, namespace, log=None, **parameters):
    """Start one of the package's executables in `namespace`; its output goes to `log`."""
    command = [str(BIN / executable), '--ros-args', '-r', f'__ns:={namespace}']
    for name, value in parameters.items():
        command += ['-p', f'{name}:={value}']
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT if log else None)


def wait_for(predicate, timeout):
    """Poll until `predicate()` holds; False on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def stop(*processes, timeout=15.0):
    """Interrupt the processes still running (None is skipped) and wait for each to end."""
    for process in processes:
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=timeout)


def exited(process):
    """Tell whether a child has ended, without reaping it (`reap` reads its rusage later)."""
    return os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def reap(process, timeout):
    """Wait for a child with wait4 (its own rusage: CPU, peak RSS); kill it after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return process.returncode, usage
        if time.monotonic() > deadline:
            process.kill()
            deadline = float('inf')
        time.sleep(0.02)


def run_measured(command, env=None, timeout=3600):
    """
    Run `command` to its end; return (exit code, stdout, stderr, its own rusage).

    The child is reaped with wait4, so its peak RSS (`ru_maxrss`, KiB) and CPU time are its own.
    """
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)
    out, err = [], []
    readers = [threading.Thread(target=lambda s=s, b=b: b.append(s.read()), daemon=True)
               for s, b in ((process.stdout, out), (process.stderr, err))]
    for reader in readers:
        reader.start()
    code, usage = reap(process, timeout)
    for reader in readers:
        reader.join()
    return code, out[0], err[0], usage


def cpu_seconds(process):
    """Return the user + system CPU seconds of a `psutil.Process` so far."""
    times = process.cpu_times()
    return times.user + times.system


def console_script(name, arguments, threads=None):
    """
    Run one of the package's console scripts; return its summary's fps, peak RSS MB and CPU s.

    The fps is the one its own summary prints (processing, start-up excluded); CPU time is the
    whole process's, start-up included.
    """
    env = {**os.environ, 'OMP_NUM_THREADS': str(threads)} if threads else None
    code, stdout, stderr, usage = run_measured([str(BIN / name), *map(str, arguments)], env)
    match = SUMMARY_FPS.search(stdout)
    if code != 0 or not match:
        raise RuntimeError(f'{name} failed ({code}): {stderr.strip()[-2000:]}')
    return {'fps': float(match.group(1)), 'peak_rss_mb': usage.ru_maxrss / 1024,
            'cpu_seconds': usage.ru_utime + usage.ru_stime}


# -- the machine, the video, the package's threads ---------------------------------------------

def machine():
    """Return one line about this machine and the software versions."""
    from importlib.metadata import version

    cpu = next((line.split(':', 1)[1].strip() for line in
                Path('/proc/cpuinfo').read_text().splitlines() if line.startswith('model name')),
               platform.processor())
    memory = int(Path('/proc/meminfo').read_text().split()[1]) / 2 ** 20
    gpu = 'an NVIDIA GPU (unused)' if Path('/dev/nvidia0').exists() else 'no GPU'
    return (f'{os.cpu_count()} cores ({cpu}), {memory:.0f} GiB, {gpu}; {platform.system()} '
            f'{platform.release()}, Python {platform.python_version()}, torch {version("torch")}, '
            f'ultralytics {version("ultralytics")}')


def load_average():
    """Return the 1, 5 and 15 minute load averages as text."""
    return ' '.join(Path('/proc/loadavg').read_text().split()[:3])


def prepare_video(frames, folder=REPO / 'output' / 'bench'):
    """Return the benchmark video (768x576, MJPG) of `frames` frames: generated once, seeded."""
    from segtrack_ros.eval.synthetic import SceneConfig, write_video

    folder.mkdir(parents=True, exist_ok=True)
    video = folder / f'bench-768x576-{frames}-seed{VIDEO_SEED}.avi'
    if not video.exists():
        print(f'bench: generating {video} ({frames} frames, 768x576)', flush=True)
        write_video(video, SceneConfig(frames=frames, seed=VIDEO_SEED))
    return video


def read_frames(video, limit):
    """Yield up to `limit` frames of a video file."""
    import cv2

    capture = cv2.VideoCapture(str(video))
    count = 0
    while count < limit:
        ok, frame = capture.read()
        if not ok:
            break
        count += 1
        yield frame
    capture.release()


def package_threads():
    """
    Return the torch thread count of segtrack_node and segtrack-video.

    It depends on what is imported before torch (importing ultralytics sets OMP_NUM_THREADS=1
    when it is unset), so it is asked of a process that starts as the executables do.
    """
    code = ('from segtrack_ros.core.runtime import apply_process_defaults; '
            'apply_process_defaults(); from segtrack_ros.ros import node; '
            'import torch; print(torch.get_num_threads())')
    return int(subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                              check=True).stdout.split()[-1])


# -- figures and tables ------------------------------------------------------------------------

def percentiles(values):
    """Return p50, p95 and p99 of `values`, or None when there are none."""
    return [float(v) for v in np.percentile(values, [50, 95, 99])] if values else None


def fmt_latency(values):
    """Format percentiles as 'p50/p95/p99' in whole ms."""
    return '/'.join(f'{v:.0f}' for v in values) if values else 'n/a'


def verdict(passed):
    """Return PASS or FAIL."""
    return 'PASS' if passed else 'FAIL'


def diagnostic_values(status):
    """Return the numeric key/values of a node's DiagnosticStatus as a dict of floats."""
    values = {}
    for pair in status.values:
        try:
            values[pair.key] = float(pair.value)
        except ValueError:
            pass
    return values


class OutputRecorder:
    """Records outputs of a segtrack_node (all by default): latency, arrival, track ids, video."""

    def __init__(self, node, namespace, video_path=None, fps=30.0, topics=OUTPUT_TOPICS):
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CompressedImage, Image
        from vision_msgs.msg import Detection2DArray

        types = {'annotated_image/compressed': CompressedImage, 'detections': Detection2DArray}
        self.latencies_ms = {topic: [] for topic in topics}
        self.arrivals = {topic: [] for topic in topics}
        self.track_ids = set()
        self._video_path, self._fps, self._writer = video_path, fps, None
        self._lock = threading.Lock()
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        for topic in topics:
            node.create_subscription(types.get(topic, Image), f'{namespace}/{topic}',
                                     lambda message, t=topic: self._on_output(t, message), qos)
        self._clock = node.get_clock()

    def _on_output(self, topic, message):
        stamp = message.header.stamp.sec + message.header.stamp.nanosec * 1e-9
        latency = (self._clock.now().nanoseconds * 1e-9 - stamp) * 1000
        with self._lock:
            self.latencies_ms[topic].append(latency)
            self.arrivals[topic].append(time.monotonic())
            if topic == 'detections':
                self.track_ids.update(d.id for d in message.detections)
            if topic == 'annotated_image' and self._video_path:
                self._record(message)

    def _record(self, message):
        from segtrack_ros.io import image_codec
        from segtrack_ros.io.video_io import open_writer

        frame = image_codec.decode_image(message)
        if self._writer is None:
            height, width = frame.shape[:2]
            self._writer = open_writer(self._video_path, self._fps, width, height)
        self._writer.write(frame)

    def close(self):
        """Finish the recorded video."""
        with self._lock:
            if self._writer is not None:
                self._writer.release()


# -- the node over DDS -------------------------------------------------------------------------

MIN_NODE_SECONDS = 10.0  # of input in a node row


def node_row(model, imgsz, mode, rate, video, frames, index, logs, topics=OUTPUT_TOPICS,
             **parameters):
    """
    Run video_publisher at `rate` -> segtrack_node -> OutputRecorder; return the figures.

    Three processes over DDS (rclpy must be initialised here). A rate whose `frames` last less
    than MIN_NODE_SECONDS loops the video and is stopped after that time. Figures: processed
    fps (outputs between the first and the last), drops against frames published, latency
    percentiles per output, the node's peak RSS and inference time, CPU time per process.
    `topics` are the outputs subscribed (`detections` among them); `parameters` are more node
    parameters (e.g. `half`, `device` instead of cpu).
    """
    import psutil
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor

    namespace = f'/bench{index}'
    probe = rclpy.create_node(f'segtrack_bench{index}')
    recorder = OutputRecorder(probe, namespace, topics=topics)
    diagnostics = []
    probe.create_subscription(DiagnosticArray, '/diagnostics',
                              lambda m: diagnostics.extend(
                                  s for s in m.status if s.name.startswith(namespace)), 10)
    executor = SingleThreadedExecutor()
    executor.add_node(probe)
    threading.Thread(target=executor.spin, daemon=True).start()
    Path(logs).mkdir(parents=True, exist_ok=True)
    node_log_path, pub_log_path = Path(logs) / f'node{index}.log', Path(logs) / f'pub{index}.log'
    cpu, node_usage = {}, None
    loop = frames / rate < MIN_NODE_SECONDS
    with open(node_log_path, 'w') as node_log, open(pub_log_path, 'w') as pub_log:
        node = start('segtrack_node', namespace, node_log, model=model, imgsz=imgsz, mode=mode,
                     color_mode='track' if mode == 'track' else 'class',
                     **{'device': 'cpu', **parameters})
        publisher = None
        try:
            if not wait_for(lambda: probe.count_subscribers(f'{namespace}/image') > 0
                            and probe.count_publishers(f'{namespace}/detections') > 0, 120):
                raise RuntimeError(f'segtrack_node did not start, see {node_log_path}')
            time.sleep(1.0)  # the outputs' subscriptions match
            node_cpu, own_cpu = cpu_seconds(psutil.Process(node.pid)), time.process_time()
            publisher = start('video_publisher', namespace, pub_log, source=video,
                              rate=float(rate), loop=str(loop).lower())
            wait_for(lambda: recorder.arrivals['detections'] or exited(publisher), 60)
            try:  # the publisher's CPU time from its first frame on, start-up excluded
                publisher_cpu = cpu_seconds(psutil.Process(publisher.pid))
            except psutil.NoSuchProcess:
                publisher_cpu = 0.0
            if loop:
                time.sleep(MIN_NODE_SECONDS)
                publisher.send_signal(signal.SIGINT)
            code, usage = reap(publisher, frames / rate + 60)
            if code != 0:
                raise RuntimeError(f'video_publisher failed, see {pub_log_path}')
            cpu['publisher'] = usage.ru_utime + usage.ru_stime - publisher_cpu
            time.sleep(1.5)  # the last frame's outputs arrive
            cpu['node'] = cpu_seconds(psutil.Process(node.pid)) - node_cpu
            cpu['subscriber'] = time.process_time() - own_cpu
        finally:
            if publisher is not None and publisher.returncode is None:
                publisher.kill()
                reap(publisher, 10)
            if node.returncode is None:
                node.send_signal(signal.SIGINT)
                _, node_usage = reap(node, 15)
            executor.shutdown()
            probe.destroy_node()
    figures = diagnostic_values(diagnostics[-1]) if diagnostics else {}
    match = re.search(r'end of video after (\d+) frames', pub_log_path.read_text())
    published = int(figures.get('received', 0)) if loop else (
        int(match.group(1)) if match else frames)
    arrivals = recorder.arrivals['detections']
    processed = len(arrivals)
    span = arrivals[-1] - arrivals[0] if processed > 1 else 0.0
    latencies = {topic: percentiles(values) for topic, values in recorder.latencies_ms.items()}
    worst = max((lat for lat in latencies.values() if lat), key=lambda lat: lat[0],
                default=None)
    return {'frames': processed, 'fps': (processed - 1) / span if span > 0 else 0.0,
            'published': published,
            'drop_ratio': 1 - processed / published if published else float('nan'),
            'latency': latencies, 'worst_latency': worst,
            'peak_rss_mb': node_usage.ru_maxrss / 1024 if node_usage else None,
            'node_inference_ms': figures.get('inference_ms'), 'rate': rate,
            'cpu_seconds': cpu.get('node'), 'cpu': cpu}


# -- the baselines: raw model calls and the old guide's loop, one process per row -------------

def load_model(name, imgsz, first_frame, threads, track):
    """
    Load a YOLO model, run it once as the row will (predict or track), then set torch's threads.

    Ultralytics sets up a new predictor, and sets torch to cpu_count - 1 threads, on the first
    call and whenever the tracker argument changes: hence one call in the row's mode first.
    """
    import torch
    from ultralytics import YOLO

    model = YOLO(name, task='segment')
    if track:  # a blank frame: no track is started before the timed loop
        model.track(np.zeros_like(first_frame), persist=True, imgsz=imgsz, verbose=False,
                    **SETTINGS)
    else:
        model.predict(first_frame, imgsz=imgsz, verbose=False, **PREDICT_SETTINGS)
    torch.set_num_threads(threads)
    return model, torch.get_num_threads()


def raw_loop(args, track):
    """Time the limit: model.predict (or model.track) on decoded frames, nothing else."""
    first = next(read_frames(args.video, 1))
    model, threads = load_model(args.model, args.imgsz, first, args.threads, track)
    settings = {'imgsz': args.imgsz, 'verbose': False, 'max_det': args.max_det}
    if track:
        def run(frame):
            return model.track(frame, persist=True, **settings, **SETTINGS)
    else:
        def run(frame):
            return model.predict(frame, **settings, **PREDICT_SETTINGS)
    for _ in range(3):  # warm-up (blank: no tracks yet), as the package's segmenter has one
        run(np.zeros_like(first))
    times, instances, cpu = [], 0, time.process_time()
    for frame in read_frames(args.video, args.frames):
        started = time.perf_counter()
        result = run(frame)
        times.append(time.perf_counter() - started)
        instances += len(result[0].boxes)
    return {'frames': len(times), 'seconds': sum(times), 'instances': instances,
            'threads': threads, 'cpu_seconds': time.process_time() - cpu}


def seg_bbox(annotator, mask, mask_color=(255, 0, 255), label=None, txt_color=(255, 255, 255)):
    """`Annotator.seg_bbox` of ultralytics 8.3, which the guide used (gone from 8.4)."""
    import cv2

    if mask.size == 0:
        return
    cv2.polylines(annotator.im, [np.int32([mask])], isClosed=True, color=mask_color, thickness=2)
    text_size, _ = cv2.getTextSize(label, 0, annotator.sf, annotator.tf)
    if label:
        cv2.rectangle(
            annotator.im,
            (int(mask[0][0]) - text_size[0] // 2 - 10, int(mask[0][1]) - text_size[1] - 10),
            (int(mask[0][0]) + text_size[0] // 2 + 10, int(mask[0][1] + 10)), mask_color, -1)
        cv2.putText(annotator.im, label, (int(mask[0][0]) - text_size[0] // 2, int(mask[0][1])),
                    0, annotator.sf, txt_color, annotator.tf)


def guide_loop(args, track):
    """Time the old guide's 'Instance Segmentation and Tracking' loop, sequential, as written."""
    import cv2
    from ultralytics.utils.plotting import Annotator, colors

    first = next(read_frames(args.video, 1))
    model, threads = load_model(args.model, args.imgsz, first, args.threads, track)
    names = model.model.names
    settings = {'imgsz': args.imgsz, 'verbose': False, 'max_det': args.max_det}
    frames = instances = 0
    started, cpu = time.perf_counter(), time.process_time()
    cap = cv2.VideoCapture(str(args.video))
    w, h, fps = (int(cap.get(x)) for x in (
        cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FRAME_HEIGHT, cv2.CAP_PROP_FPS))
    out = cv2.VideoWriter(str(args.output), cv2.VideoWriter_fourcc(*'MJPG'), fps, (w, h))
    while frames < args.frames:
        ret, im0 = cap.read()
        if not ret:
            break
        annotator = Annotator(im0, line_width=2)
        if track:
            results = model.track(im0, persist=True, **settings, **SETTINGS)
            if results[0].boxes.id is not None and results[0].masks is not None:
                labelled = zip(results[0].masks.xy, results[0].boxes.id.int().cpu().tolist())
                for mask, track_id in labelled:
                    color = colors(int(track_id), True)
                    seg_bbox(annotator, mask=mask, mask_color=color, label=str(track_id),
                             txt_color=annotator.get_txt_color(color))
                    instances += 1
        else:
            results = model.predict(im0, **settings, **PREDICT_SETTINGS)
            if results[0].masks is not None:
                for mask, cls in zip(results[0].masks.xy, results[0].boxes.cls.cpu().tolist()):
                    color = colors(int(cls), True)
                    seg_bbox(annotator, mask=mask, mask_color=color, label=names[int(cls)],
                             txt_color=annotator.get_txt_color(color))
                    instances += 1
        out.write(im0)
        frames += 1
    cap.release()
    out.release()
    return {'frames': frames, 'seconds': time.perf_counter() - started, 'instances': instances,
            'threads': threads, 'cpu_seconds': time.process_time() - cpu}


BASELINES = {
    'raw': lambda a: raw_loop(a, False), 'raw-track': lambda a: raw_loop(a, True),
    'guide-predict': lambda a: guide_loop(a, False),
    'guide-track': lambda a: guide_loop(a, True),
}


def raw_beside_publisher(model, imgsz, video, frames, threads, rate, namespace, log_path):
    """
    Run the `raw` baseline while `video_publisher` loops `video` at `rate` Hz into `namespace`.

    Nobody reads that topic: the publisher takes the CPU it would take from a node beside it.
    """
    with open(log_path, 'w') as log:
        publisher = start('video_publisher', namespace, log, source=video, rate=rate,
                          loop='true')
        try:
            return baseline_row('raw', model, imgsz, video, frames, threads)
        finally:
            stop(publisher)


def baseline_row(kind, model, imgsz, video, frames, threads, max_det=300, output=None):
    """Run one baseline (a key of BASELINES) in its own process; return its figures + peak RSS."""
    output = output or Path(video).with_name(f'{Path(video).stem}-{kind}.avi')
    command = [sys.executable, __file__, kind, '--model', str(model), '--imgsz', str(imgsz),
               '--video', str(video), '--frames', str(frames), '--threads', str(threads),
               '--max-det', str(max_det), '--output', str(output)]
    code, stdout, stderr, usage = run_measured(command)
    if code != 0:
        raise RuntimeError(f'{kind} failed ({code}): {stderr.strip()[-2000:]}')
    row = json.loads(stdout.strip().splitlines()[-1])
    row['peak_rss_mb'] = usage.ru_maxrss / 1024  # KiB on Linux
    row['fps'] = row['frames'] / row['seconds'] if row['seconds'] else 0.0
    return row


def main():
    """Run one baseline row and print its figures as JSON (the worker of `baseline_row`)."""
    parser = argparse.ArgumentParser(description='one baseline row in its own process')
    parser.add_argument('kind', choices=BASELINES)
    parser.add_argument('--model', required=True)
    parser.add_argument('--imgsz', type=int, required=True)
    parser.add_argument('--video', type=Path, required=True)
    parser.add_argument('--frames', type=int, required=True)
    parser.add_argument('--threads', type=int, required=True)
    parser.add_argument('--max-det', type=int, default=300)
    parser.add_argument('--output', type=Path, help="the guide loop's video")
    args = parser.parse_args()
    keep_local()
    print(json.dumps(BASELINES[args.kind](args)))


if __name__ == '__main__':
    main()
