"""
Label images of a frame's detections: which instance, and which class, owns each pixel.

Where masks overlap, the pixel belongs to the instance with the higher score. The owner image is
painted at the masks' resolution from the instances' crops; a full-size image is a nearest resize
of a small one, corrected at the few pixels (mask corners) where that differs from upscaling each
mask bilinearly (`corner_owners`). Its cost follows the frame size and the length of the
masks' outlines, not the instance count times the frame size.
"""

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from segtrack_ros.core.resize import bilinear_taps

MAX_LABEL = np.iinfo(np.uint16).max


def mask_values(ids):
    """
    Map instance ids onto the 1..65535 range of a mono16 label image.

    Track ids beyond 65535 (after days of tracking) wrap around, skipping 0 (background).
    """
    return (np.asarray(ids, np.int64) - 1) % MAX_LABEL + 1


@dataclass(frozen=True)
class OwnerImage:
    """
    Which instance owns each pixel, kept at the masks' resolution: see `owner_image`.

    `small` is the index image of the mask frame (0 background, i + 1 for instance i);
    `fixes` are the rows, columns and indices of the full-size pixels that are not its nearest
    resize.
    """

    small: np.ndarray
    frame: object  # detections.MaskFrame
    fixes: tuple

    def image(self, values, out=None):
        """Full-size image of `values[index]` per pixel (`values[0]` for the background)."""
        values = np.asarray(values)
        image = self.frame.to_image_size(values[self.small], out)
        rows, cols, owners = self.fixes
        if len(rows):
            image[rows, cols] = values[owners]
        return image


def owner_image(detections):
    """
    Return the `OwnerImage` of `detections`: made once a frame, shared by the label images.

    Pass it to `instance_mask`, `class_mask` and `Renderer.draw` of the same detections.
    """
    small = np.zeros(detections.mask_shape,
                     np.uint16 if len(detections) < MAX_LABEL else np.int64)
    crops, origins = detections.crops, detections.origins.tolist()
    for index in reversed(range(len(detections))):  # the highest score is painted last, on top
        crop, (x, y) = crops[index], origins[index]
        np.copyto(small[y:y + crop.shape[0], x:x + crop.shape[1]], index + 1, where=crop)
    return OwnerImage(small, detections.frame, corner_owners(detections, small))


def instance_mask(detections, owner=None):
    """uint16 image of the input size: 0 = background, else the instance's id (`mask_values`)."""
    return _label_image(detections, mask_values(detections.ids), owner)


def class_mask(detections, owner=None):
    """uint16 image of the input size: 0 = background, else the instance's class id + 1."""
    return _label_image(detections, detections.class_ids + 1, owner)


def _label_image(detections, values, owner):
    owner = owner_image(detections) if owner is None else owner
    return owner.image(np.concatenate(([0], values)).astype(np.uint16))


def corner_owners(detections, owner):
    """
    Where the nearest resize of `owner` (an index image of the mask frame) is not exact.

    Upscaled bilinearly (as `scale_masks` does) and thresholded at 0.5, a mask differs from its
    nearest resize only in cells of 2×2 source pixels whose labels do not split along a row or a
    column (corners and diagonal steps), or at outputs that weigh both sides of an edge alike
    (a tie: 0.5 is not more than 0.5). There, each output pixel goes to the first instance
    (by score) whose own upscaled mask holds it, the instances hidden under others at the four
    source pixels included. Returns the rows, columns and owner indices (0 for the background) of
    those output pixels: with them, the owner image equals the instances' `mask`s painted in
    score order, pixel for pixel.
    """
    frame = detections.frame
    if frame.identity:
        return np.zeros(0, np.intp), np.zeros(0, np.intp), owner[:0, 0]
    top, left, bottom, right = frame.content
    height, width = bottom - top, right - left
    # Cell (r, c) holds the outputs whose first taps are source pixel (r, c); the taps past the
    # last row and column repeat it, as torch clamps them.
    owner = np.pad(owner[top:bottom, left:right], ((0, 1), (0, 1)), mode='edge')
    across = owner[:, :-1] == owner[:, 1:]  # a pixel and its right neighbour alike
    down = owner[:-1] == owner[1:]  # a pixel and the one below alike
    rows_alike = across[:-1] & across[1:]  # the cell's top pair alike, and its bottom pair
    uniform = rows_alike & down[:, :-1]
    straight = np.logical_or(rows_alike, down[:, :-1] & down[:, 1:], out=rows_alike)
    # a straight edge is a nearest copy too, but for outputs weighing both sides about equally
    ties = (_tie_cells(height, frame.image_shape[0])[:, None]
            | _tie_cells(width, frame.image_shape[1])[None, :])
    ties &= ~uniform
    cell_rows, cell_cols = np.divmod(np.flatnonzero(ties | ~straight), width)
    rows, row_weight, row_valid = _cell_outputs(cell_rows, height, frame.image_shape[0])
    cols, col_weight, col_valid = _cell_outputs(cell_cols, width, frame.image_shape[1])
    weights = row_weight[:, :, None], col_weight[:, None, :]
    # Each output takes the tap label whose weight exceeds 0.5. When none does (three labels,
    # or two across a diagonal), an instance hidden at the taps may still reach 0.5.
    taps = [owner[cell_rows + dy, cell_cols + dx] for dy in (0, 1) for dx in (0, 1)]
    result = np.zeros((len(cell_rows), rows.shape[1], cols.shape[1]), owner.dtype)
    decided = np.zeros(result.shape, bool)
    for label in taps:
        above = _bilinear_value([tap == label for tap in taps], *weights) > 0.5
        np.maximum(result, np.where(above, label[:, None, None], 0), out=result)
        decided |= above
    valid = row_valid[:, :, None] & col_valid[:, None, :]
    contested = np.flatnonzero((~decided & valid).any(axis=(1, 2)))
    if len(contested):
        tap_rows = np.minimum(cell_rows[contested, None] + (0, 1), height - 1) + top
        tap_cols = np.minimum(cell_cols[contested, None] + (0, 1), width - 1) + left
        result[contested] = _exact_owners(detections, tap_rows, tap_cols,
                                          *(weight[contested] for weight in weights))
    shape = result.shape
    return (np.broadcast_to(rows[:, :, None], shape)[valid],
            np.broadcast_to(cols[:, None, :], shape)[valid], result[valid])


def _bilinear_value(taps, row_weight, col_weight):
    """Bilinear value, as torch weighs them, of 0/1 taps (four K-vectors) at K×S×S outputs."""
    upper_left, upper_right, lower_left, lower_right = (
        tap.astype(np.float32)[:, None, None] for tap in taps)
    return ((1 - row_weight) * (upper_left * (1 - col_weight) + upper_right * col_weight)
            + row_weight * (lower_left * (1 - col_weight) + lower_right * col_weight))


def _exact_owners(detections, tap_rows, tap_cols, row_weight, col_weight):
    """Owner (index + 1, or 0) of the outputs of cells with taps at mask-frame rows, columns."""
    sizes = np.array([crop.shape for crop in detections.crops]).reshape(-1, 2)
    x0, y0 = detections.origins[:, 0], detections.origins[:, 1]
    x1, y1 = x0 + sizes[:, 1], y0 + sizes[:, 0]
    near = ((tap_rows[:, 1:] >= y0) & (tap_rows[:, :1] < y1)
            & (tap_cols[:, 1:] >= x0) & (tap_cols[:, :1] < x1))
    cells, instances = np.nonzero(near)
    flat = np.concatenate([crop.ravel() for crop in detections.crops] + [np.zeros(1, bool)])
    starts = np.concatenate(([0], np.cumsum(sizes[:, 0] * sizes[:, 1])))[instances]
    height, width = sizes[instances, 0], sizes[instances, 1]
    taps = []
    for dy in (0, 1):
        for dx in (0, 1):
            y = tap_rows[cells, dy] - y0[instances]
            x = tap_cols[cells, dx] - x0[instances]
            inside = (y >= 0) & (y < height) & (x >= 0) & (x < width)
            taps.append(flat[np.where(inside, starts + y * width + x, -1)])
    held = _bilinear_value(taps, row_weight[cells], col_weight[cells]) > 0.5
    # Pairs come by cell, then by instance, and every cell has one (an instance owns a tap):
    # the first instance holding an output is the minimum over the cell's pairs.
    groups = np.flatnonzero(np.concatenate(([True], cells[1:] != cells[:-1])))
    first = np.minimum.reduceat(np.where(held, instances[:, None, None], len(detections)),
                                groups, axis=0)
    return np.where(first < len(detections), first + 1, 0)


@lru_cache(maxsize=16)
def _tie_cells(source_size, size):
    """Cells (by first source pixel) holding an output whose second weight is about 0.5."""
    first, _, weight = bilinear_taps(source_size, size)
    ties = np.zeros(source_size, bool)
    ties[first[np.abs(weight - 0.5) < 1e-3]] = True
    ties.flags.writeable = False
    return ties


def _cell_outputs(cells, source_size, size):
    """Return the outputs whose first tap is each of `cells`: indices, weights, valid (K×S)."""
    first, _, weight = bilinear_taps(source_size, size)
    starts = np.searchsorted(first, np.arange(source_size + 1))
    counts = starts[cells + 1] - starts[cells]
    steps = np.arange(max(int(counts.max(initial=0)), 1))
    outputs = np.minimum(starts[cells][:, None] + steps, size - 1)
    return outputs, weight[outputs], steps < counts[:, None]
