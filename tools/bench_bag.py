#!/usr/bin/env python3
"""
`segtrack-bag` against `segtrack-video` on the same frames: what the bag path costs.

One generated 768x576 video (`segtrack_ros.eval.synthetic`, MJPG) and a bag (MCAP) of the same
frames as the video decodes them, as `sensor_msgs/Image` bgr8 on `/camera/image_raw`. Per model
(the bundled shapes model at imgsz 320, the untrained yolov8n-seg at 640), both console scripts run
in track mode with their defaults: segtrack-video writes an MJPG video; segtrack-bag writes all
five outputs and copies the input (and, in a third run, writes the outputs only: `--no-copy`).
Each run is its own process; the three alternate, `--repeat` times, and each run's fps is the
one its own summary prints (processing, not start-up). The best run of each counts, against load
from other processes on the machine. Writes bench/bag.md (and prints it); the video, the bag and
the outputs go to output/bench_bag/ (a failing run's error is in the exception).

    .venv/bin/python tools/bench_bag.py [--frames 150] [--repeat 2] [--threads N]
                                        [--output bench/bag.md]
"""

import argparse
import os
from pathlib import Path
import shutil
import time

import benchlib

WORK = benchlib.REPO / 'output' / 'bench_bag'
TOPIC = '/camera/image_raw'
MODELS = ((str(benchlib.TRAINED), 320), ('yolov8n-seg.yaml', 640))


def prepare_inputs(frames):
    """Write the video and the bag of its decoded frames (once per frame count); return both."""
    from rclpy.serialization import serialize_message
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import get_typestore, Stores
    from segtrack_ros.eval.synthetic import SceneConfig
    from segtrack_ros.io import image_codec
    from std_msgs.msg import Header

    video = benchlib.prepare_video(frames, WORK)
    bag = WORK / f'{video.stem}-bag'
    if bag.exists():
        return video, bag
    partial = bag.with_name(bag.name + '.partial')  # an interrupted run leaves no bag to reuse
    shutil.rmtree(partial, ignore_errors=True)
    fps = SceneConfig().fps
    with Writer(partial, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connection = writer.add_connection(TOPIC, 'sensor_msgs/msg/Image',
                                           typestore=get_typestore(Stores.LATEST))
        for index, frame in enumerate(benchlib.read_frames(video, frames)):
            time_ns = 1_700_000_000 * 10**9 + round(index * 1e9 / fps)
            header = Header(frame_id='camera')
            header.stamp.sec, header.stamp.nanosec = divmod(time_ns, 1_000_000_000)
            writer.write(connection, time_ns, serialize_message(
                image_codec.to_image_msg(frame, 'bgr8', header)))
    partial.rename(bag)
    return video, bag


def run(name, arguments):
    """Run a console script; return the fps of its summary and its CPU seconds (user + sys)."""
    row = benchlib.console_script(name, arguments)
    return row['fps'], row['cpu_seconds']


KINDS = {'video': 'segtrack-video', 'bag': 'segtrack-bag', 'no-copy': 'segtrack-bag --no-copy'}


def bench_model(model, imgsz, video, bag, repeat):
    """Alternate the three kinds of run; return each one's (fps, CPU s) and the bag's size."""
    flags = ['--model', model, '--imgsz', imgsz, '--mode', 'track']
    name = Path(model).stem
    runs = {kind: [] for kind in KINDS}
    size = 0
    for attempt in range(repeat):
        output = WORK / f'{name}-{imgsz}.avi'
        runs['video'].append(run('segtrack-video',
                                 [video, *flags, '--output', output, '--no-show']))
        for kind, extra in (('bag', []), ('no-copy', ['--no-copy'])):
            output = WORK / f'{name}-{imgsz}-{kind}'
            shutil.rmtree(output, ignore_errors=True)
            runs[kind].append(run('segtrack-bag',
                                  [bag, output, '--topic', TOPIC, *flags, *extra]))
            if kind == 'bag':
                size = sum(path.stat().st_size for path in output.iterdir())
            shutil.rmtree(output)
        print(f'bench_bag: {name} @{imgsz} run {attempt + 1}: ' + ', '.join(
            f'{kind} {runs[kind][-1][0]:.2f} fps' for kind in KINDS), flush=True)
    return runs, size


def write_cost_ms(size, frames):
    """System time (ms) that writing `size` / `frames` bytes to a file in WORK costs a frame."""
    block = os.urandom(size // frames)
    before = os.times()
    with open(WORK / 'write-test.bin', 'wb') as output:
        for _ in range(frames):
            output.write(block)
    after = os.times()
    (WORK / 'write-test.bin').unlink()
    return (after.system - before.system) / frames * 1000


def report(rows, args, loads):
    """Return the Markdown report."""
    threads = args.threads or "the package's own count"
    lines = [
        '# segtrack-bag against segtrack-video (`tools/bench_bag.py`)', '',
        f'{time.strftime("%Y-%m-%d %H:%M")}, {os.cpu_count()} cores, no GPU, torch threads: '
        f'{threads}; {args.frames} generated 768x576 frames, the same pixels for every run (the '
        "bag holds the video's decoded frames as bgr8 Images, MCAP); track mode, ByteTrack, "
        f"conf 0.25; best of {args.repeat} alternating runs, fps as each tool's summary prints "
        f'it. Load average before / after: {loads[0]:.2f} / {loads[1]:.2f}.', '',
        '| model | imgsz | segtrack-video fps | segtrack-bag fps (cost) | '
        'segtrack-bag --no-copy fps (cost) | all runs, fps (video; bag; no-copy) | '
        'output bag |',
        '|---|---|---|---|---|---|---|']
    for (model, imgsz), (runs, size) in rows:
        best = {kind: max(fps for fps, _ in runs[kind]) for kind in KINDS}
        every = '; '.join(', '.join(f'{fps:.1f}' for fps, _ in runs[kind]) for kind in KINDS)
        costs = [f'{best[kind]:.1f} ({(best["video"] / best[kind] - 1) * 100:+.0f} %)'
                 for kind in ('bag', 'no-copy')]
        lines.append(f'| {Path(model).name} | {imgsz} | {best["video"]:.1f} | {costs[0]} | '
                     f'{costs[1]} | {every} | {size / 2**20 / args.frames:.1f} MiB/frame |')
    size = rows[-1][1][1]
    lines += ['', "Cost = time per frame over the video path's, minus 1. The bag run writes "
              'every output of the node (annotated image raw and JPEG, both label images, '
              'detections) and copies the input topic; the video run writes one MJPG video. '
              f'Writing {size / 2**20 / args.frames:.1f} MiB (one frame of the output bag) to '
              f'a plain file costs {write_cost_ms(size, args.frames):.1f} ms of system time on '
              "this machine's disk."]
    return '\n'.join(lines) + '\n'


def main():
    """Run both tools on both models; print and write the report."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--frames', type=int, default=150)
    parser.add_argument('--repeat', type=int, default=2)
    parser.add_argument('--output', type=Path, default=benchlib.REPO / 'bench' / 'bag.md')
    parser.add_argument('--threads', type=int,
                        help='torch threads (OMP_NUM_THREADS) of every run; default: the '
                             "package's own count")
    args = parser.parse_args()
    benchlib.keep_local()
    if args.threads:
        os.environ['OMP_NUM_THREADS'] = str(args.threads)
    WORK.mkdir(parents=True, exist_ok=True)
    video, bag = prepare_inputs(args.frames)
    loads = [os.getloadavg()[0]]
    rows = [((model, imgsz), bench_model(model, imgsz, video, bag, args.repeat))
            for model, imgsz in MODELS]
    loads.append(os.getloadavg()[0])
    text = report(rows, args, loads)
    args.output.write_text(text)
    print(text, end='')


if __name__ == '__main__':
    main()
