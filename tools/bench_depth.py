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
the label images make it anyway.

2D rate with depth off and on: a real `segtrack_node` (bundled model, imgsz 320) fed by this
process over DDS as an RGB-D camera would: a generated scene (640×480) at 30 Hz, depth
(320×240, sensor model) at 15 Hz stamped 10 ms after or before every other colour frame, and
its CameraInfo; `detections` and `detections_3d` subscribed. One node with `depth:=false`,
one with `depth:=true`, both started first, then played to in turns (`ROUNDS` windows each),
the same stream every time.
Writes bench/depth.md (and prints it); the nodes' logs go to output/bench/depth/.
Over the usual length of a module: the three measurements of the page it writes (accuracy,
cost, the rate over DDS) belong together.

    .venv/bin/python tools/bench_depth.py [--repeats 30] [--output bench/depth.md]
"""

import argparse
from pathlib import Path
import threading
import time

import benchlib
import numpy as np

from segtrack_ros.core import labels
from segtrack_ros.core.detections import Detections
from segtrack_ros.core.geometry import DepthMapping, locate
from segtrack_ros.depth_stage import DepthInput
from segtrack_ros.eval.synthetic import (
    build_scene, CLASS_NAMES, render_frame, SceneConfig)
from segtrack_ros.eval.synthetic_depth import (
    build_depth_scene, colour_camera, depth_image, DepthConfig, SensorModel, stage_errors)
from segtrack_ros.io import image_codec
from segtrack_ros.pipeline import DEPTH_OUTPUTS
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

COSTS = (((768, 576), 20, 5.0), ((1920, 1080), 300, 20.0))  # frame, instances, target ms
THIN = [CLASS_NAMES.index('triangle'), CLASS_NAMES.index('ring')]
WORK = benchlib.REPO / 'output' / 'bench' / 'depth'
COLOUR_RATE = 30.0
TOLERANCE = 0.02  # the node's default depth_tolerance (s)
WARM_SECONDS, WINDOW_SECONDS, TAIL_SECONDS, ROUNDS = 2.0, 5.0, 2.0, 2
LOOP_FRAMES = 60  # of the generated scene, replayed with new stamps
RATE_VERDICT = 0.9  # the depth-on 2D rate against the depth-off one


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


def camera_info(camera):
    """Return the CameraInfo of a `geometry.Camera`."""
    return CameraInfo(width=camera.width, height=camera.height, k=[
        camera.fx, 0.0, camera.cx, 0.0, camera.fy, camera.cy, 0.0, 0.0, 1.0])


def replay():
    """
    Return the camera's messages in stamp order: (seconds after the start, kind, messages).

    Kind 'colour' (30 Hz) or 'depth' (15 Hz, 10 ms after or before every other colour frame,
    with its CameraInfo); the scene loops every LOOP_FRAMES frames. Messages get their header
    when published.
    """
    scene = build_scene(SceneConfig(width=640, height=480, frames=LOOP_FRAMES, seed=1,
                                    objects=6))
    depth_scene = build_depth_scene(scene, DepthConfig(width=320, height=240,
                                                       sensor=SensorModel()))
    colours = [image_codec.to_image_msg(render_frame(scene, t)[0], 'bgr8', Header())
               for t in range(LOOP_FRAMES)]
    depths = {}
    for t in range(0, LOOP_FRAMES, 2):
        millimetres = np.nan_to_num(depth_image(depth_scene, t / COLOUR_RATE) * 1000)
        depths[t] = image_codec.to_image_msg(
            millimetres.round().clip(0, 65535).astype(np.uint16), 'mono16', Header())
        depths[t].encoding = '16UC1'
    info = camera_info(depth_scene.depth)
    events = []
    for frame in range(int((WARM_SECONDS + WINDOW_SECONDS) * COLOUR_RATE)):
        events.append((frame / COLOUR_RATE, 'colour', [colours[frame % LOOP_FRAMES]]))
        if frame % 2 == 0:
            offset = 0.010 if frame % 4 == 0 else -0.010
            events.append((frame / COLOUR_RATE + offset, 'depth',
                           [info, depths[frame % LOOP_FRAMES]]))
    return sorted(events, key=lambda event: event[0])


def stamp_ns(header):
    """Return a header's stamp in integer nanoseconds."""
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def play(events, publishers, start_ns, sent):
    """Publish the events at their pace, stamped from `start_ns` on; note the stamps `sent`."""
    start = time.monotonic()
    for seconds, kind, messages in events:
        header = Header(frame_id='camera_depth_optical' if kind == 'depth' else 'camera')
        nanoseconds = start_ns + int(round(seconds * 1e9))
        header.stamp.sec, header.stamp.nanosec = divmod(nanoseconds, 1_000_000_000)
        delay = start + seconds - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        for publisher, message in zip(publishers[kind], messages):
            message.header = header
            publisher.publish(message)
        sent[kind].append(nanoseconds)


class RateNode:
    """A segtrack_node (`depth` on or off) in its own namespace, its camera and its outputs."""

    def __init__(self, probe, depth):
        from vision_msgs.msg import Detection2DArray, Detection3DArray

        self.depth, self._probe = depth, probe
        self.namespace = f'/depth_{str(depth).lower()}'
        self.received = {'detections': [], 'detections_3d': []}  # output stamps (ns)
        self.sent = {'colour': [], 'depth': []}  # input stamps (ns)
        self.windows = []  # (begin, end) stamps (ns) of the measured windows
        self._subscriptions = [probe.create_subscription(
            kind, f'{self.namespace}/{topic}', lambda message, t=topic: self.received[t].append(
                stamp_ns(message.header)), 10) for topic, kind in (
                    ('detections', Detection2DArray), ('detections_3d', Detection3DArray))]
        self.publishers = {
            'colour': [probe.create_publisher(Image, f'{self.namespace}/image', 10)],
            'depth': [probe.create_publisher(CameraInfo,
                                             f'{self.namespace}/depth/camera_info', 10),
                      probe.create_publisher(Image, f'{self.namespace}/depth/image', 10)]}
        WORK.mkdir(parents=True, exist_ok=True)
        self._log = open(WORK / f'node-depth-{str(depth).lower()}.log', 'w')
        self.process = benchlib.start(
            'segtrack_node', self.namespace, self._log, model=benchlib.TRAINED, imgsz=320,
            mode='predict', device='cpu', depth=str(depth).lower(), depth_tolerance=TOLERANCE)

    def ready(self):
        """Tell whether the node subscribes to its inputs and publishes its outputs."""
        inputs = ['image'] + (['depth/image', 'depth/camera_info'] if self.depth else [])
        outputs = ['detections'] + (['detections_3d'] if self.depth else [])
        return (all(self._probe.count_subscribers(f'{self.namespace}/{topic}') > 0
                    for topic in inputs)
                and all(self._probe.count_publishers(f'{self.namespace}/{topic}') > 0
                        for topic in outputs))

    def play(self, events):
        """Play the camera to the node once; its stamps after the warm-up are measured."""
        start_ns = time.time_ns()
        play(events, self.publishers, start_ns, self.sent)
        begin = start_ns + int(WARM_SECONDS * 1e9)
        self.windows.append((begin, begin + int(WINDOW_SECONDS * 1e9)))
        time.sleep(TAIL_SECONDS)  # the last frames' outputs

    def close(self):
        """Stop the node, drop the subscriptions and publishers."""
        benchlib.stop(self.process)
        self._log.close()
        for subscription in self._subscriptions:
            self._probe.destroy_subscription(subscription)
        for publisher in self.publishers['colour'] + self.publishers['depth']:
            self._probe.destroy_publisher(publisher)

    def figures(self):
        """Return the counts over the measured windows."""
        depth_stamps = np.array(self.sent['depth'])

        def measured(stamps):
            return [stamp for stamp in stamps
                    if any(begin <= stamp < end for begin, end in self.windows)]

        def paired(stamp):
            return np.abs(depth_stamps - stamp).min() <= TOLERANCE * 1e9

        outputs_2d, outputs_3d = (measured(self.received[topic])
                                  for topic in ('detections', 'detections_3d'))
        return {'depth': self.depth, 'sent': len(measured(self.sent['colour'])),
                'outputs_2d': len(outputs_2d),
                'with_partner': sum(paired(stamp) for stamp in outputs_2d),
                'outputs_3d': len(outputs_3d),
                'paired_3d': sum(paired(stamp) for stamp in outputs_3d)}


def rate_rows():
    """
    Return the 2D rate table's rows and its verdict line.

    Both nodes start first; then each is played to in turn, ROUNDS times, so that both see the
    shared machine's changing load alike (the idle one gets no input).
    """
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from segtrack_ros.ros.transport import apply_large_data_profile

    events = replay()
    apply_large_data_profile()  # large images reach a best-effort subscriber, as from cameras
    rclpy.init()
    probe = rclpy.create_node('segtrack_bench_depth')
    executor = SingleThreadedExecutor()
    executor.add_node(probe)
    threading.Thread(target=executor.spin, daemon=True).start()
    nodes = []
    try:
        nodes = [RateNode(probe, depth) for depth in (False, True)]
        if not benchlib.wait_for(lambda: all(node.ready() for node in nodes), 180):
            raise RuntimeError(f'segtrack_node did not start, see {WORK}')
        time.sleep(1.0)  # the outputs' subscriptions match
        for _ in range(ROUNDS):
            for node in nodes:
                node.play(events)
        results = [node.figures() for node in nodes]
    finally:
        for node in nodes:
            node.close()
        executor.shutdown()
        probe.destroy_node()
        rclpy.try_shutdown()
    rows = []
    seconds = ROUNDS * WINDOW_SECONDS
    for result in results:
        fps = result['outputs_2d'] / seconds
        if result['depth']:
            third = (f"{result['outputs_3d']} (of {result['with_partner']} frames with a depth "
                     'partner)')
            paired = f"{result['paired_3d']}/{result['outputs_3d']}" + (
                ' (all)' if result['paired_3d'] == result['outputs_3d'] else '')
        else:
            third, paired = '–', '–'
        rows.append(f"| {str(result['depth']).lower()} | {result['sent']} | "
                    f"{result['outputs_2d']} ({fps:.1f} fps) | {third} | {paired} |")
    off, on = (result['outputs_2d'] for result in results)
    ratio = on / off if off else float('nan')
    all_paired = results[1]['outputs_3d'] > 0 and (
        results[1]['paired_3d'] == results[1]['outputs_3d'])
    verdict = benchlib.verdict(ratio >= RATE_VERDICT and all_paired)
    return rows, (f'Depth on against off: {ratio:.2f} × the 2D rate (target ≥ {RATE_VERDICT}, '
                  f'and every 3D output paired within {TOLERANCE * 1000:.0f} ms): {verdict}.')


def main():
    """Measure, write the table, print it."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('--repeats', type=int, default=30)
    parser.add_argument('--output', type=Path, default=benchlib.REPO / 'bench' / 'depth.md')
    args = parser.parse_args()
    benchlib.keep_local()
    before, start = benchlib.load_average(), time.strftime('%Y-%m-%d %H:%M')
    costs = cost_rows(args.repeats)
    accuracy = accuracy_rows()
    rates, rate_verdict = rate_rows()
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
        'messages are rclpy objects built one by one in Python (shallow copies of template '
        'messages), so their cost grows with the instances; each is built only when '
        'subscribed. The verdict '
        'is on the CPU time: on this shared machine, the wall clock also counts the time the '
        'process waited for a core.', '',
        '| frame | instances | what | points out | wall ms | CPU ms | target ms | |',
        '|---|---:|---|---:|---:|---:|---:|---|',
        *costs, '',
        '## 2D rate with depth off and on', '',
        f'A real `segtrack_node` (bundled model, imgsz 320, predict) fed over DDS by this '
        f'process: a generated scene at 640×480, {COLOUR_RATE:.0f} Hz; depth 320×240 (sensor '
        'model, 16UC1) at 15 Hz stamped 10 ms after or before every other colour frame, with '
        'its CameraInfo; the same stream in both rows (with depth off the node does not '
        'subscribe to it). Both nodes run from the start; the stream goes to one at a time, '
        f'in turns ({ROUNDS} rounds of {WINDOW_SECONDS:.0f} s of stamps counted after '
        f'{WARM_SECONDS:.0f} s each), so both see the changing load of the machine alike; '
        '`detections` and `detections_3d` subscribed. The 2D '
        'rate is at most the 30 Hz input; when inference takes longer (under load: the machine '
        'is shared), it bounds the rate. A 3D output is '
        f'paired when a depth image was published within {TOLERANCE * 1000:.0f} ms of its '
        'stamp (the odd colour frames are 23 ms from the nearest: no 3D, by design). The node '
        'does not wait for a partner: a frame whose depth image (stamped 10 ms after it) '
        'arrives after its outputs were made gets 2D outputs only.', '',
        '| depth | colour frames sent | `detections` received | `detections_3d` received | '
        '3D paired within the tolerance |',
        '|---|---:|---:|---:|---:|',
        *rates, '', rate_verdict, ''])
    args.output.write_text(text)
    print(text)


if __name__ == '__main__':
    main()
