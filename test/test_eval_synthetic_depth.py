"""Tests of the synthetic scenes' metric depth and 3D truth (segtrack_ros.eval.synthetic_depth)."""

import numpy as np
import pytest
from segtrack_ros.eval.synthetic import build_scene, render_frame, SceneConfig
from segtrack_ros.eval.synthetic_depth import (
    build_depth_scene, depth_image, depth_stamps, DepthConfig, exact_depth, rays,
    SensorModel, truth_3d)

CONFIG = SceneConfig(width=384, height=288, frames=8, objects=6, seed=5)


@pytest.fixture(scope='module')
def depth_scene():
    """Return the 3D layout of a small scene."""
    return build_depth_scene(build_scene(CONFIG))


def test_objects_lie_in_front_of_the_wall_in_draw_order(depth_scene):
    depth, id_map = exact_depth(depth_scene, 4)
    _, truth = render_frame(depth_scene.scene, 4)
    assert np.array_equal(id_map, truth.id_map)  # same size: the same pixels
    wall = depth[id_map == 0]
    assert wall.min() > depth_scene.config.far
    order = [track.track_id for track in depth_scene.scene.tracks]
    distances = [depth_scene.distances[track_id] for track_id in order]
    assert distances == sorted(distances, reverse=True)  # drawn far to near
    assert depth[id_map > 0].min() > depth_scene.config.near * 0.5


def test_truth_is_the_mean_and_extent_of_the_visible_surface(depth_scene):
    _, truth = render_frame(depth_scene.scene, 4)
    depth, _ = exact_depth(depth_scene, 4)
    centroids, sizes = truth_3d(depth_scene, truth, 4)
    for index, track_id in enumerate(truth.ids):
        rows, cols = np.nonzero(truth.id_map == track_id)
        points = rays(depth_scene.colour, rows, cols) * depth[rows, cols, None]
        assert centroids[index] == pytest.approx(points.mean(axis=0), rel=1e-5)
        assert sizes[index] == pytest.approx(np.ptp(points, axis=0), rel=1e-4, abs=1e-6)


def test_a_smaller_depth_image_is_registered():
    depth_scene = build_depth_scene(build_scene(CONFIG), DepthConfig(width=192, height=144))
    camera, colour = depth_scene.depth, depth_scene.colour
    assert (camera.width, camera.height) == (192, 144)
    assert camera.fx == pytest.approx(colour.fx / 2)
    assert (camera.cx + 0.5) * 2 - 0.5 == pytest.approx(colour.cx)
    full, _ = exact_depth(build_depth_scene(build_scene(CONFIG)), 4)
    small, _ = exact_depth(depth_scene, 4)
    # away from edges, depth pixel (r, c) sees what colour pixel (2r + 0.5, 2c + 0.5) sees
    agree = np.isclose(small, (full[0::2, 0::2] + full[1::2, 1::2]) / 2, rtol=0.01)
    assert agree.mean() > 0.95


def test_the_sensor_model_adds_noise_holes_and_flying_pixels():
    sensor = SensorModel(noise=0.002, holes=0.05, flying=1.0)
    depth_scene = build_depth_scene(build_scene(CONFIG), DepthConfig(sensor=sensor))
    exact, id_map = exact_depth(depth_scene, 3)
    noisy = depth_image(depth_scene, 3 / CONFIG.fps)
    assert np.array_equal(noisy, depth_image(depth_scene, 3 / CONFIG.fps), equal_nan=True)
    holes = np.isnan(noisy)
    assert 0.03 < holes.mean() < 0.07
    wall = (id_map == 0) & ~holes
    relative = (noisy[wall] - exact[wall]) / (sensor.noise * exact[wall] ** 2)
    interior = np.abs(relative) < 10  # the wall's edge pixels fly
    assert np.std(relative[interior]) == pytest.approx(1.0, rel=0.1)
    edge = (id_map != np.roll(id_map, 1, axis=1)) & ~holes
    assert np.median(np.abs(noisy[edge] - exact[edge])) > 0.05


def test_depth_comes_at_its_own_rate_and_offset():
    depth_scene = build_depth_scene(build_scene(CONFIG), DepthConfig(every=2, offset=-0.01))
    assert depth_stamps(depth_scene) == pytest.approx([t / 30 - 0.01 for t in (0, 2, 4, 6)])
    # between colour frames the objects keep moving
    assert not np.array_equal(exact_depth(depth_scene, 2)[1], exact_depth(depth_scene, 2.5)[1])
