#!/usr/bin/env python3
"""
`make bench`: the package against the model's own speed and the old Ultralytics guide's loop.

One run, one generated 768x576 video (300 frames, `segtrack_ros.eval.synthetic`), the same frames
for every row. Models: the untrained `yolov8n-seg.yaml` at imgsz 640 and 320 (the real cost of a
yolov8n-seg; it finds nothing) and the bundled trained shapes model at 320 (real detections; its
rows are skipped with a note while `segtrack_ros/data/shapes-seg.pt` does not exist). Per model:

1. raw: a loop of `model.predict(frame)` only, frames decoded outside the timing: the limit (run
   twice, before and after rows 1b-3b; the better run counts, against transient load);
   1b: the same with `model.track(frame, persist=True)`;
2. the guide's loop, sequential: read, predict (2) or track (2b), `masks.xy` + `seg_bbox` per
   instance, write MJPG;
3. segtrack-video, predict (3) and track (3b): the console script, timed by its own summary;
4. the node: `video_publisher` -> `segtrack_node` -> a subscriber to all five outputs
   (`benchlib.node_row`), three processes over DDS, at 30 Hz (4, track) and above the model's
   rate (4b, predict).

Rows 1 and 2 are `benchlib`'s baselines, shared with the other benchmarks.

Each row runs in its own process, whose peak RSS (`wait4`) and CPU time are reported. Every row
gives torch the thread count that segtrack_node and segtrack-video end up with (see
`benchlib.package_threads`), so the rows differ only by what is around the model. Writes the
report to bench/results.md (and prints it); videos and logs go to output/bench/.

    .venv/bin/python tools/bench.py [--frames 300] [--only 0 2] [--threads N] [--output FILE]
"""

import argparse
import math
import os
from pathlib import Path
import time

import benchlib
from benchlib import fmt_latency, verdict

WORK = benchlib.REPO / 'output' / 'bench'
NODE_OUTPUTS = ('detections', 'instance_mask', 'class_mask', 'annotated_image',
                'annotated_image/compressed')  # in the order the node publishes them
MODELS = (('yolov8n-seg.yaml', 640), ('yolov8n-seg.yaml', 320), (str(benchlib.TRAINED), 320))


def video_row(model, imgsz, video, frames, threads, track):
    """Run the segtrack-video console script on the benchmark video; return its figures."""
    mode = 'track' if track else 'predict'
    row = benchlib.console_script('segtrack-video', [
        video, '--model', model, '--imgsz', imgsz, '--mode', mode, '--device', 'cpu',
        '--output', WORK / f'segtrack-video-{mode}.avi', '--no-show', '--max-frames', frames],
        threads)
    row['frames'] = frames
    return row


def bench_model(model, imgsz, video, frames, node_index, threads):
    """Measure all rows of one model; return the raw fps and a list of (label, row) pairs."""
    rows, name = [], f'{Path(model).name} @{imgsz}'

    def measure(label, kind):
        print(f'bench: {name}: {label} ...', flush=True)
        if kind.startswith('video'):
            row = video_row(model, imgsz, video, frames, threads, kind == 'video-track')
        else:
            row = benchlib.baseline_row(kind, model, imgsz, video, frames, threads,
                                        output=WORK / f'{kind}.avi')
        print(f'bench:   {row["fps"]:.1f} fps, peak RSS {row["peak_rss_mb"]:.0f} MB', flush=True)
        return row

    raw = [measure('1. raw: model.predict only', 'raw')]
    rows += [(label, measure(label, kind)) for label, kind in (
        ('1b. raw: model.track only', 'raw-track'),
        ('2. guide loop, predict', 'guide-predict'), ('2b. guide loop, track', 'guide-track'),
        ('3. segtrack-video, predict', 'video-predict'),
        ('3b. segtrack-video, track', 'video-track'))]
    raw.append(measure('1. raw: model.predict only, again', 'raw'))
    best = max(raw, key=lambda row: row['fps'])
    runs = ', '.join(f'{row["fps"]:.1f}' for row in raw)
    rows.insert(0, (f'1. raw: model.predict only (best of {runs} fps)', best))
    raw_fps = best['fps']
    near = max(30, math.ceil(1.5 * raw_fps / 5) * 5)  # above the model's rate
    for label, mode, rate in (('4. node, track, 30 Hz in', 'track', 30),
                              (f'4b. node, predict, {near} Hz in', 'predict', near)):
        print(f'bench: {name}: {label} ...', flush=True)
        row = benchlib.node_row(model, imgsz, mode, rate, video, frames, next(node_index),
                                WORK / 'logs')
        rows.append((label, row))
        print(f'bench:   {row["fps"]:.1f} fps, drops {row["drop_ratio"]:.0%}, latency '
              f'{fmt_latency(row["worst_latency"])}, peak RSS {row["peak_rss_mb"]:.0f} MB',
              flush=True)
    return raw_fps, rows


def table(results):
    """Return the markdown table of every row of every model."""
    lines = ['| model | row | frames/s | ms/frame | × raw | CPU ms/frame | drops | latency '
             'p50/p95/p99 ms (slowest output) | peak RSS MB |',
             '|---|---|---:|---:|---:|---:|---:|---:|---:|']
    for title, raw_fps, rows in results:
        for label, row in rows:
            fps = row['fps']
            cpu = (f'{row["cpu_seconds"] / row["frames"] * 1000:.0f}'
                   if row.get('cpu_seconds') and row['frames'] else '')
            drops = f'{row["drop_ratio"]:.0%}' if 'drop_ratio' in row else ''
            latency = fmt_latency(row.get('worst_latency')) if 'latency' in row else ''
            rss = f'{row["peak_rss_mb"]:.0f}' if row.get('peak_rss_mb') else ''
            lines.append(f'| {title} | {label} | {fps:.1f} | {1000 / fps if fps else 0:.1f} | '
                         f'{fps / raw_fps:.2f} | {cpu} | {drops} | {latency} | {rss} |')
    return '\n'.join(lines)


def node_table(results):
    """Return the node rows in detail: latency per output, CPU per process, inference time."""
    lines = ['| model | row | frames in / out | ' + ' | '.join(f'`{t}`' for t in NODE_OUTPUTS) +
             ' | node inference ms | CPU ms/frame: node / publisher / subscriber |',
             '|---|---|---:|' + '---:|' * len(NODE_OUTPUTS) + '---:|---:|']
    for title, _, rows in results:
        for label, row in rows:
            if 'latency' not in row:
                continue
            cells = ' | '.join(fmt_latency(row['latency'][t]) for t in NODE_OUTPUTS)
            cpu = ' / '.join(f'{row["cpu"][k] / row["frames"] * 1000:.0f}' if row['frames']
                             and k in row['cpu'] else '?'
                             for k in ('node', 'publisher', 'subscriber'))
            inference = row.get('node_inference_ms')
            lines.append(f'| {title} | {label} | {row["published"]} / {row["frames"]} | {cells} '
                         f'| {inference:.1f} | {cpu} |' if inference is not None else
                         f'| {title} | {label} | {row["published"]} / {row["frames"]} | {cells} '
                         f'| ? | {cpu} |')
    return '\n'.join(lines)


def targets(results):
    """Return pass/fail lines of the issue's targets, per model."""
    lines = []
    for title, raw_fps, rows in results:
        by = {label.split('.')[0]: row for label, row in rows}
        checks = [(f'node ≥ 0.95 × raw ({by[k]["rate"]} Hz in, predict)',
                   by[k]['fps'] / raw_fps, 0.95) for k in ('4b',)]
        checks += [(f'segtrack-video ≥ 1.3 × guide ({mode})',
                    by[f'3{suffix}']['fps'] / by[f'2{suffix}']['fps'], 1.3)
                   for mode, suffix in (('predict', ''), ('track', 'b'))]
        for name, value, goal in checks:
            lines.append(f'- {title}: {name}: {value:.2f} → {verdict(value >= goal)}')
        latency, limit = by['4']['latency'], 1000 / raw_fps + 10
        if latency['detections'] and latency['annotated_image/compressed']:
            first, last = latency['detections'][0], latency['annotated_image/compressed'][0]
            lines.append(f'- {title}: node latency p50 ≤ inference + 10 ms = {limit:.0f} ms '
                         f'(30 Hz in): first output (`detections`) {first:.0f} ms → '
                         f'{verdict(first <= limit)}, last (`annotated_image/compressed`) '
                         f'{last:.0f} ms → {verdict(last <= limit)}')
    return '\n'.join(lines)


def main():
    """Run every row, print the table, write it to bench/results.md."""
    parser = argparse.ArgumentParser(description='segtrack_ros benchmark')
    parser.add_argument('--frames', type=int, default=300)
    parser.add_argument('--output', type=Path, default=benchlib.REPO / 'bench' / 'results.md')
    parser.add_argument('--only', type=int, nargs='+', help='indices of MODELS to run')
    parser.add_argument('--threads', type=int,
                        help='torch threads of every row (sets OMP_NUM_THREADS for all '
                             "processes); default: the package's own count")
    args = parser.parse_args()
    benchlib.keep_local()

    import rclpy
    from segtrack_ros.ros.transport import apply_large_data_profile

    started, date = time.monotonic(), time.strftime('%Y-%m-%d %H:%M')
    loads = [benchlib.load_average()]
    if args.threads:
        os.environ['OMP_NUM_THREADS'] = str(args.threads)
    description = benchlib.machine()
    threads = benchlib.package_threads()
    print(f'bench: torch threads in every row: {threads}', flush=True)
    video = benchlib.prepare_video(args.frames, WORK)
    apply_large_data_profile()
    rclpy.init()
    results, notes = [], []
    node_index = iter(range(1000))
    try:
        for position, (model, imgsz) in enumerate(MODELS):
            if args.only and position not in args.only:
                continue
            title = f'{Path(model).name} @{imgsz}'
            if not Path(model).exists() and not model.endswith('.yaml'):
                notes.append(f'- {title}: skipped, {model} does not exist (`make model` trains '
                             'it).')
                print(f'bench: {notes[-1][2:]}', flush=True)
                continue
            raw_fps, rows = bench_model(model, imgsz, video, args.frames, node_index,
                                        threads)
            results.append((title, raw_fps, rows))
            loads.append(benchlib.load_average())
    finally:
        rclpy.try_shutdown()
    minutes = (time.monotonic() - started) / 60
    report = render_report(description, loads, results, notes,
                           {'frames': args.frames, 'minutes': minutes, 'date': date,
                            'threads': threads})
    print('\n' + report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    print(f'bench: wrote {args.output}')


def render_report(description, loads, results, notes, run):
    """Render the whole results page as markdown."""
    return f"""# segtrack_ros benchmark

`make bench` ({run['date']}, {run['minutes']:.1f} min) on {description}. Load average (1/5/15
min) before the run and after each model: {'; '.join(loads)}. The machine is shared (other jobs
run at times), so absolute numbers are noisy; compare rows within one run.

Frames: one generated 768×576 video of {run['frames']} frames (`segtrack_ros.eval.synthetic`,
seed {benchlib.VIDEO_SEED}), the same in every row. Torch uses {run['threads']} thread(s) in every
row: the count `segtrack_node` and `segtrack-video` run with (torch's default unless
`OMP_NUM_THREADS` is set; ultralytics lowers it to cpu_count − 1 when it picks the device, the
segmenter sets it back; the raw and guide rows set it back after their first call). Same settings
everywhere: conf 0.25, iou 0.7, ByteTrack, no console output. The untrained yolov8n-seg finds
nothing: its rows give the model's real cost; the trained shapes model gives real detections
(about 4 a frame).

{table(results)}

Rows: **1** `model.predict(frame)` only, frames decoded outside the timing — the limit (run before
and after rows 1b–3b; the better run counts); **1b** the same with `model.track(frame,
persist=True)`. **2** the old Ultralytics guide's loop, one step after the other: read, predict
(**2b**: track), `masks.xy` + `seg_bbox` for every instance, write (MJPG). **3**
`segtrack-video` (predict; **3b** track): read, infer, draw + write in three threads, with the
package's default look (fill, outline, label), timed by its own summary. **4** `video_publisher`
→ `segtrack_node` → one subscriber to all five outputs, three processes over DDS (Fast DDS,
shared memory): frames/s = outputs received per second between the first and the last, drops =
1 − outputs / frames published, latency = input stamp → receipt by the subscriber. The node cannot
go faster than its input: **4b** publishes above the model's rate (1.5 × raw, at least 30 Hz),
and the 0.95 × raw target is read there. Model loading is outside every timing. CPU ms/frame: CPU
time of the row's process (the node's for rows 4) per frame, for rows 3 the whole console
script's, start-up included; peak RSS likewise.

Node rows in detail: latency p50/p95/p99 ms from the input stamp to the receipt of each output
(in the order the node publishes them), the node's own mean inference time (`/diagnostics`, last
5 s), and the CPU time per processed frame of each of the three processes:

{node_table(results)}

Targets (inference time = row 1):

{targets(results)}
{chr(10).join(notes)}
"""


if __name__ == '__main__':
    main()
