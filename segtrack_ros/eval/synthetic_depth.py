"""
Metric depth for the synthetic scenes of `synthetic`, with exact per-instance 3D truth.

Each object of a scene becomes a flat plate at a known distance (farther objects are drawn
first, so the draw order stays the depth order), tilted by a random angle, in front of a tilted
background plane, seen by a pinhole camera (`colour_camera`). The depth image is registered to
the colour image: same optical frame, any size of the same aspect ratio. An optional sensor
model adds noise growing with the square of the distance, holes, and flying pixels on depth
edges; depth frames may come at another rate and with an offset in time (objects keep moving
between colour frames). The truth of a colour frame (`truth_3d`) gives, per visible instance,
the centroid and the extent of its visible surface, from its exact mask and exact depths.

>>> depth_scene = build_depth_scene(build_scene(SceneConfig(seed=3)), DepthConfig())
>>> image, truth = render_frame(depth_scene.scene, 0)
>>> depth = depth_image(depth_scene, 0.0)     # float32 metres, NaN = no reading
>>> centroids, sizes = truth_3d(depth_scene, truth, 0)
"""

from dataclasses import dataclass, replace

import cv2
import numpy as np

from segtrack_ros.core.geometry import Camera, DepthMapping, locate
from segtrack_ros.eval.synthetic import (
    build_scene, render_frame, Scene, SceneConfig, shape_mask)


@dataclass(frozen=True)
class SensorModel:
    """
    What a real depth camera adds to exact depth.

    Gaussian noise of standard deviation `noise` · z² (metres); a fraction `holes` of the
    pixels without a reading (blobs and single pixels); on depth edges, a fraction `flying` of
    the pixels reading somewhere between the two surfaces.
    """

    noise: float = 0.002
    holes: float = 0.03
    flying: float = 0.5


@dataclass(frozen=True)
class DepthConfig:
    """
    The 3D layout and the depth camera of a scene.

    `width` × `height` is the depth image's size (0: the colour image's); `fov` the colour
    camera's horizontal field of view in degrees; objects lie between `near` and `far` metres,
    tilted up to `tilt` degrees; one depth frame comes every `every` colour frames, `offset`
    seconds after the colour frame; `sensor` adds a `SensorModel` (None: exact depth).
    """

    width: int = 0
    height: int = 0
    fov: float = 69.0
    near: float = 0.8
    far: float = 2.8
    tilt: float = 35.0
    every: int = 1
    offset: float = 0.0
    sensor: SensorModel = None
    seed: int = 0


@dataclass(frozen=True)
class DepthScene:
    """A scene with its 3D layout: cameras, object plates and the background plane."""

    scene: Scene
    config: DepthConfig
    colour: Camera
    depth: Camera
    distances: dict  # track id -> distance of the plate's centre point (metres, along z)
    normals: dict  # track id -> unit normal of the plate (towards the camera)
    background: tuple  # (unit normal, distance of the plane from the optical centre)


def colour_camera(width, height, fov):
    """Return the pinhole camera of a colour image: square pixels, centre a little off-centre."""
    focal = width / 2 / np.tan(np.radians(fov) / 2)
    return Camera(focal, focal, width / 2 - 0.5 + 0.013 * width, height / 2 - 0.5 - 0.011 * height,
                  width, height)


def registered_camera(colour, width, height):
    """Return the camera of a depth image of `width` × `height` registered to `colour`."""
    scale_x, scale_y = width / colour.width, height / colour.height
    return Camera(colour.fx * scale_x, colour.fy * scale_y, (colour.cx + 0.5) * scale_x - 0.5,
                  (colour.cy + 0.5) * scale_y - 0.5, width, height)


def _normal(rng, tilt):
    """Return a unit normal facing the camera (−z), tilted up to `tilt` degrees."""
    angle, heading = np.radians(rng.uniform(0, tilt)), rng.uniform(0, 2 * np.pi)
    return np.array([np.sin(angle) * np.cos(heading), np.sin(angle) * np.sin(heading),
                     -np.cos(angle)])


def build_depth_scene(scene, config=DepthConfig()):
    """Return the 3D layout of `scene`: plates far to near in draw order, a tilted wall."""
    rng = np.random.default_rng([scene.config.seed, config.seed, 3])
    colour = colour_camera(scene.config.width, scene.config.height, config.fov)
    depth = registered_camera(colour, config.width or colour.width,
                              config.height or colour.height)
    levels = np.linspace(config.far, config.near, len(scene.tracks))
    jitter = (config.far - config.near) / max(len(scene.tracks), 1) / 4
    distances, normals = {}, {}
    for track, level in zip(scene.tracks, levels):
        distances[track.track_id] = float(level + rng.uniform(-jitter, jitter))
        normals[track.track_id] = _normal(rng, config.tilt)
    wall = _normal(rng, 25.0)
    wall_distance = float(wall[2] * (config.far + rng.uniform(1.2, 2.0)))  # n·X = d, d < 0
    return DepthScene(scene, config, colour, depth, distances, normals, (wall, wall_distance))


def rays(camera, rows, cols):
    """Return the rays through pixels (rows, cols) of `camera`, (..., 3) with z = 1."""
    return np.stack([(np.asarray(cols) - camera.cx) / camera.fx,
                     (np.asarray(rows) - camera.cy) / camera.fy,
                     np.ones(np.shape(rows))], axis=-1)


def _plate(depth_scene, track, time):
    """Return (normal, distance) of the plane of `track`'s plate at `time` (frames)."""
    centre = _centre(track, time)
    point = depth_scene.distances[track.track_id] * rays(depth_scene.colour, centre[1], centre[0])
    normal = depth_scene.normals[track.track_id]
    return normal, float(normal @ point)


def _centre(track, time):
    """Return the track's centre (x, y, colour pixels) at a fractional frame `time`."""
    frames = np.arange(len(track.centres))
    return np.array([np.interp(time, frames, track.centres[:, 0]),
                     np.interp(time, frames, track.centres[:, 1])])


def _plane_depth(plane, ray):
    normal, distance = plane
    return distance / (ray @ normal)


def _on_depth_grid(depth_scene, track, time):
    """Return `track` posed at `time` in the depth image's pixels (one frame, index 0)."""
    mapping = DepthMapping.between(depth_scene.depth, (depth_scene.colour.width,
                                                       depth_scene.colour.height))
    scale = (mapping.scale_x + mapping.scale_y) / 2
    centre = (_centre(track, time) - (mapping.offset_x, mapping.offset_y)) / (
        mapping.scale_x, mapping.scale_y)
    frames = np.arange(len(track.angles))
    return replace(track, radius=track.radius / scale, centres=centre[None],
                   angles=np.array([np.interp(time, frames, track.angles)]))


def exact_depth(depth_scene, time):
    """Return the exact depth image (float32 metres) at `time` (colour frames) and its id map."""
    camera = depth_scene.depth
    shape = (camera.height, camera.width)
    id_map = np.zeros(shape, np.uint16)
    planes = {}
    for track in depth_scene.scene.tracks:
        id_map[shape_mask(_on_depth_grid(depth_scene, track, time), 0, shape)] = track.track_id
        planes[track.track_id] = _plate(depth_scene, track, time)
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]]
    all_rays = rays(camera, rows, cols)
    depth = _plane_depth(depth_scene.background, all_rays)
    for track_id in np.unique(id_map[id_map > 0]):
        where = id_map == track_id
        depth[where] = _plane_depth(planes[int(track_id)], all_rays[where])
    return depth.astype(np.float32), id_map


def depth_image(depth_scene, seconds):
    """Return the depth image (float32 metres, NaN = no reading) taken at `seconds`."""
    time = seconds * depth_scene.scene.config.fps
    depth, id_map = exact_depth(depth_scene, time)
    sensor = depth_scene.config.sensor
    if sensor is None:
        return depth
    rng = np.random.default_rng([depth_scene.scene.config.seed, int(round(seconds * 1e6)) % 2**31])
    depth = depth + rng.normal(0, 1, depth.shape).astype(np.float32) * sensor.noise * depth ** 2
    kernel = np.ones((3, 3), np.uint8)
    edges = cv2.dilate(id_map, kernel) != cv2.erode(id_map, kernel)
    flying = edges & (rng.random(depth.shape) < sensor.flying)
    other = np.where(rng.random(depth.shape) < 0.5, cv2.dilate(depth, kernel),
                     cv2.erode(depth, kernel))
    mix = rng.uniform(0.2, 0.8, depth.shape).astype(np.float32)
    depth[flying] += mix[flying] * (other[flying] - depth[flying])
    blobs = rng.random((depth.shape[0] // 16 + 2, depth.shape[1] // 16 + 2)).astype(np.float32)
    blobs = cv2.resize(blobs, depth.shape[::-1], interpolation=cv2.INTER_CUBIC)
    holes = blobs > np.quantile(blobs, 1 - sensor.holes * 0.7)
    holes |= rng.random(depth.shape) < sensor.holes * 0.3
    depth[holes] = np.nan
    return depth


def depth_stamps(depth_scene):
    """Return the times (seconds) of the depth frames, against colour frame t at t / fps."""
    config, fps = depth_scene.config, depth_scene.scene.config.fps
    return [t / fps + config.offset for t in range(0, depth_scene.scene.config.frames,
                                                   config.every)]


def truth_3d(depth_scene, truth, t):
    """
    Return the 3D truth of colour frame `t` whose 2D truth is `truth`: (centroids, sizes).

    Per instance of `truth.ids`: the mean and the extent (max − min per axis) of its visible
    surface points, one per colour pixel of its exact mask, in metres in the optical frame.
    """
    tracks = {track.track_id: track for track in depth_scene.scene.tracks}
    centroids, sizes = np.zeros((len(truth.ids), 3)), np.zeros((len(truth.ids), 3))
    for index, track_id in enumerate(truth.ids):
        rows, cols = np.nonzero(truth.id_map == track_id)
        ray = rays(depth_scene.colour, rows, cols)
        points = ray * _plane_depth(_plate(depth_scene, tracks[int(track_id)], t), ray)[:, None]
        centroids[index] = points.mean(axis=0)
        sizes[index] = points.max(axis=0) - points.min(axis=0)
    return centroids, sizes


def box_centroids(boxes, depth, camera, mapping):
    """
    Return what a box-based estimate gives (K, 3): the median depth inside each 2D box.

    The estimate of simpler packages, to compare with: the box's centre (colour pixels, x1 y1
    x2 y2) back-projected at the median valid depth of the box; NaN where it has none.
    """
    result = np.full((len(boxes), 3), np.nan)
    for index, (x1, y1, x2, y2) in enumerate(np.asarray(boxes, np.float64)):
        cols = np.clip(np.round((np.array([x1, x2]) - mapping.offset_x) / mapping.scale_x),
                       0, camera.width).astype(int)
        rows = np.clip(np.round((np.array([y1, y2]) - mapping.offset_y) / mapping.scale_y),
                       0, camera.height).astype(int)
        window = depth[rows[0]:rows[1], cols[0]:cols[1]]
        window = window[(window > 0) & (window < np.inf)]
        if window.size:
            z = float(np.median(window))
            centre_col = ((x1 + x2) / 2 - 0.5 - mapping.offset_x) / mapping.scale_x
            centre_row = ((y1 + y2) / 2 - 0.5 - mapping.offset_y) / mapping.scale_y
            result[index] = rays(camera, centre_row, centre_col) * z
    return result


def relative_errors(estimates, truths):
    """Return the distance between estimated and true points over the true distance (K,)."""
    return np.linalg.norm(estimates - truths, axis=1) / np.linalg.norm(truths, axis=1)


def owner_of(truth):
    """Return the owner image of a frame's truth: i + 1 where instance i (of truth.ids) is."""
    lookup = np.zeros(int(truth.id_map.max()) + 1, np.uint16)
    lookup[truth.ids] = np.arange(1, len(truth.ids) + 1)
    return lookup[truth.id_map]


def stage_errors(depth_config, seeds=range(6), frames=(3, 10, 17), with_colour_camera=False):
    """
    Return the errors of the 3D stage alone on exact masks, and of the box-based estimate.

    Over the frames `frames` of scenes `seeds` (10 objects each): per located instance, the
    centroid error (relative to the true distance), the extent error (the largest of the three
    axes' errors, relative to the instance's largest true extent), the box-based estimate's
    centroid error, and the class. A dict of arrays: centroid, extent, box, classes.
    """
    centroid, extent, box, classes = [], [], [], []
    for seed in seeds:
        scene = build_scene(SceneConfig(frames=max(frames) + 1, objects=10, seed=seed))
        depth_scene = build_depth_scene(scene, depth_config)
        colour = depth_scene.colour
        mapping = DepthMapping.between(depth_scene.depth, (colour.width, colour.height),
                                       colour if with_colour_camera else None)
        for t in frames:
            _, truth = render_frame(scene, t)
            depth = depth_image(depth_scene, t / scene.config.fps)
            located = locate(owner_of(truth), len(truth.ids), depth, depth_scene.depth, mapping)
            centroids, sizes = truth_3d(depth_scene, truth, t)
            found = located.indices
            centroid.append(relative_errors(located.centroids, centroids[found]))
            extent.append((np.abs(located.box_sizes - sizes[found])
                           / sizes[found].max(axis=1, keepdims=True)).max(axis=1))
            box.append(relative_errors(
                box_centroids(truth.boxes, depth, depth_scene.depth, mapping), centroids)[found])
            classes.append(truth.class_ids[found])
    return {name: np.concatenate(values) for name, values in (
        ('centroid', centroid), ('extent', extent), ('box', box), ('classes', classes))}
