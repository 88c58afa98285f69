#!/usr/bin/env python3
"""
3D from depth: accuracy of the 3D stage on generated scenes, and its cost.

Accuracy: `synthetic_depth.stage_errors` (exact masks from the scenes' truth, 6 scenes × 3
frames, 10 objects each) on exact depth and with the sensor model (depth 640×480 for colour
768×576), the mask-based estimate beside the box-based one (median depth in the 2D box), over
all instances and over the thin and non-convex ones (triangles, rings).

Cost: `geometry.locate` on an owner image of N instances (squares of equal size on a grid,
covering about 40 % of the frame) over a noisy tilted wall, without and with the points, and
the node's whole 3D stage (`DepthInput.outputs`: the 16UC1 message decoded, the instances
located, Detection3DArray, MarkerArray and PointCloud2 built); the
median of `--repeats` calls in wall-clock and CPU time (the verdict: CPU time, the wall clock
of a shared machine counts waits for a core). The owner image itself is not counted:
the label images make it anyway. Writes bench/depth.md (and prints it).

    .venv/bin/python tools/bench_depth.py [--repeats 30] [--output bench/depth.md]
"""

import argparse
from pathlib import Path
import sys
import time

import benchlib
import numpy as np

sys.path.insert(0, str(benchlib.REPO))

from segtrack_ros.core import labels  # noqa: E402
from segtrack_ros.core.detections import Detections  # noqa: E402
from segtrack_ros.core.geometry import DepthMapping, locate  # noqa: E402
from segtrack_ros.depth_stage import DEPTH_OUTPUTS, DepthInput  # noqa: E402
from segtrack_ros.eval.synthetic import CLASS_NAMES  # noqa: E402
from segtrack_ros.eval.synthetic_depth import (  # noqa: E402
    colour_camera, DepthConfig, SensorModel, stage_errors)
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

COSTS = (((768, 576), 20, 5.0), ((1920, 1080), 300, 20.0))  # frame, instances, target ms
THIN = [CLASS_NAMES.index('triangle'), CLASS_NAMES.index('ring')]


def accuracy_rows():
    """Return the accuracy table's rows."""
    rows = []
    for name, config in (('exact depth', DepthConfig()),
                         ('sensor model, depth 640×480',
                          DepthConfig(width=640, height=480, sensor=SensorModel()))):
        errors = stage_errors(config)
        for subset, chosen in (('all', np.ones(len(errors['classes']), bool)),
                               ('triangles + rings', np.isin(errors['classes'], THIN))):
            mask, box = errors['centroid'][chosen], errors['box'][chosen]
            rows.append(
                f'| {name} | {subset} | {chosen.sum()} | {100 * np.median(mask):.2f} | '
                f'{100 * np.percentile(mask, 95):.2f} | {100 * np.median(box):.2f} | '
                f'{100 * np.nanpercentile(box, 95):.2f} | '
                f'{100 * np.median(errors["extent"][chosen]):.1f} |')
    return rows


def cost_scene(size, count, seed=0):
    """Return an owner image of `count` squares on a grid, a noisy wall's depth, its camera."""
    width, height = size
    columns = int(np.ceil(np.sqrt(count * width / height)))
    rows = int(np.ceil(count / columns))
    cell = min(width // columns, height // rows)
    side = int(cell * 0.63)
    owner = np.zeros((height, width), np.uint16)
    for index in range(count):
        row, column = divmod(index, columns)
        owner[row * cell:row * cell + side, column * cell:column * cell + side] = index + 1
    camera = colour_camera(width, height, 69.0)
    ys, xs = np.mgrid[0:height, 0:width]
    depth = (2.0 + 0.5 * xs / width + 0.3 * ys / height).astype(np.float32)
    rng = np.random.default_rng(seed)
    depth += rng.normal(0, 0.002 * depth ** 2).astype(np.float32)
    depth[rng.random(depth.shape) < 0.02] = np.nan
    return owner, depth, camera


def timed(call, repeats):
    """Return the median wall-clock and CPU milliseconds of `call()`, and its last result."""
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        result = call()
        walls.append((time.perf_counter() - wall) * 1000)
        cpus.append((time.process_time() - cpu) * 1000)
    return np.median(walls), np.median(cpus), result


def stage_call(owner, depth, camera, count):
    """Return a call of the node's whole 3D stage on this frame: depth message to 3D messages."""
    height, width = owner.shape
    masks = owner[None] == np.arange(1, count + 1)[:, None, None]
    detections = Detections.from_masks(masks, np.arange(1, count + 1), [0] * count,
                                       ['square'] * count, np.ones(count),
                                       np.zeros((count, 4)))
    owner_image = labels.owner_image(detections)
    millimetres = np.nan_to_num(depth * 1000).astype('<u2')
    header = Header(frame_id='depth')
    stage = DepthInput(tolerance=0.02, max_pixels=10**8)
    stage.put_info(CameraInfo(width=width, height=height, k=[
        camera.fx, 0.0, camera.cx, 0.0, camera.fy, camera.cy, 0.0, 0.0, 1.0]))
    stage.put_image(Image(header=header, width=width, height=height, encoding='16UC1',
                          step=2 * width, data=millimetres.tobytes()))
    colours, names = [(0, 0, 255)] * count, ['square'] * count
    return lambda: stage.outputs(detections, header, DEPTH_OUTPUTS, owner_image, colours, names)


def cost_rows(repeats):
    """Return the cost table's rows."""
    rows = []
    for size, count, target in COSTS:
        owner, depth, camera = cost_scene(size, count)
        mapping = DepthMapping.between(camera, size)
        for with_points in (False, True):
            wall, cpu, located = timed(lambda: locate(owner, count, depth, camera, mapping,
                                                      with_points=with_points), repeats)
            points = len(located.points) if with_points else 0
            rows.append(f'| {size[0]}×{size[1]} | {count} | `locate`, '
                        f'{"with" if with_points else "no"} points | {points} | {wall:.1f} | '
                        f'{cpu:.1f} | {target:.0f} | {benchlib.verdict(cpu <= target)} |')
        wall, cpu, messages = timed(stage_call(owner, depth, camera, count), repeats)
        rows.append(f'| {size[0]}×{size[1]} | {count} | whole stage: 16UC1 decode, `locate`, '
                    f'three messages | {messages["points"].width} | {wall:.1f} | {cpu:.1f} | '
                    f'{target:.0f} | {benchlib.verdict(cpu <= target)} |')
    return rows


def main():
    """Measure, write the table, print it."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('--repeats', type=int, default=30)
    parser.add_argument('--output', type=Path, default=benchlib.REPO / 'bench' / 'depth.md')
    args = parser.parse_args()
    before, start = benchlib.load_average(), time.strftime('%Y-%m-%d %H:%M')
    costs = cost_rows(args.repeats)
    accuracy = accuracy_rows()
    text = '\n'.join([
        '# 3D from depth', '',
        f'`tools/bench_depth.py` ({start}) on:', benchlib.machine() + '.', '',
        f'Load average (1/5/15 min) before and after: {before}; {benchlib.load_average()}. '
        'The machine is shared: with a load above its 2 cores, wall-clock times grow with it; '
        "the CPU time is the process's own.", '',
        '## Accuracy of the 3D stage (exact masks)', '',
        'Centroid error relative to the true distance (%), extent error: the worst axis '
        "relative to the instance's largest true extent (%). Box-based: the 2D box's centre "
        'back-projected at the median depth inside the box.', '',
        '| depth | instances | n | mask median | mask p95 | box median | box p95 | '
        'extent median |',
        '|---|---|---:|---:|---:|---:|---:|---:|',
        *accuracy, '',
        '## Cost of the 3D stage', '',
        'Median of the calls; the owner image is given (the label images make it). The '
        'messages are rclpy objects built one by one in Python, so their cost grows with the '
        'instances; each is built only when subscribed. The verdict '
        'is on the CPU time: on this shared machine, the wall clock also counts the time the '
        'process waited for a core.', '',
        '| frame | instances | what | points out | wall ms | CPU ms | target ms | |',
        '|---|---:|---|---:|---:|---:|---:|---|',
        *costs, ''])
    args.output.write_text(text)
    print(text)


if __name__ == '__main__':
    main()
