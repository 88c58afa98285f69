"""
Synthetic videos of moving shapes with exact, MOTS-style ground truth.

Four classes of flat-coloured shapes move over textured, noisy backgrounds: straight or curved
paths, crossings, occlusions (draw order is depth), objects entering and leaving the frame and a
global brightness change. Each frame comes with the visible (occlusion applied) mask, class id and
persistent instance id of every object. Everything is deterministic from the seed and needs only
numpy and OpenCV, no ROS and no model. The module is over the usual length because it also
writes the same scenes and truth as a YOLO segmentation dataset (`write_yolo_dataset`, masks as
polygons), the one the bundled model was trained on.

Usage::

    from segtrack_ros.eval.synthetic import SceneConfig, generate_scene, write_video, load_truth

    for frame, truth in generate_scene(SceneConfig(frames=30, seed=3)):
        print(truth.ids, truth.class_ids, truth.boxes)
    truths = write_video('scene.avi', SceneConfig(seed=3))  # also writes scene.npz
    assert load_truth('scene.npz')[0].ids.tolist() == truths[0].ids.tolist()
"""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

CLASS_NAMES = ('disc', 'square', 'triangle', 'ring')
# BGR, saturated so they differ from each other and from the muted backgrounds.
CLASS_COLOURS = ((40, 40, 220), (50, 190, 40), (210, 100, 30), (20, 200, 230))
RING_HOLE = 0.55  # inner radius of a ring as a fraction of its outer radius
REFERENCE_SIZE = (768, 576)  # object sizes and speeds below are in pixels at this frame size
SUBPIXEL_BITS = 4  # fixed-point fraction bits of OpenCV's drawing functions


@dataclass(frozen=True)
class SceneConfig:
    """
    Size, length, object count and seed of one synthetic video.

    ``objects`` counts tracks over the whole video; as objects enter and leave, a frame usually
    shows fewer of them (about 3 to 8 for the defaults).
    """

    width: int = 768
    height: int = 576
    frames: int = 90
    objects: int = 8
    seed: int = 0
    fps: float = 30.0


@dataclass(frozen=True)
class Track:
    """
    One object over the whole video: class, look, and per-frame pose.

    ``centres`` (frames x 2, pixels) and ``angles`` (frames, radians) give the pose at each frame;
    the radius is that of the circumscribed circle.
    """

    track_id: int
    class_id: int
    radius: float
    colour: tuple[int, int, int]
    centres: np.ndarray
    angles: np.ndarray


@dataclass(frozen=True)
class Scene:
    """
    Everything needed to render any frame of a video; tracks are listed bottom (far) to top.

    ``background`` is float32 BGR; ``gains`` (per frame) scale the whole image's brightness.
    """

    config: SceneConfig
    background: np.ndarray
    tracks: tuple[Track, ...]
    gains: np.ndarray
    noise_sigma: float


@dataclass(frozen=True)
class FrameTruth:
    """
    Ground truth of one frame: which instance owns each pixel, and their classes.

    ``id_map`` (H x W, uint16) holds the persistent instance id of the object visible at each
    pixel, 0 for background. ``ids`` lists the ids present (ascending), ``class_ids`` their
    classes.
    """

    id_map: np.ndarray
    ids: np.ndarray
    class_ids: np.ndarray

    @property
    def masks(self) -> np.ndarray:
        """Return the visible masks, N x H x W bool, in the order of ``ids``; they are disjoint."""
        return self.id_map[None] == self.ids[:, None, None]

    @property
    def boxes(self) -> np.ndarray:
        """Return the visible masks' boxes, N x 4 float32 (x1, y1, x2, y2), x2 and y2 exclusive."""
        return np.array([mask_box(mask) for mask in self.masks], np.float32).reshape(-1, 4)


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Return the bounding box (x1, y1, x2, y2) of a non-empty bool mask, x2 and y2 exclusive."""
    xs = np.flatnonzero(mask.any(axis=0))
    ys = np.flatnonzero(mask.any(axis=1))
    return int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1


def path_offsets(velocity: np.ndarray, turn_rate: float, times: np.ndarray) -> np.ndarray:
    """
    Return the displacements (len(times) x 2) after ``times`` frames of a constant-turn path.

    The velocity (pixels per frame) rotates by ``turn_rate`` radians per frame; 0 is a straight
    line. Closed form of the integral, exact for negative times too.
    """
    angle = turn_rate * times
    along = times * np.sinc(angle / (2 * np.pi)) * np.cos(angle / 2)  # sin(angle) / turn_rate
    across = times * np.sinc(angle / (2 * np.pi)) * np.sin(angle / 2)  # (1 - cos) / turn_rate
    vx, vy = velocity
    return np.stack([along * vx - across * vy, across * vx + along * vy], axis=1)


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Return a muted random background: colour gradient, smooth blotches and texture lines."""
    grey = rng.uniform(50, 200, size=(2, 1)) + rng.uniform(-30, 30, size=(2, 3))
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = (np.cos(angle) * xs / width + np.sin(angle) * ys / height + 1) / 2
    image = grey[0] + (grey[1] - grey[0]) * ramp[..., None]
    blotches = rng.normal(0, rng.uniform(8, 25), size=(height // 64 + 2, width // 64 + 2, 3))
    image += cv2.resize(blotches, (width, height), interpolation=cv2.INTER_CUBIC)
    image = np.clip(image, 0, 255).astype(np.uint8)
    for _ in range(rng.integers(10, 40)):
        start, end = rng.uniform(-0.2, 1.2, size=(2, 2)) * (width, height)
        colour = np.clip(rng.uniform(40, 220) + rng.uniform(-40, 40, 3), 0, 255)
        cv2.line(image, tuple(start.astype(int)), tuple(end.astype(int)), colour.tolist(),
                 int(rng.integers(1, 4)), cv2.LINE_AA)
    return image.astype(np.float32)


def _track(rng: np.random.Generator, config: SceneConfig, track_id: int, class_id: int) -> Track:
    """Return a random track that passes near the frame centre at a random time."""
    scale = min(config.width / REFERENCE_SIZE[0], config.height / REFERENCE_SIZE[1])
    size = np.array([config.width, config.height])
    meeting = np.clip(rng.normal(size / 2, size * 0.22), 0, size)
    heading = rng.uniform(0, 2 * np.pi)
    velocity = rng.uniform(2.5, 9) * scale * np.array([np.cos(heading), np.sin(heading)])
    turn_rate = rng.choice([0.0, rng.uniform(0.01, 0.04) * rng.choice([-1, 1])])
    times = np.arange(config.frames) - rng.uniform(-0.5, 1.5) * config.frames
    # Shade and tint vary per instance, so that overlapping objects of a class stay separable.
    colour = np.array(CLASS_COLOURS[class_id]) * rng.uniform(0.65, 1.15) + rng.uniform(-15, 15, 3)
    return Track(
        track_id=track_id,
        class_id=class_id,
        radius=rng.uniform(20, 60) * scale,
        colour=tuple(int(c) for c in np.clip(colour, 0, 255)),
        centres=meeting + path_offsets(velocity, turn_rate, times),
        angles=rng.uniform(0, 2 * np.pi) + rng.uniform(-0.05, 0.05) * np.arange(config.frames),
    )


def build_scene(config: SceneConfig) -> Scene:
    """
    Return the deterministic scene of ``config``: background, tracks (bottom to top), gains.

    Classes are balanced over the tracks; instance ids (1, 2, ...) are unrelated to depth.
    """
    rng = np.random.default_rng(config.seed)
    background = _background(rng, config.width, config.height)
    classes = rng.permutation(np.arange(config.objects) % len(CLASS_NAMES))
    depth_order = rng.permutation(config.objects)
    tracks = tuple(_track(rng, config, int(i) + 1, int(classes[i])) for i in depth_order)
    period = rng.uniform(40, 160)
    gains = 1 + rng.uniform(0.1, 0.35) * np.sin(
        2 * np.pi * np.arange(config.frames) / period + rng.uniform(0, 2 * np.pi))
    return Scene(config, background, tracks, gains, noise_sigma=float(rng.uniform(2, 7)))


def _polygon(track: Track, t: int) -> np.ndarray:
    """Return the fixed-point vertices of a square or triangle track at frame t."""
    corners = 4 if CLASS_NAMES[track.class_id] == 'square' else 3
    angles = track.angles[t] + 2 * np.pi * np.arange(corners) / corners
    points = track.centres[t] + track.radius * np.stack([np.cos(angles), np.sin(angles)], 1)
    return np.round(points * (1 << SUBPIXEL_BITS)).astype(np.int32)


def shape_mask(track: Track, t: int, shape: tuple[int, int]) -> np.ndarray:
    """Return the full (unoccluded) H x W bool mask of a track at frame t, ring hole filled."""
    mask = np.zeros(shape, np.uint8)
    name = CLASS_NAMES[track.class_id]
    centre = tuple(int(c) for c in np.round(track.centres[t] * (1 << SUBPIXEL_BITS)))
    radius = int(round(track.radius * (1 << SUBPIXEL_BITS)))
    if name in ('square', 'triangle'):
        cv2.fillPoly(mask, [_polygon(track, t)], 1, cv2.LINE_8, SUBPIXEL_BITS)
        return mask.astype(bool)
    cv2.circle(mask, centre, radius, 1, -1, cv2.LINE_8, SUBPIXEL_BITS)
    if name == 'ring':
        cv2.circle(mask, centre, int(radius * RING_HOLE), 0, -1, cv2.LINE_8, SUBPIXEL_BITS)
    return mask.astype(bool)


def render_frame(scene: Scene, t: int) -> tuple[np.ndarray, FrameTruth]:
    """Return frame t of a scene (BGR uint8) and its ground truth; frames are independent."""
    config = scene.config
    shape = (config.height, config.width)
    image = scene.background.copy()
    id_map = np.zeros(shape, np.uint16)
    for track in scene.tracks:
        mask = shape_mask(track, t, shape)
        image[mask] = track.colour
        id_map[mask] = track.track_id
    noise = np.random.default_rng([config.seed, t]).normal(0, scene.noise_sigma, image.shape)
    image = np.clip(image * scene.gains[t] + noise, 0, 255).astype(np.uint8)
    return image, truth_from_id_map(id_map, track_classes(scene))


def track_classes(scene: Scene) -> np.ndarray:
    """Return the class of every instance id, indexed by id (index 0, background, holds -1)."""
    classes = np.full(len(scene.tracks) + 1, -1, np.int32)
    for track in scene.tracks:
        classes[track.track_id] = track.class_id
    return classes


def truth_from_id_map(id_map: np.ndarray, classes: np.ndarray) -> FrameTruth:
    """Return the ground truth of an instance id map, given the class of every id."""
    ids = np.unique(id_map)
    ids = ids[ids > 0].astype(np.int32)
    return FrameTruth(id_map, ids, classes[ids])


def generate_scene(config: SceneConfig) -> Iterator[tuple[np.ndarray, FrameTruth]]:
    """Yield every frame (BGR uint8) of the video of ``config`` with its ground truth."""
    scene = build_scene(config)
    for t in range(config.frames):
        yield render_frame(scene, t)


def save_truth(path: str | Path, truths: list[FrameTruth], classes: np.ndarray) -> None:
    """Save a video's ground truth to a compressed .npz (id maps and the class of every id)."""
    np.savez_compressed(path, id_maps=np.stack([truth.id_map for truth in truths]),
                        classes=classes, class_names=np.array(CLASS_NAMES))


def load_truth(path: str | Path) -> list[FrameTruth]:
    """Load the ground truth saved by ``save_truth`` or ``write_video``, one entry per frame."""
    with np.load(path) as data:
        return [truth_from_id_map(id_map, data['classes']) for id_map in data['id_maps']]


def write_video(path: str | Path, config: SceneConfig) -> list[FrameTruth]:
    """
    Write the video of ``config`` as MJPG .avi and its ground truth next to it (.npz).

    Return the ground truth, one entry per frame; ``load_truth`` reads the .npz back.
    """
    path = Path(path)
    scene = build_scene(config)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), config.fps,
                             (config.width, config.height))
    if not writer.isOpened():
        raise OSError(f'cannot write video {path}')
    truths = []
    try:
        for t in range(config.frames):
            image, truth = render_frame(scene, t)
            writer.write(image)
            truths.append(truth)
    finally:
        writer.release()
    save_truth(path.with_suffix('.npz'), truths, track_classes(scene))
    return truths


def _join(polygon: np.ndarray, part: np.ndarray) -> np.ndarray:
    """
    Return one polygon tracing ``polygon`` and ``part``, linked by a zero-width bridge.

    The bridge joins their closest vertices, so filling the result (even-odd, as OpenCV does)
    gives both areas, or ``polygon`` minus ``part`` when ``part`` is a hole.
    """
    distances = ((polygon[:, None] - part[None]) ** 2).sum(-1)
    i, j = np.unravel_index(distances.argmin(), distances.shape)
    return np.concatenate([polygon[:i + 1], np.roll(part, -j, 0), part[j:j + 1], polygon[i:]])


def mask_polygon(mask: np.ndarray, tolerance: float = 0.7) -> np.ndarray:
    """
    Return one polygon (K x 2 float, pixels) whose even-odd fill is the bool mask.

    All outer contours and holes (a ring's hole, parts split by occlusion) are joined by
    zero-width bridges, nearest part first, after simplification to ``tolerance`` pixels.
    """
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    parts = [cv2.approxPolyDP(c, tolerance, True)[:, 0].astype(np.float64) for c in contours]
    parts.sort(key=len, reverse=True)
    polygon, rest = parts[0], parts[1:]
    while rest:
        nearest = min(range(len(rest)), key=lambda k: _gap(polygon, rest[k]))
        polygon = _join(polygon, rest.pop(nearest))
    return polygon


def _gap(polygon: np.ndarray, part: np.ndarray) -> float:
    """Return the smallest distance between a vertex of ``polygon`` and one of ``part``."""
    return float(np.sqrt(((polygon[:, None] - part[None]) ** 2).sum(-1).min()))


def yolo_label_lines(truth: FrameTruth, min_area: float) -> list[str]:
    """
    Return Ultralytics segmentation label lines (class, normalized polygon) of a frame's truth.

    Instances with fewer than ``min_area`` visible pixels are left out.
    """
    height, width = truth.id_map.shape
    lines = []
    for class_id, mask in zip(truth.class_ids, truth.masks):
        if mask.sum() < min_area:
            continue
        points = mask_polygon(mask) / (width, height)
        lines.append(' '.join([str(class_id), *(f'{v:.5f}' for v in points.ravel())]))
    return lines


def _random_frames(seed: int, count: int) -> Iterator[tuple[np.ndarray, FrameTruth]]:
    """Yield ``count`` frames with truth, each a random frame of its own random short scene."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        config = SceneConfig(frames=60, objects=int(rng.integers(4, 11)),
                             seed=int(rng.integers(2**31)))
        yield render_frame(build_scene(config), int(rng.integers(config.frames)))


def _write_split(root: Path, split: str, samples: Iterable[tuple[np.ndarray, FrameTruth]],
                 imgsz: int) -> None:
    """Write frames and their truth as images/<split>/*.jpg and labels/<split>/*.txt."""
    (root / 'images' / split).mkdir(parents=True, exist_ok=True)
    (root / 'labels' / split).mkdir(parents=True, exist_ok=True)
    for index, (image, truth) in enumerate(samples):
        ratio = imgsz / max(image.shape[:2])
        # Linear interpolation, as Ultralytics' LetterBox resizes frames at inference.
        small = cv2.resize(image, None, fx=ratio, fy=ratio, interpolation=cv2.INTER_LINEAR)
        cv2.imwrite(str(root / 'images' / split / f'{index:06d}.jpg'), small)
        lines = yolo_label_lines(truth, min_area=(4 / ratio) ** 2)
        (root / 'labels' / split / f'{index:06d}.txt').write_text(''.join(f'{x}\n' for x in lines))


def write_yolo_dataset(root: str | Path, train_seed: int = 0, val_seed: int = 1,
                       n_train: int = 900, n_val: int = 150, imgsz: int = 320,
                       test_video: SceneConfig | None = SceneConfig(seed=2)) -> Path:
    """
    Write an Ultralytics segmentation dataset of synthetic frames; return its data.yaml.

    Train and val images are random frames of random scenes (seeds ``train_seed``, ``val_seed``);
    the test split, if any, holds every frame of the ``test_video``. Images are resized so the
    long side is ``imgsz``; labels hold one polygon per visible instance (see ``mask_polygon``),
    leaving out instances under 4 x 4 pixels at ``imgsz``.
    """
    root = Path(root).resolve()
    _write_split(root, 'train', _random_frames(train_seed, n_train), imgsz)
    _write_split(root, 'val', _random_frames(val_seed, n_val), imgsz)
    splits = 'train: images/train\nval: images/val\n'
    if test_video is not None:
        _write_split(root, 'test', generate_scene(test_video), imgsz)
        splits += 'test: images/test\n'
    names = ''.join(f'  {i}: {name}\n' for i, name in enumerate(CLASS_NAMES))
    data = root / 'data.yaml'
    data.write_text(f'path: {root}\n{splits}names:\n{names}')
    return data
