"""
Generated scenes where identity is hard to keep, with exact truth (`synthetic` renders them).

Each scene stages one way trackers lose ids, on the backgrounds and colours of `synthetic`:

- `crossing`: pairs of look-alike objects (same class, same colour) cross, one over the other;
- `behind`: small objects pass behind a large one, hidden for about 10 to 60 frames;
- `reentry`: objects leave the frame on a curve and come back 15 to 40 frames later;
- `lookalike`: a group of identical discs moving close together, overtaking each other;
- `crowd`: 20 objects in view at once, for the tracker's cost per frame.

The truth keeps an object's id through every occlusion and exit, so a tracker that gives it a
new id afterwards is charged an identity switch.

>>> scene = occlusion_scenes()['behind']
>>> frame, truth = render_frame(scene, 0)
"""

from dataclasses import replace

import numpy as np

from segtrack_ros.eval.synthetic import (
    build_scene, CLASS_COLOURS, CLASS_NAMES, path_offsets, SceneConfig, shape_mask, Track,
    track_classes, truth_from_id_map)

FRAMES = 150
DISC, SQUARE, TRIANGLE, RING = (CLASS_NAMES.index(name)
                                for name in ('disc', 'square', 'triangle', 'ring'))


def moving(track_id, class_id, radius, start, velocity, turn_rate=0.0, frames=FRAMES,
           colour=None, spin=0.02):
    """Return a track moving from `start` at `velocity` (px per frame), turning at `turn_rate`."""
    times = np.arange(frames, dtype=float)
    return Track(track_id=track_id, class_id=class_id, radius=float(radius),
                 colour=tuple(colour or CLASS_COLOURS[class_id]),
                 centres=np.asarray(start, float) + path_offsets(
                     np.asarray(velocity, float), turn_rate, times),
                 angles=0.3 * track_id + spin * times)


def _scene(seed, tracks, frames=FRAMES):
    """Return a scene of `tracks` (bottom to top) on the background and lighting of `seed`."""
    return replace(build_scene(SceneConfig(frames=frames, objects=0, seed=seed)),
                   tracks=tuple(tracks))


def crossing(seed=0):
    """Two pairs of look-alike objects cross, one over the other, plus a third in the way."""
    return _scene(seed, [
        moving(1, DISC, 40, (120, 160), (4.5, 1.6)),
        moving(2, DISC, 40, (650, 170), (-4.5, 1.4)),
        moving(3, SQUARE, 45, (140, 460), (4.0, -1.5)),
        moving(4, SQUARE, 45, (640, 450), (-4.0, -1.4)),
        moving(5, TRIANGLE, 45, (384, 60), (0.3, 3.2)),
    ])


def behind(seed=1):
    """Small objects pass behind a large, slow square: hidden from about 10 to 60 frames."""
    return _scene(seed, [
        moving(1, DISC, 26, (200, 250), (2.1, 0.0)),
        moving(2, TRIANGLE, 30, (740, 300), (-4.5, 0.1)),
        moving(3, DISC, 24, (384, -20), (0.1, 8.0)),
        moving(4, RING, 30, (60, 330), (3.0, 0.0)),
        moving(5, SQUARE, 120, (384, 288), (0.3, 0.1), spin=0.0),  # the occluder, on top
    ])


def reentry(seed=2):
    """Objects leave the frame on a curve and come back 15 to 40 frames later."""
    # constant-turn paths (radius = speed / turn rate) with an arc outside the frame
    return _scene(seed, [
        moving(1, DISC, 35, (171, 313), (-3.66, -2.41), turn_rate=-0.0361),
        moving(2, SQUARE, 35, (561, 190), (4.7, -1.49), turn_rate=-0.043),
        moving(3, TRIANGLE, 35, (275, 162), (-3.47, -4.24), turn_rate=0.0418),
        moving(4, DISC, 35, (384, 300), (1.0, 0.5)),
    ])


def lookalike(seed=3):
    """Five identical discs move in a group, overtaking and brushing past each other."""
    rng = np.random.default_rng(seed)
    tracks = []
    for index in range(5):
        start = (60 + 30 * index, 150 + 70 * index)
        velocity = (rng.uniform(2.5, 5.0), rng.uniform(-1.2, 1.2))
        tracks.append(moving(index + 1, DISC, 32, start, velocity,
                             turn_rate=rng.uniform(-0.01, 0.01)))
    return _scene(seed, tracks)


def crowd(seed=4, objects=20, frames=60):
    """Twenty objects in view at once, drifting slowly: the tracker's cost per frame."""
    rng = np.random.default_rng(seed)
    tracks = []
    for index in range(objects):
        row, column = divmod(index, 5)
        start = (90 + 145 * column + rng.uniform(-15, 15), 80 + 140 * row + rng.uniform(-15, 15))
        tracks.append(moving(index + 1, index % len(CLASS_NAMES), 28, start,
                             rng.uniform(-1.0, 1.0, 2), frames=frames))
    return _scene(seed, tracks, frames)


def scene_truth(scene, t):
    """Return the truth of frame t as `synthetic.render_frame` gives it, without the image."""
    shape = (scene.config.height, scene.config.width)
    id_map = np.zeros(shape, np.uint16)
    for track in scene.tracks:  # bottom to top: the last one drawn owns the pixel
        id_map[shape_mask(track, t, shape)] = track.track_id
    return truth_from_id_map(id_map, track_classes(scene))


def occlusion_scenes():
    """Return every scene by name, in the order the tables list them."""
    return {'crossing': crossing(), 'behind': behind(), 'reentry': reentry(),
            'lookalike': lookalike(), 'crowd': crowd()}
