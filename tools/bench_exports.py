#!/usr/bin/env python3
"""
Exported models against their `.pt` (issue 22): raw predict, `segtrack-video` and the node.

On the same generated 768x576 frames (`segtrack_ros.eval.synthetic`, MJPG), for each model and
imgsz, each format runs three ways, each in its own process:

- raw: `YOLO(path, task='segment').predict(frame)` per frame, timed per frame (ultralytics'
  defaults: an OpenVINO model runs in the CPU's own precision, bf16 where it has it);
- `segtrack-video` in predict mode (its summary's fps, its whole process's CPU time);
- the node: `video_publisher` at `--rate` Hz into `segtrack_node`, every output subscribed
  (`benchlib.node_row`): processed fps, latency of `detections`, the node's CPU time.

Formats: the `.pt`, ONNX and OpenVINO on a CPU (OpenVINO in f32, what the package runs without
`half`, and in bf16, `half` true); with `--device cuda` the `.pt`, ONNX and TensorRT (fp32 and
fp16). The exports are made with `segtrack_ros.core.exports` (as `export_format` makes them,
batch 1) into output/bench_exports/; their making and a second start's configure (cache hit)
are timed too. Models: the bundled shapes model (real instances) and an untrained yolov8n-seg
(the network of yolov8n-seg, saved once with seed 0: no instances at conf 0.25). Writes
bench/exports.md (and prints it).

    .venv/bin/python tools/bench_exports.py [--frames 40] [--imgsz 640 320] [--rate 30]
        [--device cpu|cuda] [--models shapes yolov8n] [--output bench/exports.md]
"""

import argparse
import json
import os
from pathlib import Path
import shutil
import subprocess
import sys
import time

import benchlib

WORK = benchlib.REPO / 'output' / 'bench_exports'
UNTRAINED = WORK / 'yolov8n-seg-untrained.pt'
TARGET_VIDEO_GAIN, TARGET_VIDEO_OF_RAW, TARGET_NODE_GAIN, TARGET_CACHED_S = 1.6, 0.9, 1.6, 5.0


def formats(device):
    """Return the rows' formats: (label, export kind or '' for the .pt, half)."""
    if device == 'cpu':
        return (('.pt', '', False), ('ONNX', 'onnx', False), ('OpenVINO f32', 'openvino', False),
                ('OpenVINO bf16 (half)', 'openvino', True))
    return (('.pt', '', False), ('ONNX', 'onnx', False), ('TensorRT fp32', 'engine', False),
            ('TensorRT fp16 (half)', 'engine', True))


def untrained_model():
    """Save the untrained yolov8n-seg once (seed 0), so every row loads the same weights."""
    if not UNTRAINED.exists():
        import torch
        from ultralytics import YOLO

        WORK.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        YOLO('yolov8n-seg.yaml').save(str(UNTRAINED))
    return UNTRAINED


def make_export(model, kind, imgsz, half, device):
    """Export `model` as the node would; return its path, the export and the cached-start time."""
    code = f"""
import json, time
from pathlib import Path
from segtrack_ros.core.exports import exported_model, ExportSpec
from segtrack_ros.core.segmenter import resolve_device, Segmenter, SegmenterConfig
spec = ExportSpec({kind!r}, {imgsz}, {half}, 1, resolve_device({device!r}))
cache = Path({str(WORK / 'exports')!r})
started = time.monotonic()
path = exported_model(Path({str(model)!r}), spec, cache)
exported = time.monotonic() - started
config = SegmenterConfig(model={str(model)!r}, device={device!r}, mode='predict', imgsz={imgsz},
                         half={half}, export_format={kind!r}, export_dir=str(cache))
plain_config = SegmenterConfig(model=str(path), device={device!r}, mode='predict',
                               imgsz={imgsz}, half={half})
Segmenter(plain_config)  # the first load in a process pays for imports and set-ups
started = time.monotonic()
Segmenter(config)
cached = time.monotonic() - started
started = time.monotonic()
Segmenter(plain_config)
plain = time.monotonic() - started
print(json.dumps({{'path': str(path), 'export_s': exported, 'cached_s': cached,
                  'plain_s': plain}}))
"""
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f'export failed: {result.stderr.strip()[-2000:]}')
    return json.loads(result.stdout.strip().splitlines()[-1])


def raw_row(path, imgsz, video, frames, half, device):
    """Time `predict` per frame in a process of its own; return fps, latencies, CPU per frame."""
    code = f"""
import json, time
import numpy as np
from segtrack_ros.core.runtime import apply_process_defaults
apply_process_defaults()
import benchlib
from ultralytics import YOLO
model = YOLO({str(path)!r}, task='segment')
options = dict(imgsz={imgsz}, verbose=False, device={device!r}, conf=0.25, iou=0.7)
if {half}:
    options['quantize'] = 16
frames = list(benchlib.read_frames({str(video)!r}, {frames}))
for _ in range(3):
    model.predict(np.zeros_like(frames[0]), **options)
times, cpu = [], time.process_time()
for frame in frames:
    started = time.perf_counter()
    model.predict(frame, **options)
    times.append(time.perf_counter() - started)
print(json.dumps({{'times': times, 'cpu': time.process_time() - cpu}}))
"""
    env = {**os.environ, 'PYTHONPATH': str(Path(__file__).parent)}
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f'raw predict failed: {result.stderr.strip()[-2000:]}')
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    times = [t * 1000 for t in figures['times']]
    return {'fps': len(times) / sum(times) * 1000, 'latency': benchlib.percentiles(times),
            'cpu_per_frame': figures['cpu'] / len(times)}


def video_row(path, imgsz, video, frames, half, device):
    """Run segtrack-video in predict mode on the export itself; return fps and CPU per frame."""
    output = WORK / 'video-out.avi'
    row = benchlib.console_script('segtrack-video', [
        video, '--model', path, '--imgsz', imgsz, '--mode', 'predict', '--device', device,
        '--max-frames', frames, '--output', output, '--half' if half else '--no-half'])
    return {'fps': row['fps'], 'cpu_per_frame': row['cpu_seconds'] / frames}


def node_row(path, imgsz, video, frames, half, device, rate, index):
    """Run the node on the export at `rate` Hz, every output subscribed; return its figures."""
    row = benchlib.node_row(path, imgsz, 'predict', rate, video, frames, index, WORK / 'logs',
                            half=str(half).lower(), device=device)
    return {'fps': row['fps'], 'frames': row['frames'], 'published': row['published'],
            'latency': row['latency']['detections'],
            'cpu_per_frame': row['cpu_seconds'] / max(row['frames'], 1)}


def cell_latency(row):
    """Format p50/p95 in ms, or a dash."""
    latency = row.get('latency')
    return f'{latency[0]:.0f}/{latency[1]:.0f}' if latency else '–'


def table(results, args, started, load_before, load_after):
    """Return bench/exports.md."""
    lines = [
        '# Exported models against their .pt (`tools/bench_exports.py`)', '',
        f'{benchlib.machine()}; device {args.device}; {args.frames} frames of a generated '
        f'768x576 scene per row, predict mode; node rows: video_publisher at {args.rate} Hz, '
        f'every output subscribed. Run {started} UTC, load average {load_before} before, '
        f'{load_after} after. **A short run on a shared, loaded 2-core machine: rows '
        'move by 10-30 % from run to run; the ratios within one run are what counts.**', '',
        "raw = `YOLO(path).predict` per frame (an OpenVINO model in ultralytics' default "
        'precision, bf16 on this CPU: the raw figure of the f32 row is a bf16 one, and the '
        '"x raw" target is judged on the bf16 row); fps processed, latency p50/p95 ms (raw: '
        'per predict; node: stamp to `detections` received), CPU s per frame (segtrack-video: '
        'whole process, start-up included).', '',
        '| model | imgsz | format | export s | cached start s (plain load s) | raw fps | raw '
        'p50/p95 | raw CPU s/f | video fps | video CPU s/f | node fps (frames/published) | '
        'node p50/p95 | node CPU s/f |',
        '|---|---|---|---|---|---|---|---|---|---|---|---|---|']
    for (model, imgsz, label), row in results.items():
        export = row.get('export') or {}
        raw, video, node = row['raw'], row['video'], row['node']
        lines.append(
            f"| {model} | {imgsz} | {label} | {export.get('export_s', 0):.1f} | "
            + (f"{export['cached_s']:.1f} ({export['plain_s']:.1f})" if export else '–')
            + f" | {raw['fps']:.1f} | {cell_latency(raw)} | {raw['cpu_per_frame']:.2f} | "
            f"{video['fps']:.1f} | {video['cpu_per_frame']:.2f} | {node['fps']:.1f} "
            f"({node['frames']}/{node['published']}) | {cell_latency(node)} | "
            f"{node['cpu_per_frame']:.2f} |")
    lines += ['', '## Targets (issue 22), from this run', '']
    for (model, imgsz, label), row in results.items():
        if row['kind'] not in ('openvino', 'engine') or imgsz != max(args.imgsz):
            continue
        pt = results[(model, imgsz, '.pt')]
        gain = row['video']['fps'] / pt['video']['fps']
        of_raw = row['video']['fps'] / row['raw']['fps']
        node_gain = row['node']['frames'] / max(pt['node']['frames'], 1)
        cached = row['export']['cached_s'] - row['export']['plain_s']
        lines += [
            f'- {model} @ {imgsz}, {label}: segtrack-video {gain:.2f} x the .pt (target >= '
            f'{TARGET_VIDEO_GAIN}: {benchlib.verdict(gain >= TARGET_VIDEO_GAIN)}), '
            + (f'{of_raw:.2f} x raw predict of the same model (target >= {TARGET_VIDEO_OF_RAW}: '
               f'{benchlib.verdict(of_raw >= TARGET_VIDEO_OF_RAW)})' if row['half'] else
               f'{of_raw:.2f} x the raw bf16 predict (not a like-for-like target)')
            + '; the node processed '
            f'{node_gain:.2f} x the frames of the .pt node (target >= {TARGET_NODE_GAIN}: '
            f'{benchlib.verdict(node_gain >= TARGET_NODE_GAIN)}); a cached start took '
            f'{cached:+.1f} s beyond loading the export itself (target < {TARGET_CACHED_S} s: '
            f'{benchlib.verdict(cached < TARGET_CACHED_S)}).']
    return '\n'.join(lines) + '\n'


def main():
    """Run every row; write the table."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--frames', type=int, default=40)
    parser.add_argument('--imgsz', type=int, nargs='+', default=[640, 320])
    parser.add_argument('--rate', type=float, default=30.0)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--models', nargs='+', choices=('shapes', 'yolov8n'),
                        default=['shapes', 'yolov8n'])
    parser.add_argument('--output', type=Path, default=benchlib.REPO / 'bench' / 'exports.md')
    args = parser.parse_args()
    benchlib.keep_local()
    import rclpy

    started = time.strftime('%Y-%m-%d %H:%M', time.gmtime())
    load_before = benchlib.load_average()
    video = benchlib.prepare_video(args.frames, WORK)
    shutil.rmtree(WORK / 'exports', ignore_errors=True)  # every export is made, and timed
    models = [(label, model()) for key, label, model in (
        ('shapes', 'shapes-seg (bundled)', lambda: benchlib.TRAINED),
        ('yolov8n', 'yolov8n-seg (untrained)', untrained_model)) if key in args.models]
    results = {}
    rclpy.init()
    index = 0
    try:
        for name, model in models:
            for imgsz in args.imgsz:
                for label, kind, half in formats(args.device):
                    print(f'bench_exports: {name} @ {imgsz} {label}', flush=True)
                    export = make_export(model, kind, imgsz, half, args.device) if kind else None
                    path = export['path'] if export else model
                    index += 1
                    results[(name, imgsz, label)] = {
                        'kind': kind, 'half': half, 'export': export,
                        'raw': raw_row(path, imgsz, video, args.frames, half, args.device),
                        'video': video_row(path, imgsz, video, args.frames, half, args.device),
                        'node': node_row(path, imgsz, video, args.frames, half, args.device,
                                         args.rate, index)}
    finally:
        rclpy.try_shutdown()
    text = table(results, args, started, load_before, benchlib.load_average())
    args.output.write_text(text)
    print(text)


if __name__ == '__main__':
    main()
