"""
Tests of the 3D stage alone (segtrack_ros.core.geometry) against the synthetic scenes' truth.

The masks are the scenes' exact masks, so only the 3D stage's errors count: centroid errors
are relative to the true distance, extent errors to the instance's largest true extent.
"""

import numpy as np
import pytest
from segtrack_ros.core.geometry import (
    Camera, core_pixels, DepthMapping, GeometryError, locate, Settings, StampPairer)
from segtrack_ros.eval.synthetic import build_scene, CLASS_NAMES, render_frame, SceneConfig
from segtrack_ros.eval.synthetic_depth import (
    build_depth_scene, depth_image, DepthConfig, owner_of, relative_errors, SensorModel,
    stage_errors, truth_3d)

THIN = [CLASS_NAMES.index('triangle'), CLASS_NAMES.index('ring')]


@pytest.fixture(scope='module')
def noiseless():
    """Return the errors on exact depth."""
    return stage_errors(DepthConfig())


@pytest.fixture(scope='module')
def noisy():
    """Return the errors with the sensor model, the depth image smaller than the colour one."""
    return stage_errors(DepthConfig(width=640, height=480, sensor=SensorModel()))


def test_noiseless_depth_is_located_exactly(noiseless):
    assert len(noiseless['centroid']) > 100
    assert np.median(noiseless['centroid']) <= 0.005
    assert np.median(noiseless['extent']) <= 0.05


def test_sensor_model_stays_within_its_targets(noisy):
    assert len(noisy['centroid']) > 100
    assert np.median(noisy['centroid']) <= 0.01
    assert np.percentile(noisy['centroid'], 95) <= 0.03
    assert np.median(noisy['extent']) <= 0.10


@pytest.mark.parametrize('errors', ['noiseless', 'noisy'])
def test_mask_beats_the_box_on_thin_shapes(errors, request):
    """On triangles and rings the box's median depth is often the wall: its tail is long."""
    errors = request.getfixturevalue(errors)
    thin = np.isin(errors['classes'], THIN)
    mask_p95 = np.percentile(errors['centroid'][thin], 95)
    box_p95 = np.nanpercentile(errors['box'][thin], 95)
    assert mask_p95 <= box_p95 / 2, (mask_p95, box_p95)


def test_both_cameras_map_a_zoomed_depth_image():
    """With the colour camera known, a depth image of another field of view maps exactly."""
    scene = build_scene(SceneConfig(frames=5, objects=6, seed=4))
    depth_scene = build_depth_scene(scene, DepthConfig(width=384, height=288))
    _, truth = render_frame(scene, 2)
    depth = depth_image(depth_scene, 2 / scene.config.fps)
    colour = depth_scene.colour
    by_cameras = DepthMapping.between(depth_scene.depth, (colour.width, colour.height), colour)
    by_size = DepthMapping.between(depth_scene.depth, (colour.width, colour.height))
    assert by_cameras.scale_x == pytest.approx(by_size.scale_x)
    assert by_cameras.offset_y == pytest.approx(by_size.offset_y)
    # a depth camera that sees the middle half: only the intrinsics tell where its pixels go
    zoomed = Camera(depth_scene.depth.fx * 2, depth_scene.depth.fy * 2, depth_scene.depth.cx,
                    depth_scene.depth.cy, 384, 288)
    mapping = DepthMapping.between(zoomed, (colour.width, colour.height), colour)
    ratio = DepthMapping.between(zoomed, (colour.width, colour.height))
    u = np.array([0.0, 383.0])
    assert np.allclose(mapping.scale_x * u + mapping.offset_x,
                       (u - zoomed.cx) / zoomed.fx * colour.fx + colour.cx)
    assert mapping.scale_x == pytest.approx(ratio.scale_x / 2)
    located = locate(owner_of(truth), len(truth.ids), depth, depth_scene.depth, by_cameras)
    centroids, _ = truth_3d(depth_scene, truth, 2)
    assert np.median(relative_errors(located.centroids, centroids[located.indices])) < 0.005


def test_a_depth_image_of_another_aspect_ratio_is_refused():
    depth = Camera(500.0, 500.0, 319.5, 239.5, 640, 400)
    with pytest.raises(GeometryError, match='aspect ratio'):
        DepthMapping.between(depth, (768, 576))


def test_size_ratio_maps_pixel_centres():
    mapping = DepthMapping.between(Camera(1, 1, 1, 1, 384, 288), (768, 576))
    assert (mapping.scale_x, mapping.offset_x) == (2.0, 0.5)
    assert DepthMapping.between(Camera(1, 1, 1, 1, 768, 576), (768, 576)).identity


def flat_scene(value, shape=(60, 80)):
    """Return one square instance over a wall at 4 m, the square's depth set to `value`."""
    owner = np.zeros(shape, np.uint16)
    owner[20:40, 30:50] = 1
    depth = np.full(shape, 4.0, np.float32)
    depth[20:40, 30:50] = value
    camera = Camera(100.0, 100.0, 39.5, 29.5, shape[1], shape[0])
    return owner, depth, camera, DepthMapping.between(camera, shape[::-1])


def test_a_fronto_parallel_square_is_exact_and_ignores_no_reading_values():
    owner, depth, camera, mapping = flat_scene(2.0)
    depth[25, 35], depth[26, 36], depth[27, 37] = 0.0, np.nan, np.inf
    depth[30, 40] = 0.5  # one wild reading inside the mask: an outlier
    located = locate(owner, 1, depth, camera, mapping, with_points=True)
    assert located.indices.tolist() == [0]
    # pixel centres 30..49 and 20..39: x from -9.5 to 9.5 pixels, y from -9.5 to 9.5
    # four dropped readings on one side shift the mean of the 252 others a little
    assert located.centroids[0] == pytest.approx([0.0, 0.0, 2.0], abs=1e-3)
    assert located.box_sizes[0] == pytest.approx([19 * 2 / 100, 19 * 2 / 100, 0.0], abs=1e-6)
    assert np.all(located.points[:, 2] == 2.0)
    assert (located.point_indices == 0).all()
    assert len(located.points) == 16 * 16 - 4  # eroded by 2, four readings dropped


def test_too_few_valid_pixels_give_no_3d_and_are_counted():
    owner, depth, camera, mapping = flat_scene(np.nan)
    located = locate(owner, 2, depth, camera, mapping)  # instance 2 is not in the image at all
    assert located.indices.size == 0 and located.too_few == 2
    assert located.centroids.shape == (0, 3)


def test_core_pixels_stay_away_from_other_owners():
    owner = np.zeros((10, 10), np.uint16)
    owner[:, :5], owner[:, 5:] = 1, 2
    core = core_pixels(owner, 1)
    assert core[:, [0, 1, 2, 3, 6, 7, 8, 9]].all() and not core[:, [4, 5]].any()


def test_a_large_depth_image_is_read_on_a_coarser_grid():
    owner, depth, camera, mapping = flat_scene(2.0, shape=(600, 800))
    owner[:] = 0
    owner[200:400, 300:500] = 1
    depth[200:400, 300:500] = 2.0
    camera = Camera(1000.0, 1000.0, 399.5, 299.5, 800, 600)
    located = locate(owner, 1, depth, camera, mapping, Settings(max_pixels=120_000),
                     with_points=True)
    assert len(located.points) < 100 * 100
    assert located.box_sizes[0][:2] == pytest.approx([0.398, 0.398], rel=0.01)


def test_stamp_pairer_takes_the_closest_depth_within_the_tolerance():
    pairer = StampPairer(tolerance=0.02, keep=3)
    assert pairer.pair(1.0) == (None, None)
    for stamp in (0.9, 1.01, 1.05, 1.2):
        pairer.put(stamp, f'depth {stamp}')
    assert pairer.pair(1.04)[0] == 'depth 1.05'
    item, offset = pairer.pair(1.0)  # 1.01 was forgotten: older than 1.04 - tolerance
    assert item is None and offset == pytest.approx(0.05)
    assert pairer.pair(1.13)[0] is None
    assert pairer.pair(1.21)[0] == 'depth 1.2'


def test_stamp_pairer_keeps_frames_a_while_and_a_few():
    pairer = StampPairer(tolerance=0.02, keep_seconds=1.0, keep=5)
    for index in range(10):
        pairer.put(index * 0.1, index)
    assert pairer.pair(0.4) == (None, pytest.approx(0.1))  # 0.0 .. 0.4 are beyond keep=5
    pairer.put(3.0, 'late')  # and 0.5 .. 0.9 are more than a second older than it
    assert pairer.pair(0.9) == (None, pytest.approx(2.1))
    assert pairer.pair(3.0)[0] == 'late'


def test_colour_at_30_hz_and_depth_at_15_hz_pair_only_within_the_tolerance():
    pairer = StampPairer(tolerance=0.02)
    colour = np.arange(60) / 30
    depth = np.arange(30) / 15 + np.where(np.arange(30) % 2, 0.01, -0.01)
    paired = 0
    sent = 0
    for stamp in colour:  # a colour frame is paired after inference, ~150 ms later
        for depth_stamp in depth[sent:np.searchsorted(depth, stamp + 0.15)]:
            pairer.put(float(depth_stamp), float(depth_stamp))
            sent += 1
        item, offset = pairer.pair(float(stamp))
        if item is not None:
            paired += 1
            assert abs(item - stamp) <= 0.02
    assert paired == 30  # every other colour frame has a depth frame 10 ms away


def test_stamp_pairer_pairs_again_after_stamps_jump_back():
    pairer = StampPairer(tolerance=0.02)
    pairer.put(100.0, 'old')
    for index in range(16):  # a looping bag, a restarted camera: stamps start again at 0
        pairer.put(index * 0.1, index)
    assert pairer.pair(1.0)[0] == 10
