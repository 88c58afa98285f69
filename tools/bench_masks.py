#!/usr/bin/env python3
"""
Masks against instance count and frame size: the package's cost next to the model's own.

A crowd model (`crowd_model`: an untrained yolov8n-seg whose head is set to see class 0
everywhere, with masks that fill their boxes) returns `max_det` instances on any frame: boxes
of 40 px at imgsz 640 on a grid of 32 px, then 24 px boxes every 16 px, top rows first; with
fewer than 240 instances the top of the frame. For 1, 10, 50, 100 and 300 instances and frames of
768×576, 1920×1080 and 3840×2160 (imgsz 640, predict), each size and count in its own process:

- raw `model.predict` (stock ultralytics) and `Segmenter.process`, alternating frame by frame;
- label images (`owner_image`, `instance_mask`, `class_mask`), `Renderer.draw` (default look)
  and the JPEG encoding of the drawn frame (what the node publishes);
- peak RSS of the process after the package's frames (model loaded, raw predict not yet run),
  and after the raw predicts too.

Then the whole programs at every count, at 768×576 and 1920×1080: `segtrack-video` (its own
summary's fps) against the old guide's loop (`benchlib.guide_loop`, `masks.xy` + `seg_bbox`),
predict and track, `max_det` set to the count, on a video of the same frames, each in its own
process with its peak RSS. Last, the node at 1920×1080 / 300 instances over DDS, all
outputs subscribed, against raw `model.predict` with the same input publisher running
(`node_row`). Times are medians per frame; torch uses the package's thread count everywhere
(`--threads` sets it). Writes bench/masks.md (and prints it); videos go
to output/bench_masks/. The script is over the usual length because its one page needs all of
this: the crowd model, the per-process worker, the whole programs, the node row and the report.

    .venv/bin/python tools/bench_masks.py [--frames 5] [--video-frames 30] [--rounds 1]
                                          [--threads N] [--output FILE]
"""

import argparse
import itertools
import json
import os
from pathlib import Path
import resource
import subprocess
import sys
import time

import benchlib
from benchlib import fmt_latency, verdict
import numpy as np

WORK = benchlib.REPO / 'output' / 'bench_masks'
COUNTS = (1, 10, 50, 100, 300)
SIZES = ((768, 576), (1920, 1080), (3840, 2160))
PROGRAM_SIZES = SIZES[:2]  # of the whole programs (the guide's loop takes seconds a frame at 4K)
IMGSZ = 640
# Per detection level (strides 8, 16, 32): class-0 logit and box side in strides. Level 32's
# higher score puts its grid first; level 8 finds nothing.
LEVELS = ((-20.0, 1.0), (2.0, 1.5), (3.0, 1.25))
DRAW_TARGET = ((1920, 1080), 300)  # size and count of the label images + draw target
DRAW_RUNS = 3
NODE_SIZE = (1920, 1080)
NODE_RATE = 15.0  # Hz of the node row's input: a camera's rate, above what the node processes


def crowd_model(path):
    """
    Save a yolov8n-seg that returns `max_det` instances on any frame at `path`; return `path`.

    Built from the untrained `yolov8n-seg.yaml`: every head output is its bias. Class 0 gets a
    high score at strides 32 and 16, each box side is fixed per stride (the DFL bins' bias gives
    the expected distance), and mask coefficients and prototypes are positive, so each mask
    fills its box (ultralytics drops instances with empty masks). Boxes are spread over the
    frame; ultralytics' NMS (IoU 0.7) keeps them all, and `max_det` takes the first.
    """
    import torch
    from ultralytics import YOLO

    torch.manual_seed(0)
    model = YOLO('yolov8n-seg.yaml')
    head = model.model.model[-1]
    with torch.no_grad():
        for (logit, side), box, cls, coefficients in zip(LEVELS, head.cv2, head.cv3, head.cv4):
            cls[2].weight.zero_()
            cls[2].bias.fill_(-20.0)
            cls[2].bias[0] = logit
            box[2].weight.zero_()
            box[2].bias.zero_()
            bins = box[2].bias.view(4, head.reg_max)  # softmax over bins, in strides
            distance = side / 2
            low, fraction = int(distance), distance - int(distance)
            bins[:, low] = 20.0 + np.log(1 - fraction)
            if fraction:
                bins[:, low + 1] = 20.0 + np.log(fraction)
            coefficients[2].weight.zero_()
            coefficients[2].bias.fill_(1.0)
        proto = head.proto.cv3  # SiLU(BN(0)) = SiLU(1) > 0
        proto.conv.weight.zero_()
        proto.bn.weight.zero_()
        proto.bn.bias.fill_(1.0)
        proto.bn.running_mean.zero_()
        proto.bn.running_var.fill_(1.0)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    model.save(str(path))
    return path


def scene_frames(count, size):
    """Return `count` frames of a generated scene, resized to `size` (width, height)."""
    import cv2

    video = benchlib.prepare_video(count, WORK)
    return [cv2.resize(frame, size) for frame in benchlib.read_frames(video, count)]


def peak_rss_mb():
    """Return this process's peak RSS so far, MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(args):
    """Time one size and count: the package's steps, then raw predict against process."""
    import cv2
    from segtrack_ros.core import labels
    from segtrack_ros.core.render import RenderConfig, Renderer
    from segtrack_ros.core.segmenter import Segmenter, SegmenterConfig
    import torch

    frames = scene_frames(args.frames, tuple(args.size))
    segmenter = Segmenter(SegmenterConfig(model=args.model, device='cpu', mode='predict',
                                          imgsz=IMGSZ, max_det=args.count))
    renderer = Renderer(RenderConfig())
    steps = {'labels': [], 'draw': [], 'encode': []}
    instances = []
    for frame in [frames[0]] + frames:  # the first run warms the caches up
        detections = segmenter.process(frame)
        start = time.perf_counter()
        owner = labels.owner_image(detections)
        labels.instance_mask(detections, owner)
        labels.class_mask(detections, owner)
        drawn = time.perf_counter()
        annotated = renderer.draw(frame, detections, owner)
        encoded = time.perf_counter()
        cv2.imencode('.jpg', annotated)
        steps['labels'].append(drawn - start)
        steps['draw'].append(encoded - drawn)
        steps['encode'].append(time.perf_counter() - encoded)
        instances.append(len(detections))
    package_rss = peak_rss_mb()
    # The raw model runs on the segmenter's torch thread: OpenMP keeps a worker pool per
    # calling thread, and two pools on two cores slow each other down (see `Segmenter`).
    on_torch_thread = segmenter._on_torch_thread
    model, threads = on_torch_thread(benchlib.load_model, args.model, IMGSZ, frames[0],
                                     args.threads, False)
    settings = {'imgsz': IMGSZ, 'max_det': args.count, 'verbose': False,
                **benchlib.PREDICT_SETTINGS}

    def raw(frame):
        model.predict(frame, **settings)
        torch.set_num_threads(threads)

    on_torch_thread(raw, frames[0])
    predict, process = [], []
    for frame in frames:  # alternating, so that both see the same load
        start = time.perf_counter()
        on_torch_thread(raw, frame)
        predict.append(time.perf_counter() - start)
        start = time.perf_counter()
        segmenter.process(frame)
        process.append(time.perf_counter() - start)
    figures = {name: 1000 * float(np.median(times[1:])) for name, times in steps.items()}
    figures.update(predict=1000 * float(np.median(predict)),
                   process=1000 * float(np.median(process)), instances=min(instances[1:]),
                   package_rss=package_rss, total_rss=peak_rss_mb(), threads=threads)
    return figures


def run_worker(model, size, count, frames, threads):
    """Run `worker` for one size and count in its own process; return its figures."""
    command = [sys.executable, __file__, '--worker', '--model', str(model), '--size',
               *map(str, size), '--count', str(count), '--frames', str(frames),
               '--threads', str(threads)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f'worker {size} x {count} failed: {done.stderr.strip()[-2000:]}')
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(model, size, count, frames, threads):
    """
    Return `run_worker`'s figures; for the drawing target's row, the median of DRAW_RUNS runs.

    The same worker's label images + draw differ more between processes than from frame to
    frame within one (bench/masks.md): that row lists each run's sum in `draw_runs`.
    """
    if (size, count) != DRAW_TARGET:
        return run_worker(model, size, count, frames, threads)
    runs = sorted((run_worker(model, size, count, frames, threads) for _ in range(DRAW_RUNS)),
                  key=lambda row: row['labels'] + row['draw'])
    middle = runs[len(runs) // 2]
    middle['draw_runs'] = [row['labels'] + row['draw'] for row in runs]
    return middle


def scene_video(size, frames):
    """Return an MJPG video of `frames` frames of the scene at `size`, made on first use."""
    import cv2

    video = WORK / f'scene-{size[0]}x{size[1]}-{frames}.avi'
    if not video.exists():
        writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*'MJPG'), 30.0, size)
        for frame in scene_frames(frames, size):
            writer.write(frame)
        writer.release()
    return video


def whole_programs(model, size, count, frames, threads, rounds):
    """
    Run segtrack-video and the guide's loop (predict, track) at `count` instances; fps rows.

    Each program and mode runs `rounds` times, the two programs in turn (the other one first
    every other round), and its fastest run counts: on a shared machine a burst of other work
    slows single runs of a few seconds by 2 x or more.
    """
    video = scene_video(size, frames)
    rows = {}
    for turn, mode in itertools.product(range(rounds), ('predict', 'track')):
        programs = {
            'guide': lambda: benchlib.baseline_row(f'guide-{mode}', model, IMGSZ, video, frames,
                                                   threads, max_det=count),
            'segtrack-video': lambda: segtrack_video(model, video, mode, count, frames,
                                                     threads)}
        for program in sorted(programs, reverse=bool(turn % 2)):
            found = programs[program]()
            best = rows.setdefault(f'{program} {mode}', found)
            if found['fps'] > best['fps']:
                rows[f'{program} {mode}'] = found
    return rows


def segtrack_video(model, video, mode, count, frames, threads):
    """Run the segtrack-video console script; return its own fps and its peak RSS."""
    return benchlib.console_script('segtrack-video', [
        video, '--model', model, '--imgsz', IMGSZ, '--mode', mode, '--device', 'cpu',
        '--max-det', count, '--no-show', '--max-frames', frames,
        '--output', WORK / f'{video.stem}-{mode}.avi'], threads)


def node_row(model, frames, threads):
    """
    Time the node at 1080p / 300 instances, and raw predict with the same input publisher running.

    `video_publisher` publishes the scene video in a loop at NODE_RATE while benchlib's `raw`
    baseline times `model.predict` (nobody reads that topic); then `benchlib.node_row` runs the
    same publisher -> `segtrack_node` (predict, the crowd model, max_det 300) -> a subscriber to
    all five outputs. Returns the raw fps and `node_row`'s figures.
    """
    import rclpy
    from segtrack_ros.ros.transport import apply_large_data_profile

    video = scene_video(NODE_SIZE, frames)
    apply_large_data_profile()
    rclpy.init()
    try:
        raw = benchlib.raw_beside_publisher(model, IMGSZ, video, frames, threads, NODE_RATE,
                                            '/bench_masks_raw', WORK / 'raw-publisher.log')
        node = benchlib.node_row(str(model), IMGSZ, 'predict', NODE_RATE, video, frames, 0,
                                 WORK / 'logs')
    finally:
        rclpy.try_shutdown()
    return raw['fps'], node


def render_report(rows, programs, node, run):
    """Render bench/masks.md."""
    lines = ['| frame | instances | `model.predict` ms | `Segmenter.process` ms | process / '
             'predict | label images ms | `Renderer.draw` ms | JPEG encode ms | peak RSS MB '
             '(package / + raw predict) |', '|---|---:|---:|---:|---:|---:|---:|---:|---:|']
    for (size, count), row in rows.items():
        lines.append(
            f'| {size[0]}×{size[1]} | {row["instances"]} | {row["predict"]:.0f} | '
            f'{row["process"]:.0f} | {row["process"] / row["predict"]:.2f} | '
            f'{row["labels"]:.1f} | {row["draw"]:.1f} | {row["encode"]:.1f} | '
            f'{row["package_rss"]:.0f} / {row["total_rss"]:.0f} |')
    program_lines = ['| frame | instances | program | predict frames/s | track frames/s | '
                     'peak RSS MB (predict / track) |', '|---|---:|---|---:|---:|---:|']
    for (size, count), found in programs.items():
        for program in ('guide', 'segtrack-video'):
            cells = []
            for mode in ('predict', 'track'):
                fps = found[f'{program} {mode}']['fps']
                ratio = fps / found[f'guide {mode}']['fps']
                cells.append(f'{fps:.2f}' + (f' ({ratio:.2f} × guide)' if program != 'guide'
                                             else ''))
            program_lines.append(
                f'| {size[0]}×{size[1]} | {count} | {program} | {cells[0]} | {cells[1]} | '
                f'{found[f"{program} predict"]["peak_rss_mb"]:.0f} / '
                f'{found[f"{program} track"]["peak_rss_mb"]:.0f} |')
    return f"""# Masks against instance count and frame size

`tools/bench_masks.py` ({run['date']}, {run['minutes']:.1f} min) on:
{run['machine']}.

Load average (1/5/15 min) before and after: {run['loads']}. The machine is shared: compare
within a row (raw predict and the segmenter alternate frame by frame, on one torch thread)
rather than across runs.

A crowd model (`crowd_model`, untrained yolov8n-seg with its head set to see class 0 everywhere,
masks filling their boxes) returns `max_det` instances on any frame; imgsz {IMGSZ}, predict,
torch on {run['threads']} thread(s), median of {run['frames']} frames of a generated scene. Label
images: owner image, `instance_mask` and `class_mask`; draw: the default look (fill, outline,
label); JPEG: `cv2.imencode` of the drawn frame. Peak RSS: the process after the package's
frames (model loaded), then after the raw predicts too. The 1920×1080 / 300 row is the median
of {DRAW_RUNS} processes by label images + draw (see the targets).

{chr(10).join(lines)}

Whole programs at each count (`max_det` = the count), {run['video_frames']} frames of the same
scene (MJPG), each program and mode in its own process: `segtrack-video` (its summary's fps:
read, segment, draw + write in three threads) against the old guide's loop
(`tools/benchlib.py` `guide_loop`: predict or track, `masks.xy`, `seg_bbox`, write, one after
the other); the tracker is the package's default in both. The fastest of {run['rounds']} run(s)
of each, the two programs in turn; peak RSS: that run's process's own.

{chr(10).join(program_lines)}

The node at {NODE_SIZE[0]}×{NODE_SIZE[1]} / 300 instances, predict: `video_publisher` at
{NODE_RATE:.0f} Hz (the same video, looped) -> `segtrack_node` -> a subscriber to all five
outputs, three processes over DDS (`tools/benchlib.py` `node_row`); raw `model.predict` timed in
its own process while the same publisher runs.

{node_table(node)}

Targets:

{targets(rows, programs, node)}
"""


def node_table(node):
    """Render the node row of bench/masks.md."""
    return '\n'.join([
        '| raw `model.predict` (publisher running) | node, processed | node / raw | dropped | '
        'worst output latency p50/p95/p99 ms | node peak RSS MB |',
        '|---:|---:|---:|---:|---:|---:|',
        f'| {node["raw_fps"]:.2f} fps | {node["fps"]:.2f} fps | '
        f'{node["fps"] / node["raw_fps"]:.2f} | {node["drop_ratio"]:.0%} | '
        f'{fmt_latency(node["worst_latency"])} | {node["peak_rss_mb"]:.0f} |'])


def targets(rows, programs, node):
    """Return the pass/fail lines of issue 13's targets."""
    lines = []
    worst = max(rows.items(), key=lambda item: item[1]['process'] / item[1]['predict'])
    (size, count), row = worst
    ratio = row['process'] / row['predict']
    lines.append(f'- `Segmenter.process` ≤ 1.1 × `model.predict` at every count and size: worst '
                 f'{ratio:.2f} ({size[0]}×{size[1]}, {count}) → {verdict(ratio <= 1.1)}')
    big = rows.get(DRAW_TARGET)
    if big:
        total = big['labels'] + big['draw']
        runs = ', '.join(f'{run:.1f}' for run in big['draw_runs'])
        lines.append(f'- label images + draw ≤ 15 ms at 1080p / 300: {total:.1f} ms (median of '
                     f'{DRAW_RUNS} processes: {runs}) → {verdict(total <= 15)}')
    for size in SIZES:
        found = [row['package_rss'] for (at, _), row in rows.items() if at == size]
        if found:
            spread = max(found) - min(found)
            lines.append(f'- peak RSS flat within 100 MB from 1 to 300 instances at '
                         f'{size[0]}×{size[1]}: {spread:.0f} MB → {verdict(spread <= 100)}')
    for (size, count), found in programs.items():
        if count != COUNTS[-1]:
            continue
        for mode in ('predict', 'track'):
            ratio = found[f'segtrack-video {mode}']['fps'] / found[f'guide {mode}']['fps']
            lines.append(f'- segtrack-video ≥ 1.3 × guide at {size[0]}×{size[1]} / {count} '
                         f'({mode}): {ratio:.2f} → {verdict(ratio >= 1.3)}')
    ratio = node['fps'] / node['raw_fps']
    lines.append(f'- node processed rate ≥ 0.9 × raw predict at {NODE_SIZE[0]}×{NODE_SIZE[1]} / '
                 f'300, all outputs subscribed: {ratio:.2f} → {verdict(ratio >= 0.9)}')
    return '\n'.join(lines)


def main():
    """Build the crowd model, run every size and count, write bench/masks.md."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0].strip())
    parser.add_argument('--frames', type=int, default=5, help='frames per size and count')
    parser.add_argument('--video-frames', type=int, default=30,
                        help='frames of the whole-program runs')
    parser.add_argument('--rounds', type=int, default=1,
                        help='runs of each whole program and mode, in turn; the fastest counts')
    parser.add_argument('--output', type=Path, default=benchlib.REPO / 'bench' / 'masks.md')
    parser.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--model', help=argparse.SUPPRESS)
    parser.add_argument('--size', type=int, nargs=2, help=argparse.SUPPRESS)
    parser.add_argument('--count', type=int, help=argparse.SUPPRESS)
    parser.add_argument('--threads', type=int,
                        help='torch threads of every process (sets OMP_NUM_THREADS); default: '
                             "the package's own count")
    args = parser.parse_args()
    benchlib.keep_local()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    started, date = time.monotonic(), time.strftime('%Y-%m-%d %H:%M')
    loads = [benchlib.load_average()]
    if args.threads:
        os.environ['OMP_NUM_THREADS'] = str(args.threads)
    threads = benchlib.package_threads()
    model = crowd_model(WORK / 'crowd-seg.pt')
    rows, programs = {}, {}
    for size in SIZES:
        for count in COUNTS:
            print(f'bench_masks: {size[0]}x{size[1]}, {count} instances ...', flush=True)
            rows[size, count] = measure(model, size, count, args.frames, threads)
            print(f'bench_masks:   {rows[size, count]}', flush=True)
    for size in PROGRAM_SIZES:
        for count in COUNTS:
            print(f'bench_masks: whole programs at {size[0]}x{size[1]}, {count} instances ...',
                  flush=True)
            programs[size, count] = whole_programs(model, size, count, args.video_frames,
                                                   threads, args.rounds)
            print(f'bench_masks:   {programs[size, count]}', flush=True)
    print('bench_masks: the node at 1920x1080 ...', flush=True)
    raw_fps, node = node_row(model, args.video_frames, threads)
    node['raw_fps'] = raw_fps
    print(f'bench_masks:   raw {raw_fps:.2f} fps, node {node["fps"]:.2f} fps', flush=True)
    loads.append(benchlib.load_average())
    report = render_report(rows, programs, node, {
        'date': date, 'minutes': (time.monotonic() - started) / 60, 'machine': benchlib.machine(),
        'loads': '; '.join(loads), 'threads': threads, 'frames': args.frames,
        'video_frames': args.video_frames, 'rounds': args.rounds})
    print('\n' + report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    print(f'bench_masks: wrote {args.output}')


if __name__ == '__main__':
    main()
