"""
Where each instance is in 3D, from a depth image registered to the colour image.

Per instance: its mask on the depth grid, eroded (pixels next to another instance or the
background sit on a depth jump, where sensors produce "flying pixels" between the two surfaces),
the valid depths in it, the outliers beyond `mad_factor` robust standard deviations (1.4826 MADs)
from the median dropped, and the rest back-projected with the depth camera's intrinsics: a 3D
centroid (the mean of those points) and an axis-aligned box (robust percentiles of them), in the
depth camera's optical frame (x right, y down, z forward, metres). Too few valid pixels give no
3D for that instance: it is counted, not guessed.

Depth images are float32 metres here; 0, NaN and +-inf mean no reading (REP 118). The depth
image may have another size than the colour image (`DepthMapping`): through both cameras'
intrinsics when the colour camera's are known, else through the size ratio. `StampPairer` pairs
colour frames with the newest depth frames by stamp. Only numpy and OpenCV.
"""

from dataclasses import dataclass, replace
import threading

import cv2
import numpy as np


class GeometryError(ValueError):
    """Depth input that cannot be used with the colour image; the message names the fix."""


@dataclass(frozen=True)
class Camera:
    """Pinhole intrinsics (pixels) of an image of `width` × `height`: `K` without the skew."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int


@dataclass(frozen=True)
class DepthMapping:
    """
    Where each depth pixel lies in the colour image: u_colour = scale_x · u_depth + offset_x.

    Registered images share one optical frame, so the map is a scale and an offset per axis.
    """

    scale_x: float
    offset_x: float
    scale_y: float
    offset_y: float

    @classmethod
    def between(cls, depth, colour_size, colour=None, tolerance=0.01):
        """
        Return the mapping from the depth image of `depth` (a Camera) to the colour image.

        `colour_size` is (width, height) of the colour image; `colour`, its Camera when known.
        Without it, the images must have the same aspect ratio (within `tolerance`): the depth
        image is then a resize of the colour image. Raises GeometryError otherwise.
        """
        width, height = colour_size
        if colour is not None:
            return cls(colour.fx / depth.fx, colour.cx - colour.fx / depth.fx * depth.cx,
                       colour.fy / depth.fy, colour.cy - colour.fy / depth.fy * depth.cy)
        if abs(depth.width * height / (depth.height * width) - 1) > tolerance:
            raise GeometryError(
                f'depth image {depth.width}x{depth.height} does not have the aspect ratio of '
                f'the colour image {width}x{height}: publish the depth registered to the colour '
                'image (e.g. realsense align_depth, aligned_depth_to_color topics)')
        scale_x, scale_y = width / depth.width, height / depth.height
        # pixel centres map to pixel centres: (u + 0.5) scales
        return cls(scale_x, (scale_x - 1) / 2, scale_y, (scale_y - 1) / 2)

    @property
    def identity(self):
        """Tell whether depth and colour pixels coincide."""
        return (self.scale_x, self.offset_x, self.scale_y, self.offset_y) == (1, 0, 1, 0)


@dataclass(frozen=True)
class Settings:
    """
    How instances are located.

    The depth image is read on a grid of every `stride`-th pixel, the stride chosen so that at
    most about `max_pixels` are read (`stride_for`); masks are eroded by `erode` pixels of the
    depth image (at least one of the grid). Depths farther than `mad_factor` robust standard
    deviations from the median, and at least `min_spread` metres (a millimetre depth image
    quantises), are outliers. An instance with fewer than `min_points` inliers gets no 3D.
    """

    erode: int = 2
    min_points: int = 20
    mad_factor: float = 3.0
    min_spread: float = 0.002
    max_pixels: int = 150_000


@dataclass(frozen=True)
class Located:
    """
    The 3D result of one frame, for the instances that have one.

    `indices` (M,) are the instances' indices (into the detections); `centroids`, `box_centres`
    and `box_sizes` are (M, 3) float64 metres in the depth optical frame. `points` (P, 3)
    float32 and `point_indices` (P,) int32 (the instance index of each point) are the inlier
    points when asked for, else None. `too_few` counts the instances left without 3D.
    """

    indices: np.ndarray
    centroids: np.ndarray
    box_centres: np.ndarray
    box_sizes: np.ndarray
    points: np.ndarray = None
    point_indices: np.ndarray = None
    too_few: int = 0


def stride_for(shape, max_pixels):
    """Return the stride of the grid on which an image of `shape` is read (1, 2, ...)."""
    return max(1, round(float(np.sqrt(shape[0] * shape[1] / max_pixels))))


def owner_on_depth(owner, depth_shape, mapping):
    """
    Return the owner image (colour size, 0 = background, i + 1 = instance i) on the depth grid.

    Nearest sampling: a depth pixel takes the owner of the colour pixel its centre falls in.
    """
    height, width = depth_shape
    if mapping.identity and owner.shape == (height, width):
        return owner
    step = mapping.scale_x
    if (mapping.offset_x, mapping.offset_y) == (0, 0) and step == mapping.scale_y == int(step):
        picked = owner[::int(step), ::int(step)][:height, :width]  # the same pixels, faster
        if picked.shape == (height, width):
            return np.ascontiguousarray(picked)
    matrix = np.array([[mapping.scale_x, 0, mapping.offset_x],
                       [0, mapping.scale_y, mapping.offset_y]], np.float64)
    return cv2.warpAffine(owner, matrix, (width, height),
                          flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def core_pixels(owner, erode):
    """
    Return where `owner` has the same owner (not 0) all over each (2·erode + 1)² window.

    One pass for all instances: the window's minimum equals its maximum.
    """
    if erode <= 0:
        return owner > 0
    kernel = np.ones((2 * erode + 1, 2 * erode + 1), np.uint8)
    low = cv2.erode(owner, kernel, borderType=cv2.BORDER_REPLICATE)
    high = cv2.dilate(owner, kernel, borderType=cv2.BORDER_REPLICATE)
    return (low == high) & (low > 0)


def locate(owner, count, depth, camera, mapping, settings=Settings(), with_points=False):
    """
    Locate `count` instances in 3D: see the module's docstring.

    `owner` is the uint16 owner image at the colour image's size (0 = background, i + 1 =
    instance i, as `labels.OwnerImage.image` makes it); `depth` is float32 metres with the
    intrinsics `camera`; `mapping` maps depth pixels to colour pixels. All instances at once:
    the work follows the number of pixels, hardly the number of instances. Returns `Located`.
    """
    stride = stride_for(depth.shape, settings.max_pixels)
    if stride > 1:
        depth = np.ascontiguousarray(depth[::stride, ::stride])
        camera = Camera(camera.fx / stride, camera.fy / stride, camera.cx / stride,
                        camera.cy / stride, depth.shape[1], depth.shape[0])
        mapping = DepthMapping(mapping.scale_x * stride, mapping.offset_x,
                               mapping.scale_y * stride, mapping.offset_y)
    owner = owner_on_depth(owner, depth.shape, mapping)
    erode = max(1, round(settings.erode / stride)) if settings.erode else 0
    core = core_pixels(owner, erode)
    core &= depth > 0
    core &= depth < np.inf  # NaN compares false
    # every masked pixel, grouped by instance; a stable sort keeps each group's rows ascending
    flat = np.flatnonzero(owner)
    labels = owner.ravel()[flat]
    order = np.argsort(labels, kind='stable')
    flat, labels = flat[order], labels[order]
    groups = _Groups(labels, count)
    rows, cols = np.divmod(flat, depth.shape[1])
    extent = np.stack([groups.reduce(np.minimum, cols, 0), groups.first(rows),
                       groups.reduce(np.maximum, cols, 0), groups.last(rows)], axis=1)
    # the core pixels with a reading, then the inliers among them, still grouped
    good = core.ravel()[flat]
    flat, labels, rows, cols = flat[good], labels[good], rows[good], cols[good]
    groups = _Groups(labels, count)
    z = depth.ravel()[flat]
    median = groups.median(z)
    deviation = np.abs(z - _by_label(median)[labels])
    spread = np.maximum(settings.mad_factor * 1.4826 * groups.median(deviation),
                        settings.min_spread)
    inlier = deviation <= _by_label(spread)[labels]
    flat, labels, rows, cols, z = flat[inlier], labels[inlier], rows[inlier], cols[inlier], z[
        inlier]
    groups = _Groups(labels, count)
    chosen = np.flatnonzero(groups.sizes >= settings.min_points)
    ray_x = (cols.astype(np.float32) - np.float32(camera.cx)) / np.float32(camera.fx)
    ray_y = (rows.astype(np.float32) - np.float32(camera.cy)) / np.float32(camera.fy)
    x, y = ray_x * z, ray_y * z
    sizes = np.maximum(groups.sizes[chosen, None], 1)
    centroids = np.stack([groups.reduce(np.add, values.astype(np.float64), 0.0)
                          for values in (x, y, z)], axis=1)[chosen] / sizes
    # The box spans the smoothed surface, where noise does not stretch the extremes, out to
    # the whole mask: the erosion took off a few pixels, more at sharp corners.
    reliable = np.zeros(depth.shape, bool)
    reliable.ravel()[flat] = True
    sums, weights = _window_sums(depth, reliable, erode)
    smooth = sums.ravel()[flat] / np.maximum(weights.ravel()[flat], 1)
    surface = (ray_x * smooth, ray_y * smooth, smooth)
    low = np.stack([groups.reduce(np.minimum, v, np.inf) for v in surface], axis=1)
    high = np.stack([groups.reduce(np.maximum, v, -np.inf) for v in surface], axis=1)
    core_extent = np.stack([groups.reduce(np.minimum, cols, 0), groups.first(rows),
                            groups.reduce(np.maximum, cols, 0), groups.last(rows)], axis=1)
    # on a grid of stride s, a mask's edge lies on average (s - 1) / 2 pixels past its last
    # pixel read
    beyond = (stride - 1) / (2 * stride)
    scale = median[:, None] / (camera.fx, camera.fy)
    low, high = low.astype(np.float64), high.astype(np.float64)
    low[:, :2] -= (core_extent[:, :2] - extent[:, :2] + beyond) * scale
    high[:, :2] += (extent[:, 2:] - core_extent[:, 2:] + beyond) * scale
    low, high = low[chosen], high[chosen]
    result = Located(indices=chosen, centroids=centroids, box_centres=(low + high) / 2,
                     box_sizes=high - low, too_few=count - len(chosen))
    if not with_points:
        return result
    keep = _by_label(groups.sizes >= settings.min_points)[labels]
    return replace(result, points=np.stack([x[keep], y[keep], z[keep]], axis=1),
                   point_indices=labels[keep].astype(np.int32) - 1)


def _by_label(values):
    """Return per-instance `values` indexable by label (i + 1 for instance i)."""
    return np.concatenate((values[:1], values))


def _window_sums(depth, usable, radius):
    """
    Return the sum of the usable depths, and their count, in each (2·radius + 1)² window.

    Their ratio at a pixel that `core_pixels` kept is the depth smoothed within that instance
    (the window lies inside its mask): noise drops, and with only inliers usable, no other
    surface and no outlier mixes in.
    """
    size = (2 * radius + 1, 2 * radius + 1)
    masked = np.zeros(depth.shape, np.float32)
    np.copyto(masked, depth, where=usable)
    return (cv2.boxFilter(masked, -1, size, normalize=False),
            cv2.boxFilter(usable.view(np.uint8), cv2.CV_32F, size, normalize=False))


class _Groups:
    """Values grouped by instance: `labels` (1..count, i + 1 for instance i) ascending."""

    def __init__(self, labels, count):
        bounds = np.searchsorted(labels, np.arange(1, count + 2))
        self.starts, self.sizes = bounds[:-1], np.diff(bounds)
        self.labels = labels

    def first(self, values):
        """Return each group's first value (0 for an empty group)."""
        return self._at(values, self.starts)

    def last(self, values):
        """Return each group's last value (0 for an empty group)."""
        return self._at(values, self.starts + self.sizes - 1)

    def _at(self, values, positions):
        result = np.zeros(len(self.sizes), values.dtype)
        full = self.sizes > 0
        result[full] = values[positions[full]]
        return result

    def reduce(self, ufunc, values, empty):
        """Return `ufunc` reduced over each group (`empty` for an empty one)."""
        result = np.full((len(self.sizes),) + values.shape[1:], empty, np.result_type(values))
        full = self.sizes > 0
        if full.any():
            result[full] = ufunc.reduceat(values, self.starts[full], axis=0)
        return result

    def median(self, values):
        """Return the (lower) median of each group, NaN for an empty one."""
        # one sort by (instance, value): float32 bits of a non-negative value sort as it does
        keys = (self.labels.astype(np.uint64) << np.uint64(32)) | np.asarray(
            values, np.float32).view(np.uint32)
        ordered = (np.sort(keys) & np.uint64(0xffffffff)).astype(np.uint32).view(np.float32)
        result = np.full(len(self.sizes), np.nan)
        full = self.sizes > 0
        result[full] = ordered[self.starts[full] + (self.sizes[full] - 1) // 2]
        return result


class StampPairer:
    """
    Depth frames of one camera, paired to colour frames by stamp.

    Colour and depth come at different rates and never with equal stamps, and a colour frame is
    paired once its outputs are made, after inference: by then the depth frames taken during
    the inference have arrived too, and the colour frame's partner is no longer the newest. So
    the depth frames since the last paired colour frame are kept: each pairing forgets those
    older than its stamp minus the tolerance (later colour frames cannot use them), and none is
    kept longer than `keep_seconds` of stamps or beyond the newest `keep`: what is kept follows
    the pipeline's latency, bounded, and no queue grows. A colour stamp takes the closest frame
    within `tolerance` seconds, or none. Thread-safe: depth frames come from another thread.
    """

    def __init__(self, tolerance, keep_seconds=2.0, keep=64):
        self.tolerance = tolerance
        self._keep_seconds, self._keep = keep_seconds, keep
        self._frames = []
        self._lock = threading.Lock()

    def put(self, stamp, item):
        """Keep `item` (a depth frame) taken at `stamp` seconds, forgetting the oldest."""
        with self._lock:
            if self._frames and stamp < self._frames[-1][0] - self._keep_seconds:
                self._frames.clear()  # stamps jumped back (a looping bag): the kept are stale
            self._frames.append((stamp, item))
            self._frames.sort(key=lambda frame: frame[0])
            newest = self._frames[-1][0]
            self._frames = [frame for frame in self._frames[-self._keep:]
                            if frame[0] >= newest - self._keep_seconds]

    def limit(self, keep):
        """Keep at most the newest `keep` frames from now on."""
        with self._lock:
            self._keep = keep
            self._frames = self._frames[-keep:]

    def pair(self, stamp):
        """Return (the kept item closest to `stamp` within the tolerance, or None, its offset)."""
        with self._lock:
            frames = self._frames
            if not frames:
                return None, None
            offset, item = min(((frame_stamp - stamp, item) for frame_stamp, item in frames),
                               key=lambda pair: abs(pair[0]))
            self._frames = [frame for frame in frames if frame[0] >= stamp - self.tolerance]
        return (item if abs(offset) <= self.tolerance else None), offset

    def clear(self, after=None):
        """Forget every kept frame (e.g. on deactivation), or those stamped after `after`."""
        with self._lock:
            self._frames = [] if after is None else [
                frame for frame in self._frames if frame[0] <= after]
