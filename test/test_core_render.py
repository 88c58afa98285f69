"""Pixel tests of segtrack_ros.core.render on handcrafted detections."""

import subprocess
import sys

import cv2
import numpy as np
import pytest
from segtrack_ros.core.detections import crops_of_masks, Detections
from segtrack_ros.core.labels import instance_mask
from segtrack_ros.core.render import auto_line_width, RenderConfig, Renderer, text_color
from ultralytics.utils.plotting import colors

HEIGHT, WIDTH = 240, 320
GREY = 90
CLASS_ID, TRACK_ID = 7, 4  # a light class colour (black text) and a dark track colour (white)
X1, Y1, X2, Y2 = 100, 80, 180, 160  # the square mask: columns X1..X2-1, rows Y1..Y2-1
LINE = 3
BLACK, WHITE = (0, 0, 0), (255, 255, 255)
MARGIN = LINE + 2  # how far an anti-aliased line of width LINE reaches past the mask edge


def grey_frame():
    """Return a uniform grey BGR frame."""
    return np.full((HEIGHT, WIDTH, 3), GREY, np.uint8)


def square_detections(x1=X1, y1=Y1, x2=X2, y2=Y2, track_id=TRACK_ID, tracked=True):
    """Make one instance whose mask is the square x1..x2-1 by y1..y2-1."""
    mask = np.zeros((1, HEIGHT, WIDTH), bool)
    mask[0, y1:y2, x1:x2] = True
    return Detections.from_masks(
        mask, ids=[track_id], class_ids=[CLASS_ID], class_names=('square',), scores=[0.87],
        boxes=[[x1, y1, x2, y2]], tracked=tracked)


def draw(frame=None, detections=None, **config):
    """Draw the square (or `detections`) with a fixed line width and `config`."""
    frame = grey_frame() if frame is None else frame
    detections = square_detections() if detections is None else detections
    return Renderer(RenderConfig(line_width=LINE, **config)).draw(frame, detections)


def outside(margin):
    """Return a bool image, True farther than `margin` pixels from the square."""
    far = np.ones((HEIGHT, WIDTH), bool)
    far[Y1 - margin:Y2 + margin, X1 - margin:X2 + margin] = False
    return far


def test_palette_is_meaningful():
    assert colors(CLASS_ID, True) != colors(TRACK_ID, True)
    assert text_color(colors(CLASS_ID, True)) == BLACK
    assert text_color(colors(TRACK_ID, True)) == WHITE


@pytest.mark.parametrize('color_by, key', [('class', CLASS_ID), ('track', TRACK_ID)])
def test_outline_color(color_by, key):
    image = draw(color_by=color_by)
    expected = colors(key, True)
    for row, col in ((120, X1), (Y2 - 1, 140), (120, X2 - 1)):  # left, bottom and right edges
        assert tuple(image[row, col]) == expected, (row, col)
    assert tuple(image[120, X1 - 5]) == (GREY,) * 3  # the line is centred on the edge


@pytest.mark.parametrize('alpha', [0.3, 0.5])
def test_fill_blends_at_mask_alpha(alpha):
    image = draw(color_by='class', mask_alpha=alpha, show_labels=False)
    color = np.array(colors(CLASS_ID, True), float)
    expected = np.round(GREY * (1 - alpha) + color * alpha)
    for row, col in ((130, 140), (150, 110), (100, 170)):
        np.testing.assert_allclose(image[row, col], expected, atol=1)
    assert np.all(image[outside(MARGIN)] == GREY)


def test_no_fill_at_alpha_zero():
    image = draw(mask_alpha=0.0, show_labels=False)
    assert np.all(image[Y1 + MARGIN:Y2 - MARGIN, X1 + MARGIN:X2 - MARGIN] == GREY)


def label_region(**config):
    """Return where the image with labels differs from the one without, and that image."""
    with_labels = draw(show_labels=True, **config)
    without = draw(show_labels=False, **config)
    changed = np.any(with_labels != without, axis=2)
    return changed, with_labels


def test_text_color():
    assert text_color(WHITE) == BLACK and text_color((0, 255, 255)) == BLACK  # yellow
    assert text_color(BLACK) == WHITE and text_color((128, 0, 0)) == WHITE  # dark blue


@pytest.mark.parametrize('color_by, key, ink', [('class', CLASS_ID, BLACK),
                                                ('track', TRACK_ID, WHITE)])
def test_label_box_with_readable_text(color_by, key, ink):
    changed, image = label_region(color_by=color_by)
    assert changed.any(), 'no label drawn'
    rows, cols = np.nonzero(changed)
    assert rows.min() < Y1 and rows.max() < Y1 + 30, 'the label sits at the top of the mask'
    assert cols.min() < X1 + 40
    box = image[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    color = colors(key, True)
    fill = np.count_nonzero(np.all(box == color, axis=2))
    text = np.count_nonzero(np.all(box == ink, axis=2))
    assert fill > 0.4 * box.shape[0] * box.shape[1], 'the label box is filled with the colour'
    assert text > 10, 'the label text is drawn in the readable colour'


def test_label_text():
    detections = square_detections()
    assert Renderer(RenderConfig(color_by='class')).label(detections, 0) == 'square'
    assert Renderer(RenderConfig(color_by='track')).label(detections, 0) == str(TRACK_ID)
    assert Renderer(RenderConfig(show_conf=True)).label(detections, 0) == 'square 0.87'
    plain, _ = label_region(color_by='class')
    with_conf, _ = label_region(color_by='class', show_conf=True)
    width = np.ptp(np.nonzero(plain)[1])
    assert np.ptp(np.nonzero(with_conf)[1]) > width, 'the score widens the label'


def test_no_label_box_without_labels():
    image = draw(show_labels=False)
    assert np.all(image[outside(MARGIN)] == GREY)
    assert not np.all(draw(show_labels=True)[outside(MARGIN)] == GREY)


def test_frame_not_changed_in_place():
    frame = grey_frame()
    image = draw(frame, color_by='track', trail_length=5)
    assert np.all(frame == GREY)
    assert image is not frame and np.any(image != GREY)


def test_empty_detections_leave_the_frame_as_is():
    frame = grey_frame()
    image = Renderer(RenderConfig(trail_length=5)).draw(frame, Detections.empty((HEIGHT, WIDTH)))
    np.testing.assert_array_equal(image, frame)


def moving_square(frame_index):
    """Detect a 60-pixel square moving 20 pixels right a frame: centre x 70 + 20 k, row 120."""
    x1 = 40 + 20 * frame_index
    return square_detections(x1=x1, y1=90, x2=x1 + 60, y2=150)


def draw_moving(frames=6, **config):
    """Draw a tracked moving square frame after frame; return the last annotated frame."""
    renderer = Renderer(RenderConfig(color_by='track', line_width=LINE, show_labels=False,
                                     mask_alpha=0.0, **config))
    frame = grey_frame()
    for index in range(frames):
        image = renderer.draw(frame, moving_square(index))
    assert np.all(frame == GREY)
    return image


def test_trail_joins_the_last_centres():
    image = draw_moving(trail_length=5)
    color = colors(TRACK_ID, True)
    # Centres of frames 1..5 are x 90..170; the last square spans x 140..199.
    for col in range(92, 136):
        assert tuple(image[120, col]) == color, col
    # Frame 0's centre (x 70) has left the 5-frame trail.
    assert np.all(image[120, 60:86] == GREY)
    assert np.all(image[110, 60:136] == GREY) and np.all(image[130, 60:136] == GREY)


@pytest.mark.parametrize('config, tracked', [({'trail_length': 0}, True),
                                             ({'trail_length': 5}, False)])
def test_no_trail(config, tracked):
    renderer = Renderer(RenderConfig(color_by='class', line_width=LINE, show_labels=False,
                                     mask_alpha=0.0, **config))
    for index in range(6):
        detections = moving_square(index)
        if not tracked:
            detections = Detections(**{**detections.__dict__, 'tracked': False})
        image = renderer.draw(grey_frame(), detections)
    assert np.all(image[:, :140 - MARGIN] == GREY)


def test_auto_line_width():
    assert auto_line_width((HEIGHT, WIDTH, 3)) == 2
    assert auto_line_width((1080, 1920, 3)) == 4
    assert draw_moving(frames=1, trail_length=0).shape == (HEIGHT, WIDTH, 3)


def low_resolution_discs():
    """Two overlapping discs at a 3 times lower resolution, letterboxed (as at imgsz 640)."""
    masks = np.zeros((2, 96, 128), np.uint8)
    cv2.circle(masks[0], (50, 50), 20, 1, -1)
    cv2.circle(masks[1], (75, 45), 25, 1, -1)
    crops, origins = crops_of_masks(masks.astype(bool))
    return Detections(
        ids=np.array([3, 9]), class_ids=np.array([CLASS_ID, 2]), class_names=('a', 'b'),
        scores=np.array([0.9, 0.8], np.float32), boxes=np.zeros((2, 4), np.float32),
        crops=crops, origins=origins, mask_shape=(96, 128), image_shape=(240, 384))


def test_fill_covers_the_upscaled_masks_exactly():
    detections = low_resolution_discs()
    frame = np.full((240, 384, 3), GREY, np.uint8)
    image = Renderer(RenderConfig(line_width=1, show_labels=False, mask_alpha=0.5)).draw(
        frame, detections)
    owner = instance_mask(detections)
    outline = np.zeros((240, 384), bool)
    for index in range(2):  # the outline is drawn over the fill, along each mask's edge
        mask = detections.mask(index).astype(np.uint8)
        outline |= cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, np.ones((5, 5), np.uint8)) > 0
    for value, key in ((3, CLASS_ID), (9, 2)):
        expected = np.round(GREY * 0.5 + np.array(colors(key, True)) * 0.5)
        inside = (owner == value) & ~outline
        assert inside.sum() > 1000
        np.testing.assert_allclose(image[inside], np.broadcast_to(expected, (inside.sum(), 3)),
                                   atol=1)
    assert np.all(image[(owner == 0) & ~outline] == GREY)


def test_outline_follows_the_upscaled_mask():
    detections = low_resolution_discs()
    image = Renderer(RenderConfig(line_width=1, show_labels=False, mask_alpha=0.0)).draw(
        np.full((240, 384, 3), GREY, np.uint8), detections)
    drawn = np.any(image != GREY, axis=2)
    edges = np.zeros((240, 384), np.uint8)
    for index in range(2):
        mask = detections.mask(index).astype(np.uint8)
        edges |= cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
    distance = cv2.distanceTransform(1 - edges, cv2.DIST_L2, 5)
    assert drawn.sum() > 300
    assert distance[drawn].max() <= 3, 'an outline pixel farther than one source pixel'


def test_importing_render_loads_no_torch():
    code = 'import sys, segtrack_ros.core.render; print("torch" in sys.modules)'
    output = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            check=True).stdout
    assert output.strip() == 'False'
