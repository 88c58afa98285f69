#!/usr/bin/env python3
"""
`make pictures`: every picture of docs/, made again from the bundled model and generated scenes.

From one generated scene (`segtrack_ros.eval.synthetic`) and the bundled shapes model at imgsz
320 on the CPU, with one torch thread (the same pixels on every run and machine of one torch
version):

- predict.png: the scene's last frame in predict mode, colours and labels by class;
- track.png: the last frame of a track-mode run, with trails, colours and labels by track id;
- labels.png: the node's `instance_mask` and `class_mask` of that last frame, each value in the
  colour the annotated pictures give it (background black), as a label-image viewer shows them;
- from-above.png: the instances of that frame in 3D, from the scene's exact depth through
  `geometry.locate` (points, boxes, centroids), seen from above;

and from the tables of bench/*.md (matplotlib), when the page exists:

- bench-results.png: frames per second of raw predict, the guide's loop, segtrack-video and the
  node (bench/results.md);
- bench-masks.png: against the instance count (bench/masks.md), frames per second of
  `segtrack-video` and the guide's loop (predict, track) and their peak RSS (track), and
  `Segmenter.process` beside `model.predict` per second;
- bench-soak.png: the node's RSS and processed rate minute by minute (bench/soak.md);
- bench-cameras.png: RSS and frames per second in all, one node against one node per camera
  (bench/cameras.md);
- bench-bag.png: frames per second of segtrack-video and segtrack-bag (bench/bag.md);
- bench-exports.png: frames per second of the .pt, ONNX and OpenVINO, raw, in segtrack-video and
  in the node (bench/exports.md);
- bench-fleet.png: bags per hour and CPU seconds of a loop of segtrack-bag and of segtrack-fleet
  with 1 and 2 workers (bench/fleet.md).

Frames are written as palette PNGs (256 colours, no dithering), a few hundred KB at most. The
module is a little over the usual length: one short plot function per bench/ page.

    .venv/bin/python tools/pictures.py [--output docs] [--width 768 --height 576] [--frames 40]
"""

import argparse
import itertools
import os
from pathlib import Path
import re
import textwrap

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SEED = 34  # of the default scene size: 12 objects of all four classes, most of them whole
OBJECTS = 12
PICTURE_WIDTH = 512  # frames are drawn at the scene's size, then scaled to this width


def generated_scene(width, height, frames):
    """Return the generated scene and its frames."""
    from segtrack_ros.eval.synthetic import build_scene, render_frame, SceneConfig

    scene = build_scene(SceneConfig(width=width, height=height, frames=frames, objects=OBJECTS,
                                    seed=SEED))
    return scene, [render_frame(scene, t)[0] for t in range(frames)]


def segmenter(mode):
    """Return a segmenter of the bundled model on the CPU at its training size."""
    from segtrack_ros.core.segmenter import BUNDLED_MODEL, Segmenter, SegmenterConfig

    return Segmenter(SegmenterConfig(model=str(BUNDLED_MODEL), device='cpu', mode=mode,
                                     imgsz=320))


def predict_picture(frame):
    """Return the predict-mode picture of `frame`: colours and labels by class, BGR."""
    from segtrack_ros.core.render import Renderer, RenderConfig

    model = segmenter('predict')
    try:
        detections = model.process(frame)
    finally:
        model.release()
    return Renderer(RenderConfig(color_by='class')).draw(frame, detections)


def track_pictures(frames):
    """
    Return a track run's last frame (trails, by track id), label images, detections, owner.

    The label images are those the node publishes for that frame: `instance_mask` holds the
    track ids, coloured as the track picture colours them, `class_mask` the class ids + 1,
    coloured as the predict picture colours their classes.
    """
    from segtrack_ros.core import labels
    from segtrack_ros.core.render import palette_color, Renderer, RenderConfig

    model = segmenter('track')
    renderer = Renderer(RenderConfig(color_by='track', trail_length=30))
    try:
        for frame in frames:
            detections = model.process(frame)
            owner = labels.owner_image(detections)
            annotated = renderer.draw(frame, detections, owner)
    finally:
        model.release()
    instance = colorize(labels.instance_mask(detections, owner), palette_color)
    by_class = colorize(labels.class_mask(detections, owner),
                        lambda value: palette_color(value - 1))
    return annotated, label_pair(instance, by_class), detections, owner


def from_above(scene, detections, owner, path):
    """
    Plot the instances of the scene's last frame in 3D from its depth image, seen from above.

    The scene's exact metric depth (`synthetic_depth`) and the colour camera's intrinsics go
    through `geometry.locate`, as the node's 3D stage does: each instance's inlier points, its
    3D box and its centroid, in its track colour, x to the right and z away from the camera.
    """
    from matplotlib.patches import Rectangle
    from segtrack_ros.core.geometry import DepthMapping, locate
    from segtrack_ros.core.render import palette_color
    from segtrack_ros.eval.synthetic_depth import build_depth_scene, depth_image

    depth_scene = build_depth_scene(scene)
    depth = depth_image(depth_scene, (scene.config.frames - 1) / scene.config.fps)
    colour = depth_scene.colour
    mapping = DepthMapping.between(depth_scene.depth, (colour.width, colour.height), colour)
    owners = owner.image(np.arange(len(detections) + 1, dtype=np.uint16))
    found = locate(owners, len(detections), depth, depth_scene.depth, mapping,
                   with_points=True)
    fig, axes = figure(1, width=5.6)
    axis = axes[0][0]
    for index, centroid, centre, size in zip(found.indices, found.centroids, found.box_centres,
                                             found.box_sizes):
        track_id = int(detections.ids[index])
        rgb = tuple(value / 255 for value in reversed(palette_color(track_id)))
        points = found.points[found.point_indices == index]
        axis.scatter(points[:, 0], points[:, 2], s=2, color=rgb, alpha=0.6, linewidths=0)
        axis.add_patch(Rectangle((centre[0] - size[0] / 2, centre[2] - size[2] / 2), size[0],
                                 size[2], fill=False, edgecolor=rgb, linewidth=1))
        axis.plot(centroid[0], centroid[2], 'o', color=rgb, markeredgecolor='black')
        axis.annotate(str(track_id), (centroid[0], centroid[2]), xytext=(4, 4),
                      textcoords='offset points', fontsize=8)
    half_width = colour.width / 2 / colour.fx
    far = float(np.nanmax(found.centroids[:, 2])) * 1.15 if len(found.indices) else 3.0
    axis.plot([-half_width * far, 0, half_width * far], [far, 0, far], color='grey',
              linewidth=0.8, label='field of view')
    axis.set_aspect('equal')
    axis.set_xlabel('x, metres (right)')
    axis.set_ylabel('z, metres (away from the camera)')
    axis.set_title('3D from depth, seen from above: points, boxes, centroids')
    axis.legend(fontsize=7, loc='lower right')
    save_plot(fig, path)


def colorize(label_image, color_of):
    """Return a BGR image: 0 black, every other value in the colour `color_of(value)`."""
    values = np.unique(label_image)
    lookup = np.zeros((int(values.max()) + 1, 3), np.uint8)
    for value in values[values > 0]:
        lookup[value] = color_of(int(value))
    return lookup[label_image]


def label_pair(instance, by_class):
    """Return the two label images side by side, each captioned with its topic."""
    import cv2

    panels = []
    for image, caption in ((instance, 'instance_mask'), (by_class, 'class_mask')):
        panel = image.copy()
        scale = panel.shape[1] / 640
        cv2.putText(panel, caption, (int(12 * scale), int(36 * scale)), cv2.FONT_HERSHEY_SIMPLEX,
                    scale, (255, 255, 255), max(1, round(2 * scale)), cv2.LINE_AA)
        panels.append(panel)
    gap = np.full((instance.shape[0], max(2, instance.shape[1] // 100), 3), 255, np.uint8)
    return np.hstack([panels[0], gap, panels[1]])


def save_frame(path, image, width):
    """Scale a BGR image to `width` and write it as a 256-colour PNG."""
    import cv2
    from PIL import Image

    height = round(image.shape[0] * width / image.shape[1])
    small = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    picture = Image.fromarray(cv2.cvtColor(small, cv2.COLOR_BGR2RGB))
    picture.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        path, optimize=True)


# -- plots of the bench/ tables ----------------------------------------------------------------

def markdown_tables(path):
    """Return the tables of a markdown page: lists of rows, each a list of cell texts."""
    tables, current = [], []
    for line in Path(path).read_text().splitlines():
        if line.startswith('|'):
            cells = [cell.strip() for cell in line.strip().strip('|').split('|')]
            if not all(re.fullmatch(r':?-+:?', cell) for cell in cells):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables + ([current] if current else [])


def table_with(path, heading):
    """Return the rows (header first) of the first table whose header has `heading` in a cell."""
    for table in markdown_tables(path):
        if any(heading in cell for cell in table[0]):
            return table
    raise ValueError(f'{path}: no table with a column {heading!r}')


def number(text):
    """Return the first number in a cell's text."""
    return float(re.search(r'-?[0-9]+(?:\.[0-9]+)?', text).group())


def figure(columns, width=4.2, rows=1):
    """Return a matplotlib figure of `rows` x `columns` plots, drawn without a display."""
    import matplotlib

    matplotlib.use('Agg')
    from matplotlib import pyplot

    pyplot.rcParams.update({'font.size': 9, 'svg.hashsalt': 'segtrack'})
    return pyplot.subplots(rows, columns, figsize=(width * columns, 3.2 * rows), dpi=100,
                           squeeze=False)


def save_plot(fig, path):
    """Write a figure as PNG, without the metadata that changes from version to version."""
    from matplotlib import pyplot

    fig.tight_layout()
    fig.savefig(path, metadata={'Software': None})
    pyplot.close(fig)


def plot_results(page, path):
    """Plot frames per second of the four ways to run each model (bench/results.md)."""
    table = table_with(page, 'frames/s')
    header = table[0]
    model, row, fps = header.index('model'), header.index('row'), header.index('frames/s')
    kinds = (('1.', 'raw model.predict'), ('2b.', "guide's loop, track"),
             ('3b.', 'segtrack-video, track'), ('4.', 'node over DDS, track, 30 Hz in'))
    models = list(dict.fromkeys(cells[model] for cells in table[1:]))
    fig, axes = figure(1, width=6.4)
    axis = axes[0][0]
    width = 0.8 / len(kinds)
    for position, (prefix, name) in enumerate(kinds):
        values = [next(number(cells[fps]) for cells in table[1:]
                       if cells[model] == title and cells[row].startswith(prefix + ' '))
                  for title in models]
        axis.bar(np.arange(len(models)) + (position - (len(kinds) - 1) / 2) * width, values,
                 width, label=name)
    axis.set_xticks(np.arange(len(models)),
                    [title.replace(' @', '\nimgsz ') for title in models])
    axis.set_ylabel('frames per second')
    axis.set_title('768×576 frames, 2 CPU cores (bench/results.md)')
    axis.legend(fontsize=7)
    save_plot(fig, path)


def plot_masks(page, path):
    """
    Plot the programs and the segmenter against instance count, per frame size (masks.md).

    Frames per second of `segtrack-video` (solid) and the guide's loop (dashed), predict and
    track, with the peak RSS of their track runs; then `Segmenter.process` (solid) beside raw
    `model.predict` (dashed) per second. One colour per frame size in every panel.
    """
    steps = table_with(page, '`Segmenter.process` ms')
    programs = table_with(page, 'track frames/s')
    colours = {size: f'C{index}' for index, size in
               enumerate(dict.fromkeys(cells[0] for cells in steps[1:] + programs[1:]))}
    column = {name: programs[0].index(name) for name in (
        'instances', 'program', 'predict frames/s', 'track frames/s',
        'peak RSS MB (predict / track)')}
    fig, axes = figure(2, rows=2)
    (predict, track), (memory, segmenter) = axes
    for (size, colour), (program, style) in itertools.product(
            colours.items(), (('segtrack-video', 'o-'), ('guide', 's--'))):
        rows = [cells for cells in programs[1:]
                if cells[0] == size and cells[column['program']] == program]
        if not rows:
            continue
        counts = [number(cells[column['instances']]) for cells in rows]
        name = f"{size} {program.replace('guide', 'guide loop')}"
        for axis, key in ((predict, 'predict frames/s'), (track, 'track frames/s')):
            axis.plot(counts, [number(cells[column[key]]) for cells in rows], style,
                      color=colour, label=name)
        memory.plot(counts, [number(cells[column['peak RSS MB (predict / track)']].split('/')[1])
                             for cells in rows], style, color=colour, label=name)
    header = steps[0]
    count, predicted, processed = (
        next(i for i, cell in enumerate(header) if cell.startswith(name))
        for name in ('instances', '`model.predict` ms', '`Segmenter.process` ms'))
    for size, colour in colours.items():
        rows = [cells for cells in steps[1:] if cells[0] == size]
        counts = [number(cells[count]) for cells in rows]
        for index, style, name in ((processed, 'o-', 'Segmenter.process'),
                                   (predicted, 's--', 'model.predict')):
            segmenter.plot(counts, [1000 / number(cells[index]) for cells in rows], style,
                           color=colour, label=f'{size} {name}')
    for axis, title, unit in (
            (predict, 'whole programs, predict (bench/masks.md)', 'frames per second'),
            (track, 'whole programs, track', 'frames per second'),
            (memory, 'whole programs, track: peak RSS', 'MB'),
            (segmenter, 'one frame, predict', 'frames per second')):
        axis.set_title(title)
        axis.set_ylabel(unit)
        axis.set_xscale('log')
        ticks = sorted({number(cells[column['instances']]) for cells in programs[1:]})
        axis.set_xticks(ticks, [f'{tick:.0f}' for tick in ticks])
        axis.set_xlabel('instances per frame')
        axis.set_ylim(bottom=0)
        axis.legend(fontsize=6)
    save_plot(fig, path)


def plot_cameras(page, path):
    """Plot RSS and frames/s in all against cameras, one node or one each (cameras.md)."""
    table = table_with(page, 'total RSS MiB')
    header = table[0]
    cameras, nodes = header.index('cameras'), header.index('nodes')
    rss = header.index('total RSS MiB')
    fps = next(i for i, cell in enumerate(header) if cell.startswith('total frames/s'))
    fig, axes = figure(2)
    for single, name in ((True, 'one node'), (False, 'one node per camera')):
        rows = [cells for cells in table[1:] if (cells[nodes] == 'one') == single]
        counts = [number(cells[cameras]) for cells in rows]
        axes[0][0].plot(counts, [number(cells[rss]) for cells in rows], 'o-', label=name)
        axes[0][1].plot(counts, [number(cells[fps]) for cells in rows], 'o-', label=name)
    for axis, title in zip(axes[0], ('total RSS, MiB', 'frames per second in all')):
        axis.set_title(f'{title} (bench/cameras.md)')
        axis.set_xlabel('cameras')
        axis.set_xticks(sorted({number(cells[cameras]) for cells in table[1:]}))
        axis.set_ylim(bottom=0)
        axis.legend(fontsize=7)
    save_plot(fig, path)


def plot_bag(page, path):
    """Plot frames per second of segtrack-video and segtrack-bag, same frames (bench/bag.md)."""
    table = table_with(page, 'segtrack-video fps')
    header = table[0]
    kinds = [(i, cell.replace(' fps (cost)', '').replace(' fps', ''))
             for i, cell in enumerate(header) if cell.startswith('segtrack-')]
    models = [f'{cells[0]}\nimgsz {cells[1]}' for cells in table[1:]]
    fig, axes = figure(1, width=5.6)
    axis = axes[0][0]
    width = 0.8 / len(kinds)
    for position, (column, name) in enumerate(kinds):
        axis.bar(np.arange(len(models)) + (position - (len(kinds) - 1) / 2) * width,
                 [number(cells[column]) for cells in table[1:]], width, label=name)
    axis.set_xticks(np.arange(len(models)), models)
    axis.set_ylabel('frames per second')
    axis.set_title('the same 768×576 frames, track mode (bench/bag.md)')
    axis.legend(fontsize=7)
    save_plot(fig, path)


def plot_soak(page, path):
    """Plot the node's RSS and processed rate minute by minute (bench/soak.md)."""
    table = table_with(page, 'RSS MB')
    minutes = [number(cells[0]) for cells in table[1:]]
    fig, axes = figure(2)
    memory, frames = axes[0]
    memory.plot(minutes, [number(cells[1]) for cells in table[1:]], 'o-')
    memory.set_title('RSS of the node, MB (bench/soak.md)')
    memory.set_ylim(bottom=0)
    counts = [number(cells[2]) for cells in table[1:]]
    frames.plot(minutes[1:], np.diff(counts) / np.diff(minutes) / 60, 'o-')
    frames.set_title('frames processed per second, each minute')
    frames.set_ylim(bottom=0)
    for axis in (memory, frames):
        axis.set_xlabel('minutes')
    save_plot(fig, path)


def plot_exports(page, path):
    """Plot frames per second of the .pt and its exports, per model and imgsz (exports.md)."""
    table = table_with(page, 'format')
    header = table[0]
    model, imgsz, kind = header.index('model'), header.index('imgsz'), header.index('format')
    groups = list(dict.fromkeys((cells[model], cells[imgsz]) for cells in table[1:]))
    formats = list(dict.fromkeys(cells[kind] for cells in table[1:]))
    labels = [name.split(' (')[0] + f'\nimgsz {size}' for name, size in groups]
    fig, axes = figure(3, width=3.6)
    width = 0.8 / len(formats)
    for axis, (column, title) in zip(axes[0], (('raw fps', 'raw predict (bench/exports.md)'),
                                               ('video fps', 'segtrack-video'),
                                               ('node fps', 'node over DDS, 30 Hz in'))):
        index = next(i for i, cell in enumerate(header) if cell.startswith(column))
        for position, name in enumerate(formats):
            values = [next(number(cells[index]) for cells in table[1:]
                           if (cells[model], cells[imgsz]) == group and cells[kind] == name)
                      for group in groups]
            axis.bar(np.arange(len(groups)) + (position - (len(formats) - 1) / 2) * width,
                     values, width, label=name)
        axis.set_xticks(np.arange(len(groups)), labels, fontsize=7)
        axis.set_title(title)
        axis.set_ylabel('frames per second')
    axes[0][0].legend(fontsize=6)
    save_plot(fig, path)


def plot_fleet(page, path):
    """Plot bags per hour and CPU seconds: a loop of segtrack-bag, segtrack-fleet (fleet.md)."""
    table = table_with(page, 'bags per hour')
    header = table[0]
    how, workers = header.index('how'), header.index('workers × torch threads')
    names = [textwrap.fill(cells[how].split(' code')[0], 16, break_on_hyphens=False)
             + f'\n{cells[workers]} threads' for cells in table[1:]]
    fig, axes = figure(2)
    for axis, (heading, title) in zip(axes[0], (
            ('bags per hour', 'bags per hour, 2 cores (bench/fleet.md)'),
            ('CPU s', 'CPU seconds, all processes'))):
        index = next(i for i, cell in enumerate(header) if cell.startswith(heading))
        bars = axis.bar(np.arange(len(names)), [number(cells[index]) for cells in table[1:]],
                        0.6, color=[f'C{position}' for position in range(len(names))])
        axis.bar_label(bars, fmt='%g', fontsize=7)
        axis.set_xticks(np.arange(len(names)), names, fontsize=7)
        axis.set_title(title)
    save_plot(fig, path)


PLOTS = (('results.md', 'bench-results.png', plot_results),
         ('soak.md', 'bench-soak.png', plot_soak),
         ('masks.md', 'bench-masks.png', plot_masks),
         ('cameras.md', 'bench-cameras.png', plot_cameras),
         ('bag.md', 'bench-bag.png', plot_bag),
         ('exports.md', 'bench-exports.png', plot_exports),
         ('fleet.md', 'bench-fleet.png', plot_fleet))


def main():
    """Write every picture to the output folder; print each one's path and size."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0].strip())
    parser.add_argument('--output', type=Path, default=REPO / 'docs')
    parser.add_argument('--bench', type=Path, default=REPO / 'bench',
                        help='folder of the benchmark pages the plots are drawn from')
    parser.add_argument('--width', type=int, default=768, help='of the generated scene')
    parser.add_argument('--height', type=int, default=576)
    parser.add_argument('--frames', type=int, default=40,
                        help='of the track run; the predict picture is its last frame too')
    args = parser.parse_args()
    # One torch thread, whatever the machine: the same sums in the same order, the same pixels.
    os.environ['OMP_NUM_THREADS'] = '1'
    os.environ.setdefault('YOLO_OFFLINE', '1')
    os.environ.setdefault('YOLO_AUTOINSTALL', 'false')
    args.output.mkdir(parents=True, exist_ok=True)
    scene, frames = generated_scene(args.width, args.height, args.frames)
    width = min(PICTURE_WIDTH, args.width)
    tracked, label_images, detections, owner = track_pictures(frames)
    written = [args.output / name
               for name in ('predict.png', 'track.png', 'labels.png', 'from-above.png')]
    save_frame(written[0], predict_picture(frames[-1]), width)
    save_frame(written[1], tracked, width)
    save_frame(written[2], label_images, 2 * width)
    from_above(scene, detections, owner, written[3])
    for page, name, plot in PLOTS:
        if (args.bench / page).exists():
            plot(args.bench / page, args.output / name)
            written.append(args.output / name)
    for path in written:
        print(f'pictures: {path} ({path.stat().st_size / 1024:.0f} KB)')


if __name__ == '__main__':
    main()
