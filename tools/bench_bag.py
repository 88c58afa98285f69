#!/usr/bin/env python3
"""
`segtrack-bag` against `segtrack-video` on the same frames: what the bag path costs.

One generated 768x576 video (`segtrack_ros.synthetic`, MJPG) and a bag (MCAP) of the same frames
as the video decodes them, as `sensor_msgs/Image` bgr8 on `/camera/image_raw`. Per model (the
bundled shapes model at imgsz 320, the untrained yolov8n-seg at 640), both console scripts run
in track mode with their defaults: segtrack-video writes an MJPG video; segtrack-bag writes all
five outputs and copies the input. Each run is its own process; the two alternate, `--repeat`
times, and each run's fps is the one its own summary prints (processing, not start-up). The best
run of each counts, against load from other processes on the machine. Writes bench/bag.md (and
prints it); the video, the bag and the logs go to output/bench_bag/.

    .venv/bin/python tools/bench_bag.py [--frames 150] [--repeat 2] [--output bench/bag.md]
"""

import argparse
import os
from pathlib import Path
import re
import shutil
import subprocess
import sys
import time

os.environ.setdefault('YOLO_OFFLINE', '1')

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / 'output' / 'bench_bag'
BIN = Path(sys.executable).parent
TOPIC = '/camera/image_raw'
SEED = 11
MODELS = ((str(REPO / 'segtrack_ros' / 'data' / 'shapes-seg.pt'), 320),
          ('yolov8n-seg.yaml', 640))
FPS = re.compile(r'\(([0-9.]+) fps\)')


def prepare_inputs(frames):
    """Write the video and the bag of its decoded frames (once per frame count); return both."""
    from rclpy.serialization import serialize_message
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import get_typestore, Stores
    from segtrack_ros import image_codec
    from segtrack_ros.synthetic import SceneConfig, write_video
    from segtrack_ros.video_io import open_source, read_frames
    from std_msgs.msg import Header

    video, bag = WORK / f'scene-{frames}.avi', WORK / f'scene-{frames}'
    if video.exists() and bag.exists():
        return video, bag
    shutil.rmtree(bag, ignore_errors=True)
    config = SceneConfig(frames=frames, seed=SEED)
    write_video(video, config)
    capture, _ = open_source(video)
    with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connection = writer.add_connection(TOPIC, 'sensor_msgs/msg/Image',
                                           typestore=get_typestore(Stores.LATEST))
        for index, frame in enumerate(read_frames(capture)):
            time_ns = 1_700_000_000 * 10**9 + round(index * 1e9 / config.fps)
            header = Header(frame_id='camera')
            header.stamp.sec, header.stamp.nanosec = divmod(time_ns, 1_000_000_000)
            writer.write(connection, time_ns, serialize_message(
                image_codec.to_image_msg(frame, 'bgr8', header)))
    capture.release()
    return video, bag


def run(command, log):
    """Run a console script; return the fps of its summary and its CPU seconds (user + sys)."""
    with open(log, 'w') as output:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=output, text=True)
        stdout = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
    code = process.returncode = os.waitstatus_to_exitcode(status)
    if code:
        raise RuntimeError(f'{command[0]} failed ({code}), see {log}')
    return float(FPS.search(stdout).group(1)), usage.ru_utime + usage.ru_stime


def bench_model(model, imgsz, video, bag, repeat):
    """Alternate segtrack-video and segtrack-bag runs; return each one's fps and CPU time."""
    flags = ['--model', model, '--imgsz', str(imgsz), '--mode', 'track']
    name = Path(model).stem
    runs = {'video': [], 'bag': []}
    size = 0
    for attempt in range(repeat):
        output = WORK / f'{name}-{imgsz}.avi'
        runs['video'].append(run(
            [str(BIN / 'segtrack-video'), str(video), *flags, '--output', str(output),
             '--no-show'], WORK / f'video-{name}-{imgsz}-{attempt}.log'))
        output = WORK / f'{name}-{imgsz}-bag'
        shutil.rmtree(output, ignore_errors=True)
        runs['bag'].append(run(
            [str(BIN / 'segtrack-bag'), str(bag), str(output), '--topic', TOPIC, *flags],
            WORK / f'bag-{name}-{imgsz}-{attempt}.log'))
        size = sum(path.stat().st_size for path in output.iterdir())
        shutil.rmtree(output)
        print(f'bench_bag: {name} @{imgsz} run {attempt + 1}: video {runs["video"][-1][0]:.2f}'
              f' fps, bag {runs["bag"][-1][0]:.2f} fps', flush=True)
    return runs, size


def report(rows, frames, repeat, loads):
    """Return the Markdown report."""
    lines = [
        '# segtrack-bag against segtrack-video (`tools/bench_bag.py`)', '',
        f'{time.strftime("%Y-%m-%d %H:%M")}, {os.cpu_count()} cores, no GPU; '
        f'{frames} generated 768x576 frames, the same pixels for both (the bag holds the '
        "video's decoded frames as bgr8 Images, MCAP); track mode, ByteTrack, conf 0.25; best "
        f"of {repeat} alternating runs, fps as each tool's summary prints it. Load average "
        f'before / after: {loads[0]:.2f} / {loads[1]:.2f}.', '',
        '| model | imgsz | segtrack-video fps | segtrack-bag fps | bag path costs | '
        'CPU s, video / bag | all runs, fps (video; bag) | output bag |',
        '|---|---|---|---|---|---|---|---|']
    for (model, imgsz), (runs, size) in rows:
        video = max(fps for fps, _ in runs['video'])
        bag = max(fps for fps, _ in runs['bag'])
        cpu = [min(seconds for _, seconds in runs[kind]) for kind in ('video', 'bag')]
        every = '; '.join(', '.join(f'{fps:.2f}' for fps, _ in runs[kind])
                          for kind in ('video', 'bag'))
        lines.append(f'| {Path(model).name} | {imgsz} | {video:.2f} | {bag:.2f} | '
                     f'{(video / bag - 1) * 100:+.1f} % | {cpu[0]:.1f} / {cpu[1]:.1f} | '
                     f'{every} | {size / 2**20:.0f} MiB |')
    lines += ['', 'Cost = time per frame of the bag path over the video path, minus 1. CPU s = '
              'user + system time of the whole process (start-up included; the least of the '
              'runs). The bag run writes every output of the node (annotated image raw and '
              'JPEG, both label images, detections) and copies the input topic; the video run '
              'writes one MJPG video.']
    return '\n'.join(lines) + '\n'


def main():
    """Run both tools on both models; print and write the report."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--frames', type=int, default=150)
    parser.add_argument('--repeat', type=int, default=2)
    parser.add_argument('--output', type=Path, default=REPO / 'bench' / 'bag.md')
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    video, bag = prepare_inputs(args.frames)
    loads = [os.getloadavg()[0]]
    rows = [((model, imgsz), bench_model(model, imgsz, video, bag, args.repeat))
            for model, imgsz in MODELS]
    loads.append(os.getloadavg()[0])
    text = report(rows, args.frames, args.repeat, loads)
    args.output.write_text(text)
    print(text, end='')


if __name__ == '__main__':
    main()
